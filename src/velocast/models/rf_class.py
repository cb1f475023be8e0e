"""``rf_class``: the "affluence" classifier — is this hour busier than usual for this counter?

Label: 1 when the count is above the counter's median for its hour of the week in the training
data (medians are kept in the model, so test labels use the training medians). A RandomForest is
fitted on the earlier 80% of the (time-ordered) training rows and its probabilities are
calibrated on the latest 20% — a time-honest calibration, never on rows it was trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator

from velocast.models.spec import ModelSpec, Param

DEFAULTS = {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 5, "calibration": "isotonic"}


class AffluenceClassifier(BaseEstimator, ClassifierMixin):
    def __init__(self, n_estimators: int = 100, max_depth: int | None = 16, min_samples_leaf: int = 5,
                 calibration: str = "isotonic", calibration_fraction: float = 0.2,
                 random_state: int = 42, n_jobs: int = 2):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs

    @staticmethod
    def _keys(X: pd.DataFrame) -> np.ndarray:
        codes = np.asarray(X["counter_code"], dtype=np.int64)
        return np.where(codes >= 0, codes * 168 + np.asarray(X["hour_of_week"], dtype=np.int64), -1)

    def labels(self, X: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
        """1 where the count is above the training median of its counter and hour of week."""
        keys = self._keys(X)
        pos = np.clip(np.searchsorted(self.median_keys_, keys), 0, len(self.median_keys_) - 1)
        found = (self.median_keys_[pos] == keys) & (keys >= 0)
        how = np.asarray(X["hour_of_week"], dtype=np.int64)
        medians = np.where(found, self.medians_[pos], self.global_medians_[how])
        return (np.asarray(counts, float) > medians).astype(int)

    def fit(self, X: pd.DataFrame, counts: np.ndarray) -> AffluenceClassifier:
        counts = np.asarray(counts, float)
        keys = self._keys(X)
        table = pd.Series(counts).groupby(keys).median()
        self.median_keys_ = table.index.to_numpy(np.int64)
        self.medians_ = table.to_numpy(float)
        how = np.asarray(X["hour_of_week"], dtype=np.int64)
        self.global_medians_ = pd.Series(counts).groupby(how).median().reindex(range(168)).fillna(
            float(np.median(counts))).to_numpy(float)
        y = self.labels(X, counts)
        if len(np.unique(y)) < 2:
            raise ValueError("rf_class needs both busy and quiet hours in the training data")
        n_cal = max(1, int(len(X) * self.calibration_fraction))
        fit_part, cal_part = slice(0, len(X) - n_cal), slice(len(X) - n_cal, len(X))
        forest = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        min_samples_leaf=self.min_samples_leaf,
                                        random_state=self.random_state, n_jobs=self.n_jobs)
        forest.fit(X.iloc[fit_part], y[fit_part])
        if len(np.unique(y[cal_part])) < 2:
            self.model_ = forest
        else:
            self.model_ = CalibratedClassifierCV(FrozenEstimator(forest), method=self.calibration)
            self.model_.fit(X.iloc[cal_part], y[cal_part])
        self.classes_ = np.array([0, 1])
        self.feature_importances_ = forest.feature_importances_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def _search_space(trial: Any) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 200, step=25),
        "max_depth": trial.suggest_int("max_depth", 8, 24),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
    }


SPEC = ModelSpec(
    name="rf_class", task="classification", default_horizon="day-ahead",
    description="Affluence classifier: busier than this counter's usual for that hour? (calibrated)",
    params={"n_estimators": Param(int, 1, 2000), "max_depth": Param(int, 1, 200, nullable=True),
            "min_samples_leaf": Param(int, 1, 10_000),
            "calibration": Param(str, choices=("isotonic", "sigmoid"))},
    defaults=DEFAULTS,
    make_estimator=lambda p, seed: AffluenceClassifier(**p, random_state=seed),
    fine_tune_continue="refit on the sliding window (calibration needs fresh rows)",
    search_space=_search_space,
)
