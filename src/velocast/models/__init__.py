"""The model catalogue: name -> how to build it, its hyper-parameters, how it fine-tunes.

Every model is one scikit-learn ``Pipeline``: ``FeatureBuilder`` then an estimator, so the same
object is fitted, logged to MLflow, loaded and served. A regression pipeline's estimator is a
``ConformalRegressor`` (``velocast.models.intervals``) around the family's regressor: once
``calibrate``d, the same object serves prediction intervals (``predict_frame(..., coverage=)``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline

from velocast.choices import MODEL_TYPES
from velocast.data.splits import paris_day
from velocast.features import HORIZONS, FeatureBuilder
from velocast.models import baseline as _baseline
from velocast.models import lgbm as _lgbm
from velocast.models import nn as _nn
from velocast.models import rf as _rf
from velocast.models import rf_class as _rf_class
from velocast.models.intervals import ConformalRegressor, with_intervals
from velocast.models.weather_fallback import WeatherFallback, unwrap

REGISTERED_NAME = "bike-traffic-{model_type}"


@dataclass(frozen=True)
class Param:
    """One tunable hyper-parameter: its type, bounds or choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    nullable: bool = False

    def check(self, name: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"hyperparameter {name}={value!r}: expected one of {list(self.choices)}")
            return value
        if self.kind is int and (isinstance(value, bool) or not float(value).is_integer()):
            raise ValueError(f"hyperparameter {name}={value!r}: expected an integer")
        try:
            value = self.kind(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"hyperparameter {name}={value!r}: expected {self.kind.__name__}") from exc
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"hyperparameter {name}={value!r}: expected between {self.low} and {self.high}")
        return value


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "regression" or "classification"
    default_horizon: str
    description: str
    params: dict[str, Param]
    defaults: dict[str, Any]
    make_estimator: Callable[[dict[str, Any], int], Any]
    fine_tune_continue: str  # how the "continue" strategy works for this family
    continue_defaults: dict[str, Any] = field(default_factory=dict)
    counter_as_category: bool = False
    search_space: Callable[[Any], dict[str, Any]] | None = None
    # tuning: most trees a trial may grow before early stopping on its fold's validation days
    # (the family's ``fit`` takes ``eval_set`` and sets ``best_iteration_``); None: no early stopping
    tuning_max_trees: int | None = None
    uses_weather: bool = True  # fitted with a no-weather sibling (``WeatherFallback``)


def _lgbm_space(trial: Any) -> dict[str, Any]:
    # no n_estimators: a trial grows up to LGBM_TUNING_MAX_TREES trees and stops early on each fold's
    # validation days; the best trial's stopping point on the largest fold becomes n_estimators
    return {
        "num_leaves": trial.suggest_int("num_leaves", 31, 255, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 200, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def _rf_space(trial: Any) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 30, 120, step=10),
        "max_depth": trial.suggest_int("max_depth", 8, 30),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_float("max_features", 0.3, 1.0),
    }


def _nn_space(trial: Any) -> dict[str, Any]:
    return {
        "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32]),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }


def _rf_class_space(trial: Any) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 200, step=25),
        "max_depth": trial.suggest_int("max_depth", 8, 24),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
    }


