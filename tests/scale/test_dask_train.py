"""Training on a Dask cluster: LightGBM's own Dask interface on a real 2-worker ``LocalCluster``.

The cluster runs on 127.0.0.1 in separate worker processes (``processes=True``): the rows, the
fitted features and the settings travel over the network exactly as to remote workers. The
Dask-trained model is registered, promoted and served through the API like any other, and with the
default hyper-parameters its test_baseline RMSE (as served) is within 2% of single-process fits on
the same rows with the same seeds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.api.conftest import client_for, tidy_records
from tests.conftest import run_cli, subset_rows_since
from tests.scale.conftest import free_port, require_modules
from velocast.cli import EXIT_DEPENDENCY
from velocast.config import Settings
from velocast.errors import DependencyUnavailable
from velocast.features import FeatureBuilder
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.inputs import build_inputs
from velocast.lifecycle.serving.predict import load_model, predict_rows, read_rows_to_predict
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.datasets import load_datasets
from velocast.lifecycle.training.distributed import (
    connect,
    fit_on_dask,
    month_partitions,
    resolve_backend,
    worker_features,
)
from velocast.lifecycle.training.train import train
from velocast.models import build_pipeline
from velocast.models.lgbm import LGBMCountRegressor
from velocast.models.weather_fallback import WeatherFallback
from velocast.tracking.registry import Registry

# Few trees keep the registration test quick; the accuracy test below uses the defaults.
HP = {"n_estimators": 60}
RMSE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A 2-worker Dask cluster (one thread each, separate processes) on 127.0.0.1: its scheduler address."""
    require_modules("dask", "distributed")
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as local:
        yield local.scheduler_address


