"""Train a model, score it on the fixed test sets, track it in MLflow and summary.json.

One call does it all: datasets → (optional Optuna tuning) → fit → scores on train,
``test_baseline`` and ``test_current`` → MLflow run (params, metrics, inputs, plots, model with
signature) → registered version of ``bike-traffic-<type>`` → summary.json entry. If anything fails
after the version was registered, the version is deleted again: a failed run leaves no
half-registered model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from velocast import __version__
from velocast.config import Settings, get_settings
from velocast.evaluation.reports import feature_importance_figure, regression_report
from velocast.lifecycle.datasets import Datasets, load_datasets
from velocast.lifecycle.inputs import enrich
from velocast.lifecycle.scoring import score
from velocast.models import (
    MODEL_TYPES,
    build_pipeline,
    continue_training,
    feature_importance,
    get_spec,
    registered_name,
    resolve_horizon,
    validate_hyperparams,
)
from velocast.tracking import mlflow_runs
from velocast.tracking.registry import Registry
from velocast.tracking.summary import SummaryEntry

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_type: str
    horizon: str
    env: str
    test_mode: bool
    data_source: str
    run_id: str
    model_uri: str  # artifact location, loadable without a tracking server
    registered_model: str
    model_version: str
    metrics_train: dict[str, Any]
    metrics_baseline: dict[str, Any]
    metrics_current: dict[str, Any] | None
    double_evaluation_enabled: bool
    baseline_regression: bool | None
    hyperparams: dict[str, Any]
    train_seconds: float
    rows: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def registry_uri(self) -> str:
        return f"models:/{self.registered_model}/{self.model_version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "registry_uri": self.registry_uri}


def check_tuning_options(hyperopt: bool, n_workers: int, study_storage: str | None) -> None:
    """Refuse worker counts that cannot work before any data is read."""
    if n_workers == 1:
        return
    from velocast.lifecycle.tuning import check_workers

    if not hyperopt:
        raise ValueError("--n-jobs-workers distributes Optuna tuning: it needs --hyperopt")
    check_workers(n_workers, study_storage)


def _fit(model_type: str, horizon: str, params: dict[str, Any], train_rows: pd.DataFrame, seed: int,
         continue_from: Any | None) -> Any:
    y = train_rows["bike_count"].to_numpy(float)
    if continue_from is not None:
        return continue_training(continue_from, model_type, train_rows, y, params)
    return build_pipeline(model_type, params, horizon, seed=seed).fit(train_rows, y)


def train(model_type: str, data_source: str = "baseline", env: str = "dev", model_test: bool = False,
          horizon: str | None = None, hyperparams: dict[str, Any] | None = None, hyperopt: bool = False,
          n_trials: int = 20, data_path: Path | str | None = None, current_data: pd.DataFrame | None = None,
          seed: int = 42, settings: Settings | None = None, datasets: Datasets | None = None,
          continue_from: Any | None = None, run_name: str | None = None, tags: dict[str, str] | None = None,
          study_storage: str | None = None, study_name: str | None = None, n_workers: int = 1) -> TrainResult:
    """Train one model type end to end and return what was done (see the module docstring).

    With ``hyperopt``, ``n_workers > 1`` tunes over that many processes sharing the Optuna study in
    ``study_storage`` (required then); see :mod:`velocast.lifecycle.tuning`.
    """
    settings = settings or get_settings()
    spec = get_spec(model_type)
    horizon = resolve_horizon(model_type, horizon)
    params = validate_hyperparams(model_type, hyperparams)
    if env not in ("dev", "prod"):
        raise ValueError(f"env must be 'dev' or 'prod', got {env!r}")
    check_tuning_options(hyperopt, n_workers, study_storage)
    datasets = datasets or load_datasets(data_source, settings, data_path, current_data, model_test, seed)
    registry = Registry(settings)
    started = time.perf_counter()
    weather = None
    train_rows = enrich(datasets.train.frame, settings, weather=weather)
    test_b = enrich(datasets.test_baseline.frame, settings, extra_history=datasets.history)
    test_c = (enrich(datasets.test_current.frame, settings, extra_history=datasets.history)
              if datasets.test_current is not None else None)
    registered: Any = None
    with mlflow.start_run(run_name=run_name or f"{model_type}-{data_source}") as run:
        try:
            mlflow.set_tags({"model_type": model_type, "env": env, "test_mode": str(model_test),
                             "horizon": horizon, "data_source": data_source, "velocast_version": __version__,
                             "split_version": str(datasets.split.version if datasets.split else ""),
                             **(tags or {})})
            for ds, context in ((datasets.train, "training"), (datasets.test_baseline, "test_baseline"),
                                (datasets.test_current, "test_current")):
                if ds is not None:
                    mlflow_runs.log_dataset(ds.frame, ds.name, ds.content_hash, ds.source, context)
            if hyperopt:
                from velocast.lifecycle.tuning import tune

                tuned = tune(model_type, train_rows, horizon, n_trials=n_trials, seed=seed,
                             storage=study_storage, study_name=study_name, n_workers=n_workers)
                params = {**tuned.best_params, **params}
                mlflow.log_metric(f"cv_best_{tuned.metric}", tuned.best_value)
                mlflow.set_tags({"optuna_study": tuned.study_name, "optuna_workers": str(tuned.n_workers),
                                 "optuna_trials": str(tuned.n_trials)})
            effective = {**(spec.continue_defaults if continue_from is not None else spec.defaults), **params}
            mlflow.log_params({**{f"hp_{k}": v for k, v in effective.items()}, "horizon": horizon,
                               "data_source": data_source, "train_rows": len(train_rows),
                               "strategy": "continue" if continue_from is not None else "fit", "seed": seed})
            fit_started = time.perf_counter()
            pipeline = _fit(model_type, horizon, params, train_rows, seed, continue_from)
            fit_seconds = time.perf_counter() - fit_started
            mlflow.log_metric("fit_seconds", fit_seconds)

            metrics_train = score(pipeline, model_type, train_rows).metrics.to_dict()
            scored_b = score(pipeline, model_type, test_b)
            metrics_baseline = scored_b.metrics.to_dict()
            metrics_current = score(pipeline, model_type, test_c).metrics.to_dict() if test_c is not None and len(test_c) else None
            mlflow_runs.log_metrics("train", metrics_train)
            mlflow_runs.log_metrics("test_baseline", metrics_baseline)
            if metrics_current:
                mlflow_runs.log_metrics("test_current", metrics_current)
            _log_reports(pipeline, model_type, test_b, scored_b.predictions, run.info.run_id, settings)

            info = mlflow_runs.log_model(pipeline, mlflow_runs.input_example(
                datasets.test_baseline.frame.drop(columns=["bike_count"])), spec.task == "classification")
            model_uri = mlflow_runs.artifact_location(info)
            data_end = str(datasets.train.frame["timestamp"].max().isoformat())
            registered = registry.register(model_type, info.model_uri, run.info.run_id,
                                           tags={"env": env, "test_mode": str(model_test), "horizon": horizon,
                                                 "data_end": data_end}, model_id=info.model_id)
            mlflow.set_tag("registered_version", registered.version)
            baseline_regression = _baseline_regression(spec.task, metrics_baseline, settings)
            entry = _summary_entry(model_type, env, model_test, run.info.run_id, model_uri, registered.version,
                                   horizon, data_source, datasets, metrics_train, metrics_baseline,
                                   metrics_current, baseline_regression)
            registry.summary.append(entry)
        except BaseException:
            if registered is not None:
                log.error("training failed after registration: deleting %s version %s",
                          registered.name, registered.version)
                try:
                    registry.delete_version(model_type, registered.version)
                except Exception:  # the original error matters more
                    log.exception("could not delete the half-registered version")
            raise
    elapsed = time.perf_counter() - started
    log.info("trained %s v%s in %.1fs: test_baseline %s", model_type, registered.version, elapsed, metrics_baseline)
    return TrainResult(
        model_type=model_type, horizon=horizon, env=env, test_mode=model_test, data_source=data_source,
        run_id=run.info.run_id, model_uri=model_uri, registered_model=registered_name(model_type),
        model_version=registered.version, metrics_train=metrics_train, metrics_baseline=metrics_baseline,
        metrics_current=metrics_current, double_evaluation_enabled=metrics_current is not None,
        baseline_regression=baseline_regression, hyperparams=effective, train_seconds=round(fit_seconds, 3),
        rows={"train": len(train_rows), "test_baseline": len(test_b), "test_current": 0 if test_c is None else len(test_c)},
        notes=datasets.notes)


def _baseline_regression(task: str, metrics_baseline: dict[str, Any], settings: Settings) -> bool | None:
    if task != "regression":
        return None
    return bool(metrics_baseline["r2"] < settings.r2_baseline_threshold)


def _log_reports(pipeline: Any, model_type: str, rows: pd.DataFrame, predictions: np.ndarray, run_id: str,
                 settings: Settings) -> None:
    folder = settings.reports_dir / "runs" / run_id
    importance = feature_importance(pipeline)
    if importance is not None:
        figure = feature_importance_figure(importance)
        mlflow_runs.log_figure(figure, "plots/feature_importance.png")
        mlflow_runs.log_frame(importance.rename("importance").to_frame(), "reports/feature_importance.csv")
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / "feature_importance.png", dpi=90, bbox_inches="tight")
    if get_spec(model_type).task != "regression":
        return
    report = regression_report(rows, predictions, "test_baseline")
    for name, figure in report.figures.items():
        mlflow_runs.log_figure(figure, f"plots/{name}.png")
    mlflow_runs.log_frame(report.per_counter, "reports/test_baseline_per_counter.csv")
    mlflow_runs.log_frame(report.per_hour, "reports/test_baseline_per_hour.csv")
    report.write(folder)


def _summary_entry(model_type: str, env: str, test_mode: bool, run_id: str, model_uri: str, version: str,
                   horizon: str, data_source: str, datasets: Datasets, metrics_train: dict[str, Any],
                   metrics_baseline: dict[str, Any], metrics_current: dict[str, Any] | None,
                   baseline_regression: bool | None) -> SummaryEntry:
    current = metrics_current or {}
    return SummaryEntry(
        timestamp=datetime.now(timezone.utc).isoformat(), model_type=model_type, env=env, test_mode=test_mode,
        run_id=run_id, model_uri=model_uri, registered_model=registered_name(model_type), model_version=version,
        horizon=horizon, data_source=data_source, split_version=datasets.split.version if datasets.split else None,
        rmse=metrics_baseline.get("rmse"), mae=metrics_baseline.get("mae"), r2=metrics_baseline.get("r2"),
        double_evaluation_enabled=metrics_current is not None,
        r2_baseline=metrics_baseline.get("r2"), rmse_baseline=metrics_baseline.get("rmse"),
        r2_current=current.get("r2"), rmse_current=current.get("rmse"),
        baseline_regression=baseline_regression, is_champion=False, train_metrics=metrics_train,
        extra_metrics={k: v for k, v in metrics_baseline.items() if k not in ("rmse", "mae", "r2")},
    )


def train_many(model_types: list[str] | tuple[str, ...], **kwargs: Any) -> list[TrainResult]:
    """Train several types on the same datasets (``all`` = every type whose extras are installed)."""
    settings = kwargs.pop("settings", None) or get_settings()
    check_tuning_options(kwargs.get("hyperopt", False), kwargs.get("n_workers", 1), kwargs.get("study_storage"))
    if not kwargs.get("datasets"):
        kwargs["datasets"] = load_datasets(kwargs.get("data_source", "baseline"), settings,
                                           kwargs.pop("data_path", None), kwargs.pop("current_data", None),
                                           kwargs.get("model_test", False), kwargs.get("seed", 42))
    results = []
    for model_type in model_types:
        if model_type == "nn" and not _has_torch():
            log.warning("skipping nn: PyTorch is not installed (pip install 'velocast[nn]')")
            continue
        results.append(train(model_type, settings=settings, **kwargs))
    return results


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


ALL = MODEL_TYPES
