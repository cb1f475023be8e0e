"""Accuracy, training time and peak memory of every model on the same real rows.

Train on 2020-09-01..2021-07-09, score 2021-07-10..2021-08-09 (Europe/Paris), day-ahead where the
model supports it and calendar too. The reference is the original system's recipe: RandomForest
(n_estimators=50, max_depth=20, otherwise scikit-learn defaults) on counter one-hot + Paris-time
calendar fields, raw-count target. Each model trains in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REAL_COUNTS, REAL_WEATHER, isolated

TRAIN_END = "2021-07-10"
TEST_END = "2021-08-10"

# (label, model_type, horizon, hyperparams, feature_set)
CONFIGS = [
    ("baseline (seasonal naive)", "baseline", "calendar", {}, "full"),
    ("rf, original recipe", "rf", "calendar", {"min_samples_leaf": 1, "max_features": 1.0}, "original"),
    ("rf velocast, calendar", "rf", "calendar", {}, "full"),
    ("rf velocast, day-ahead", "rf", "day-ahead", {}, "full"),
    ("nn, calendar", "nn", "calendar", {}, "full"),
    ("nn, day-ahead", "nn", "day-ahead", {}, "full"),
    ("lgbm, calendar", "lgbm", "calendar", {}, "full"),
    ("lgbm, day-ahead", "lgbm", "day-ahead", {}, "full"),
]


def prepare(folder: Path) -> tuple[Path, Path]:
    """Ingest the real file in a scratch home, enrich train/test rows once, save them as Parquet."""
    os.environ["VELOCAST_HOME"] = str(folder / "home")
    from velocast.data import store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.inputs import enrich

    ingest_file(REAL_COUNTS)
    ingest_weather(REAL_WEATHER)
    rows = store.query_counts(end=TEST_END)
    enriched = enrich(rows)
    cut = np.datetime64(TRAIN_END)
    local = enriched["timestamp"].dt.tz_localize(None)
    train, test = enriched[local < cut], enriched[local >= cut]
    train_path, test_path = folder / "train.parquet", folder / "test.parquet"
    train.to_parquet(train_path)
    test.to_parquet(test_path)
    return train_path, test_path


def fit_and_score(model_type: str, horizon: str, params: dict, feature_set: str, train_path: str,
                  test_path: str, home: str) -> dict[str, Any]:
    import time

    import pandas as pd

    os.environ["VELOCAST_HOME"] = home
    from velocast.evaluation.metrics import regression_metrics
    from velocast.models import build_pipeline, predict_frame

    train = pd.read_parquet(train_path)
    test = pd.read_parquet(test_path)
    pipeline = build_pipeline(model_type, params, horizon, feature_set=feature_set)
    started = time.perf_counter()
    pipeline.fit(train, train["bike_count"].to_numpy())
    fit_seconds = time.perf_counter() - started
    metrics = regression_metrics(test["bike_count"], predict_frame(pipeline, test)["prediction"])
    return {**metrics.to_dict(), "fit_seconds": fit_seconds}


def tune_and_score(train_path: str, test_path: str, home: str, n_trials: int) -> dict[str, Any]:
    import time

    import pandas as pd

    os.environ["VELOCAST_HOME"] = home
    from velocast.lifecycle.tuning import tune

    train = pd.read_parquet(train_path)
    started = time.perf_counter()
    tuned = tune("lgbm", train, "day-ahead", n_trials=n_trials, log_to_mlflow=False)
    tune_seconds = time.perf_counter() - started
    out = fit_and_score("lgbm", "day-ahead", tuned.best_params, "full", train_path, test_path, home)
    return {**out, "tune_seconds": tune_seconds, "best_params": tuned.best_params, "cv_rmse": tuned.best_value}


def run(n_trials: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="velocast-bench-") as tmp:
        folder = Path(tmp)
        (train_path, test_path), prep_seconds, _ = isolated(prepare, folder)
        home = str(folder / "home")
        rows = []
        for label, model_type, horizon, params, feature_set in CONFIGS:
            metrics, wall, peak = isolated(fit_and_score, model_type, horizon, params, feature_set,
                                           str(train_path), str(test_path), home)
            rows.append({"model": label, **metrics, "peak_rss_mb": round(peak, 1)})
            print(f"  {label}: rmse {metrics['rmse']:.2f} fit {metrics['fit_seconds']:.1f}s peak {peak:.0f} MiB", flush=True)
        if n_trials:
            metrics, wall, peak = isolated(tune_and_score, str(train_path), str(test_path), home, n_trials)
            rows.append({"model": f"lgbm, day-ahead, Optuna {n_trials} trials", **metrics, "peak_rss_mb": round(peak, 1)})
            print(f"  optuna: rmse {metrics['rmse']:.2f} tune {metrics['tune_seconds']:.0f}s", flush=True)
    reference = next(r for r in rows if r["model"] == "rf, original recipe")
    for row in rows:
        row["rmse_ratio_to_original"] = round(row["rmse"] / reference["rmse"], 3)
        row["speedup_vs_original"] = round(reference["fit_seconds"] / row["fit_seconds"], 2) if row["fit_seconds"] else None
    return {"train_period": f"2020-09-01 .. {TRAIN_END} (exclusive)", "test_period": f"{TRAIN_END} .. {TEST_END} (exclusive)",
            "test_rows": reference["n"], "prepare_seconds": round(prep_seconds, 1), "models": rows}
