"""Accuracy, training time and peak memory of every model on the same real rows, scored as served.

Train on 2020-09-01..2021-07-09, score 2021-07-10..2021-08-09 (Europe/Paris), day-ahead where the
model supports it and calendar too. Test rows are built the way the serving path builds them at
each day's cut-off (``velocast.lifecycle.serving.scoring.ServedRows``: counts before the day, no observed
weather of the day), in two variants:

- ``as served`` — no weather forecast (none is archived for 2021): the model's no-weather sibling;
- ``perfect weather`` — the observed weather given as a perfect forecast (an upper bound of what a
  weather forecast can bring).

Prediction intervals (``INTERVAL_CONFIGS``): calibrated as ``velocast train`` does — a twin fitted
on the training days before the last ``CALIBRATION_DAYS`` forecasts those days as served, its
conformity scores calibrate the intervals of the model fitted on every training day — then scored
on the test month: empirical coverage of the 80% interval, mean width, interval score, coverage per
counter (counters seen on >= 14 days), against the naive baseline: the prediction plus the
empirical 10% and 90% quantiles of the twin's residuals (bikes) of the same hour of the day on the
same calibration days. As served, each test day follows the model's errors of the test days before
it: its intervals adapt on ``ADAPT_DAYS`` of them (``VELOCAST_INTERVAL_ADAPT_DAYS``), a day-ahead
prediction is corrected by its counter's level bias over ``BIAS_DAYS`` (``VELOCAST_BIAS_CORRECTION_DAYS``);
0 turns either off.

Rows inside sensor outages (runs of >= 24 zero hours: ``20 Avenue de Clichy`` until 2021-07-20)
are left out of the headline scores; the RMSE on all rows is reported beside them. The reference
is the original system's recipe: RandomForest (n_estimators=50, max_depth=20) on counter one-hot +
Paris-time calendar fields, raw-count target. Each model trains in its own process, so its peak
RSS is its own. ``reference_commit`` re-measures an older velocast (e.g. ``2ded31d``, before the
"serve what you score" work) on the same rows with its own code, for the before/after table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REAL_COUNTS, REAL_WEATHER, ROOT, isolated, replace_rows

TRAIN_END = "2021-07-10"
TEST_END = "2021-08-10"
# as `velocast train` calibrates: VELOCAST_INTERVAL_CALIBRATION_DAYS (default 28)
CALIBRATION_DAYS = int(os.environ.get("VELOCAST_INTERVAL_CALIBRATION_DAYS", "28"))
# as served: each test day follows the model's errors of the test days before it (velocast.lifecycle.serving.adaptation):
# intervals over VELOCAST_INTERVAL_ADAPT_DAYS, the day-ahead level bias over VELOCAST_BIAS_CORRECTION_DAYS
ADAPT_DAYS = int(os.environ.get("VELOCAST_INTERVAL_ADAPT_DAYS", "14"))
BIAS_DAYS = int(os.environ.get("VELOCAST_BIAS_CORRECTION_DAYS", "3"))
COVERAGE = 0.8
INTERVAL_CONFIGS = {"baseline (seasonal naive)", "lgbm, calendar", "lgbm, day-ahead"}
VARIANTS = {"as_served": "test_without.parquet", "perfect_weather": "test_with.parquet",
            "all_rows": "test_all_without.parquet"}

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


def prepare(folder: Path, train_end: str = TRAIN_END, test_end: str = TEST_END) -> dict[str, str]:
    """Ingest the real files in a scratch home; build the training rows and the test variants once
    (train before ``train_end``, test from it to ``test_end``, Paris days)."""
    os.environ["VELOCAST_HOME"] = str(folder / "home")
    from velocast.config import get_settings
    from velocast.data import store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.data.splits import paris_day
    from velocast.lifecycle.training.datasets import calibration_days, training_rows
    from velocast.lifecycle.inputs import enrich, outage_flags
    from velocast.lifecycle.serving.scoring import ServedRows

    settings = get_settings()
    ingest_file(REAL_COUNTS)
    ingest_weather(REAL_WEATHER)
    rows = store.query_counts(end=test_end)
    local = rows["timestamp"].dt.tz_localize(None)
    cut = np.datetime64(train_end)
    train = training_rows(rows[(local < cut).to_numpy()].reset_index(drop=True), set(), settings)
    test = rows[(local >= cut).to_numpy()].reset_index(drop=True)
    paths = {"train": folder / "train.parquet", "calibration": folder / "calibration.parquet"}
    enrich(train, settings, weather="observed").to_parquet(paths["train"])
    on_days = paris_day(train["timestamp"]).astype(str).isin(calibration_days(train, CALIBRATION_DAYS)).to_numpy()
    ServedRows.build(train[on_days].reset_index(drop=True), settings, extra_history=train, weather="without",
                     outages_removed=True).calibration_rows.to_parquet(paths["calibration"])
    served = ServedRows.build(test, settings, weather="without")
    everything = ServedRows.build(test, settings, weather="without", outages_removed=True)
    for name, frame in (("test_without.parquet", served.variants["without_weather"]),
                        ("test_with.parquet", served.variants["with_weather"]),
                        ("test_all_without.parquet", everything.variants["without_weather"])):
        paths[name] = folder / name
        frame.to_parquet(paths[name])
    outage = test[outage_flags(test, settings)][["counter_id", "timestamp"]]
    paths["outage_keys"] = folder / "outage_keys.parquet"
    outage.to_parquet(paths["outage_keys"])
    return {k: str(v) for k, v in paths.items()} | {"outage_rows": str(served.outage_rows), "test_rows": str(len(test))}


def _scores(pipeline: Any, folder: str, naive: dict[str, Any] | None = None) -> dict[str, Any]:
    import pandas as pd

    from velocast.evaluation.metrics import regression_metrics
    from velocast.models import predict_frame
    from velocast.models.intervals import OnlineRule

    out = {}
    for variant, name in VARIANTS.items():
        rows = pd.read_parquet(Path(folder) / name)
        predicted = predict_frame(pipeline, rows, COVERAGE, OnlineRule(ADAPT_DAYS, BIAS_DAYS), learn_from_rows=True)
        out[variant] = regression_metrics(rows["bike_count"], predicted["prediction"]).to_dict()
        out[variant]["rmse_log1p_within_counter_day"] = within_counter_day(rows, predicted["prediction"])
        if naive is not None and variant != "all_rows" and predicted["lower"].notna().all():
            out[variant]["intervals"] = _interval_scores(rows, predicted, naive[variant])
    return out


def within_counter_day(rows: Any, prediction: Any) -> float:
    """RMSE(log1p) left once each counter-day's mean log error is taken out: what the model would
    score if it knew every counter's daily level exactly (the shape of the day and the hour-to-hour
    noise remain). A floor for a model that cannot see the day's level (a calendar model)."""
    import pandas as pd

    from velocast.data.splits import paris_day

    error = np.log1p(np.clip(rows["bike_count"].to_numpy(float), 0, None)) - np.log1p(
        np.clip(np.asarray(prediction, float), 0, None))
    keys = pd.DataFrame({"counter": rows["counter_id"].astype(str).to_numpy(),
                         "day": paris_day(rows["timestamp"]).astype(str).to_numpy(), "error": error})
    left = error - keys.groupby(["counter", "day"])["error"].transform("mean").to_numpy()
    return float(np.sqrt(np.mean(left ** 2)))


