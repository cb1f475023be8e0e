"""Training jobs: durable records in the velocast database, and the one function that runs them.

A job is a row of ``training_jobs`` in the database of the audit log (``VELOCAST_AUDIT_URL``:
SQLite in the velocast home by default, PostgreSQL by URL; same engine and timeouts), so a job
outlives the process that took it and every API replica sees every job. The request, the
labelled rows posted with it (Parquet bytes), the result and the error live in the row.

States: ``queued`` → ``running`` → ``succeeded`` | ``failed``. Every transition is one
compare-and-set ``UPDATE ... WHERE state IN (...)`` in its own transaction: two processes never
both claim a job, and a finished job never changes again.

:func:`run_job` runs a stored job (train, double-evaluate against the champion, audit; never
promote). The API's worker thread and the Airflow DAG ``train_model`` both call it.

Jobs run by the API (``runner="api"``) carry their owner (host, pid, process start time) and a
heartbeat the owning server refreshes; :meth:`JobStore.fail_orphans` marks ``failed`` the jobs of
a server that died (same host and its process gone, or no heartbeat for the lease). Jobs run by
Airflow (``runner="airflow"``) are judged by their DAG run's state instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import pandas as pd
import psutil
import sqlalchemy as sa

from velocast.choices import JOB_RUNNERS, JOB_STATES
from velocast.config import Settings, database_url, get_settings, redact_secrets
from velocast.lifecycle import audit
from velocast.lifecycle.audit import AuditEvent, AuditLog

log = logging.getLogger(__name__)

STATES = JOB_STATES
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed")
RUNNERS = JOB_RUNNERS

jobs_metadata = sa.MetaData()
jobs_table = sa.Table(
    "training_jobs", jobs_metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("model_type", sa.String(32), nullable=False),
    sa.Column("runner", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),            # the request (JSON), without the posted rows
    sa.Column("inputs", sa.LargeBinary),                   # posted labelled rows (Parquet), if any
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("result", sa.Text),                          # JSON
    sa.Column("error", sa.Text),
    sa.Column("owner_host", sa.String(255)),
    sa.Column("owner_pid", sa.Integer),
    sa.Column("owner_started", sa.Float),                  # the owner process's start time (epoch seconds)
    sa.Column("dag_id", sa.String(250)),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("dag_run_state", sa.String(32)),             # last state read from Airflow
    sa.Column("dag_run_checked_at", sa.DateTime(timezone=True)),
    sa.Column("dag_run_error", sa.Text),                   # why the last read of the DAG run failed
)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    engine = audit.engine(url)
    jobs_metadata.create_all(engine)
    return engine


# --------------------------------------------------------------------------- owner
@dataclass(frozen=True)
class Owner:
    """The process that owns a job: host name, pid and the process's start time (pids are reused)."""

    host: str
    pid: int
    started: float

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_alive(self) -> bool:
        """On this owner's host only: does its process still run?"""
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


# --------------------------------------------------------------------------- the request
@dataclass
class TrainSpec:
    """What ``POST /train`` asked for; ``current_data`` are the posted labelled rows (canonical)."""

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

    def inputs(self) -> bytes | None:
        if self.current_data is None:
            return None
        buffer = io.BytesIO()
        self.current_data.to_parquet(buffer, index=False)
        return buffer.getvalue()

    @classmethod
    def stored(cls, spec: dict[str, Any], inputs: bytes | None) -> TrainSpec:
        current = pd.read_parquet(io.BytesIO(inputs)) if inputs else None
        return cls(spec["model_type"], spec["data_source"], spec["env"], dict(spec.get("hyperparams") or {}),
                   bool(spec.get("test_mode")), spec.get("horizon"), current)


