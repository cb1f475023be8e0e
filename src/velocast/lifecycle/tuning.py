"""Optuna tuning over time-series cross-validation folds made of whole, ordered days.

Fold k trains on the first k blocks of days and validates on block k+1 (expanding window), so a
trial never validates on days earlier than its training rows. Every trial is a nested MLflow run.

A study may live in a shared storage (``postgresql://…``) so several processes tune it together:
with ``n_workers > 1`` :func:`tune` writes the training frame once to a temporary Parquet file,
starts that many worker processes (``spawn``), and each opens the same study
(``optuna.load_study``), runs its share of the trials and logs each one as a child of the
parent MLflow run (tag ``mlflow.parentRunId``). The parent waits for all of them, then reads the
best parameters from the study. Every trial records the pid of the process that ran it
(user attribute ``worker_pid``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd

from velocast.config import database_url
from velocast.data.splits import paris_day
from velocast.lifecycle.scoring import score
from velocast.models import build_pipeline, get_spec

log = logging.getLogger(__name__)


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    metric: str
    n_trials: int
    study_name: str
    n_workers: int = 1


def time_series_folds(frame: pd.DataFrame, n_folds: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train index, validation index) pairs over whole days, in time order."""
    days = np.asarray(paris_day(frame["timestamp"]))
    unique = np.array(sorted(set(days)))
    if len(unique) < n_folds + 1:
        raise ValueError(f"time-series CV needs at least {n_folds + 1} days, got {len(unique)}")
    blocks = np.array_split(unique, n_folds + 1)
    folds = []
    for k in range(1, n_folds + 1):
        train_days = np.concatenate(blocks[:k])
        val_days = blocks[k]
        folds.append((np.flatnonzero(np.isin(days, train_days)), np.flatnonzero(np.isin(days, val_days))))
    return folds


class _Objective:
    """Mean CV score of one trial's parameters; logged as a child run of ``parent_run_id``."""

    def __init__(self, model_type: str, train: pd.DataFrame, horizon: str, n_folds: int, seed: int,
                 metric: str, log_to_mlflow: bool, parent_run_id: str | None = None,
                 experiment_id: str | None = None, worker: int | None = None):
        self.model_type, self.train, self.horizon, self.seed, self.metric = model_type, train, horizon, seed, metric
        self.folds = time_series_folds(train, n_folds)
        self.y = train["bike_count"].to_numpy(float)
        self.log_to_mlflow, self.parent_run_id, self.experiment_id = log_to_mlflow, parent_run_id, experiment_id
        self.worker = worker

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_pid", os.getpid())
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker)
        params = get_spec(self.model_type).search_space(trial)
        values = []
        for train_idx, val_idx in self.folds:
            pipeline = build_pipeline(self.model_type, params, self.horizon, seed=self.seed)
            pipeline.fit(self.train.iloc[train_idx], self.y[train_idx])
            scored = score(pipeline, self.model_type, self.train.iloc[val_idx])
            values.append(getattr(scored.metrics, self.metric) or 0.0)
        value = float(np.mean(values))
        if self.log_to_mlflow:
            tags = {"optuna_trial": str(trial.number), "optuna_study": trial.study.study_name,
                    "optuna_worker_pid": str(os.getpid())}
            # in the parent process the parent run is active (nested); a worker names it explicitly
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, parent_run_id=self.parent_run_id,
                                  experiment_id=self.experiment_id, tags=tags):
                mlflow.log_params(params)
                mlflow.log_metrics({f"cv_{self.metric}": value,
                                    **{f"fold{i}_{self.metric}": v for i, v in enumerate(values)}})
        return value


@dataclass(frozen=True)
class _WorkerJob:
    """What one tuning worker needs: small values only (the rows travel as a Parquet path)."""

    worker: int
    n_trials: int
    model_type: str
    horizon: str
    frame_path: str
    n_folds: int
    seed: int
    metric: str
    storage: str
    study_name: str
    log_to_mlflow: bool
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None


