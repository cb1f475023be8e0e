"""Training jobs of ``POST /train``: durable rows, run in this process or by Airflow, never promoting.

Every job is a row of the velocast database (:mod:`velocast.lifecycle.operations.jobs`), so ``GET /jobs/{id}``
answers from any replica and after a restart.

- Without ``VELOCAST_AIRFLOW_URL`` a job runs here, one at a time in a background thread
  (:func:`velocast.lifecycle.operations.jobs.run_job`). While this server lives it refreshes the heartbeat
  of its jobs; at start-up, and every heartbeat, jobs of a server that died (same host and its
  process gone, or no heartbeat for ``VELOCAST_JOB_LEASE_SECONDS``) are marked ``failed``.
- With ``VELOCAST_AIRFLOW_URL`` a job triggers a run of the DAG ``VELOCAST_AIRFLOW_TRAIN_DAG``
  (its conf: the job id), whose task calls the same ``run_job``. ``GET /jobs/{id}`` reads the DAG
  run's state from Airflow (bounded timeout) while the job is not finished; when Airflow cannot
  be read it shows the last known state and the error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from velocast.api.airflow_runs import AirflowClient, AirflowError
from velocast.config import Settings, redact_secrets
from velocast.lifecycle.operations.jobs import (
    FINISHED,
    JobRecord,
    JobStore,
    Owner,
    TrainSpec,
    run_job,
)

START_SWEEP_ATTEMPTS = 3  # the start-up check for jobs of dead servers, before the server answers

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    pass


class AirflowUnavailable(RuntimeError):
    """The training DAG could not be started; the message names Airflow and what went wrong."""


def dag_run_id_of(job_id: str) -> str:
    return f"velocast_job_{job_id}"


class JobManager:
    def __init__(self, settings: Settings, max_queued: int = 20):
        self.settings = settings
        self.max_queued = max_queued
        self.store = JobStore(settings)
        self.owner = Owner.current()
        self.airflow = AirflowClient(settings) if settings.airflow_url else None
        self.runner = "airflow" if self.airflow else "api"
        self.lease = settings.job_lease_seconds
        # one daemon worker: stopping the server (SIGTERM) never waits for a training; a job cut short is
        # failed at the next start (its MLflow run marked FAILED and its pending version removed by reconcile)
        self._queue: queue.Queue[str] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="velocast-train", daemon=True)
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self._pending: set[str] = set()  # queued in this process's executor, not started yet
        self._pending_lock = threading.Lock()

    # ----- life cycle of the server
    def start(self) -> None:
        """Fail the jobs of servers that died, then keep this server's jobs alive with heartbeats."""
        for attempt in range(START_SWEEP_ATTEMPTS):  # before serving: a dead server's job never reads "running"
            try:
                self._sweep()
                break
            except Exception:  # the database is down: the server still serves, the heartbeat tries again
                if attempt + 1 == START_SWEEP_ATTEMPTS:
                    log.exception("training jobs: cannot check for jobs left by a dead server (retried every "
                                  "heartbeat)")
                else:
                    time.sleep(0.2 * (attempt + 1))
        if self._heart is None:
            self._heart = threading.Thread(target=self._beat, name="velocast-job-heartbeat", daemon=True)
            self._heart.start()

    def shutdown(self) -> None:
        self._stop.set()
        with self._pending_lock:
            pending = sorted(self._pending)
        try:  # jobs still waiting in this process's queue will never run: say so now
            for job_id in pending:
                self.store.fail(job_id, "the server stopped before the job ran", from_states=("queued",))
        except Exception:  # the database is down at shutdown: the next start-up fails them
            log.exception("could not mark the queued training jobs of this server as failed")

    def _beat(self) -> None:
        interval = max(0.5, self.lease / 5)
        while not self._stop.wait(interval):
            try:
                self.store.heartbeat(self.owner)
                self._sweep()
            except Exception:  # the database may be down for a while: try again next beat
                log.exception("training jobs heartbeat failed")

    def _sweep(self) -> None:
        for job in self.store.fail_orphans(self.lease, me=self.owner):
            log.warning("training job %s (%s, %s) marked failed: its server %s is gone", job.job_id, job.model_type,
                        job.state, job.owner)

    # ----- jobs
    def submit(self, spec: TrainSpec) -> JobRecord:
        if self.store.queued(self.runner) >= self.max_queued:
            raise QueueFull(f"{self.max_queued} training jobs are already queued: try again later")
        if self.airflow is not None:
            return self._submit_to_airflow(self.airflow, spec)
        job = self.store.create(spec, runner="api", owner=self.owner)
        with self._pending_lock:
            self._pending.add(job.job_id)
        if not self._worker.is_alive():
            self._worker.start()
        self._queue.put(job.job_id)
        log.info("training job %s queued (%s)", job.job_id, spec.summary())
        return job

    def _submit_to_airflow(self, airflow: AirflowClient, spec: TrainSpec) -> JobRecord:
        dag_id = self.settings.airflow_train_dag
        job = self.store.create(spec, runner="airflow", dag_id=dag_id)
        run_id = dag_run_id_of(job.job_id)
        try:
            run = airflow.trigger(dag_id, run_id, conf={"job_id": job.job_id})
        except AirflowError as exc:
            message = f"{exc}: training job {job.job_id} was not started"
            self.store.fail(job.job_id, message)
            raise AirflowUnavailable(message) from exc
        self.store.set_dag_run(job.job_id, run.dag_run_id, run.state)
        log.info("training job %s: DAG run %s of %s %s (%s)", job.job_id, run.dag_run_id, dag_id, run.state,
                 spec.summary())
        return self.store.get(job.job_id) or job

    def get(self, job_id: str) -> JobRecord | None:
        job = self.store.get(job_id)
        if job is None or job.runner != "airflow" or job.state in FINISHED or not job.dag_run_id:
            return job
        if self.airflow is None:
            job.dag_run_error = "VELOCAST_AIRFLOW_URL is not set on this server: the DAG run's state was not read"
            return job
        try:
            run = self.airflow.get_run(job.dag_id or self.settings.airflow_train_dag, job.dag_run_id)
        except AirflowError as exc:
            error = redact_secrets(str(exc), self.settings)
            self.store.record_dag_run_read(job_id, None, error)
            return self.store.get(job_id)
        self.store.record_dag_run_read(job_id, run.state, None)
        if run.job_state == "failed":
            self.store.fail(job_id, f"the Airflow DAG run {run.dag_run_id} of {run.dag_id} failed (see its task log "
                            "in Airflow)")
        elif run.job_state == "succeeded":  # the task records its result itself; this only happens when it did not
            self.store.succeed_external(job_id, f"the Airflow DAG run {run.dag_run_id} succeeded without recording a "
                                        "result (marked success in Airflow?)")
        job = self.store.get(job_id)
        if job is not None and job.state not in FINISHED and run.job_state in ("queued", "running"):
            job.state = run.job_state  # what Airflow says now (the task marks the row running when it starts)
        return job

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        with self._pending_lock:
            self._pending.discard(job_id)
        if self._stop.is_set():
            return
        try:
            run_job(job_id, self.settings)
        except Exception:  # the job row holds the error; the server goes on
            log.exception("training job %s failed", job_id)