CATALOGUE: dict[str, ModelSpec] = {
    "lgbm": ModelSpec(
        name="lgbm", task="regression", default_horizon="day-ahead",
        description="LightGBM on log1p(count); the default champion",
        params={"n_estimators": Param(int, 1, 10_000), "learning_rate": Param(float, 1e-4, 1.0),
                "num_leaves": Param(int, 2, 4096), "min_child_samples": Param(int, 1, 10_000),
                "subsample": Param(float, 0.1, 1.0), "subsample_freq": Param(int, 0, 100),
                "colsample_bytree": Param(float, 0.1, 1.0), "reg_lambda": Param(float, 0.0, 1e4)},
        defaults=_lgbm.DEFAULTS,
        make_estimator=lambda p, seed: _lgbm.LGBMCountRegressor(**p, random_state=seed),
        fine_tune_continue="LightGBM init_model: extra trees at a lower learning rate",
        continue_defaults=_lgbm.CONTINUE_DEFAULTS, counter_as_category=True, search_space=_lgbm_space,
        tuning_max_trees=_lgbm.TUNING_MAX_TREES,
    ),
    "rf": ModelSpec(
        name="rf", task="regression", default_horizon="calendar",
        description="RandomForest on raw counts (n_estimators=50, max_depth=20 as the original)",
        params={"n_estimators": Param(int, 1, 2000), "max_depth": Param(int, 1, 200, nullable=True),
                "min_samples_leaf": Param(int, 1, 10_000), "max_features": Param(float, 0.01, 1.0),
                "extra_estimators": Param(int, 1, 1000)},
        defaults=_rf.DEFAULTS,
        make_estimator=lambda p, seed: RandomForestRegressor(
            **{k: v for k, v in p.items() if k != "extra_estimators"}, random_state=seed, n_jobs=2),
        fine_tune_continue="RandomForest warm start: extra trees grown on the new data",
        continue_defaults=_rf.CONTINUE_DEFAULTS, search_space=_rf_space,
    ),
    "nn": ModelSpec(
        name="nn", task="regression", default_horizon="calendar",
        description="PyTorch: counter embedding + scaled numeric features (extra 'nn')",
        params={"embedding_dim": Param(int, 1, 512), "hidden": Param(int, 4, 4096),
                "dropout": Param(float, 0.0, 0.9), "epochs": Param(int, 1, 1000),
                "learning_rate": Param(float, 1e-6, 1.0), "batch_size": Param(int, 8, 1 << 20),
                "patience": Param(int, 1, 100)},
        defaults=_nn.DEFAULTS,
        make_estimator=lambda p, seed: _nn.TorchRegressor(**p, random_state=seed),
        fine_tune_continue="more epochs from the champion's weights at a lower learning rate",
        continue_defaults=_nn.CONTINUE_DEFAULTS, search_space=_nn_space,
    ),
    "rf_class": ModelSpec(
        name="rf_class", task="classification", default_horizon="day-ahead",
        description="Affluence classifier: busier than this counter's usual for that hour? (calibrated)",
        params={"n_estimators": Param(int, 1, 2000), "max_depth": Param(int, 1, 200, nullable=True),
                "min_samples_leaf": Param(int, 1, 10_000),
                "calibration": Param(str, choices=("isotonic", "sigmoid"))},
        defaults=_rf_class.DEFAULTS,
        make_estimator=lambda p, seed: _rf_class.AffluenceClassifier(**p, random_state=seed),
        fine_tune_continue="refit on the sliding window (calibration needs fresh rows)",
        search_space=_rf_class_space,
    ),
    "baseline": ModelSpec(
        name="baseline", task="regression", default_horizon="calendar",
        description="Seasonal naive: mean per counter x weekday x hour (Paris time)",
        params={}, defaults={},
        make_estimator=lambda p, seed: _baseline.SeasonalNaiveRegressor(),
        fine_tune_continue="refit on the sliding window", uses_weather=False,
    ),
}


def get_spec(model_type: str) -> ModelSpec:
    try:
        return CATALOGUE[model_type]
    except KeyError:
        raise ValueError(f"unknown model type {model_type!r}: expected one of {', '.join(MODEL_TYPES)}") from None


def registered_name(model_type: str) -> str:
    get_spec(model_type)
    return REGISTERED_NAME.format(model_type=model_type)


