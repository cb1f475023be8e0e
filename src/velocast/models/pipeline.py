"""A family's scikit-learn ``Pipeline``: built, continued, calibrated, and asked for predictions.

Every model is one ``Pipeline``: ``FeatureBuilder`` then an estimator, so the same object is fitted,
logged to MLflow, loaded and served. A regression pipeline's estimator is a ``ConformalRegressor``
(``velocast.models.intervals``) around the family's regressor: once ``calibrate``d, the same object
serves prediction intervals (``predict_frame(..., coverage=)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from velocast.data.splits import paris_day
from velocast.features import FeatureBuilder, paris_day_hour
from velocast.models.catalogue import get_spec, resolve_horizon, validate_hyperparams
from velocast.models.intervals import (
    STATIC,
    ConformalRegressor,
    OnlineRule,
    RecentErrors,
    with_intervals,
)
from velocast.models.weather_fallback import WeatherFallback, unwrap


def build_estimator(model_type: str, hyperparams: dict[str, Any] | None = None, seed: int = 42) -> Any:
    """The family's bare estimator (what follows ``FeatureBuilder``), defaults completed by ``hyperparams``."""
    spec = get_spec(model_type)
    params = {**spec.defaults, **validate_hyperparams(model_type, hyperparams)}
    params.pop("extra_estimators", None)
    return spec.make_estimator(params, seed)


def build_features(model_type: str, horizon: str | None = None, feature_set: str = "full") -> FeatureBuilder:
    """The (unfitted) ``FeatureBuilder`` of a family's pipeline."""
    spec = get_spec(model_type)
    return FeatureBuilder(horizon=resolve_horizon(model_type, horizon), feature_set=feature_set,
                          counter_as_category=spec.counter_as_category and feature_set == "full")


def build_pipeline(model_type: str, hyperparams: dict[str, Any] | None = None, horizon: str | None = None,
                   seed: int = 42, feature_set: str = "full") -> Pipeline:
    spec = get_spec(model_type)
    features = build_features(model_type, horizon, feature_set)
    estimator = build_estimator(model_type, hyperparams, seed)
    if spec.uses_weather and feature_set == "full":
        estimator = WeatherFallback(estimator)
    if spec.task == "regression":
        estimator = ConformalRegressor(estimator)
    return Pipeline([("features", features), ("model", estimator)])


def continue_training(champion: Pipeline, model_type: str, X: pd.DataFrame, y: np.ndarray,
                      hyperparams: dict[str, Any] | None = None) -> Pipeline:
    """A challenger that continues from the champion's fitted state on new rows (not in place):
    the family's ``SPEC.continue_from`` applied to each point model of the champion."""
    spec = get_spec(model_type)
    params = {**spec.continue_defaults, **validate_hyperparams(model_type, hyperparams)}
    continue_from = spec.continue_from
    if continue_from is None:
        raise ValueError(f"{model_type} has no 'continue' fine-tuning: {spec.fine_tune_continue}; "
                         "use the sliding_window strategy")
    features = champion.named_steps["features"]
    old = champion.named_steps["model"]

    def step(previous: Any, Xf: pd.DataFrame) -> Any:
        return continue_from(previous, Xf, y, params)

    Xf = features.transform(X)
    point = _point_model(old)
    model = point.continued(step, Xf) if isinstance(point, WeatherFallback) else step(point, Xf)
    if isinstance(old, ConformalRegressor):  # same interval settings; calibrated again by its training
        model = ConformalRegressor.around(model, **{k: v for k, v in old.get_params(deep=False).items()
                                                    if k != "estimator"})
    return Pipeline([("features", features), ("model", model)])


def _point_model(model: Any) -> Any:
    """The point regressor inside a ``ConformalRegressor`` (else ``model`` itself)."""
    return model.estimator_ if isinstance(model, ConformalRegressor) else model


