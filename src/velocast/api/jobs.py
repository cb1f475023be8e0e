"""Training jobs of ``POST /train``: one at a time in a background thread, never promoting.

A job trains with ``lifecycle.train.train`` on the datasets of its request, double-evaluates the
new version against the current champion on the same rows (``lifecycle.evaluate.
evaluate_candidate``), records the decision in the audit log and keeps the result in memory for
``GET /jobs/{id}``. Promotion stays a separate, explicit step: the result names the champion the
job compared against (``compared_champion``), which ``/promote_champion`` takes as
``expected_champion`` so the promotion is refused if the champion moved since.

The worker is a daemon thread: stopping the server (SIGTERM) never waits for a training; a job cut
short leaves its MLflow run RUNNING and its version pending, repaired (run FAILED, version removed)
by the reconciliation the next start of the API (or the next training) runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from velocast.config import Settings, redact_secrets
from velocast.lifecycle.audit import AuditEvent, AuditLog
from velocast.lifecycle.datasets import MODEL_TEST_EVAL_ROWS, load_datasets
from velocast.lifecycle.evaluate import evaluate_candidate
from velocast.lifecycle.predict import load_model
from velocast.lifecycle.train import train
from velocast.tracking.registry import Registry

log = logging.getLogger(__name__)

MAX_KEPT = 200  # finished jobs kept in memory


class QueueFull(RuntimeError):
    pass


@dataclass
class TrainSpec:
    model_type: str
    data_source: str
    env: str
    hyperparams: dict[str, Any]
    test_mode: bool
    horizon: str | None
    current_data: pd.DataFrame | None = None

    def summary(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "data_source": self.data_source, "env": self.env,
                "hyperparams": self.hyperparams, "test_mode": self.test_mode, "horizon": self.horizon,
                "current_data_rows": 0 if self.current_data is None else len(self.current_data)}


@dataclass
class Job:
    job_id: str
    spec: TrainSpec
    status: str = "queued"
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "model_type": self.spec.model_type,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "error": self.error, "request": self.spec.summary(), **self.result}


def run_training(spec: TrainSpec, settings: Settings, job_id: str | None = None) -> dict[str, Any]:
    """Train, double-evaluate against the champion on the same rows, audit; return the job result."""
    datasets = load_datasets(spec.data_source, settings, current_data=spec.current_data, model_test=spec.test_mode)
    trained = train(spec.model_type, data_source=spec.data_source, env=spec.env, model_test=spec.test_mode,
                    horizon=spec.horizon, hyperparams=spec.hyperparams, datasets=datasets, settings=settings,
                    tags={"trigger": "api", **({"api_job": job_id} if job_id else {})})
    challenger = load_model(spec.model_type, version=trained.model_version, settings=settings)
    compared = Registry(settings).champion(spec.model_type)  # what the evaluation below compares against
    current = datasets.test_current.frame if datasets.test_current is not None else None
    outcome = evaluate_candidate(spec.model_type, challenger, settings, current=current,
                                 sample=MODEL_TEST_EVAL_ROWS if spec.test_mode else None)
    decision = outcome.decisions["double_eval"]
    evaluation = outcome.evaluation
    champion_b = evaluation.baseline.champion or {}
    champion_c = (evaluation.current.champion if evaluation.current is not None else None) or {}
    current_metrics = trained.metrics_current or {}
    AuditLog(settings=settings).record(AuditEvent(
        event="training", model_type=spec.model_type, deployment_decision=decision.kind,
        r2_train=trained.metrics_train.get("r2"), rmse_train=trained.metrics_train.get("rmse"),
        r2_baseline=trained.metrics_baseline.get("r2"), rmse_baseline=trained.metrics_baseline.get("rmse"),
        r2_current=current_metrics.get("r2"), rmse_current=current_metrics.get("rmse"),
        champion_r2_baseline=champion_b.get("r2"), champion_rmse_baseline=champion_b.get("rmse"),
        champion_r2_current=champion_c.get("r2"), champion_rmse_current=champion_c.get("rmse"),
        baseline_regression=decision.baseline_regression, model_improvement=decision.model_improvement,
        model_uri=trained.registry_uri, run_id=trained.run_id, env=spec.env, actor="api",
        to_version=trained.model_version, reasons=decision.reasons,
        details={"job_id": job_id, "data_source": spec.data_source, "test_mode": spec.test_mode,
                 "champion": evaluation.champion, "decisions": {k: d.kind for k, d in outcome.decisions.items()}}))
    return {
        "run_id": trained.run_id, "model_uri": trained.model_uri, "registry_uri": trained.registry_uri,
        "model_version": trained.model_version, "metrics_train": trained.metrics_train,
        "metrics_baseline": trained.metrics_baseline, "metrics_current": trained.metrics_current,
        "double_evaluation_enabled": trained.double_evaluation_enabled,
        "baseline_regression": trained.baseline_regression, "deployment_decision": decision.kind,
        "decision_reasons": decision.reasons, "decisions": {k: d.kind for k, d in outcome.decisions.items()},
        "compared_champion": compared.version if compared else None,
        "double_evaluation": evaluation.to_dict(), "hyperparams": trained.hyperparams, "notes": trained.notes,
    }


class JobManager:
    def __init__(self, settings: Settings, max_queued: int = 20):
        self.settings = settings
        self.max_queued = max_queued
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def submit(self, spec: TrainSpec) -> Job:
        with self._lock:
            if sum(j.status == "queued" for j in self._jobs.values()) >= self.max_queued:
                raise QueueFull(f"{self.max_queued} training jobs are already queued: try again later")
            job = Job(uuid.uuid4().hex, spec)
            self._jobs[job.job_id] = job
            self._forget_old()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="velocast-train", daemon=True)
                self._worker.start()
        self._queue.put(job)
        log.info("training job %s queued (%s)", job.job_id, spec.summary())
        return job

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.status == "queued":
                self._run(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {s: 0 for s in ("queued", "running", "succeeded", "failed")}
            for job in self._jobs.values():
                out[job.status] += 1
            return out

    def shutdown(self) -> None:
        """Stop taking jobs; queued ones are dropped and a running one is left to the process's end."""
        with self._lock:
            for job in self._jobs.values():
                if job.status == "queued":
                    job.status, job.error = "failed", "the server stopped before the job started"
        self._queue.put(None)

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("succeeded", "failed")]
        for key in finished[: max(0, len(finished) - MAX_KEPT)]:
            del self._jobs[key]

    def _run(self, job: Job) -> None:
        job.status, job.started_at = "running", datetime.now(timezone.utc).isoformat()
        try:
            job.result = run_training(job.spec, self.settings, job.job_id)
            job.status = "succeeded"
            log.info("training job %s succeeded: %s version %s, decision %s", job.job_id, job.spec.model_type,
                     job.result["model_version"], job.result["deployment_decision"])
        except Exception as exc:  # the job reports it; the server goes on
            log.exception("training job %s failed", job.job_id)
            job.error = redact_secrets(f"{type(exc).__name__}: {exc}", self.settings)  # GET /jobs shows it
            job.status = "failed"
        finally:
            job.finished_at = datetime.now(timezone.utc).isoformat()