def validate_hyperparams(model_type: str, hyperparams: dict[str, Any] | None) -> dict[str, Any]:
    """Check names, types and ranges; return the values converted to their types."""
    spec = get_spec(model_type)
    hyperparams = hyperparams or {}
    unknown = sorted(set(hyperparams) - set(spec.params))
    if unknown:
        allowed = ", ".join(sorted(spec.params)) or "none"
        raise ValueError(f"unknown hyperparameters for {model_type}: {unknown}; allowed: {allowed}")
    return {name: spec.params[name].check(name, value) for name, value in hyperparams.items()}


def resolve_horizon(model_type: str, horizon: str | None) -> str:
    spec = get_spec(model_type)
    horizon = horizon or spec.default_horizon
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}: expected one of {', '.join(HORIZONS)}")
    return horizon


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
    """A challenger that continues from the champion's fitted state on new rows (not in place)."""
    spec = get_spec(model_type)
    params = {**spec.continue_defaults, **validate_hyperparams(model_type, hyperparams)}
    features = champion.named_steps["features"]
    old = champion.named_steps["model"]
    if model_type not in ("lgbm", "rf", "nn"):
        raise ValueError(f"{model_type} has no 'continue' fine-tuning: {spec.fine_tune_continue}; "
                         "use the sliding_window strategy")

    def step(previous: Any, Xf: pd.DataFrame) -> Any:
        if model_type == "lgbm":
            merged = {**previous.get_params(), **{k: v for k, v in params.items() if k in previous.get_params()}}
            return _lgbm.LGBMCountRegressor(**merged).fit(Xf, y, init_model=previous)
        if model_type == "rf":
            grown = copy.deepcopy(previous)
            grown.set_params(warm_start=True, n_estimators=previous.n_estimators + int(params["extra_estimators"]))
            grown.fit(Xf, y)
            grown.set_params(warm_start=False)
            return grown
        more = copy.deepcopy(previous)
        more._get_module()
        more.continue_fit(Xf, y, epochs=int(params["epochs"]), learning_rate=float(params["learning_rate"]))
        return more

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


def predict_frame(pipeline: Pipeline, X: pd.DataFrame, coverage: float | None = None) -> pd.DataFrame:
    """``prediction`` for rows of canonical input: ``probability`` too for classifiers, ``lower`` and
    ``upper`` (the central interval of ``coverage``, default the model's) for regressors.

    The bounds are NaN for a regressor never calibrated (``calibrate``), e.g. one made before
    velocast served intervals.
    """
    Xf = pipeline.named_steps["features"].transform(X)
    model = pipeline.named_steps["model"]
    out = pd.DataFrame(index=X.index)
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(Xf)[:, 1]
        out["probability"] = proba
        out["prediction"] = (proba >= 0.5).astype(int)
    elif isinstance(model, ConformalRegressor):
        out["prediction"], out["lower"], out["upper"] = model.predict_interval(Xf, coverage)
    else:
        out["prediction"] = model.predict(Xf)
        out["lower"] = out["upper"] = np.nan
    return out


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
    (both weather variants, see ``velocast.lifecycle.scoring.ServedRows.calibration_rows``). The
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
    if twin is not None:
        own = pipeline.named_steps["features"]
        counter_map = features.counter_codes(pd.Series(own.counter_ids_)) if hasattr(own, "counter_ids_") else []
        calibrated = calibrated.onto(_point_model(model), counter_map)
    return Pipeline([("features", pipeline.named_steps["features"]), ("model", calibrated)])


def classification_labels(pipeline: Pipeline, X: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """The affluence labels of rows, with the medians learned by this classifier."""
    Xf = pipeline.named_steps["features"].transform(X)
    return pipeline.named_steps["model"].labels(Xf, counts)


def feature_importance(pipeline: Pipeline) -> pd.Series | None:
    """Importance of each feature in the model that predicts rows with weather."""
    model = unwrap(_point_model(pipeline.named_steps["model"]))
    values = getattr(model, "feature_importances_", None)
    if values is None:
        return None
    names = pipeline.named_steps["features"].feature_names_out_
    return pd.Series(np.asarray(values, float), index=names).sort_values(ascending=False)
