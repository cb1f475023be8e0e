"""The audit log: one append-only row per lifecycle event (SQLite by default, PostgreSQL by URL).

There is no update or delete path in velocast, and the database itself refuses them (triggers on
SQLite and PostgreSQL). Each row carries an ``event_id`` so a retried write is recorded once.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import math
import types
import typing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
# imported whole here, in the importing thread: SQLAlchemy's core finds the ORM's inspectors once the ORM
# is imported, and a server thread importing it (MLflow's stores do) while another runs a query made
# that query fail on a half-initialised ``sqlalchemy.orm`` ("partially initialized module")
import sqlalchemy.orm  # noqa: F401
from sqlalchemy.exc import IntegrityError

from velocast.choices import AUDIT_EVENTS
from velocast.config import Settings, database_url, get_settings, redact_secrets
from velocast.errors import DependencyUnavailable, sqlite_write_failure

if TYPE_CHECKING:
    from velocast.lifecycle.decisions.challenger import Judgement

log = logging.getLogger(__name__)

EVENTS = AUDIT_EVENTS

_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
]
_POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log",
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
]


def _column(kind: Any = None, **options: Any) -> dict[str, Any]:
    """Field metadata: the column type when the field's type is not enough, and column options."""
    return {"column": (kind, options)}


def _nullable(kind: Any) -> Any:
    return field(default=None, metadata=_column(kind))


@dataclass
class AuditEvent:
    """One row of the audit log. Declared once: the table below and the API's ``AuditEventModel`` are
    derived from these fields (a field's column type comes from its Python type unless its metadata
    names one)."""

    event: str = field(metadata=_column(sa.String(32), nullable=False, index=True))
    model_type: str | None = _nullable(sa.String(32))
    deployment_decision: str | None = _nullable(sa.String(32))
    drift_detected: bool | None = None
    drift_share: float | None = None
    health_state: str | None = _nullable(sa.String(16))
    r2_train: float | None = None
    rmse_train: float | None = None
    r2_baseline: float | None = None
    rmse_baseline: float | None = None
    r2_current: float | None = None
    rmse_current: float | None = None
    champion_r2_baseline: float | None = None
    champion_rmse_baseline: float | None = None
    champion_r2_current: float | None = None
    champion_rmse_current: float | None = None
    baseline_regression: bool | None = None
    model_improvement: bool | None = None
    model_uri: str | None = None
    run_id: str | None = _nullable(sa.String(64))
    env: str | None = _nullable(sa.String(16))
    actor: str | None = _nullable(sa.String(128))
    from_version: str | None = _nullable(sa.String(16))
    to_version: str | None = _nullable(sa.String(16))
    reasons: list[str] = field(default_factory=list)  # stored as JSON text
    error_message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # stored as JSON text
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()),
                          metadata=_column(sa.String(36), nullable=False, unique=True))
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc),
                                metadata=_column(nullable=False, index=True))

    # the fields a row shows first (the table's columns after ``id``, the API's JSON keys)
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("event_id", "timestamp")

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown audit event {self.event!r}: expected one of {', '.join(EVENTS)}")

    @classmethod
    def from_outcome(cls, event: str, outcome: Judgement | None, **fields_: Any) -> AuditEvent:
        """The row of a judged challenger: its decision, reasons and the metrics of both models on the
        same rows (``outcome``: :class:`velocast.lifecycle.decisions.challenger.Judgement`, whose ``metrics`` are
        named as this row's fields; None: nothing was judged).
        ``fields_`` add the rest and win over what the outcome says (e.g. the reasons of a cycle)."""
        if outcome is None:
            return cls(event=event, **fields_)
        known = {f.name for f in fields(cls)}
        judged = {"deployment_decision": outcome.decision, "reasons": list(outcome.reasons),
                  "baseline_regression": outcome.baseline_regression, "model_improvement": outcome.model_improvement,
                  **{name: value for name, value in outcome.metrics.items() if name in known}}
        return cls(event=event, **{**judged, **fields_})

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["reasons"] = json.dumps(self.reasons)
        row["details"] = json.dumps(self.details, default=str)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEvent:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in row.items() if k in known}
        data["reasons"] = json.loads(row.get("reasons") or "[]")
        data["details"] = json.loads(row.get("details") or "{}")
        stamp = data.get("timestamp")
        if isinstance(stamp, datetime) and stamp.tzinfo is None:
            data["timestamp"] = stamp.replace(tzinfo=timezone.utc)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timestamp"] = self.timestamp.isoformat()
        return out


# a field's column type from its Python type (lists and dicts are stored as JSON text)
_SQL_TYPES: dict[type, Any] = {bool: sa.Boolean, float: sa.Float, str: sa.Text, list: sa.Text, dict: sa.Text,
                               datetime: sa.DateTime(timezone=True)}


