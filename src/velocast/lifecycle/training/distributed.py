"""Training LightGBM on a Dask cluster (``velocast train --backend dask --scheduler tcp://…``).

The work is split where the memory is:

- the **client** holds the canonical training rows (identity, time, count), fits the
  ``FeatureBuilder``'s levels (per counter and hour of the week) and the out-of-fold levels of each
  week fold — small tables it sends to the workers;
- the rows are cut by Paris month, each month split at random (seeded) over the workers: every
  worker holds a share of every month and counter, which matters because in data-parallel LightGBM
  each feature's bins are found by one worker on its own rows. Each **worker** enriches its shares
  (day-ahead history from the store plus the month's training counts and those of the 29 days
  before it, observed weather: the big part, ~1.6 GiB per million rows), applies the fitted
  features and out-of-fold levels, and keeps the result in its memory;
- LightGBM's own Dask interface (``lightgbm.DaskLGBMRegressor``, data-parallel trees: each worker
  builds histograms of its rows, the histograms are summed over the network) trains the
  with-weather and the no-weather sibling on them.

Both boosters come back as plain ``LGBMRegressor`` objects (``to_local()``), wrapped exactly as a
single-process fit wraps them (``LGBMCountRegressor`` inside ``WeatherFallback`` inside ``ConformalRegressor``, after the same
``FeatureBuilder``): the registered pipeline is of the same kind, served and fine-tuned as any
other. A worker's features equal the single-process ones row for row (tested). Workers need the
velocast package and the same store and weather as the client (a Delta store on S3, or a
``VELOCAST_HOME`` mounted at the same path, as in ``deploy/docker-compose.yml``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from velocast.config import Settings, redact
from velocast.data.store_common import month_of
from velocast.errors import DependencyUnavailable
from velocast.models import build_pipeline
from velocast.models.intervals import with_intervals
from velocast.models.lgbm import LGBMCountRegressor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "local", "dask")
DASK_MODEL_TYPES = ("lgbm",)
TARGET = "__log1p_count__"
HISTORY_COLUMNS = ["counter_id", "timestamp", "bike_count"]


def resolve_backend(backend: str, model_type: str, scheduler: str | None, *, model_test: bool = False,
                    hyperopt: bool = False, continuing: bool = False) -> str:
    """``local`` or ``dask`` for this training; a clear error when ``dask`` cannot be used.

    ``auto``: Dask when a scheduler is configured (``VELOCAST_DASK_SCHEDULER``) and the training is a
    full LightGBM fit (not a 1,000-row test, not tuning, not a continued champion); else local.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    usable = model_type in DASK_MODEL_TYPES and not hyperopt and not continuing
    if backend == "auto":
        return "dask" if scheduler and usable and not model_test else "local"
    if backend == "local":
        return "local"
    if not scheduler:
        raise ValueError("--backend dask needs a scheduler: --scheduler tcp://host:8786 or VELOCAST_DASK_SCHEDULER")
    if model_type not in DASK_MODEL_TYPES:
        raise ValueError(f"--backend dask trains {', '.join(DASK_MODEL_TYPES)} only, not {model_type}")
    if hyperopt:
        raise ValueError("--backend dask does not tune: run --hyperopt locally (or with --n-jobs-workers) first")
    if continuing:
        raise ValueError("the 'continue' fine-tuning strategy runs locally (it extends the champion's trees)")
    return "dask"


@contextmanager
def connect(scheduler: str, timeout: float) -> Iterator[Any]:
    """A client of the scheduler with at least one worker, within ``timeout`` seconds each.

    An unreachable scheduler or one without workers: ``DependencyUnavailable("dask scheduler", …)``.
    """
    from distributed import Client

    where = redact(scheduler)
    try:
        client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise DependencyUnavailable("dask scheduler", f"{where}: {exc}") from exc
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise DependencyUnavailable("dask scheduler", f"{where}: no worker joined within {timeout:g} s") from exc
        yield client
    finally:
        client.close()


def month_partitions(rows: pd.DataFrame, slots: int = 1, seed: int = 42) -> list[tuple[int, pd.DataFrame, pd.DataFrame]]:
    """(slot, rows, history) per Paris month and slot: each month's rows split at random over ``slots``.

    Every slot thus holds a seeded random share of every month and every counter: in data-parallel
    LightGBM each feature's bins are found by one worker on its own rows, so each worker's rows must
    look like the whole (months dealt whole gave bins, and RMSE, that moved by 4% with the placement).
    ``history``: the training counts from the history window before the month to its end, the
    day-ahead history the store may not hold (rows of ``--data`` or a posted window are not ingested);
    a single-process fit gets them from the whole training frame.
    """
    from velocast.lifecycle.inputs import history_start

    months = month_of(rows["timestamp"]).to_numpy()
    shares = np.random.default_rng(seed).permutation(np.arange(len(rows)) % slots)
    out = []
    for month in sorted(set(months)):
        in_month = months == month
        part = rows[in_month]
        window = (rows["timestamp"] >= history_start(part["timestamp"])) & (rows["timestamp"] <= part["timestamp"].max())
        history = rows.loc[window, HISTORY_COLUMNS].reset_index(drop=True)
        for slot in range(slots):
            share = rows[in_month & (shares == slot)]
            if len(share):
                out.append((slot, share.reset_index(drop=True), history))
    return out


