"""``rf``: RandomForest regressor on raw counts (the original system's champion family)."""

from __future__ import annotations

DEFAULTS = {"n_estimators": 50, "max_depth": 20, "min_samples_leaf": 2, "max_features": 0.5}
# warm start from a champion: this many extra trees grown on the new data
CONTINUE_DEFAULTS = {"extra_estimators": 20}
# The original recipe, reproduced for benchmarks: n_estimators=50, max_depth=20, everything else default.
ORIGINAL = {"n_estimators": 50, "max_depth": 20}