@dataclass
class JobRecord:
    job_id: str
    kind: str
    state: str
    model_type: str
    runner: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started: float | None = None
    dag_id: str | None = None
    dag_run_id: str | None = None
    dag_run_state: str | None = None
    dag_run_checked_at: datetime | None = None
    dag_run_error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        data = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        data["spec"] = json.loads(row["spec"] or "{}")
        data["result"] = json.loads(row["result"] or "{}")
        for key in ("created_at", "started_at", "finished_at", "heartbeat_at", "dag_run_checked_at"):
            data[key] = _utc(data.get(key))
        return cls(**data)

    @property
    def owner(self) -> Owner | None:
        if self.owner_host is None or self.owner_pid is None or self.owner_started is None:
            return None
        return Owner(self.owner_host, self.owner_pid, self.owner_started)

    def to_dict(self) -> dict[str, Any]:
        """The job as ``GET /jobs/{id}`` shows it."""
        return {"job_id": self.job_id, "status": self.state, "model_type": self.model_type,
                "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at), "error": self.error, "request": self.spec,
                "runner": self.runner, "owner": str(self.owner) if self.owner else None,
                "heartbeat_at": _iso(self.heartbeat_at), "dag_id": self.dag_id, "dag_run_id": self.dag_run_id,
                "dag_run_state": self.dag_run_state, "dag_run_checked_at": _iso(self.dag_run_checked_at),
                "dag_run_error": self.dag_run_error, **self.result}


class JobNotRunnable(RuntimeError):
    """The job does not exist, or is not ``queued`` any more."""