def predict_frame(pipeline: Pipeline, X: pd.DataFrame, coverage: float | None = None, rule: OnlineRule = STATIC,
                  recent: RecentErrors | None = None, cache: dict[int, Any] | None = None,
                  learn_from_rows: bool = False) -> pd.DataFrame:
    """``prediction`` for rows of canonical input: ``probability`` too for classifiers, ``lower`` and
    ``upper`` (the central interval of ``coverage``, default the model's) for regressors.

    The bounds are NaN for a regressor never calibrated (``calibrate``), e.g. one made before
    velocast served intervals. ``rule``: how each Paris day D follows the errors of the days before
    it (``ConformalRegressor.day_by_day``; the bias correction for day-ahead models only), read
    from ``recent`` and, with ``learn_from_rows``, from the labelled rows of ``X`` itself of days
    ``recent`` lacks (rows of days the model never saw, scored in time order); ``cache``: each
    day's adapted calibration and bias, reused.
    """
    model = pipeline[-1]
    out = pd.DataFrame(index=X.index)
    if hasattr(model, "predict_proba"):
        proba = pipeline.predict_proba(X)[:, 1]
        out["probability"] = proba
        out["prediction"] = (proba >= 0.5).astype(int)
    elif isinstance(model, ConformalRegressor):  # the pipeline's own steps, then the interval method
        Xf = pipeline[:-1].transform(X)
        if pipeline.named_steps["features"].horizon != "day-ahead":
            rule = rule.without_bias()  # a calendar forecast reads no count
        if rule.window <= 0 or not model.calibrated or X.empty:
            out["prediction"], out["lower"], out["upper"] = model.predict_interval(Xf, coverage)
            return out
        prediction, variant, counter = model.predict(Xf), model.variant_of(Xf), model.counter_of(Xf)
        day, hour = paris_day_hour(X["timestamp"])
        recent = recent if recent is not None else RecentErrors.empty()
        if learn_from_rows and "bike_count" in X:
            recent = recent.plus_other_days(RecentErrors.of(prediction, X["bike_count"], variant, counter, day, hour))
        out["prediction"], out["lower"], out["upper"] = model.day_by_day(prediction, variant, counter, day, hour,
                                                                         recent, rule, coverage, cache)
    else:
        out["prediction"] = pipeline.predict(X)
        out["lower"] = out["upper"] = np.nan
    return out


def task_of(pipeline: Pipeline) -> str:
    """``"classification"`` or ``"regression"``: what the fitted pipeline's model does (its family's
    ``ModelSpec.task``, known from the model itself, so scoring needs no model type)."""
    return "classification" if hasattr(pipeline.named_steps["model"], "predict_proba") else "regression"


def is_calibrated(pipeline: Pipeline) -> bool:
    """True when the pipeline serves calibrated intervals."""
    model = pipeline.named_steps["model"]
    return isinstance(model, ConformalRegressor) and model.calibrated


def calibration_info(pipeline: Pipeline) -> dict[str, Any] | None:
    """What the pipeline's intervals were calibrated on (days, rows, groups), None if never calibrated."""
    model = pipeline.named_steps["model"]
    return dict(model.calibration_) if is_calibrated(pipeline) else None


def calibrate(pipeline: Pipeline, rows: pd.DataFrame, twin: Pipeline | None = None) -> Pipeline:
    """A copy of a fitted regression ``pipeline`` whose intervals are calibrated on labelled ``rows``.

    ``rows``: enriched, labelled rows of days the point model never trained on, built as served
    (both weather variants, see ``velocast.lifecycle.serving.scoring.ServedRows.calibration_rows``). The
    point model is shared, not refitted; a pipeline made before intervals existed gets them.

    ``twin``: when given, the scores are those of ``twin`` (the same model fitted only on the days
    before ``rows``) and the calibration is carried onto ``pipeline`` (fitted on those days too).
    """
    model = pipeline.named_steps["model"]
    if hasattr(model, "predict_proba"):
        raise ValueError("intervals are calibrated for regression models only")
    source = twin if twin is not None else pipeline
    if not isinstance(_point_model(source.named_steps["model"]), WeatherFallback):
        rows = rows.drop_duplicates(["counter_id", "timestamp"])  # one variant: weather changes nothing
    features = source.named_steps["features"]
    calibrated = with_intervals(source.named_steps["model"]).calibrate(
        features.transform(rows), rows["bike_count"].to_numpy(float),
        paris_day(rows["timestamp"]).astype(str).to_numpy())
    if twin is None:  # the served model itself forecast these days: it never trained on them
        calibrated.calibration_["unseen_from"] = calibrated.calibration_["first_day"]
    else:
        own = pipeline.named_steps["features"]
        counter_map = features.counter_codes(pd.Series(own.counter_ids_)) if hasattr(own, "counter_ids_") else []
        calibrated = calibrated.onto(_point_model(model), counter_map)
    return Pipeline([("features", pipeline.named_steps["features"]), ("model", calibrated)])


def classification_labels(pipeline: Pipeline, X: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """The affluence labels of rows, with the medians learned by this classifier."""
    Xf = pipeline.named_steps["features"].transform(X)
    return pipeline.named_steps["model"].labels(Xf, counts)


def learned_weather(pipeline: Pipeline) -> bool:
    """False for a model with a no-weather sibling that never saw any weather when it was fitted."""
    point = _point_model(pipeline.named_steps["model"])
    return not isinstance(point, WeatherFallback) or point.learned_weather


def feature_importance(pipeline: Pipeline) -> pd.Series | None:
    """Importance of each feature in the model that predicts rows with weather."""
    model = unwrap(_point_model(pipeline.named_steps["model"]))
    values = getattr(model, "feature_importances_", None)
    if values is None:
        return None
    names = pipeline.named_steps["features"].feature_names_out_
    return pd.Series(np.asarray(values, float), index=names).sort_values(ascending=False)
