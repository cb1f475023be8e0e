"""``lgbm``: LightGBM on the log1p of the count, velocast's default champion."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

# Chosen on the real data scored as served (train to 2021-07-09, score 2021-07-10..2021-08-09, no
# observed weather of the predicted days; `bench/accuracy.py`): 300 trees x 63 leaves with at least
# 100 rows per leaf scored RMSE 29.15 as served / 22.83 with perfect weather, against 29.31 / 23.66
# for the former 150 x 255 leaves and 28.99-29.01 / 22.96-23.17 for 600-800 slower trees.
DEFAULTS = {
    "n_estimators": 300,
    "learning_rate": 0.1,
    "num_leaves": 63,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
}
# tuning: a trial grows at most this many trees, stopping early on its fold's validation days
TUNING_MAX_TREES = 600
# continuing from a champion: a few more trees, more slowly
CONTINUE_DEFAULTS = {"n_estimators": 50, "learning_rate": 0.05}


def _log_counts(y: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(np.asarray(y, float), 0, None))


class LGBMCountRegressor(BaseEstimator, RegressorMixin):
    """LightGBM regressor trained on log1p(count); predictions are back on the count scale.

    ``init_model`` (a fitted LGBMCountRegressor) continues boosting from its trees.
    """

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.1, num_leaves: int = 63,
                 min_child_samples: int = 100, subsample: float = 0.8, subsample_freq: int = 1,
                 colsample_bytree: float = 0.8, reg_lambda: float = 1.0, random_state: int = 42,
                 n_jobs: int = 2):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: np.ndarray, init_model: LGBMCountRegressor | None = None,
            eval_set: tuple[pd.DataFrame, np.ndarray] | None = None,
            early_stopping_rounds: int = 20) -> LGBMCountRegressor:
        """Fit on log1p(y); with ``eval_set`` (rows, counts), stop once its loss has not improved for
        ``early_stopping_rounds`` trees (``best_iteration_`` trees then predict)."""
        self.booster_model_ = lgb.LGBMRegressor(**self.get_params(), verbose=-1)
        init = init_model.booster_model_.booster_ if init_model is not None else None
        stopping: dict = {}
        if eval_set is not None:
            stopping = {"eval_set": [(eval_set[0], _log_counts(eval_set[1]))],
                        "callbacks": [lgb.early_stopping(early_stopping_rounds, verbose=False)]}
        self.booster_model_.fit(X, _log_counts(y), init_model=init, **stopping)
        self.best_iteration_ = int(self.booster_model_.best_iteration_ or self.n_estimators)
        self.feature_importances_ = self.booster_model_.booster_.feature_importance("gain")
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(np.expm1(self.booster_model_.predict(X)), 0, None)
