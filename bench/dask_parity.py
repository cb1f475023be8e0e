"""Is a Dask-trained LightGBM as accurate as a single-process one? Both fitted on the same rows, seed by seed.

The real file is ingested into a scratch home (with the Orly weather); the default ``lgbm`` day-ahead
pipeline is fitted on the days before 2021-07-10 (sensor outages left out, as a training does), once
in this process and once on a 2-worker ``LocalCluster`` (``fit_on_dask``), for each seed (row and
column bagging on, as by default); both are scored as served (no observed weather of the predicted
days) on 2021-07-10 .. 2021-08-09, as ``bench/accuracy.py`` scores the champion.

One pair of fits is not a measurement: the seed alone moves a single-process fit by about 0.5% RMSE
on this month, and a Dask fit differs from a local one as a seed does (each feature's bins are found
by one worker on its share of the rows; the histograms are summed in another order).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REAL_COUNTS, REAL_WEATHER

SEEDS = (1, 2, 3)
TRAIN_END = "2021-07-10"
TEST_END = "2021-08-10"


def run(seeds: tuple[int, ...] = SEEDS, workers: int = 2) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="velocast-bench-dask-") as tmp:
        os.environ["VELOCAST_HOME"] = str(Path(tmp) / "home")
        from velocast.config import Settings
        from velocast.data import store
        from velocast.data.ingest import ingest_file
        from velocast.data.weather import ingest_weather
        from velocast.lifecycle.inputs import build_inputs
        from velocast.lifecycle.serving.scoring import ServedRows
        from velocast.lifecycle.training.datasets import training_rows
        from velocast.lifecycle.training.distributed import fit_on_dask
        from velocast.models import build_pipeline

        settings = Settings(home=Path(tmp) / "home")
        ingest_file(REAL_COUNTS, settings=settings)
        ingest_weather(REAL_WEATHER, settings=settings)
        rows = store.query_counts(end=TEST_END, settings=settings)
        before = (rows["timestamp"].dt.tz_localize(None) < np.datetime64(TRAIN_END)).to_numpy()
        train = training_rows(rows[before].reset_index(drop=True), set(), settings)
        served = ServedRows.build(rows[~before].reset_index(drop=True), settings, weather="without")
        enriched = build_inputs(train, settings).frame("observed")
        y = enriched["bike_count"].to_numpy(float)
        fits = []
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            for seed in seeds:
                started = time.perf_counter()
                local = build_pipeline("lgbm", None, "day-ahead", seed=seed).fit(enriched, y)
                local_seconds = time.perf_counter() - started
                started = time.perf_counter()
                on_dask = fit_on_dask("lgbm", "day-ahead", None, train, seed, settings, client)
                dask_seconds = time.perf_counter() - started
                fit = {"seed": seed, "single_rmse": round(served.score(local).metrics["rmse"], 3),
                       "dask_rmse": round(served.score(on_dask).metrics["rmse"], 3),
                       "single_fit_seconds": round(local_seconds, 1), "dask_fit_seconds": round(dask_seconds, 1)}
                fits.append(fit)
                print(f"  seed {seed}: one process RMSE {fit['single_rmse']} ({fit['single_fit_seconds']} s), "
                      f"Dask RMSE {fit['dask_rmse']} ({fit['dask_fit_seconds']} s)", flush=True)
    single, dask = np.mean([f["single_rmse"] for f in fits]), np.mean([f["dask_rmse"] for f in fits])
    return {"train": f"2020-09-01 .. {TRAIN_END} (exclusive), {len(train):,} rows",
            "test": f"{TRAIN_END} .. {TEST_END} (exclusive), scored as served, {len(served):,} rows",
            "model": "lgbm day-ahead, default hyper-parameters", "workers": workers, "fits": fits,
            "single_mean_rmse": round(float(single), 3), "dask_mean_rmse": round(float(dask), 3),
            "relative_difference": round(float((dask - single) / single), 4)}