def _interval_scores(rows: Any, predicted: Any, naive: tuple[Any, Any]) -> dict[str, Any]:
    """Coverage, width, interval score, per-counter coverage of the model's intervals and of the naive ones."""
    from velocast.data.splits import paris_day
    from velocast.evaluation.intervals import (
        counter_coverage,
        counter_summary,
        hourly_residual_intervals,
        interval_metrics,
    )

    y = rows["bike_count"].to_numpy(float)
    days = paris_day(rows["timestamp"]).astype(str).to_numpy()
    hours = rows["timestamp"].dt.tz_convert("Europe/Paris").dt.hour.to_numpy()
    counters = rows["counter_id"].astype(str).to_numpy()
    point = predicted["prediction"].to_numpy(float)
    made = {"model": (predicted["lower"].to_numpy(float), predicted["upper"].to_numpy(float)),
            "naive": hourly_residual_intervals(naive[0], naive[1], hours, point, COVERAGE)}
    out: dict[str, Any] = {}
    for name, (lower, upper) in made.items():
        per_counter = counter_coverage(counters, days, y, lower, upper, min_days=14)
        out[name] = {**interval_metrics(y, lower, upper, COVERAGE).to_dict(),
                     **counter_summary(per_counter, (0.70, 0.90)),
                     "counter_coverage_max": float(per_counter["coverage"].max()) if len(per_counter) else None}
    out["width_ratio_to_naive"] = out["model"]["interval_width"] / out["naive"]["interval_width"]
    # the naive intervals at the same empirical coverage as the model's (their level searched on the test rows:
    # an oracle in the baseline's favour)
    target, low, high = out["model"]["interval_coverage"], 0.5, 0.995
    for _ in range(30):
        level = (low + high) / 2
        lower, upper = hourly_residual_intervals(naive[0], naive[1], hours, point, level)
        reached = float(((y >= lower) & (y <= upper)).mean())
        low, high = (level, high) if reached < target else (low, level)
    lower, upper = hourly_residual_intervals(naive[0], naive[1], hours, point, high)
    out["naive_same_coverage"] = {"level": high, "interval_coverage": float(((y >= lower) & (y <= upper)).mean()),
                                  "interval_width": float(np.mean(upper - lower)),
                                  "coverage_by_level": coverage_by_level(y, point, lower, upper)}
    out["model"]["coverage_by_level"] = coverage_by_level(y, point, *made["model"])
    out["width_ratio_to_naive_same_coverage"] = (out["model"]["interval_width"]
                                                 / out["naive_same_coverage"]["interval_width"])
    return out