def test_dask_training_is_registered_and_served(cluster: str, real_home: Path, real_subset_file: Path,
                                                tmp_path: Path) -> None:
    settings = Settings(home=real_home)
    single = train("lgbm", hyperparams=HP, settings=settings, backend="local")
    on_dask = train("lgbm", hyperparams=HP, settings=settings, backend="dask", scheduler=cluster)

    # the same rows, registered as a new version of the same model, the backend recorded
    assert on_dask.rows == single.rows
    assert [r.version for r in Registry(settings).versions("lgbm")] == [single.model_version, on_dask.model_version]
    run = mlflow.get_run(on_dask.run_id)
    assert run.data.params["backend"] == "dask" and mlflow.get_run(single.run_id).data.params["backend"] == "local"
    assert run.data.tags["dask_scheduler"] == cluster

    assert on_dask.metrics_baseline["r2"] > 0.8

    # the same kind of pipeline: FeatureBuilder, then both LightGBM siblings in a WeatherFallback
    loaded = load_model("lgbm", version=on_dask.model_version, settings=settings)
    features, model = loaded.pipeline.named_steps["features"], loaded.pipeline.named_steps["model"].estimator_
    assert isinstance(features, FeatureBuilder) and isinstance(model, WeatherFallback)
    assert loaded.has_intervals  # calibrated by a twin fitted on Dask too
    for sibling in (model.with_weather_, model.without_weather_):
        assert isinstance(sibling, LGBMCountRegressor)
        assert sibling.booster_model_.booster_.num_trees() == HP["n_estimators"]
    assert "temperature_c" not in model.without_weather_.booster_model_.feature_name_

    # promoted (a full model passing the baseline gate) and served by the API's /predict
    promote("lgbm", version=on_dask.model_version, reason="trained on Dask", settings=settings)
    rows = subset_rows_since(real_subset_file, "2021-07-01")
    # the morning rush of one day (06:00-08:59 UTC: 08:00-10:59 in Paris), every counter of the subset
    rows = rows[(rows["date"].dt.strftime("%Y-%m-%d") == "2021-07-06") & rows["date"].dt.hour.between(6, 8)]
    with client_for(real_home) as api:
        response = api.post("/predict", json={"records": tidy_records(rows, with_counts=False), "model_type": "lgbm"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == on_dask.model_version and body["model"]["champion"] is True
    served = np.array([p["prediction"] for p in body["predictions"]])
    # the library's prediction path with the same model gives the same numbers
    request = tmp_path / "request.parquet"
    rows.drop(columns=["bike_count", "log_bike_count"]).to_parquet(request, index=False)
    library = predict_rows(read_rows_to_predict(request, settings).rows, loaded, settings).frame["prediction"]
    np.testing.assert_allclose(served, library.to_numpy(), rtol=1e-6)
    # rush-hour forecasts of the right size: they follow the counts from counter to counter
    assert (served >= 0).all() and served.max() > 30
    assert np.corrcoef(served, rows["bike_count"].to_numpy(float))[0, 1] > 0.7



SEEDS = (1, 2, 3)


def test_dask_fits_are_as_accurate_as_single_process_fits_over_seeds(cluster: str, real_home: Path) -> None:
    """Default hyper-parameters (300 trees, row and column bagging), seeds 1-3: the mean test_baseline
    RMSE as served of the Dask fits is at most 2% above the single-process fits' on the same rows.

    Compared over seeds because one fit is not a measurement: the single-process fits alone move by
    1.7% from seed to seed here (21.58-21.94), and a Dask fit differs from a local one as a seed does
    (each feature's bins are found by one worker on its share of the rows, and the histograms are
    summed in another order). Measured: one process 21.58 / 21.94 / 21.71; Dask, in three runs,
    21.47 / 21.70 / 21.48, 22.13 / 21.58 / 21.20 and 21.22 / 21.26 / 21.17 (which worker gets which
    rank is not fixed).
    """
    from distributed import Client

    settings = Settings(home=real_home)
    datasets = load_datasets("baseline", settings)
    rows = datasets.train.frame
    enriched = build_inputs(rows, settings).frame("observed")  # as a local training builds them
    served = ServedRows.build(datasets.test_baseline.frame, settings, extra_history=datasets.history)
    single, on_dask = [], []
    with Client(cluster, set_as_default=False) as client:
        for seed in SEEDS:
            local = build_pipeline("lgbm", None, "day-ahead", seed=seed).fit(enriched, enriched["bike_count"].to_numpy(float))
            distributed = fit_on_dask("lgbm", "day-ahead", None, rows, seed, settings, client)
            assert distributed.named_steps["model"].estimator.with_weather_.booster_model_.booster_.num_trees() == 300
            single.append(served.score(local).metrics["rmse"])
            on_dask.append(served.score(distributed).metrics["rmse"])
    print(f"test_baseline RMSE as served over seeds {SEEDS}: one process {np.round(single, 3)}, "
          f"Dask {np.round(on_dask, 3)}")
    # as accurate: at most 2% worse (Dask fits have scored up to 2.4% better here: not a failure)
    assert (np.mean(on_dask) - np.mean(single)) / np.mean(single) <= RMSE_TOLERANCE
    assert len(set(np.round(single, 6))) == len(SEEDS)  # the seeds do change the fits


def test_worker_features_equal_the_single_process_ones(real_home: Path) -> None:
    """Each month's random shares enriched apart (with the month's and 29 earlier days' counts) give
    the single-process features, row for row.

    Checked without the counts in the store (``--data`` or a posted window is not ingested): the
    counts sent with each share are then the only history it has.
    """
    settings = Settings(home=real_home)
    rows = load_datasets("baseline", settings).train.frame
    shutil.rmtree(real_home / "store" / "counts")
    y = rows["bike_count"].to_numpy(float)
    expected = build_pipeline("lgbm", HP).named_steps["features"].fit_transform(
        build_inputs(rows, settings).frame("observed"), y)
    expected.index = pd.MultiIndex.from_arrays([rows["timestamp"], rows["counter_id"]])
    features = build_pipeline("lgbm", HP).named_steps["features"]
    features.fit(rows, y)
    folds = features.fold_levels(rows, y)
    partitions = month_partitions(rows, slots=2, seed=42)
    assert [slot for slot, _, _ in partitions] == [0, 1] * 9 and sum(len(p) for _, p, _ in partitions) == len(rows)
    shares = [len(p) for _, p, _ in partitions]
    assert max(shares) - min(shares) < 0.5 * max(shares)  # every month on both workers

    def gathered(history_of: Any) -> pd.DataFrame:
        parts = [worker_features(p, history_of(h), features, folds, settings).set_index(
            pd.MultiIndex.from_arrays([p["timestamp"], p["counter_id"]])) for _, p, h in partitions]
        return pd.concat(parts).loc[expected.index]

    got = gathered(lambda h: h)
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    assert np.allclose(got["__log1p_count__"], np.log1p(y))
    # and the test can fail: without the counts sent along, a share lacks the other share's history
    bare = gathered(lambda h: h.iloc[:0])
    assert not bare[expected.columns].equals(expected)


def test_an_unreachable_scheduler_fails_in_one_line_within_the_timeout(real_home: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_HOME", str(real_home))
    monkeypatch.setenv("VELOCAST_DEPENDENCY_TIMEOUT_SECONDS", "2")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_cli(["train", "--model-type", "lgbm", "--backend", "dask", "--scheduler", address])
    elapsed = time.monotonic() - started
    assert result.exit_code == EXIT_DEPENDENCY, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]  # progress lines, then the error
    assert [line for line in lines if line.startswith("error")] == lines[-1:] == [
        f"error: dask scheduler unreachable: {address}: Timed out trying to connect to {address} after 2 s"]
    assert elapsed < 15
    assert Registry(Settings(home=real_home)).versions("lgbm") == []  # nothing trained, nothing registered


def test_a_scheduler_without_workers_is_unavailable() -> None:
    require_modules("dask", "distributed")
    from distributed import LocalCluster

    expected = r"^dask scheduler unreachable: tcp://127\.0\.0\.1:\d+: no worker joined within 1 s$"
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0") as empty, \
            pytest.raises(DependencyUnavailable, match=expected), connect(empty.scheduler_address, timeout=1):
        pass


@pytest.mark.parametrize(("backend", "model_type", "scheduler", "options", "expected"), [
    ("auto", "lgbm", None, {}, "local"),
    ("auto", "lgbm", "tcp://s:8786", {}, "dask"),
    ("auto", "lgbm", "tcp://s:8786", {"model_test": True}, "local"),
    ("auto", "lgbm", "tcp://s:8786", {"continuing": True}, "local"),
    ("auto", "rf", "tcp://s:8786", {}, "local"),
    ("local", "lgbm", "tcp://s:8786", {}, "local"),
    ("dask", "lgbm", "tcp://s:8786", {"model_test": True}, "dask"),
])
def test_backend_resolution(backend: str, model_type: str, scheduler: str | None, options: dict,
                            expected: str) -> None:
    assert resolve_backend(backend, model_type, scheduler, **options) == expected


@pytest.mark.parametrize(("backend", "model_type", "scheduler", "options", "message"), [
    ("dask", "lgbm", None, {}, "--backend dask needs a scheduler"),
    ("dask", "rf", "tcp://s:8786", {}, "--backend dask trains lgbm only, not rf"),
    ("dask", "lgbm", "tcp://s:8786", {"hyperopt": True}, "--backend dask does not tune"),
    ("dask", "lgbm", "tcp://s:8786", {"continuing": True}, "'continue' fine-tuning strategy runs locally"),
    ("spark", "lgbm", None, {}, "--backend 'spark': expected one of auto, local, dask"),
])
def test_backend_errors_say_what_is_expected(backend: str, model_type: str, scheduler: str | None, options: dict,
                                            message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        resolve_backend(backend, model_type, scheduler, **options)


def test_a_process_peak_memory_is_its_own_not_its_parents() -> None:
    """A worker started from a big process reports its own peak (``VmHWM``), not the inherited ``ru_maxrss``."""
    import subprocess
    import sys

    child = ("import resource; from velocast.lifecycle.training.distributed import process_peak_rss_mb; "
             "print(process_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    parent = ("import subprocess, sys; import numpy as np; big = np.ones(100_000_000); "  # 800 MB touched
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, check=True).stdout)")
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    own, inherited = (float(v) for v in done.stdout.split())
    assert own < 500 and inherited > 700  # the child itself stays small; ru_maxrss carries the parent's 800 MB
