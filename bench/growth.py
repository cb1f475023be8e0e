"""How ingest, training, prediction and the drift check scale with the data: k× the real counters.

The real file (52 counters, 2020-09-01 .. 2021-08-09) is grown by replicating every counter with a
new id, a location moved by a few hundred metres and its counts rescaled and jittered (seeded), so
a k-times dataset has k times the counters over the same period — the way a city's network grows.
The sizes: ``SCALES`` (1×, 2×, 4×: `make bench`), or ``python bench/run.py --only growth
--growth-scales 1,2,4,8,16``. For each size, in processes of their own (so each peak RSS is that
step's alone):

- prepare: ingest the file and the Orly weather into a scratch home (validation + the Parquet
  store; the counts' ingest timed apart, with the process's peak RSS right after it), enrich every
  row once (weather + day-ahead history) and save train/test Parquet files (train before
  2021-07-10, test after, as ``bench/accuracy.py``);
- Delta ingest: the same file into a Delta table (``VELOCAST_STORE_URI=delta:<folder>``, a home of
  its own), timed, with its peak RSS and the table's size on disk next to the Parquet store's;
- fit: the default ``lgbm`` day-ahead pipeline on the train rows, twice (the best wall time and the
  best CPU time, user + system of all threads, are reported with every attempt; peak RSS measured
  right after the first ``fit``), then batch prediction rows/s on the test rows (features + model)
  and their RMSE, then the drift check of the weekly cycle (``check_drift`` with this model as
  champion: reference = 20% of the baseline days, current = the last 30 days, both enriched from the
  store; no HTML report);
- Dask fit: a fresh ``LocalCluster`` of ``DASK_WORKERS`` worker processes (1 thread each: the same 2
  cores as the single-process fit's 2 threads) on 127.0.0.1; ``fit_on_dask`` on the canonical
  training rows read from the prepared store (the client holds those, never an enriched frame; the
  workers enrich their shares), timed once (it includes the workers' enrichment, which the
  single-process fit time does not), the peak RSS of each worker and of the client process
  (which also runs the scheduler), the workers' CPU seconds; then its RMSE on the same test rows
  (after the cluster is closed).

Memory: each step's peak is estimated before it runs (``MEMORY_MODEL``, and a line through the
peaks this run measured at smaller sizes, whichever is higher); a step whose process (for the Dask
fit: the client and all workers together, they run at once) would exceed ``--growth-memory-gib``
(default 20 GiB) is skipped with the reason recorded instead of crashing the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REAL_COUNTS, REAL_WEATHER, isolated

SCALES = (1, 2, 4)  # `make bench`: ~10-20 minutes; with 8 and 16 about an hour, ~17 GiB at the peak (Dask)
TRAIN_END = "2021-07-10"
TEST_END = "2021-08-10"
SEED = 2021
HOURS_PER_YEAR = 8_760
FIT_REPEATS = 2
DASK_WORKERS = 2
MODEL_SEED = 42
MEMORY_LIMIT_GIB = 20.0
# Peak RSS (MiB) of each step's process ~ base + MiB per million rows x rows, from the run at 1x and
# 2x of 2026-11-30 (rounded up); the rows: those of the file (prepare, Delta ingest) or trained on (fit,
# Dask client), or one Dask worker's share of the train rows. At 16x (6.8 M rows, 6.1 M train rows):
# prepare ~13 GiB, Delta ingest ~8.5 GiB, fit ~10 GiB, Dask ~6.5 GiB client + 2 x ~5 GiB workers.
MEMORY_MODEL: dict[str, tuple[float, float]] = {
    "prepare": (500.0, 1_900.0),
    "delta_ingest": (300.0, 1_250.0),
    "fit": (350.0, 1_650.0),
    "dask_client": (400.0, 1_000.0),
    "dask_worker": (300.0, 1_600.0),
}


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


def _store_mb(path: Path) -> float:
    """Size on disk (MiB) of the files under ``path``."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def _peak_rss_mb() -> float:
    from velocast.lifecycle.training.distributed import process_peak_rss_mb

    return process_peak_rss_mb()