def coverage_by_level(y: Any, point: Any, lower: Any, upper: Any, groups: int = 8) -> list[float]:
    """Coverage of the rows in each eighth of the predicted counts, quietest first: where a method
    spends its width (one that covers the busy hours less is narrower at the same overall coverage)."""
    order = np.argsort(np.asarray(point, float), kind="stable")
    inside = (np.asarray(y) >= np.asarray(lower)) & (np.asarray(y) <= np.asarray(upper))
    return [round(float(inside[part].mean()), 3) for part in np.array_split(order, groups)]


def _naive_residuals(twin: Any, calibration: Any) -> dict[str, tuple[Any, Any]]:
    """The twin's residuals (bikes) and hours of the calibration rows, per test variant."""
    from velocast.models import predict_frame
    from velocast.models.weather_fallback import weather_known

    residual = calibration["bike_count"].to_numpy(float) - predict_frame(twin, calibration)["prediction"].to_numpy()
    hours = calibration["timestamp"].dt.tz_convert("Europe/Paris").dt.hour.to_numpy()
    known = weather_known(calibration)
    return {"as_served": (hours[~known], residual[~known]), "perfect_weather": (hours[known], residual[known])}


def fit_and_score(model_type: str, horizon: str, params: dict, feature_set: str, folder: str,
                  home: str, intervals: bool = False, seed: int = 42,
                  features: dict[str, Any] | None = None) -> dict[str, Any]:
    """``features``: ``FeatureBuilder`` parameters that differ from the horizon's defaults."""
    import time

    import pandas as pd

    os.environ["VELOCAST_HOME"] = home
    from velocast.data.splits import paris_day
    from velocast.models import build_pipeline, calibrate

    train = pd.read_parquet(Path(folder) / "train.parquet")

    def build() -> Any:
        built = build_pipeline(model_type, params, horizon, seed=seed, feature_set=feature_set)
        return built.set_params(**{f"features__{k}": v for k, v in (features or {}).items()})

    pipeline = build()
    started = time.perf_counter()
    pipeline.fit(train, train["bike_count"].to_numpy())
    fit_seconds = time.perf_counter() - started
    if not intervals:
        return {**_scores(pipeline, folder), "fit_seconds": fit_seconds}
    calibration = pd.read_parquet(Path(folder) / "calibration.parquet")
    before = train[~paris_day(train["timestamp"]).isin(set(paris_day(calibration["timestamp"]))).to_numpy()]
    started = time.perf_counter()
    twin = build()
    twin.fit(before, before["bike_count"].to_numpy())
    calibrated = calibrate(pipeline, calibration, twin=twin)
    calibration_seconds = time.perf_counter() - started
    return {**_scores(calibrated, folder, _naive_residuals(twin, calibration)), "fit_seconds": fit_seconds,
            "calibration_seconds": calibration_seconds}


