"""A model and its no-weather sibling, fitted together: graceful when no weather forecast exists.

A forecast for day D may use the weather *forecast* for D. When none is available (no forecast
source, the fetch failed, an hour beyond the forecast's range), a model trained with observed
weather and fed missing weather falls apart (measured on July 2021: RMSE 31.3 against 30.0 for a
model trained without weather). ``WeatherFallback`` therefore fits the family's estimator twice on
the same rows: once with the weather columns, once without them, and predicts each row with the
first when its weather is known (``REQUIRED_WEATHER`` all present) and with the second otherwise.
A row without weather is thus predicted exactly by a model trained without weather.

An estimator whose class says ``fits_concurrently`` (``lgbm``: one thread per fit below a size, the
GIL released while it boosts) has its two fits run at the same time, one per core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils.metaestimators import available_if

from velocast.data.weather import WEATHER_COLUMNS

# the weather that drives cycling: a row whose forecast lacks either is predicted without weather
REQUIRED_WEATHER = ("temperature_c", "rain_mm")


def weather_known(X: pd.DataFrame | Mapping[str, Any], n: int | None = None) -> np.ndarray:
    """True for rows whose ``REQUIRED_WEATHER`` are all given: the weather a model can use (a feature
    frame, enriched rows, or ``n`` rows as a mapping of column -> values)."""
    n = len(X) if n is None else n
    if not all(column in X for column in REQUIRED_WEATHER):
        return np.zeros(n, bool)
    return np.logical_and.reduce([~np.asarray(pd.isna(X[column]), bool) for column in REQUIRED_WEATHER])


class WeatherFallback(BaseEstimator):
    """``estimator`` fitted with and without the weather columns; each row uses what it has.

    Learned: ``with_weather_`` and ``without_weather_`` (two fitted clones of ``estimator``), and
    ``weather_learned_``: whether any training row had its weather. A model fitted with none (a store
    without weather) predicts every row with ``without_weather_``, weather given or not: its
    with-weather model never saw a temperature, so what it does with one means nothing.
    """

    def __init__(self, estimator: Any = None, weather_columns: tuple[str, ...] = tuple(WEATHER_COLUMNS)):
        self.estimator = estimator
        self.weather_columns = weather_columns

    def _without(self, X: pd.DataFrame) -> pd.DataFrame:
        return X.drop(columns=[c for c in self.weather_columns if c in X])

    def fit(self, X: pd.DataFrame, y: np.ndarray, **fit_params: Any) -> WeatherFallback:
        first, second = clone(self.estimator), clone(self.estimator)
        bare = self._without(X)
        self.with_weather_, self.without_weather_ = self._both(lambda: first.fit(X, y, **fit_params),
                                                               lambda: second.fit(bare, y, **fit_params))
        self.weather_learned_ = bool(weather_known(X).any())
        self._copy_attributes()
        return self

    @property
    def learned_weather(self) -> bool:
        """Whether the with-weather model learned from any weather (True for models saved before it was recorded)."""
        return bool(getattr(self, "weather_learned_", True))

    def uses_weather(self, X: pd.DataFrame) -> np.ndarray:
        """Rows the with-weather model predicts: their weather given, and a model that learned weather."""
        return weather_known(X) & self.learned_weather

    def continued(self, step: Callable[[Any, pd.DataFrame], Any], X: pd.DataFrame) -> WeatherFallback:
        """A new fallback whose two models are ``step(old_model, rows)`` (continued training)."""
        out = WeatherFallback(self.estimator, self.weather_columns)
        bare = self._without(X)
        out.with_weather_, out.without_weather_ = self._both(lambda: step(self.with_weather_, X),
                                                             lambda: step(self.without_weather_, bare))
        out.weather_learned_ = self.learned_weather or bool(weather_known(X).any())
        out._copy_attributes()
        return out

    def _both(self, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
        """``first()`` and ``second()``: side by side when the estimator ``fits_concurrently``."""
        if not getattr(self.estimator, "fits_concurrently", False):
            return first(), second()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="velocast-fit") as pool:
            later = pool.submit(second)
            return first(), later.result()

    def _copy_attributes(self) -> None:
        for name in ("classes_", "feature_importances_"):
            if hasattr(self.with_weather_, name):
                setattr(self, name, getattr(self.with_weather_, name))

    def _combine(self, method: str, X: pd.DataFrame) -> np.ndarray:
        known = self.uses_weather(X)
        if known.all():
            return np.asarray(getattr(self.with_weather_, method)(X))
        if not known.any():
            return np.asarray(getattr(self.without_weather_, method)(self._without(X)))
        first = np.asarray(getattr(self.with_weather_, method)(X.iloc[np.flatnonzero(known)]))
        second = np.asarray(getattr(self.without_weather_, method)(self._without(X.iloc[np.flatnonzero(~known)])))
        out = np.empty((len(X), *first.shape[1:]), dtype=np.result_type(first, second))
        out[known], out[~known] = first, second
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._combine("predict", X)

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self._combine("predict_proba", X)

    def labels(self, X: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
        """Classifier labels (``rf_class``): the same medians in both models."""
        return self.with_weather_.labels(X, counts)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "with_weather_")


def unwrap(model: Any) -> Any:
    """The with-weather model of a fallback (what importances and family checks describe), else ``model``."""
    return model.with_weather_ if isinstance(model, WeatherFallback) else model


__all__ = ["REQUIRED_WEATHER", "WeatherFallback", "unwrap", "weather_known"]
