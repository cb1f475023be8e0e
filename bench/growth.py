"""How training, prediction and the drift check scale with the data: 1x, 2x and 4x the real counters.

The real file (52 counters, 2020-09-01 .. 2021-08-09) is grown by replicating every counter with a
new id, a location moved by a few hundred metres and its counts rescaled and jittered (seeded), so
a k-times dataset has k times the counters over the same period — the way a city's network grows.
For each size, in processes of their own (so each peak RSS is that step's alone):

- prepare: ingest the file and the Orly weather into a scratch home (validation + the Parquet
  store), enrich every row once (weather + day-ahead history) and save train/test Parquet files
  (train before 2021-07-10, test after, as ``bench/accuracy.py``);
- fit: the default ``lgbm`` day-ahead pipeline on the train rows, twice (the best wall time and the
  best CPU time, user + system of all threads, are reported with every attempt; peak RSS measured
  right after the first ``fit``), then batch prediction rows/s on the test rows (features + model), then the
  drift check of the weekly cycle (``check_drift`` with this model as champion: reference = 20% of
  the baseline days, current = the last 30 days, both enriched from the store; no HTML report).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REAL_COUNTS, REAL_WEATHER, isolated

SCALES = (1, 2, 4)
TRAIN_END = "2021-07-10"
TEST_END = "2021-08-10"
SEED = 2021
HOURS_PER_YEAR = 8_760
FIT_REPEATS = 2


def make_scaled(factor: int, path: str) -> dict[str, Any]:
    """Write the real counts with every counter replicated ``factor`` times (replica 0 = the original)."""
    import pandas as pd

    real = pd.read_parquet(REAL_COUNTS)
    for column in ("counter_id", "counter_name", "site_name", "counter_technical_id"):
        real[column] = real[column].astype(str)
    rng = np.random.default_rng(SEED)
    parts = [real]
    counters = sorted(real["counter_id"].unique())
    for replica in range(1, factor):
        copy = real.copy()
        suffix = f"-x{replica}"
        per_counter = pd.DataFrame({
            "counter_id": counters,
            "dlat": rng.normal(0.0, 0.003, len(counters)),        # ~300 m, stays in Paris
            "dlon": rng.normal(0.0, 0.004, len(counters)),
            "level": rng.lognormal(0.0, 0.15, len(counters)),     # a busier or quieter street
        })
        copy = copy.merge(per_counter, on="counter_id", how="left")
        copy["latitude"] = copy["latitude"] + copy.pop("dlat")
        copy["longitude"] = copy["longitude"] + copy.pop("dlon")
        noise = rng.lognormal(0.0, 0.10, len(copy))               # hour-to-hour jitter
        copy["bike_count"] = np.round(copy["bike_count"] * copy.pop("level") * noise).clip(lower=0)
        copy["log_bike_count"] = np.log1p(copy["bike_count"])
        copy["counter_id"] = copy["counter_id"] + suffix
        copy["counter_name"] = copy["counter_name"] + f" (copy {replica})"
        copy["site_id"] = copy["site_id"] + replica * 10_000_000_000
        copy["site_name"] = copy["site_name"] + f" (copy {replica})"
        copy["counter_technical_id"] = copy["counter_technical_id"] + suffix
        parts.append(copy[real.columns])
    grown = pd.concat(parts, ignore_index=True)
    grown.to_parquet(path, index=False)
    return {"rows": len(grown), "counters": int(grown["counter_id"].nunique())}


def prepare(source: str, folder: str) -> dict[str, Any]:
    """Ingest + enrich once in a scratch home; save train/test Parquet; time each step."""
    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    from velocast.data import store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.inputs import enrich

    started = time.perf_counter()
    ingest_file(source)
    ingest_weather(REAL_WEATHER)
    ingest_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = store.query_counts(end=TEST_END)
    enriched = enrich(rows, weather="observed")
    enrich_seconds = time.perf_counter() - started
    local = enriched["timestamp"].dt.tz_localize(None)
    cut = np.datetime64(TRAIN_END)
    enriched[local < cut].to_parquet(Path(folder) / "train.parquet")
    enriched[local >= cut].to_parquet(Path(folder) / "test.parquet")
    return {"stored_rows": len(rows), "ingest_seconds": round(ingest_seconds, 1),
            "enrich_seconds": round(enrich_seconds, 1)}


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (LightGBM uses two): less sensitive than
    wall time to other work on the machine."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fit_predict_drift(folder: str) -> dict[str, Any]:
    """Fit lgbm day-ahead, then batch prediction and the drift check with it as champion."""
    import resource

    import pandas as pd

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    from velocast.data import store
    from velocast.lifecycle.decisions import monitor
    from velocast.lifecycle.serving.predict import LoadedModel
    from velocast.models import build_pipeline, predict_frame

    train = pd.read_parquet(Path(folder) / "train.parquet")
    fit_times, fit_cpu = [], []
    for attempt in range(FIT_REPEATS):  # the best of a few: other work on the machine only adds time
        pipeline = build_pipeline("lgbm", None, "day-ahead")
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        pipeline.fit(train, train["bike_count"].to_numpy())
        fit_times.append(round(time.perf_counter() - started, 1))
        fit_cpu.append(round(_cpu_seconds() - cpu_before, 1))
        if attempt == 0:
            fit_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_rows = len(train)
    del train

    test = pd.read_parquet(Path(folder) / "test.parquet")
    predict_frame(pipeline, test.head(1000))  # warm-up
    started = time.perf_counter()
    predict_frame(pipeline, test)
    predict_seconds = time.perf_counter() - started

    # the weekly cycle's drift check, with this model as the champion
    monitor.champion_model = lambda model_type, settings: LoadedModel("lgbm", pipeline, None, "bench:growth")
    baseline = store.query_counts(end=TRAIN_END)
    days = baseline["timestamp"].dt.normalize()
    unique_days = np.sort(days.unique())
    rng = np.random.default_rng(SEED)
    held_out = rng.choice(unique_days, size=max(1, len(unique_days) // 5), replace=False)
    reference = baseline[days.isin(held_out)]
    current = store.last_days(30)
    started = time.perf_counter()
    check = monitor.check_drift("lgbm", reference=reference, current=current, write=False)
    drift_seconds = time.perf_counter() - started
    return {"train_rows": train_rows, "test_rows": len(test), "fit_seconds": min(fit_times), "fit_seconds_all": fit_times,
            "fit_cpu_seconds": min(fit_cpu), "fit_cpu_seconds_all": fit_cpu,
            "fit_peak_rss_mb": round(fit_peak_mb, 1),
            "predict_rows_per_s": round(len(test) / predict_seconds),
            "drift_reference_rows": len(reference), "drift_current_rows": len(current),
            "drift_seconds": round(drift_seconds, 2), "drift_status": check.report.status}


def run(scales: tuple[int, ...] = SCALES) -> dict[str, Any]:
    out = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="velocast-bench-growth-") as tmp:
        for factor in scales:
            folder = Path(tmp) / f"x{factor}"
            folder.mkdir()
            source = str(folder / "counts.parquet")
            made, _, _ = isolated(make_scaled, factor, source)
            prep, _, prep_peak = isolated(prepare, source, str(folder))
            fit, _, fit_process_peak = isolated(fit_predict_drift, str(folder))
            row = {"factor": factor, "counters": made["counters"], "file_rows": made["rows"], **prep,
                   "prepare_peak_rss_mb": round(prep_peak, 1), **fit,
                   "fit_process_peak_rss_mb": round(fit_process_peak, 1),
                   "load_average_1min": round(os.getloadavg()[0], 2)}
            out.append(row)
            print(f"  x{factor}: {made['counters']} counters, {row['train_rows']:,} train rows, fit "
                  f"{row['fit_seconds']}s ({row['fit_cpu_seconds']} CPU-s) peak {row['fit_peak_rss_mb']:.0f} MiB, predict "
                  f"{row['predict_rows_per_s']:,} rows/s, drift {row['drift_seconds']}s "
                  f"({row['drift_status']}), ingest {row['ingest_seconds']}s, enrich {row['enrich_seconds']}s",
                  flush=True)
            for path in folder.glob("*.parquet"):
                path.unlink()
    return {"period": f"2020-09-01 .. {TEST_END} (exclusive); train before {TRAIN_END}",
            "model": "lgbm day-ahead, default hyper-parameters (150 trees x 255 leaves, n_jobs=2)",
            "rows_per_year": {str(n): n * HOURS_PER_YEAR for n in (50, 500, 5_000)},
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "sizes": out}