def tune_and_score(folder: str, home: str, n_trials: int) -> dict[str, Any]:
    import time

    import pandas as pd

    os.environ["VELOCAST_HOME"] = home
    from velocast.lifecycle.training.tuning import tune

    train = pd.read_parquet(Path(folder) / "train.parquet")
    started = time.perf_counter()
    tuned = tune("lgbm", train, "day-ahead", n_trials=n_trials, log_to_mlflow=False)
    tune_seconds = time.perf_counter() - started
    out = fit_and_score("lgbm", "day-ahead", tuned.best_params, "full", folder, home)
    return {**out, "tune_seconds": tune_seconds, "best_params": tuned.best_params, "cv_rmse": tuned.best_value}


# The older velocast measured with its own code: its models, its enrichment (observed weather of
# the training days), test rows with the weather of the predicted days removed (as served) or kept.
_REFERENCE_SCRIPT = r"""
import json, os, sys
import numpy as np, pandas as pd
folder, counts, weather, train_end, test_end = sys.argv[1:6]
os.environ["VELOCAST_HOME"] = os.path.join(folder, "reference-home")
from velocast.data import store
from velocast.data.ingest import ingest_file
from velocast.data.weather import ingest_weather, WEATHER_COLUMNS
from velocast.lifecycle.inputs import enrich
from velocast.models import build_pipeline, predict_frame
from velocast.evaluation.metrics import regression_metrics
ingest_file(counts); ingest_weather(weather)
rows = enrich(store.query_counts(end=test_end))
local = rows["timestamp"].dt.tz_localize(None)
train, test = rows[local < np.datetime64(train_end)], rows[local >= np.datetime64(train_end)].reset_index(drop=True)
outage = pd.read_parquet(os.path.join(folder, "outage_keys.parquet"))
keys = set(zip(outage["counter_id"].astype(str), outage["timestamp"]))
keep = np.array([k not in keys for k in zip(test["counter_id"].astype(str), test["timestamp"])])
no_weather = test.copy(); no_weather[WEATHER_COLUMNS] = np.nan
def score(p, t, m):
    return regression_metrics(t["bike_count"][m], predict_frame(p, t)["prediction"][m]).to_dict()
out = {}
for horizon in ("day-ahead", "calendar"):
    p = build_pipeline("lgbm", {}, horizon).fit(train, train["bike_count"].to_numpy())
    out[f"lgbm, {horizon}"] = {"as_served": score(p, no_weather, keep), "perfect_weather": score(p, test, keep),
                               "all_rows": score(p, no_weather, np.ones(len(test), bool))}
    bare = train.copy(); bare[WEATHER_COLUMNS] = np.nan
    q = build_pipeline("lgbm", {}, horizon).fit(bare, bare["bike_count"].to_numpy())
    out[f"lgbm, {horizon}, trained without weather"] = {
        "as_served": score(q, no_weather, keep), "all_rows": score(q, no_weather, np.ones(len(test), bool))}
print("RESULT " + json.dumps(out))
"""


