"""``lgbm``: LightGBM on the log1p of the count, velocast's default champion."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from velocast.models.spec import ModelSpec, Param

# Chosen on the real data scored as served (train to 2021-07-09, score 2021-07-10..2021-08-09, no
# observed weather of the predicted days; `bench/accuracy.py`): 300 trees x 63 leaves with at least
# 100 rows per leaf scored RMSE 29.15 as served / 22.83 with perfect weather, against 29.31 / 23.66
# for the former 150 x 255 leaves and 28.99-29.01 / 22.96-23.17 for 600-800 slower trees.
# Seeds matter at this scale: with random_state 1, 2, 3 the same defaults score 28.87 / 28.91 / 29.03
# as served and 23.30-23.34 with perfect weather, so a change must beat that spread on several seeds.
# Tried and rejected: the school/public holiday flags of the lag days (24 h and 7 x 24 h before:
# 29.01 / 29.49 / 29.36 as served, 23.37-24.09 perfect weather on the same seeds, though one seed
# gained on the 2021 winter-holiday return); on validation days (train to 2021-06-08, score
# 06-09..07-09, as served) LightGBM poisson (31.44) and tweedie 1.3 (32.58) on raw counts against
# 30.99 for L2 on log1p, and a smearing factor on the log predictions (every factor > 1 is worse).
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
# Fits on fewer rows than this use one thread whatever ``n_jobs`` says. With OpenMP threads that sleep
# while they wait (OMP_WAIT_POLICY=PASSIVE, velocast's default: velocast/__init__.py) each of the many
# parallel steps of a boosting round pays a wake-up, and one thread is faster on this 2-core machine:
# the default 300 trees on the real day-ahead features took 0.03 s on 1 thread against 0.33 s on 2 for
# 1,000 rows, 1.98 s / 4.86 s for 100,000, 7.20 s / 7.95 s for 383,451; 2 threads win only from about
# 750,000 rows (14.34 s / 13.85 s). ``python bench/omp_wait.py`` (bench/results/omp_wait.md).
ONE_THREAD_FIT_ROWS = 500_000


def _log_counts(y: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(np.asarray(y, float), 0, None))


class LGBMCountRegressor(BaseEstimator, RegressorMixin):
    """LightGBM regressor trained on log1p(count); predictions are back on the count scale.

    ``init_model`` (a fitted LGBMCountRegressor) continues boosting from its trees.
    """

    # two fits may run at once, one per core (``WeatherFallback``): below ONE_THREAD_FIT_ROWS each uses
    # one thread, and LightGBM releases the GIL while it boosts
    fits_concurrently = True

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
        threads = 1 if len(X) < ONE_THREAD_FIT_ROWS else self.n_jobs
        self.booster_model_ = lgb.LGBMRegressor(**{**self.get_params(), "n_jobs": threads}, verbose=-1)
        init = init_model.booster_model_.booster_ if init_model is not None else None
        stopping: dict = {}
        if eval_set is not None:
            stopping = {"eval_set": [(eval_set[0], _log_counts(eval_set[1]))],
                        "callbacks": [lgb.early_stopping(early_stopping_rounds, verbose=False)]}
        self.booster_model_.fit(X, _log_counts(y), init_model=init, **stopping)
        self.booster_model_.set_params(n_jobs=self.n_jobs)  # predictions: the threads asked for
        self.best_iteration_ = int(self.booster_model_.best_iteration_ or self.n_estimators)
        self.feature_importances_ = self.booster_model_.booster_.feature_importance("gain")
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(np.expm1(self.booster_model_.predict(X)), 0, None)


def _search_space(trial: Any) -> dict[str, Any]:
    # no n_estimators: a trial grows up to TUNING_MAX_TREES trees and stops early on each fold's
    # validation days; the best trial's stopping point on the largest fold becomes n_estimators
    return {
        "num_leaves": trial.suggest_int("num_leaves", 31, 255, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 200, log=True),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def continue_from(previous: LGBMCountRegressor, X: pd.DataFrame, y: np.ndarray,
                  params: dict[str, Any]) -> LGBMCountRegressor:
    """More trees boosted from ``previous``'s (its ``init_model``), with ``params`` overriding its own."""
    own = previous.get_params()
    return LGBMCountRegressor(**{**own, **{k: v for k, v in params.items() if k in own}}).fit(X, y, init_model=previous)


SPEC = ModelSpec(
    name="lgbm", task="regression", default_horizon="day-ahead",
    description="LightGBM on log1p(count); the default champion",
    params={"n_estimators": Param(int, 1, 10_000), "learning_rate": Param(float, 1e-4, 1.0),
            "num_leaves": Param(int, 2, 4096), "min_child_samples": Param(int, 1, 10_000),
            "subsample": Param(float, 0.1, 1.0), "subsample_freq": Param(int, 0, 100),
            "colsample_bytree": Param(float, 0.1, 1.0), "reg_lambda": Param(float, 0.0, 1e4)},
    defaults=DEFAULTS,
    make_estimator=lambda p, seed: LGBMCountRegressor(**p, random_state=seed),
    fine_tune_continue="LightGBM init_model: extra trees at a lower learning rate", continue_from=continue_from,
    continue_defaults=CONTINUE_DEFAULTS, counter_as_category=True, search_space=_search_space,
    tuning_max_trees=TUNING_MAX_TREES,
)
