"""``rf``: RandomForest regressor on raw counts (the original system's champion family)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from velocast.models.spec import ModelSpec, Param

DEFAULTS = {"n_estimators": 50, "max_depth": 20, "min_samples_leaf": 2, "max_features": 0.5}
# warm start from a champion: this many extra trees grown on the new data
CONTINUE_DEFAULTS = {"extra_estimators": 20}
# The original recipe, reproduced for benchmarks: n_estimators=50, max_depth=20, everything else default.
ORIGINAL = {"n_estimators": 50, "max_depth": 20}


def _search_space(trial: Any) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 30, 120, step=10),
        "max_depth": trial.suggest_int("max_depth", 8, 30),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_float("max_features", 0.3, 1.0),
    }


def continue_from(previous: RandomForestRegressor, X: pd.DataFrame, y: np.ndarray,
                  params: dict[str, Any]) -> RandomForestRegressor:
    """A copy of ``previous`` with ``extra_estimators`` more trees grown on the new rows (warm start)."""
    grown = copy.deepcopy(previous)
    grown.set_params(warm_start=True, n_estimators=previous.n_estimators + int(params["extra_estimators"]))
    grown.fit(X, y)
    grown.set_params(warm_start=False)
    return grown


SPEC = ModelSpec(
    name="rf", task="regression", default_horizon="calendar",
    description="RandomForest on raw counts (n_estimators=50, max_depth=20 as the original)",
    params={"n_estimators": Param(int, 1, 2000), "max_depth": Param(int, 1, 200, nullable=True),
            "min_samples_leaf": Param(int, 1, 10_000), "max_features": Param(float, 0.01, 1.0),
            "extra_estimators": Param(int, 1, 1000)},
    defaults=DEFAULTS,
    make_estimator=lambda p, seed: RandomForestRegressor(
        **{k: v for k, v in p.items() if k != "extra_estimators"}, random_state=seed, n_jobs=2),
    fine_tune_continue="RandomForest warm start: extra trees grown on the new data", continue_from=continue_from,
    continue_defaults=CONTINUE_DEFAULTS, search_space=_search_space,
)