def prepare(source: str, folder: str) -> dict[str, Any]:
    """Ingest + enrich once in a scratch home; save train/test Parquet; time each step."""
    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    os.environ.pop("VELOCAST_STORE_URI", None)  # the Parquet store under the home
    from velocast.data import store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.inputs import enrich

    started = time.perf_counter()
    report = ingest_file(source)
    counts_seconds = time.perf_counter() - started
    ingest_peak_mb = _peak_rss_mb()
    ingest_weather(REAL_WEATHER)
    ingest_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = store.query_counts(end=TEST_END)
    enriched = enrich(rows, weather="observed")
    enrich_seconds = time.perf_counter() - started
    local = enriched["timestamp"].dt.tz_localize(None)
    cut = np.datetime64(TRAIN_END)
    train = local < cut
    enriched[train].to_parquet(Path(folder) / "train.parquet")
    enriched[~train].to_parquet(Path(folder) / "test.parquet")
    return {"stored_rows": len(rows), "ingest_seconds": round(ingest_seconds, 1),
            "ingest_counts_seconds": round(counts_seconds, 1), "ingest_counts_added": report.added,
            "ingest_peak_rss_mb": round(ingest_peak_mb, 1),
            "parquet_store_mb": _store_mb(Path(folder) / "home" / "store" / "counts"),
            "enrich_seconds": round(enrich_seconds, 1), "prepared_train_rows": int(train.sum())}


def ingest_delta(source: str, folder: str) -> dict[str, Any]:
    """The same file into an empty Delta table (a home of its own): time, rows added, size on disk."""
    table = Path(folder) / "delta"
    os.environ["VELOCAST_HOME"] = str(Path(folder) / "delta-home")
    os.environ["VELOCAST_STORE_URI"] = f"delta:{table}"
    from velocast.data import store
    from velocast.data.ingest import ingest_file

    started = time.perf_counter()
    report = ingest_file(source)
    seconds = time.perf_counter() - started
    if store.backend().kind != "delta":  # the figures must be the Delta store's
        raise RuntimeError(f"expected the Delta store, got {store.backend().kind}")
    return {"delta_ingest_seconds": round(seconds, 1), "delta_ingest_added": report.added,
            "delta_store_mb": _store_mb(table)}


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (LightGBM uses two): less sensitive than
    wall time to other work on the machine."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rmse(predicted: Any, actual: Any) -> float:
    errors = np.asarray(predicted, float) - np.asarray(actual, float)
    return float(np.sqrt(np.mean(errors ** 2)))


def fit_predict_drift(folder: str) -> dict[str, Any]:
    """Fit lgbm day-ahead, then batch prediction (and its RMSE) and the drift check with it as champion."""
    import pandas as pd

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    os.environ.pop("VELOCAST_STORE_URI", None)
    from velocast.data import store
    from velocast.lifecycle.decisions import monitor
    from velocast.lifecycle.serving.predict import LoadedModel
    from velocast.models import build_pipeline, predict_frame

    train = pd.read_parquet(Path(folder) / "train.parquet")
    fit_times, fit_cpu = [], []
    for attempt in range(FIT_REPEATS):  # the best of a few: other work on the machine only adds time
        pipeline = build_pipeline("lgbm", None, "day-ahead", seed=MODEL_SEED)
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        pipeline.fit(train, train["bike_count"].to_numpy())
        fit_times.append(round(time.perf_counter() - started, 1))
        fit_cpu.append(round(_cpu_seconds() - cpu_before, 1))
        if attempt == 0:
            fit_peak_mb = _peak_rss_mb()
    train_rows = len(train)
    del train

    test = pd.read_parquet(Path(folder) / "test.parquet")
    predict_frame(pipeline, test.head(1000))  # warm-up
    started = time.perf_counter()
    predicted = predict_frame(pipeline, test)
    predict_seconds = time.perf_counter() - started
    rmse = _rmse(predicted["prediction"], test["bike_count"])

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
            "predict_rows_per_s": round(len(test) / predict_seconds), "single_rmse": round(rmse, 3),
            "drift_reference_rows": len(reference), "drift_current_rows": len(current),
            "drift_seconds": round(drift_seconds, 2), "drift_status": check.report.status}


