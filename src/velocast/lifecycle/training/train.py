"""Train a model, score it on the fixed test sets, track it in MLflow and summary.json.

One call does it all: datasets → (optional Optuna tuning) → fit → prediction intervals
calibrated → scores on train, ``test_baseline`` and ``test_current`` → MLflow run (params,
metrics, inputs, plots, model with signature) → registered version of ``bike-traffic-<type>`` →
summary.json entry. If anything fails after the version was registered, the version is deleted
again: a failed run leaves no half-registered model.

Prediction intervals (regression models, ``velocast.models.intervals``) are calibrated on the
latest ``VELOCAST_INTERVAL_CALIBRATION_DAYS`` whole days of the training period (at most a fifth
of its days; never a test day): a *twin* of the model is fitted on the days before them and
forecasts them as served (both weather variants); its conformity scores calibrate the intervals,
which are carried onto the model fitted on every training day, the one served. The twin stands to
its calibration days as the served model stands to the days after its training (the same
staleness, the same as-served inputs), so the twin's conformal guarantee is what the served model
is calibrated with; the served model also learned from the calibration days, so its errors are
if anything smaller (coverage at or above nominal). Fitting the served model without those days
would give the exact guarantee but a worse model: on July 2021, leaving out the last 28 days of
training raised the RMSE from 29.3 to 35.6. The weekly cycle then recalibrates the served model
itself on newer days it never saw (``velocast.lifecycle.decisions.recalibrate``).

A process killed outright (kill -9, OOM, power loss) runs no clean-up, so each training attempt
also holds a liveness lock (``locks/training/<attempt>.lock``) from before its run starts until
its version is complete, and registers the version as ``velocast_status=pending``; only after the
summary entry is written and the run is FINISHED is the version tagged ``complete`` (lookups
ignore pending versions, promotion refuses them). ``reconcile`` — run at the start of every
training — finds attempts whose lock is free (their process is dead) and repairs what they left:
a version whose summary entry was written is finished (run FINISHED, tagged complete); a version
without one is deleted and its run marked FAILED, as a failed training would have done; a run
killed before registration is marked FAILED. The lock is a local file: attempts of another
machine are never touched (their pending versions stay ignored until their machine reconciles).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from velocast import __version__, progress
from velocast.choices import DEFAULT_DATA_SOURCE, ENVS
from velocast.config import Settings, get_settings, redact
from velocast.data.splits import paris_day
from velocast.evaluation.reports import feature_importance_figure, regression_report
from velocast.lifecycle.inputs import build_inputs, model_inputs
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.datasets import Datasets, calibration_days, load_datasets
from velocast.lifecycle.training.distributed import connect, fit_on_dask, resolve_backend
from velocast.models import (
    MODEL_TYPES,
    build_pipeline,
    calibrate,
    calibration_info,
    continue_training,
    feature_importance,
    get_spec,
    registered_name,
    resolve_horizon,
    task_of,
    validate_hyperparams,
)
from velocast.models.intervals import STATIC
from velocast.models.weather_fallback import weather_known
from velocast.tracking import mlflow_runs
from velocast.tracking.rebuild import ENTRY_ARTIFACT
from velocast.tracking.registry import (
    ATTEMPT_TAG,
    GATE_TAG,
    PENDING,
    STATUS_TAG,
    TEST_MODE_TAG,
    Registry,
)
from velocast.tracking.summary import SummaryEntry

log = logging.getLogger(__name__)

# Fault injection for crash tests: VELOCAST_FAULT=train:<point> makes the process die at that point
# exactly like a kill -9 (no clean-up): after_register, after_summary (run still RUNNING), after_run.
_FAULT_ENV = "VELOCAST_FAULT"
DASK_TRAIN_SCORE_ROWS = 200_000  # training rows a Dask training scores its train metrics on


def _fault(point: str) -> None:
    if os.environ.get(_FAULT_ENV) == f"train:{point}":
        log.error("fault injection: dying at %s", point)
        os._exit(137)


def _attempts_dir(settings: Settings) -> Path:
    return settings.locks_dir / "training"


@contextlib.contextmanager
def _attempt(settings: Settings) -> Iterator[str]:
    """A training attempt id, with a lock held while it runs.

    Its file is removed when the attempt succeeds; after a failure it stays (released), so that
    ``reconcile`` finishes whatever clean-up the failure itself could not do (MLflow unreachable...).
    """
    attempt = uuid.uuid4().hex
    path = _attempts_dir(settings) / f"{attempt}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    lock.acquire()
    try:
        yield attempt
    except BaseException:
        lock.release()
        raise
    lock.release()
    path.unlink(missing_ok=True)


training_attempt = _attempt  # also taken by the recalibration, which registers a version too


def reconcile(settings: Settings | None = None, registry: Registry | None = None) -> list[str]:
    """Repair what killed trainings of this machine left (see the module docstring); say what was done."""
    settings = settings or get_settings()
    folder = _attempts_dir(settings)
    if not folder.is_dir():
        return []
    done: list[str] = []
    for path in sorted(folder.glob("*.lock")):
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its process is alive: training right now
        try:
            registry = registry or Registry(settings)
            done += _repair(path.stem, registry)
            path.unlink(missing_ok=True)
        finally:
            lock.release()
    for line in done:
        log.warning("reconcile: %s", line)
    return done


def _repair(attempt: str, registry: Registry) -> list[str]:
    client = registry.client
    experiment = client.get_experiment_by_name(registry.settings.experiment_name)
    if experiment is None:
        return []
    done = []
    for run in client.search_runs([experiment.experiment_id], f"tags.{ATTEMPT_TAG} = '{attempt}'"):
        run_id, model_type = run.info.run_id, run.data.tags.get("model_type", "")
        if model_type not in MODEL_TYPES:
            continue
        pending = [v for v in registry.versions(model_type, include_pending=True)
                   if v.run_id == run_id and v.tags.get(STATUS_TAG) == PENDING]
        in_summary = registry.summary.find(run_id) is not None
        if pending and in_summary:  # killed after the summary entry: only the bookkeeping was left
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, "FINISHED")
            for ref in pending:
                registry.mark_complete(model_type, ref.version)
                done.append(f"{model_type} version {ref.version} (run {run_id}) was complete but for its "
                            "status: marked complete")
            continue
        for ref in pending:  # killed between registration and the summary entry
            registry.delete_version(model_type, ref.version)
            done.append(f"{model_type} version {ref.version} (run {run_id}) had no summary entry: deleted")
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
            done.append(f"run {run_id} of {model_type} died while RUNNING: marked FAILED")
    return done


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
    from velocast.lifecycle.training.tuning import check_workers

    if not hyperopt:
        raise ValueError("--n-jobs-workers distributes Optuna tuning: it needs --hyperopt")
    check_workers(n_workers, study_storage)


def _fit(model_type: str, horizon: str, params: dict[str, Any], train_rows: pd.DataFrame, seed: int,
         continue_from: Any | None) -> Any:
    y = train_rows["bike_count"].to_numpy(float)
    if continue_from is not None:
        return continue_training(continue_from, model_type, train_rows, y, params)
    return build_pipeline(model_type, params, horizon, seed=seed).fit(train_rows, y)


def train(model_type: str, data_source: str = DEFAULT_DATA_SOURCE, env: str | None = None, model_test: bool = False,
          horizon: str | None = None, hyperparams: dict[str, Any] | None = None, hyperopt: bool = False,
          n_trials: int = 20, data_path: Path | str | None = None, current_data: pd.DataFrame | None = None,
          seed: int = 42, settings: Settings | None = None, datasets: Datasets | None = None,
          continue_from: Any | None = None, run_name: str | None = None, tags: dict[str, str] | None = None,
          study_storage: str | None = None, study_name: str | None = None, n_workers: int = 1,
          tuning_timeout: float | None = None, backend: str = "auto", scheduler: str | None = None) -> TrainResult:
    """Train one model type end to end and return what was done (see the module docstring).

    With ``hyperopt``, ``n_workers > 1`` tunes over that many processes sharing the Optuna study in
    ``study_storage`` (required then), and ``tuning_timeout`` seconds stop starting new trials; see
    :mod:`velocast.lifecycle.training.tuning`. ``backend``: ``local`` (this process), ``dask`` (LightGBM on the
    Dask cluster at ``scheduler``, default ``VELOCAST_DASK_SCHEDULER``; see
    :mod:`velocast.lifecycle.training.distributed`) or ``auto`` (Dask for a full lgbm fit when a scheduler is
    configured). Each stage is reported through :mod:`velocast.progress`.
    """
    settings = settings or get_settings()
    spec = get_spec(model_type)
    horizon = resolve_horizon(model_type, horizon)
    params = validate_hyperparams(model_type, hyperparams)
    env = env or settings.env
    if env not in ENVS:
        raise ValueError(f"env must be one of {', '.join(ENVS)}, got {env!r}")
    check_tuning_options(hyperopt, n_workers, study_storage)
    scheduler = scheduler or settings.dask_scheduler
    backend = resolve_backend(backend, model_type, scheduler, model_test=model_test, hyperopt=hyperopt,
                              continuing=continue_from is not None)
    # the cluster is reached first: an unreachable scheduler fails before any run is opened
    cluster = connect(scheduler, settings.dependency_timeout_seconds) if backend == "dask" else contextlib.nullcontext()
    with cluster as client:
        if datasets is None:
            progress.step(f"reading the {data_source} datasets")
            datasets = load_datasets(data_source, settings, data_path, current_data, model_test, seed)
        registry = Registry(settings)
        reconcile(settings, registry)
        with _attempt(settings) as attempt, progress.scope(model_type):
            return _train(model_type, spec, horizon, params, data_source, env, model_test, hyperopt, n_trials, seed,
                          settings, datasets, registry, continue_from, run_name,
                          {**(tags or {}), ATTEMPT_TAG: attempt}, study_storage, study_name, n_workers,
                          tuning_timeout, client)


def _train(model_type: str, spec: Any, horizon: str, params: dict[str, Any], data_source: str, env: str,
           model_test: bool, hyperopt: bool, n_trials: int, seed: int, settings: Settings, datasets: Datasets,
           registry: Registry, continue_from: Any | None, run_name: str | None, tags: dict[str, str],
           study_storage: str | None, study_name: str | None, n_workers: int,
           tuning_timeout: float | None, client: Any | None) -> TrainResult:
    """``client``: a Dask client to fit on (:mod:`velocast.lifecycle.training.distributed`); None: fit here."""
    started = time.perf_counter()
    notes: list[str] = []
    if client is None:
        progress.step(f"building the inputs of {len(datasets.train.frame):,} training rows (history, calendar, "
                      "weather)")
        train_inputs = build_inputs(datasets.train.frame, settings)
        train_rows = train_inputs.frame("observed")  # models learn from the observed weather
        if spec.uses_weather and not weather_known(train_rows).any():
            notes.append("no observed weather in the store for the training days: the model learns without "
                         "weather (`velocast data ingest-weather` adds it)")
    else:  # the workers enrich the rows; the client keeps the canonical ones
        train_inputs, train_rows = None, datasets.train.frame
    progress.step(f"building the test rows as served ({len(datasets.test_baseline.frame):,} test_baseline"
                  + (f", {len(datasets.test_current.frame):,} test_current" if datasets.test_current is not None
                     else "") + ")")
    test_b = ServedRows.build(datasets.test_baseline.frame, settings, extra_history=datasets.history)
    test_c = (ServedRows.build(datasets.test_current.frame, settings, extra_history=datasets.history)
              if datasets.test_current is not None and len(datasets.test_current.frame) else None)
    progress.step("starting the MLflow run")
    registered: Any = None
    # the attempt and model type are tags of the run from its creation: a kill at any later point is traceable
    with mlflow.start_run(run_name=run_name or f"{model_type}-{data_source}",
                          tags={ATTEMPT_TAG: tags[ATTEMPT_TAG], "model_type": model_type}) as run:
        try:
            mlflow.set_tags({"model_type": model_type, "env": env, "test_mode": str(model_test),
                             "horizon": horizon, "data_source": data_source, "velocast_version": __version__,
                             "split_version": str(datasets.split.version if datasets.split else ""),
                             "decision_weather": test_b.weather, **(tags or {})})
            for ds, context in ((datasets.train, "training"), (datasets.test_baseline, "test_baseline"),
                                (datasets.test_current, "test_current")):
                if ds is not None:
                    mlflow_runs.log_dataset(ds.frame, ds.name, ds.content_hash, ds.source, context)
            mlflow_runs.log_days(datasets.train.frame, datasets.held_out, "data/days.json", datasets.trained_before,
                                 datasets.continued_from)
            if hyperopt:
                from velocast.lifecycle.training.tuning import tune

                tuned = tune(model_type, train_rows, horizon, n_trials=n_trials, seed=seed,
                             storage=study_storage, study_name=study_name, n_workers=n_workers,
                             timeout=tuning_timeout)
                params = {**tuned.best_params, **params}
                mlflow.log_metrics({f"cv_best_{tuned.metric}": tuned.best_value, "tuning_seconds": tuned.seconds})
                mlflow.set_tags({"optuna_study": tuned.study_name, "optuna_workers": str(tuned.n_workers),
                                 "optuna_trials": str(tuned.n_trials), "optuna_best_trial": str(tuned.best_trial)})
                progress.step(f"tuning done: best cv {tuned.metric} {tuned.best_value:.4g} (trial "
                              f"{(tuned.best_trial or 0) + 1}), {tuned.n_complete} complete, {tuned.n_pruned} pruned "
                              f"in {progress.duration(tuned.seconds)}")
            effective = {**(spec.continue_defaults if continue_from is not None else spec.defaults), **params}
            mlflow.log_params({**{f"hp_{k}": v for k, v in effective.items()}, "horizon": horizon,
                               "data_source": data_source, "train_rows": len(train_rows),
                               "strategy": "continue" if continue_from is not None else "fit", "seed": seed,
                               "backend": "local" if client is None else "dask"})
            fit_started = time.perf_counter()
            progress.step(f"fitting on {len(train_rows):,} rows" + (" (with and without weather)" if spec.uses_weather
                                                                     else "")
                          + (" from the champion" if continue_from is not None else "")
                          + (f" on the Dask cluster {redact(client.scheduler.address)}" if client is not None else ""))

            def fit(rows: pd.DataFrame) -> Any:
                if client is None:
                    return _fit(model_type, horizon, params, rows, seed, continue_from)
                return fit_on_dask(model_type, horizon, params, rows, seed, settings, client)

            if client is not None:
                mlflow.set_tag("dask_scheduler", redact(client.scheduler.address))
            pipeline = fit(train_rows)
            fit_seconds = time.perf_counter() - fit_started
            mlflow.log_metric("fit_seconds", fit_seconds)

            progress.step(f"scoring on train, test_baseline ({len(test_b):,} rows)"
                          + (f" and test_current ({len(test_c):,} rows)" if test_c is not None else ""))
            if client is None:
                served_train = ServedRows.build(datasets.train.frame, settings, inputs=train_inputs,
                                                weather=test_b.weather, outages_removed=True)
            else:  # scored on a seeded sample: enriching every training row here is what Dask avoided
                sample = datasets.train.frame
                if len(sample) > DASK_TRAIN_SCORE_ROWS:
                    sample = sample.sample(DASK_TRAIN_SCORE_ROWS, random_state=seed).sort_values(
                        ["timestamp", "counter_id"], kind="stable")
                    notes.append(f"train metrics on a seeded sample of {DASK_TRAIN_SCORE_ROWS:,} training rows "
                                 "(trained on Dask)")
                served_train = ServedRows.build(sample, settings, extra_history=datasets.history,
                                                weather=test_b.weather, outages_removed=True)
            served_train.rule = STATIC  # the model trained on these days: its errors there tell nothing
            if spec.task == "regression":
                pipeline = _calibrated(pipeline, fit, datasets, train_rows,
                                       served_train if client is None else None, test_b.weather, settings, notes)
            metrics_train = served_train.score(pipeline).flat()
            scored_b = test_b.score(pipeline)
            metrics_baseline = scored_b.flat()
            metrics_current = test_c.score(pipeline).flat() if test_c is not None and len(test_c) else None
            mlflow_runs.log_metrics("train", metrics_train)
            mlflow_runs.log_metrics("test_baseline", metrics_baseline)
            if metrics_current:
                mlflow_runs.log_metrics("test_current", metrics_current)
            progress.step("logging plots and the model to MLflow")
            _log_reports(pipeline, test_b.decision_rows, scored_b.predictions, run.info.run_id, settings)

            info = mlflow_runs.log_model(pipeline, mlflow_runs.input_example(model_inputs(test_b.decision_rows)),
                                         spec.task == "classification")
            model_uri = mlflow_runs.artifact_location(info)
            data_end = str(datasets.train.frame["timestamp"].max().isoformat())
            baseline_regression = _baseline_regression(spec.task, metrics_baseline, settings)
            registered = registry.register(model_type, info.model_uri, run.info.run_id,
                                           tags={"env": env, TEST_MODE_TAG: str(model_test), "horizon": horizon,
                                                 "data_end": data_end, GATE_TAG: str(baseline_regression),
                                                 ATTEMPT_TAG: tags[ATTEMPT_TAG]},
                                           model_id=info.model_id)
            _fault("after_register")
            mlflow.set_tag("registered_version", registered.version)
            entry = _summary_entry(model_type, env, model_test, run.info.run_id, model_uri, registered.version,
                                   horizon, data_source, datasets, metrics_train, metrics_baseline,
                                   metrics_current, baseline_regression)
            # the entry travels with the run too: `velocast summary rebuild` regenerates summary.json from it
            mlflow.log_dict(entry.to_dict(), ENTRY_ARTIFACT)
            registry.summary.append(entry)
            _fault("after_summary")
        except BaseException:
            if registered is not None:
                log.error("training failed after registration: deleting %s version %s",
                          registered.name, registered.version)
                try:
                    registry.delete_version(model_type, registered.version)
                except Exception:  # the original error matters more
                    log.exception("could not delete the half-registered version")
            raise
    _fault("after_run")
    registry.mark_complete(model_type, registered.version)  # the run is FINISHED and in summary.json
    elapsed = time.perf_counter() - started
    log.info("trained %s v%s in %.1fs: test_baseline %s", model_type, registered.version, elapsed, metrics_baseline)
    return TrainResult(
        model_type=model_type, horizon=horizon, env=env, test_mode=model_test, data_source=data_source,
        run_id=run.info.run_id, model_uri=model_uri, registered_model=registered_name(model_type),
        model_version=registered.version, metrics_train=metrics_train, metrics_baseline=metrics_baseline,
        metrics_current=metrics_current, double_evaluation_enabled=metrics_current is not None,
        baseline_regression=baseline_regression, hyperparams=effective, train_seconds=round(fit_seconds, 3),
        rows={"train": len(train_rows), "test_baseline": len(test_b), "test_current": 0 if test_c is None else len(test_c),
              "outage_rows_excluded_from_tests": test_b.outage_rows + (test_c.outage_rows if test_c is not None else 0)},
        notes=[*datasets.notes, *test_b.notes, *(test_c.notes if test_c is not None else []), *notes])


def _calibrated(pipeline: Any, fit: Any, datasets: Datasets, train_rows: pd.DataFrame,
                served_train: ServedRows | None, weather: str, settings: Settings, notes: list[str]) -> Any:
    """``pipeline`` with intervals calibrated by its twin on the latest training days (module docstring).

    ``fit``: fits a twin on training rows (here or on the Dask cluster); ``served_train``: the training
    rows as served, when every one was built (None: the calibration days' rows are built here).
    """
    days = calibration_days(datasets.train.frame, settings.interval_calibration_days)
    if not days:
        notes.append("too few training days to calibrate prediction intervals: the model serves none "
                     "(`velocast recalibrate` adds them once newer days are labelled)")
        mlflow.set_tag("intervals", "none")
        return pipeline
    on_days = paris_day(datasets.train.frame["timestamp"]).astype(str).isin(days).to_numpy()
    started = time.perf_counter()
    twin = fit(train_rows[~on_days].reset_index(drop=True))
    served = served_train.subset(on_days) if served_train is not None else ServedRows.build(
        datasets.train.frame[on_days].reset_index(drop=True), settings, extra_history=datasets.history,
        weather=weather, outages_removed=True)
    calibrated = calibrate(pipeline, served.calibration_rows, twin=twin)
    info = calibration_info(calibrated) or {}
    if info.get("with_weather_from"):
        notes.append("no calibration day had weather: forecasts made with a weather forecast get the "
                     "intervals of forecasts without one")
    mlflow.log_metric("calibration_seconds", time.perf_counter() - started)
    mlflow.log_params({"calibration_days": len(days), "calibration_first_day": days[0],
                       "calibration_last_day": days[-1], "calibration_rows": info.get("rows", 0)})
    mlflow.set_tags({"intervals": "conformal", "interval_coverage": str(settings.interval_coverage)})
    mlflow.log_dict({**info, "days": days, "twin": "fitted on the training days before these"},
                    "intervals/calibration.json")
    log.info("intervals calibrated on %d days (%s .. %s) by a twin fitted on the days before them",
             len(days), days[0], days[-1])
    return calibrated


def _baseline_regression(task: str, metrics_baseline: dict[str, Any], settings: Settings) -> bool | None:
    if task != "regression":
        return None
    r2 = metrics_baseline["r2"]
    return not (r2 is not None and np.isfinite(r2) and r2 >= settings.r2_baseline_threshold)  # NaN: regression


def _log_reports(pipeline: Any, rows: pd.DataFrame, predictions: np.ndarray, run_id: str,
                 settings: Settings) -> None:
    """The run's plots and breakdowns, under the reports folder and in MLflow (each figure drawn once)."""
    folder = settings.reports_dir / "runs" / run_id
    importance = feature_importance(pipeline)
    if importance is not None:
        folder.mkdir(parents=True, exist_ok=True)
        feature_importance_figure(importance).savefig(folder / "feature_importance.png", dpi=90, bbox_inches="tight")
        mlflow_runs.log_file(folder / "feature_importance.png", "plots")
        mlflow_runs.log_frame(importance.rename("importance").to_frame(), "reports/feature_importance.csv")
    if task_of(pipeline) != "regression":
        return
    report = regression_report(rows, predictions, "test_baseline")
    written = report.write(folder)
    for name in report.figures:
        mlflow_runs.log_file(written[name], "plots")
    mlflow_runs.log_frame(report.per_counter, "reports/test_baseline_per_counter.csv")
    mlflow_runs.log_frame(report.per_hour, "reports/test_baseline_per_hour.csv")


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
        source = kwargs.get("data_source", DEFAULT_DATA_SOURCE)
        progress.step(f"reading the {source} datasets")
        kwargs["datasets"] = load_datasets(source, settings,
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