def reference(commit: str, folder: Path) -> dict[str, Any]:
    """Measure velocast at ``commit`` (checked out in a temporary worktree) on the same rows."""
    tree = folder / f"velocast-{commit}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        done = subprocess.run([sys.executable, "-c", _REFERENCE_SCRIPT, str(folder), str(REAL_COUNTS),
                               str(REAL_WEATHER), TRAIN_END, TEST_END], env=env, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"reference run of {commit} failed: {done.stderr[-2000:]}")
        return {"commit": commit, "models": json.loads(line[len("RESULT "):])}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def run(n_trials: int = 20, reference_commit: str | None = None, models: list[str] | None = None,
        earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every model of ``CONFIGS`` (and the Optuna-tuned lgbm with ``n_trials``), or only the labels in
    ``models``: the other rows of ``earlier`` (the last results of this section) are kept."""
    unknown = set(models or ()) - {c[0] for c in CONFIGS}
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose among {[c[0] for c in CONFIGS]}")
    with tempfile.TemporaryDirectory(prefix="velocast-bench-") as tmp:
        folder = Path(tmp)
        paths, prep_seconds, _ = isolated(prepare, folder)
        home = str(folder / "home")
        rows = []
        for label, model_type, horizon, params, feature_set in CONFIGS:
            if models and label not in models:
                continue
            metrics, wall, peak = isolated(fit_and_score, model_type, horizon, params, feature_set, str(folder), home,
                                           label in INTERVAL_CONFIGS)
            rows.append({"model": label, **metrics, "peak_rss_mb": round(peak, 1)})
            print(f"  {label}: as served rmse {metrics['as_served']['rmse']:.2f}, perfect weather "
                  f"{metrics['perfect_weather']['rmse']:.2f}, fit {metrics['fit_seconds']:.1f}s peak {peak:.0f} MiB",
                  flush=True)
            shown = metrics["as_served"].get("intervals")
            if shown:
                print(f"    80% intervals as served: coverage {shown['model']['interval_coverage']:.3f}, width "
                      f"{shown['model']['interval_width']:.1f} (naive {shown['naive']['interval_coverage']:.3f}, "
                      f"{shown['naive']['interval_width']:.1f}), worst counter "
                      f"{shown['model']['interval_worst_counter_coverage']:.3f}", flush=True)
        if n_trials:
            metrics, wall, peak = isolated(tune_and_score, str(folder), home, n_trials)
            rows.append({"model": f"lgbm, day-ahead, Optuna {n_trials} trials", **metrics, "peak_rss_mb": round(peak, 1)})
            print(f"  optuna: as served rmse {metrics['as_served']['rmse']:.2f} tune {metrics['tune_seconds']:.0f}s",
                  flush=True)
        before = reference(reference_commit, folder) if reference_commit else None
    if models:
        order = [c[0] for c in CONFIGS]
        rows = sorted(replace_rows(rows, (earlier or {}).get("models", []), lambda r: r["model"]),
                      key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
        before = before or (earlier or {}).get("reference")
    original = next(r for r in rows if r["model"] == "rf, original recipe")
    for row in rows:
        row["rmse_ratio_to_original"] = round(row["as_served"]["rmse"] / original["as_served"]["rmse"], 3)
        row["speedup_vs_original"] = round(original["fit_seconds"] / row["fit_seconds"], 2) if row["fit_seconds"] else None
    out = {"train_period": f"2020-09-01 .. {TRAIN_END} (exclusive)", "test_period": f"{TRAIN_END} .. {TEST_END} (exclusive)",
           "interval_coverage": COVERAGE, "calibration_days": CALIBRATION_DAYS,
           "test_rows": int(paths["test_rows"]), "outage_rows": int(paths["outage_rows"]),
           "prepare_seconds": round(prep_seconds, 1), "models": rows}
    if before:
        out["reference"] = before
    return out