def fit_dask(folder: str, n_workers: int = DASK_WORKERS) -> dict[str, Any]:
    """lgbm day-ahead on a fresh local Dask cluster from the canonical train rows; its RMSE on the test rows.

    Runs in a process of its own (``isolated``): its peak RSS is the client's (with the scheduler,
    which runs in it); the workers are processes of the cluster, each measured by ``worker_peak_rss_mb``.
    The cluster starts before the rows are read; the client never holds an enriched frame (the
    test rows are read after the cluster is closed and the training rows dropped).
    """
    import gc

    import pandas as pd
    from distributed import Client, LocalCluster

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    os.environ.pop("VELOCAST_STORE_URI", None)
    from velocast.config import get_settings
    from velocast.data import store
    from velocast.lifecycle.training.distributed import fit_on_dask, worker_peak_rss_mb
    from velocast.models import predict_frame

    settings = get_settings()
    started = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(n_workers, timeout=120)
        start_seconds = time.perf_counter() - started
        workers = client.scheduler_info(n_workers=-1)["workers"]
        limits = sorted(round(w.get("memory_limit", 0) / 2**20) for w in workers.values())
        idle_mb = worker_peak_rss_mb(client)
        rows = store.query_counts(end=TRAIN_END, settings=settings)  # canonical: identity, time, count
        train_rows = len(rows)
        cpu_before = client.run(_cpu_seconds)
        client_cpu_before = _cpu_seconds()
        started = time.perf_counter()
        pipeline = fit_on_dask("lgbm", "day-ahead", None, rows, MODEL_SEED, settings, client)
        fit_seconds = time.perf_counter() - started
        client_cpu = _cpu_seconds() - client_cpu_before
        cpu_after = client.run(_cpu_seconds)
        worker_peaks = worker_peak_rss_mb(client)
        client_peak_mb = _peak_rss_mb()
    del rows
    gc.collect()
    test = pd.read_parquet(Path(folder) / "test.parquet")
    rmse = _rmse(predict_frame(pipeline, test)["prediction"], test["bike_count"])
    return {"dask_workers": n_workers, "dask_train_rows": train_rows,
            "dask_cluster_start_seconds": round(start_seconds, 1), "dask_fit_seconds": round(fit_seconds, 1),
            "dask_worker_cpu_seconds": round(sum(cpu_after[a] - cpu_before.get(a, 0.0) for a in cpu_after), 1),
            "dask_client_cpu_seconds": round(client_cpu, 1),
            "dask_worker_peak_rss_mb": [worker_peaks[a] for a in sorted(worker_peaks)],
            "dask_worker_idle_rss_mb": [idle_mb[a] for a in sorted(idle_mb)],
            "dask_worker_memory_limit_mb": limits,
            "dask_client_peak_rss_mb": round(client_peak_mb, 1), "dask_rmse": round(rmse, 3)}


def _estimate(step: str, rows: int, measured: dict[str, list[tuple[int, float]]]) -> float:
    """Peak RSS (MiB) expected of ``step`` at ``rows``: ``MEMORY_MODEL``, or the line through the two
    largest sizes measured so far in this run (through one, with the model's slope), if higher."""
    base, per_million = MEMORY_MODEL[step]
    estimate = base + per_million * rows / 1e6
    points = sorted(measured.get(step, []))
    if len(points) >= 2:
        (r0, p0), (r1, p1) = points[-2:]
        slope = max((p1 - p0) / (r1 - r0), 0.0) if r1 > r0 else per_million / 1e6
        estimate = max(estimate, p1 + slope * (rows - r1))
    elif points:
        r1, p1 = points[-1]
        estimate = max(estimate, p1 + per_million * (rows - r1) / 1e6)
    return round(estimate)