def worker_features(rows: pd.DataFrame, history: pd.DataFrame, features: Any, folds: list[Any],
                    settings: Settings) -> pd.DataFrame:
    """On a worker: history + observed weather, the fitted features, out-of-fold levels, the target."""
    from velocast.lifecycle.inputs import build_inputs

    enriched = build_inputs(rows, settings, extra_history=history).frame("observed")  # training: observed weather
    out = features.with_out_of_fold_levels(features.transform(enriched), enriched, folds)
    out[TARGET] = np.log1p(np.clip(enriched["bike_count"].to_numpy(float), 0, None))
    return out


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _deal(client: Any, partitions: list[tuple[int, pd.DataFrame, pd.DataFrame]]) -> list[tuple[Any, Any]]:
    """Scatter each partition to the worker of its slot (workers in a fixed order)."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    return [tuple(client.scatter([rows, history], workers=[workers[slot]])) for slot, rows, history in partitions]


def _local_estimator(dask_model: Any, params: dict[str, Any]) -> LGBMCountRegressor:
    """The trained booster as the ``LGBMCountRegressor`` a single-process fit would have made."""
    local = dask_model.to_local()
    local.set_params(n_jobs=params["n_jobs"])  # predictions use the serving process's threads
    estimator = LGBMCountRegressor(**params)
    estimator.booster_model_ = local
    estimator.feature_importances_ = local.booster_.feature_importance("gain")
    return estimator


def fit_on_dask(model_type: str, horizon: str, hyperparams: dict[str, Any] | None, rows: pd.DataFrame, seed: int,
                settings: Settings, client: Any) -> Pipeline:
    """Fit the ``model_type`` pipeline on ``rows`` (canonical, labelled) over ``client``'s cluster.

    See the module docstring; ``client`` comes from :func:`connect` (or any ``distributed.Client``).
    """
    import dask.dataframe as dd
    from lightgbm import DaskLGBMRegressor

    if model_type not in DASK_MODEL_TYPES:
        raise ValueError(f"the Dask backend trains {', '.join(DASK_MODEL_TYPES)} only, not {model_type}")
    if rows.empty:
        raise ValueError("no training rows to fit on")
    template = build_pipeline(model_type, hyperparams, horizon, seed=seed)
    features = template.named_steps["features"]
    fallback = template.named_steps["model"].estimator  # inside the prediction intervals' wrapper
    params = fallback.estimator.get_params()
    y = rows["bike_count"].to_numpy(float)
    features.fit(rows, y)
    folds = features.fold_levels(rows, y)
    settings = settings.model_copy(update={"home": settings.home.resolve()})  # workers run elsewhere
    workers = client.scheduler_info(n_workers=-1)["workers"]
    partitions = month_partitions(rows, len(workers), seed)
    log.info("dask: %d training rows in %d partitions (month x worker) over %d workers", len(rows), len(partitions),
             len(workers))
    futures = [client.submit(worker_features, part, history, features, folds, settings, pure=False)
               for part, history in _deal(client, partitions)]
    try:
        meta = client.submit(_empty_like, futures[0]).result()
        frame = dd.from_delayed(futures, meta=meta, verify_meta=False)
        columns = list(features.feature_names_out_)
        without = [c for c in columns if c not in fallback.weather_columns]
        booster_params = {k: v for k, v in params.items() if k != "n_jobs"}  # each worker uses its own threads
        siblings = {}
        # LightGBM's Dask code looks the client up as the current one
        with client.as_current(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            for name, used in (("with_weather", columns), ("without_weather", without)):
                model = DaskLGBMRegressor(client=client, verbose=-1, **booster_params)
                model.fit(frame[used], frame[TARGET])
                siblings[name] = _local_estimator(model, params)
    finally:
        client.cancel(futures)
    fallback.with_weather_, fallback.without_weather_ = siblings["with_weather"], siblings["without_weather"]
    fallback._copy_attributes()
    # the same kind of pipeline as a single-process fit: intervals calibrated afterwards (``calibrate``)
    return Pipeline([("features", features), ("model", with_intervals(fallback))])


def process_peak_rss_mb() -> float:
    """Peak resident memory (MiB) of this process: ``VmHWM`` (``ru_maxrss`` where /proc is missing).

    ``VmHWM`` starts afresh at ``exec``; ``ru_maxrss`` does not (Linux carries it over from the
    forking process), so a Dask worker started by a nanny inside a client holding rows would report
    the client's peak as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peak_rss_mb(client: Any) -> dict[str, float]:
    """Peak resident memory (MiB) of each worker process so far."""
    return {address: round(value, 1) for address, value in client.run(process_peak_rss_mb).items()}


__all__ = ["BACKENDS", "DASK_MODEL_TYPES", "connect", "fit_on_dask", "month_partitions", "process_peak_rss_mb",
           "resolve_backend", "worker_features", "worker_peak_rss_mb"]
