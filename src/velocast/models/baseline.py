"""``baseline``: the seasonal naive model every other model must beat.

Prediction = mean count of the counter for that weekday and hour (Europe/Paris) in training.
A cell never seen (or an unknown counter) falls back to the feature builder's level for that
hour of the week, which for an unknown counter comes from its nearest known counters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from velocast.models.spec import ModelSpec


class SeasonalNaiveRegressor(BaseEstimator, RegressorMixin):
    """Mean per (counter, hour of week), read from FeatureBuilder output columns."""

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SeasonalNaiveRegressor:
        keys = self._keys(X)
        table = pd.Series(np.asarray(y, dtype=float)).groupby(keys).mean()
        self.keys_ = table.index.to_numpy(np.int64)
        self.means_ = table.to_numpy(float)
        return self

    @staticmethod
    def _keys(X: pd.DataFrame) -> np.ndarray:
        codes = np.asarray(X["counter_code"], dtype=np.int64)
        how = np.asarray(X["hour_of_week"], dtype=np.int64)
        return np.where(codes >= 0, codes * 168 + how, -1)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        keys = self._keys(X)
        pos = np.searchsorted(self.keys_, keys)
        pos = np.clip(pos, 0, len(self.keys_) - 1)
        found = (self.keys_[pos] == keys) & (keys >= 0)
        fallback = np.expm1(np.asarray(X["counter_how_level"], dtype=float))
        return np.where(found, self.means_[pos], fallback)


SPEC = ModelSpec(
    name="baseline", task="regression", default_horizon="calendar",
    description="Seasonal naive: mean per counter x weekday x hour (Paris time)",
    params={}, defaults={},
    make_estimator=lambda p, seed: SeasonalNaiveRegressor(),
    fine_tune_continue="refit on the sliding window", uses_weather=False,
)