def _worker_main(job: _WorkerJob) -> int:
    """Entry point of a worker process: run ``job.n_trials`` trials of the shared study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if job.tracking_uri:
        mlflow.set_tracking_uri(job.tracking_uri)
    train = pd.read_parquet(job.frame_path)
    objective = _Objective(job.model_type, train, job.horizon, job.n_folds, job.seed, job.metric, job.log_to_mlflow,
                           job.parent_run_id, job.experiment_id, job.worker)
    # each worker samples with its own seed, so two workers do not propose the same first trials
    study = optuna.load_study(study_name=job.study_name, storage=job.storage,
                              sampler=optuna.samplers.TPESampler(seed=job.seed + job.worker + 1))
    study.optimize(objective, n_trials=job.n_trials)
    log.info("tuning worker %d (pid %d): %d trials done", job.worker, os.getpid(), job.n_trials)
    return job.n_trials


def _shares(n_trials: int, n_workers: int) -> list[int]:
    """``n_trials`` split as evenly as possible over the workers (first ones take the remainder)."""
    base, extra = divmod(n_trials, n_workers)
    return [base + (1 if i < extra else 0) for i in range(n_workers)]


def _run_workers(model_type: str, train: pd.DataFrame, horizon: str, n_trials: int, n_folds: int, seed: int,
                 metric: str, storage: str, study_name: str, log_to_mlflow: bool, n_workers: int) -> None:
    parent = mlflow.active_run() if log_to_mlflow else None
    tracking_uri = mlflow.get_tracking_uri() if log_to_mlflow else None
    with tempfile.TemporaryDirectory(prefix="velocast-tune-") as tmp:
        frame_path = Path(tmp) / "train.parquet"
        train.to_parquet(frame_path, index=False)
        jobs = [_WorkerJob(worker=i, n_trials=share, model_type=model_type, horizon=horizon,
                           frame_path=str(frame_path), n_folds=n_folds, seed=seed, metric=metric, storage=storage,
                           study_name=study_name, log_to_mlflow=log_to_mlflow, tracking_uri=tracking_uri,
                           experiment_id=parent.info.experiment_id if parent else None,
                           parent_run_id=parent.info.run_id if parent else None)
                for i, share in enumerate(_shares(n_trials, n_workers)) if share > 0]
        log.info("tuning %s: %d trials over %d worker processes sharing study %r", model_type, n_trials, len(jobs),
                 study_name)
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker_main, job) for job in jobs]
            errors = []
            for job, future in zip(jobs, futures):
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001 - a worker's exception, or BrokenProcessPool
                    errors.append(f"worker {job.worker}: {type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError(f"distributed tuning of study {study_name!r} failed: {'; '.join(errors)}")


def tune(model_type: str, train: pd.DataFrame, horizon: str, n_trials: int = 20, n_folds: int = 3,
         seed: int = 42, storage: str | None = None, study_name: str | None = None,
         log_to_mlflow: bool = True, n_workers: int = 1) -> TuningResult:
    """Tune ``model_type`` on ``train``: in this process, or over ``n_workers`` processes sharing ``storage``."""
    spec = get_spec(model_type)
    if spec.search_space is None:
        raise ValueError(f"{model_type} has no hyper-parameters to tune")
    check_workers(n_workers, storage)
    storage = database_url(storage) if storage else None
    classification = spec.task == "classification"
    metric = "auc" if classification else "rmse"
    time_series_folds(train, n_folds)  # fail here, not in a worker, when there are too few days
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if classification else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), storage=storage,
                                study_name=study_name, load_if_exists=storage is not None)
    if n_workers == 1:
        parent = mlflow.active_run() if log_to_mlflow else None
        study.optimize(_Objective(model_type, train, horizon, n_folds, seed, metric, log_to_mlflow,
                                  parent.info.run_id if parent else None), n_trials=n_trials)
    else:
        _run_workers(model_type, train, horizon, n_trials, n_folds, seed, metric, storage, study.study_name,
                     log_to_mlflow, n_workers)
        study = optuna.load_study(study_name=study.study_name, storage=storage)
    log.info("tuning %s: best cv %s %.4f with %s", model_type, metric, study.best_value, study.best_params)
    return TuningResult(dict(study.best_params), float(study.best_value), metric, len(study.trials),
                        study.study_name, n_workers)


def check_workers(n_workers: int, storage: str | None) -> None:
    """Several tuning workers need a study storage they all reach (a database, not memory)."""
    if n_workers < 1:
        raise ValueError(f"--n-jobs-workers must be at least 1, got {n_workers}")
    if n_workers > 1 and not storage:
        raise ValueError(f"tuning with {n_workers} worker processes needs --study-storage: a database URL the "
                         "workers share, e.g. postgresql://user@host:5432/optuna")