def _base_type(hint: Any) -> type:
    """``str | None`` -> str, ``list[str]`` -> list."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _base_type(args[0])
    return typing.get_origin(hint) or hint


def audit_columns() -> list[sa.Column]:
    """The columns of ``audit_log``: an ``id``, then one per :class:`AuditEvent` field."""
    hints = typing.get_type_hints(AuditEvent)
    by_name = {f.name: f for f in fields(AuditEvent)}
    order = [*AuditEvent.KEY_FIELDS, *(name for name in by_name if name not in AuditEvent.KEY_FIELDS)]
    columns = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)]
    for name in order:
        kind, options = by_name[name].metadata.get("column", (None, {}))
        columns.append(sa.Column(name, kind if kind is not None else _SQL_TYPES[_base_type(hints[name])], **options))
    return columns


metadata = sa.MetaData()
audit_table = sa.Table("audit_log", metadata, *audit_columns())


# seconds a PostgreSQL connection may take before the audit write fails when no setting says otherwise
# (a URL's own ``?connect_timeout=`` wins): an unreachable database fails the step instead of hanging it
PG_CONNECT_TIMEOUT = 5


def _connect_args(url: str, timeout: float = PG_CONNECT_TIMEOUT) -> dict[str, Any]:
    """Bounded waits: PostgreSQL connect and statement timeouts, SQLite's wait for a busy database."""
    parsed = sa.engine.make_url(url)
    seconds = max(1, math.ceil(timeout))
    if parsed.get_backend_name() == "postgresql":
        out: dict[str, Any] = {"options": f"-c statement_timeout={seconds * 1000}"}
        if "connect_timeout" not in parsed.query:
            out["connect_timeout"] = seconds
        return out
    if parsed.get_backend_name() == "sqlite":
        return {"timeout": float(timeout)}
    return {}


@lru_cache(maxsize=8)
def engine(url: str, timeout: float = PG_CONNECT_TIMEOUT) -> sa.Engine:
    """The engine of the velocast database at ``url`` (one per URL and process), the audit table created.

    Other tables of the same database (the training jobs of the API) are built on this engine, so
    every connection gets the same timeouts (``timeout``: connect and statement timeouts, seconds).
    """
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True, future=True, connect_args=_connect_args(url, timeout))
    with _database(url):
        metadata.create_all(engine)  # checks first: no write when the table is there
        if engine.dialect.name == "sqlite":
            with engine.connect() as con:  # a read-only home still reads its audit log: create only what lacks
                present = set(con.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
            guards = [g for g in _SQLITE_GUARDS if g.split()[5] not in present]
        else:
            guards = _POSTGRES_GUARDS if engine.dialect.name == "postgresql" else []
        if guards:
            with engine.begin() as con:
                for statement in guards:
                    con.execute(sa.text(statement))
    return engine


@contextmanager
def _database(url: str) -> Iterator[None]:
    """Database failures as ``DependencyUnavailable`` (a local SQLite file that cannot be written: ``OSError``)."""
    try:
        yield
    except IntegrityError:
        raise
    except sa.exc.DBAPIError as exc:
        message = redact_secrets(str(exc).split("\n(Background on this error")[0])
        if url.startswith("sqlite:///"):
            local = sqlite_write_failure(message, url[len("sqlite:///"):])
            if local is not None:
                raise local from exc
        raise DependencyUnavailable("audit database", message) from exc


def current_actor() -> str:
    """Who acts: ``VELOCAST_ACTOR`` (an API or a scheduler may name its caller), else the OS user."""
    try:
        return os.environ.get("VELOCAST_ACTOR") or getpass.getuser()
    except Exception:  # no user database in some containers
        return "unknown"


class AuditLog:
    def __init__(self, url: str | None = None, settings: Settings | None = None):
        settings = settings or get_settings()
        self.url = database_url(url or settings.audit_location)
        self.engine = engine(self.url, settings.dependency_timeout_seconds)
        self.env = settings.env

    def record(self, event: AuditEvent) -> AuditEvent:
        """Append one event; recording the same ``event_id`` twice keeps the first. A row that names no
        actor or env gets this process's (``current_actor``, ``VELOCAST_ENV``)."""
        event.actor = event.actor or current_actor()
        event.env = event.env or self.env
        try:
            with _database(self.url), self.engine.begin() as con:
                con.execute(audit_table.insert().values(**event.to_row()))
        except IntegrityError:
            if self.get(event.event_id) is None:
                raise
            log.info("audit event %s was already recorded", event.event_id)
        return event

    def get(self, event_id: str) -> AuditEvent | None:
        with _database(self.url), self.engine.connect() as con:
            row = con.execute(sa.select(audit_table).where(audit_table.c.event_id == event_id)).mappings().first()
        return AuditEvent.from_row(dict(row)) if row else None

    def list(self, limit: int = 50, event: str | None = None, model_type: str | None = None,
             events: tuple[str, ...] | None = None) -> list[AuditEvent]:
        """Newest first. An event name that velocast never records is refused (ValueError), not an empty list."""
        for name in ([event] if event else []) + list(events or []):
            if name not in EVENTS:
                raise ValueError(f"unknown audit event {name!r}: expected one of {', '.join(EVENTS)}")
        query = sa.select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if event:
            query = query.where(audit_table.c.event == event)
        if events:
            query = query.where(audit_table.c.event.in_(events))
        if model_type:
            query = query.where(audit_table.c.model_type == model_type)
        with _database(self.url), self.engine.connect() as con:
            rows = con.execute(query).mappings().all()
        return [AuditEvent.from_row(dict(r)) for r in rows]

    def count(self) -> int:
        with _database(self.url), self.engine.connect() as con:
            return int(con.execute(sa.select(sa.func.count()).select_from(audit_table)).scalar_one())

    def counts(self) -> list[tuple[str, str | None, str | None, int]]:
        """``(event, deployment_decision, model_type, rows)`` for every combination in the log."""
        c = audit_table.c
        query = sa.select(c.event, c.deployment_decision, c.model_type, sa.func.count()).group_by(
            c.event, c.deployment_decision, c.model_type)
        with self.engine.connect() as con:
            return [(e, d, m, int(n)) for e, d, m, n in con.execute(query).all()]
