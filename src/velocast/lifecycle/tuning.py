"""Optuna tuning over time-series cross-validation folds made of whole, ordered days.

Fold k trains on the first k blocks of days and validates on block k+1 (expanding window), so a
trial never validates on days earlier than its training rows. Every trial is a nested MLflow run.
A study may live in a shared storage (``postgresql://…``) so several worker processes tune it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd

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


def tune(model_type: str, train: pd.DataFrame, horizon: str, n_trials: int = 20, n_folds: int = 3,
         seed: int = 42, storage: str | None = None, study_name: str | None = None,
         log_to_mlflow: bool = True) -> TuningResult:
    spec = get_spec(model_type)
    if spec.search_space is None:
        raise ValueError(f"{model_type} has no hyper-parameters to tune")
    classification = spec.task == "classification"
    metric = "auc" if classification else "rmse"
    folds = time_series_folds(train, n_folds)
    y = train["bike_count"].to_numpy(float)

    def objective(trial: optuna.Trial) -> float:
        params = spec.search_space(trial)
        values = []
        for train_idx, val_idx in folds:
            pipeline = build_pipeline(model_type, params, horizon, seed=seed)
            pipeline.fit(train.iloc[train_idx], y[train_idx])
            scored = score(pipeline, model_type, train.iloc[val_idx])
            values.append(getattr(scored.metrics, metric) or 0.0)
        value = float(np.mean(values))
        if log_to_mlflow:
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
                mlflow.log_params(params)
                mlflow.log_metrics({f"cv_{metric}": value, **{f"fold{i}_{metric}": v for i, v in enumerate(values)}})
                mlflow.set_tag("optuna_trial", str(trial.number))
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if classification else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), storage=storage,
                                study_name=study_name, load_if_exists=storage is not None)
    study.optimize(objective, n_trials=n_trials)
    log.info("tuning %s: best cv %s %.4f with %s", model_type, metric, study.best_value, study.best_params)
    return TuningResult(dict(study.best_params), float(study.best_value), metric, len(study.trials),
                        study.study_name)