# --------------------------------------------------------------------------- the store
class JobStore:
    """The ``training_jobs`` table of the velocast database (``Settings.audit_location``)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.url = database_url(self.settings.audit_location)

    @property
    def engine(self) -> sa.Engine:
        """Connected on first use: a server starts (and serves predictions) while the database is down."""
        return _engine(self.url)

    # ----- writes: each one transaction, transitions as compare-and-set
    def create(self, spec: TrainSpec, runner: str, owner: Owner | None = None, dag_id: str | None = None,
               kind: str = "train") -> JobRecord:
        if runner not in RUNNERS:
            raise ValueError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
        now = _now()
        row = {"job_id": uuid.uuid4().hex, "kind": kind, "state": "queued", "model_type": spec.model_type,
               "runner": runner, "spec": json.dumps(spec.summary()), "inputs": spec.inputs(), "created_at": now,
               "heartbeat_at": now, "dag_id": dag_id,
               "owner_host": owner.host if owner else None, "owner_pid": owner.pid if owner else None,
               "owner_started": owner.started if owner else None}
        with self.engine.begin() as con:
            con.execute(jobs_table.insert().values(**row))
        return JobRecord.from_row({**row, "result": None})

    def _transition(self, job_id: str, from_states: tuple[str, ...], **values: Any) -> bool:
        c = jobs_table.c
        with self.engine.begin() as con:
            done = con.execute(jobs_table.update().where(c.job_id == job_id, c.state.in_(from_states)).values(**values))
        return done.rowcount == 1

    def claim(self, job_id: str, owner: Owner) -> bool:
        """queued → running, by ``owner``; False when the job is not queued (any more)."""
        now = _now()
        return self._transition(job_id, ("queued",), state="running", started_at=now, heartbeat_at=now,
                                owner_host=owner.host, owner_pid=owner.pid, owner_started=owner.started)

    def finish(self, job_id: str, result: dict[str, Any]) -> bool:
        """running → succeeded with its result."""
        return self._transition(job_id, ("running",), state="succeeded", finished_at=_now(),
                                result=json.dumps(result, default=str))

    def succeed_external(self, job_id: str, note: str) -> bool:
        """queued/running → succeeded without a result (the orchestrator says so; the task recorded nothing)."""
        return self._transition(job_id, ACTIVE, state="succeeded", finished_at=_now(),
                                result=json.dumps({"notes": [note]}))

    def fail(self, job_id: str, error: str, from_states: tuple[str, ...] = ACTIVE) -> bool:
        return self._transition(job_id, from_states, state="failed", finished_at=_now(), error=error)

    def set_dag_run(self, job_id: str, dag_run_id: str, state: str | None) -> None:
        with self.engine.begin() as con:
            con.execute(jobs_table.update().where(jobs_table.c.job_id == job_id).values(
                dag_run_id=dag_run_id, dag_run_state=state, dag_run_checked_at=_now(), dag_run_error=None))

    def record_dag_run_read(self, job_id: str, state: str | None, error: str | None) -> None:
        """The outcome of one read of the DAG run: its state, or why it could not be read (state kept)."""
        values: dict[str, Any] = {"dag_run_error": error}
        if error is None:
            values.update(dag_run_state=state, dag_run_checked_at=_now())
        with self.engine.begin() as con:
            con.execute(jobs_table.update().where(jobs_table.c.job_id == job_id).values(**values))

    def heartbeat(self, owner: Owner) -> int:
        """Refresh the heartbeat of every active job ``owner`` runs; the number of jobs."""
        c = jobs_table.c
        with self.engine.begin() as con:
            done = con.execute(jobs_table.update().where(
                c.runner == "api", c.state.in_(ACTIVE), c.owner_host == owner.host, c.owner_pid == owner.pid,
                c.owner_started == owner.started).values(heartbeat_at=_now()))
        return done.rowcount

    def fail_orphans(self, lease_seconds: float, me: Owner | None = None) -> list[JobRecord]:
        """Fail the active API jobs whose server is gone; return them as they were.

        Gone: on this host, the owner process no longer runs (or its pid now belongs to another
        process); anywhere, no heartbeat for ``lease_seconds``. ``me`` (this process) is never gone.
        """
        me = me or Owner.current()
        c = jobs_table.c
        stale_before = _now() - timedelta(seconds=lease_seconds)
        with self.engine.connect() as con:
            rows = con.execute(sa.select(jobs_table).where(c.runner == "api", c.state.in_(ACTIVE))).mappings().all()
        failed = []
        for job in (JobRecord.from_row(dict(r)) for r in rows):
            owner = job.owner
            if owner == me:
                continue
            dead = owner is not None and owner.host == me.host and not owner.is_alive()
            silent = job.heartbeat_at is None or job.heartbeat_at < stale_before
            if not (dead or silent):
                continue
            if job.state == "running":
                reason = "the server restarted while the job ran"
            else:
                reason = "the server restarted before the job ran"
            why = (f"{owner or 'its server'} is gone" if dead else
                   f"no heartbeat from {owner or 'its server'} for more than {lease_seconds:g} s")
            if self.fail(job.job_id, f"{reason} ({why})", from_states=(job.state,)):
                failed.append(job)
        return failed

    # ----- reads
    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as con:
            row = con.execute(sa.select(jobs_table).where(jobs_table.c.job_id == job_id)).mappings().first()
        return JobRecord.from_row(dict(row)) if row else None

    def spec(self, job_id: str) -> TrainSpec:
        c = jobs_table.c
        with self.engine.connect() as con:
            row = con.execute(sa.select(c.spec, c.inputs).where(c.job_id == job_id)).first()
        if row is None:
            raise JobNotRunnable(f"no training job {job_id!r} in {self.engine.url.render_as_string(hide_password=True)}")
        return TrainSpec.stored(json.loads(row.spec), row.inputs)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        with self.engine.connect() as con:
            for state, n in con.execute(sa.select(jobs_table.c.state, sa.func.count()).group_by(jobs_table.c.state)):
                out[state] = int(n)
        return out

    def queued(self, runner: str | None = None) -> int:
        """How many jobs wait to run (of ``runner``)."""
        c = jobs_table.c
        query = sa.select(sa.func.count()).select_from(jobs_table).where(c.state == "queued")
        if runner:
            query = query.where(c.runner == runner)
        with self.engine.connect() as con:
            return int(con.execute(query).scalar_one())


# --------------------------------------------------------------------------- running a job
def run_training(spec: TrainSpec, settings: Settings, job_id: str | None = None) -> dict[str, Any]:
    """Train, double-evaluate against the champion on the same rows, audit; return the job result.

    One evaluation gives every number of the result: the challenger's test metrics,
    ``baseline_regression`` and the decision all come from the double evaluation, made on exactly
    the test rows (and history) the training used.
    """
    from velocast.lifecycle.decisions.challenger import train_and_judge
    from velocast.lifecycle.training.datasets import load_datasets

    datasets = load_datasets(spec.data_source, settings, current_data=spec.current_data, model_test=spec.test_mode)
    done = train_and_judge(spec.model_type, settings, datasets=datasets, data_source=spec.data_source, env=spec.env,
                           model_test=spec.test_mode, horizon=spec.horizon, hyperparams=spec.hyperparams,
                           tags={"trigger": "api", **({"api_job": job_id} if job_id else {})})
    trained, judged = done.trained, done.judgement
    reasons = list(judged.reasons)
    if spec.test_mode and judged.decision == "deploy":  # what the policy says is not what may serve
        reasons.append("not promotable as it is: a test-mode model (trained on a small sample) becomes champion "
                       "only with force and a reason (POST /promote_champion)")
    AuditLog(settings=settings).record(AuditEvent.from_outcome(
        "training", judged, model_type=spec.model_type, model_uri=trained.registry_uri, run_id=trained.run_id,
        env=spec.env, actor="api", to_version=trained.model_version, reasons=reasons,
        details={"job_id": job_id, "data_source": spec.data_source, "test_mode": spec.test_mode,
                 "champion": judged.evaluation.get("champion"), "decisions": judged.decisions}))
    return {
        "run_id": trained.run_id, "model_uri": trained.model_uri, "registry_uri": trained.registry_uri,
        "model_version": trained.model_version, "metrics_train": trained.metrics_train,
        "metrics_baseline": judged.metrics_baseline, "metrics_current": judged.metrics_current,
        "double_evaluation_enabled": judged.metrics_current is not None,
        "baseline_regression": judged.baseline_regression, "deployment_decision": judged.decision,
        "decision_reasons": reasons, "decisions": judged.decisions,
        "compared_champion": judged.compared_champion,
        "double_evaluation": judged.evaluation, "hyperparams": trained.hyperparams, "notes": trained.notes,
    }


def run_job(job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Run the stored job ``job_id``: claim it, train, record the result or the error.

    Returns a small summary (job id, state, version, decision: fit for an Airflow XCom). Raises
    :class:`JobNotRunnable` when the job does not exist or is not queued, and re-raises the
    training's exception after recording it, so an Airflow task fails with it.
    """
    if not str(job_id or "").strip():
        raise JobNotRunnable("no job_id given: trigger with the conf {\"job_id\": \"<id>\"} of a job the API "
                             "stored (POST /train answers it)")
    settings = settings or get_settings()
    store = JobStore(settings)
    spec = store.spec(job_id)
    if not store.claim(job_id, Owner.current()):
        job = store.get(job_id)
        raise JobNotRunnable(f"training job {job_id} is {job.state if job else 'gone'}, not queued: not run again")
    log.info("training job %s running (%s)", job_id, spec.summary())
    try:
        result = run_training(spec, settings, job_id)
    except Exception as exc:
        store.fail(job_id, redact_secrets(f"{type(exc).__name__}: {exc}", settings))  # GET /jobs shows it
        raise
    if not store.finish(job_id, result):
        log.warning("training job %s finished but was marked failed meanwhile: version %s stays registered",
                    job_id, result["model_version"])
    log.info("training job %s succeeded: %s version %s, decision %s", job_id, spec.model_type,
             result["model_version"], result["deployment_decision"])
    return {"job_id": job_id, "state": "succeeded", "model_type": spec.model_type,
            "model_version": result["model_version"], "run_id": result["run_id"],
            "deployment_decision": result["deployment_decision"]}


__all__ = [
    "ACTIVE",
    "FINISHED",
    "STATES",
    "JobNotRunnable",
    "JobRecord",
    "JobStore",
    "Owner",
    "TrainSpec",
    "run_job",
    "run_training",
]