def _too_big(estimate_mb: float, limit_gib: float, what: str) -> str | None:
    if estimate_mb <= limit_gib * 1024:
        return None
    return (f"{what} would need ~{estimate_mb / 1024:.1f} GiB (estimated), over the {limit_gib:g} GiB "
            f"limit (--growth-memory-gib)")


def _guarded(row: dict[str, Any], step: str, fn: Any, *args: Any) -> tuple[Any, float] | None:
    """``isolated(fn, *args)`` -> (result, peak RSS MiB); a failure is recorded in ``row`` instead."""
    print(f"  x{row['factor']}: {step} ...", flush=True)
    try:
        result, wall, peak = isolated(fn, *args)
    except RuntimeError as exc:
        row.setdefault("failed", {})[step] = str(exc)[-600:]
        print(f"  x{row['factor']}: {step} failed: {exc}", flush=True)
        return None
    row.setdefault("step_wall_seconds", {})[step] = round(wall, 1)
    return result, peak


def run(scales: tuple[int, ...] = SCALES, memory_limit_gib: float = MEMORY_LIMIT_GIB,
        dask_workers: int = DASK_WORKERS) -> dict[str, Any]:
    out = []
    measured: dict[str, list[tuple[int, float]]] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="velocast-bench-growth-") as tmp:
        for factor in scales:
            folder = Path(tmp) / f"x{factor}"
            folder.mkdir()
            source = str(folder / "counts.parquet")
            made, _, _ = isolated(make_scaled, factor, source)
            row: dict[str, Any] = {"factor": factor, "counters": made["counters"], "file_rows": made["rows"]}
            estimates = row["memory_estimates_mb"] = {}
            skipped: dict[str, str] = {}

            estimates["prepare"] = _estimate("prepare", made["rows"], measured)
            reason = _too_big(estimates["prepare"], memory_limit_gib, "ingest + enrichment")
            prep = None
            if reason:
                skipped["prepare"] = reason
            elif (done := _guarded(row, "prepare", prepare, source, str(folder))) is not None:
                prep = done[0]
                row.update(prep, prepare_peak_rss_mb=round(done[1], 1))
                measured.setdefault("prepare", []).append((prep["stored_rows"], done[1]))
            if prep is None:  # the fits need its store and train/test files
                skipped["fit"] = skipped["dask_fit"] = "no prepared rows (prepare " + (
                    "skipped)" if "prepare" in skipped else "failed)")

            estimates["delta_ingest"] = _estimate("delta_ingest", made["rows"], measured)
            reason = _too_big(estimates["delta_ingest"], memory_limit_gib, "the Delta ingest")
            if reason:
                skipped["delta_ingest"] = reason
            elif (done := _guarded(row, "delta_ingest", ingest_delta, source, str(folder))) is not None:
                row.update(done[0], delta_ingest_peak_rss_mb=round(done[1], 1))
                measured.setdefault("delta_ingest", []).append((made["rows"], done[1]))
            shutil.rmtree(folder / "delta", ignore_errors=True)
            shutil.rmtree(folder / "delta-home", ignore_errors=True)

            if prep is not None:
                train_rows = prep["prepared_train_rows"]
                estimates["fit"] = _estimate("fit", train_rows, measured)
                reason = _too_big(estimates["fit"], memory_limit_gib, "the single-process fit")
                if reason:
                    skipped["fit"] = reason
                elif (done := _guarded(row, "fit", fit_predict_drift, str(folder))) is not None:
                    row.update(done[0], fit_process_peak_rss_mb=round(done[1], 1))
                    measured.setdefault("fit", []).append((train_rows, done[1]))

                share = -(-train_rows // dask_workers)
                client_mb = _estimate("dask_client", train_rows, measured)
                worker_mb = _estimate("dask_worker", share, measured)
                estimates["dask_client"], estimates["dask_worker"] = client_mb, worker_mb
                estimates["dask_total"] = client_mb + dask_workers * worker_mb
                reason = _too_big(estimates["dask_total"], memory_limit_gib,
                                  f"the Dask fit (client + {dask_workers} workers at once)")
                if reason:
                    skipped["dask_fit"] = reason
                elif (done := _guarded(row, "dask_fit", fit_dask, str(folder), dask_workers)) is not None:
                    dask = done[0]
                    row.update(dask, dask_process_peak_rss_mb=round(done[1], 1))
                    measured.setdefault("dask_client", []).append((train_rows, done[1]))
                    measured.setdefault("dask_worker", []).append((share, max(dask["dask_worker_peak_rss_mb"])))
                    if row.get("single_rmse"):
                        row["dask_rmse_ratio"] = round(dask["dask_rmse"] / row["single_rmse"], 4)
            if skipped:
                row["skipped"] = skipped
            row["load_average_1min"] = round(os.getloadavg()[0], 2)
            out.append(row)
            _print_size(row)
            for path in folder.glob("*.parquet"):
                path.unlink()
            shutil.rmtree(folder / "home", ignore_errors=True)
    from velocast.models.lgbm import DEFAULTS

    return {"period": f"2020-09-01 .. {TEST_END} (exclusive); train before {TRAIN_END}",
            "model": (f"lgbm day-ahead, default hyper-parameters ({DEFAULTS['n_estimators']} trees x "
                      f"{DEFAULTS['num_leaves']} leaves, n_jobs=2)"),
            # libgomp's default (unset) spins at every parallel region's barrier: on a machine busy with
            # other work a 2-thread LightGBM fit ran ~40x slower than with OMP_WAIT_POLICY=passive
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "dask": f"LocalCluster on 127.0.0.1, {dask_workers} worker processes x 1 thread, restarted per size; "
                    f"fit_on_dask from the canonical train rows (the workers enrich them)",
            "memory_limit_gib": memory_limit_gib,
            "rows_per_year": {str(n): n * HOURS_PER_YEAR for n in (50, 500, 5_000)},
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "sizes": out}


def _print_size(row: dict[str, Any]) -> None:
    parts = [f"  x{row['factor']}: {row['counters']} counters"]
    if "train_rows" in row:
        parts.append(f"{row['train_rows']:,} train rows, fit {row['fit_seconds']}s ({row['fit_cpu_seconds']} CPU-s) "
                     f"peak {row['fit_peak_rss_mb']:.0f} MiB, predict {row['predict_rows_per_s']:,} rows/s, "
                     f"RMSE {row['single_rmse']}, drift {row['drift_seconds']}s ({row['drift_status']})")
    if "ingest_seconds" in row:
        parts.append(f"ingest {row['ingest_seconds']}s (counts {row['ingest_counts_seconds']}s), "
                     f"enrich {row['enrich_seconds']}s")
    if "delta_ingest_seconds" in row:
        parts.append(f"Delta ingest {row['delta_ingest_seconds']}s peak {row['delta_ingest_peak_rss_mb']:.0f} MiB")
    if "dask_fit_seconds" in row:
        parts.append(f"Dask fit {row['dask_fit_seconds']}s, workers peak "
                     f"{'/'.join(f'{p:.0f}' for p in row['dask_worker_peak_rss_mb'])} MiB, client peak "
                     f"{row['dask_client_peak_rss_mb']:.0f} MiB, RMSE {row['dask_rmse']}")
    for step, reason in row.get("skipped", {}).items():
        parts.append(f"{step} skipped: {reason}")
    print(", ".join(parts), flush=True)
