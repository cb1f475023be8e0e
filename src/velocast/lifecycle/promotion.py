"""Promotion and rollback: the MLflow aliases, summary.json flags and the audit log move together.

A promotion is three idempotent writes — aliases (``champion`` and ``previous-champion``),
``is_champion`` flags in summary.json, the audit row — done under a per-model-type lock and
guarded by a journal file written first:

- if a write raises, the writes already made are undone from the journal and the error re-raised;
- if the process dies half-way (kill -9), the journal survives; the next registry operation
  (``recover``) replays the writes, so aliases, flags and history agree again.

Loading ``models:/bike-traffic-<type>@champion`` therefore always gives the current champion.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from velocast.config import Settings, get_settings, redact_secrets
from velocast.fileio import atomic_write_json, file_lock
from velocast.lifecycle.audit import AuditEvent, AuditLog
from velocast.models import get_spec
from velocast.tracking.registry import CHAMPION, PREVIOUS, Registry

log = logging.getLogger(__name__)

# Fault injection for crash tests: VELOCAST_FAULT=promotion:after_alias makes the process die
# between the alias write and the summary write, exactly like a kill -9 at that point.
_FAULT_ENV = "VELOCAST_FAULT"


class PromotionError(RuntimeError):
    """A promotion or rollback cannot be done (unknown version, nothing to roll back to...)."""


@dataclass
class Promotion:
    promotion_id: str
    model_type: str
    action: str  # promote | rollback | undo
    from_version: str | None
    to_version: str
    to_run_id: str | None
    previous_alias_before: str | None
    previous_alias_after: str | None
    reason: str
    actor: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _actor() -> str:
    try:
        return os.environ.get("VELOCAST_ACTOR") or getpass.getuser()
    except Exception:  # no user database in some containers
        return "unknown"


def _journal(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"promotion-{model_type}.journal.json"


def _lock(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"promotion-{model_type}.lock"


def _fault(point: str) -> None:
    if os.environ.get(_FAULT_ENV) == f"promotion:{point}":
        log.error("fault injection: dying at %s", point)
        os._exit(137)


def _apply(registry: Registry, audit: AuditLog, p: Promotion) -> None:
    """The three writes, each idempotent."""
    registry.set_alias(p.model_type, CHAMPION, p.to_version)
    registry.set_alias(p.model_type, PREVIOUS, p.previous_alias_after)
    _fault("after_alias")
    registry.summary.set_champion(p.model_type, p.to_run_id)
    _fault("after_summary")
    if p.action == "undo":
        audit.record(AuditEvent(event="error", model_type=p.model_type, actor=p.actor, from_version=p.from_version,
                                to_version=p.to_version, error_message=p.reason, event_id=p.promotion_id))
        return
    audit.record(AuditEvent(
        event="promotion" if p.action == "promote" else "rollback", model_type=p.model_type,
        deployment_decision="deploy" if p.action == "promote" else "rollback",
        model_uri=f"models:/{registry.get(p.model_type, p.to_version).name}/{p.to_version}", run_id=p.to_run_id,
        actor=p.actor, from_version=p.from_version, to_version=p.to_version, reasons=[p.reason] if p.reason else [],
        event_id=p.promotion_id, details={"previous_champion_alias": p.previous_alias_after}))


def _reverse(registry: Registry, p: Promotion, error: str) -> Promotion:
    """The promotion that puts things back as they were before ``p``."""
    return Promotion(
        promotion_id=str(uuid.uuid4()), model_type=p.model_type, action="undo", from_version=p.to_version,
        to_version=p.from_version, to_run_id=registry.get(p.model_type, p.from_version).run_id if p.from_version else None,
        previous_alias_before=p.previous_alias_after, previous_alias_after=p.previous_alias_before,
        reason=f"{p.action} to version {p.to_version} failed and was undone: {error}", actor=p.actor,
        at=datetime.now(timezone.utc).isoformat())


def _undo(registry: Registry, audit: AuditLog, reverse: Promotion) -> None:
    if reverse.to_version is None:  # there was no champion before: remove the aliases and flags
        registry.set_alias(reverse.model_type, CHAMPION, None)
        registry.set_alias(reverse.model_type, PREVIOUS, reverse.previous_alias_after)
        registry.summary.set_champion(reverse.model_type, None)
        audit.record(AuditEvent(event="error", model_type=reverse.model_type, actor=reverse.actor,
                                error_message=reverse.reason, event_id=reverse.promotion_id))
        return
    _apply(registry, audit, reverse)


def recover(model_type: str, settings: Settings | None = None, registry: Registry | None = None) -> bool:
    """Finish a promotion a dead process left half-done. True if one was replayed."""
    settings = settings or get_settings()
    journal = _journal(settings, model_type)
    if not journal.exists():
        return False
    with file_lock(_lock(settings, model_type)):
        if not journal.exists():
            return False
        promotion = Promotion(**json.loads(journal.read_text(encoding="utf-8")))
        log.warning("replaying interrupted %s of %s to version %s", promotion.action, model_type, promotion.to_version)
        registry = registry or Registry(settings)
        audit = AuditLog(settings=settings)
        if promotion.action == "undo":
            _undo(registry, audit, promotion)
        else:
            _apply(registry, audit, promotion)
        journal.unlink()
    return True


def _move(model_type: str, to_version: str, action: str, reason: str, settings: Settings,
          previous_after: str | None = "from") -> Promotion:
    registry = Registry(settings)
    recover(model_type, settings, registry)
    audit = AuditLog(settings=settings)
    with file_lock(_lock(settings, model_type)):
        current = registry.champion(model_type)
        previous = registry.by_alias(model_type, PREVIOUS)
        target = registry.get(model_type, to_version)
        from_version = current.version if current else None
        promotion = Promotion(
            promotion_id=str(uuid.uuid4()), model_type=model_type, action=action, from_version=from_version,
            to_version=target.version, to_run_id=target.run_id,
            previous_alias_before=previous.version if previous else None,
            previous_alias_after=(from_version if previous_after == "from" else previous_after)
            if (from_version != target.version) else (previous.version if previous else None),
            reason=reason, actor=_actor(), at=datetime.now(timezone.utc).isoformat())
        journal = _journal(settings, model_type)
        atomic_write_json(journal, promotion.to_dict())
        try:
            _apply(registry, audit, promotion)
        except Exception as exc:
            log.error("%s of %s failed (%s): undoing the writes already made", action, model_type, exc)
            reverse = _reverse(registry, promotion, redact_secrets(f"{type(exc).__name__}: {exc}", settings))
            atomic_write_json(journal, reverse.to_dict())  # a crash or failure from here replays the undo
            try:
                _undo(registry, audit, reverse)
                journal.unlink(missing_ok=True)
            except Exception:
                log.exception("undo incomplete: the journal is kept and the next operation will finish it")
            raise
        journal.unlink(missing_ok=True)
    log.info("%s %s: champion %s -> %s", action, model_type, from_version, target.version)
    return promotion


def promote(model_type: str, version: str | None = None, run_id: str | None = None, reason: str = "",
            settings: Settings | None = None) -> Promotion:
    """Make a registered version (by number or run id) the champion of its type."""
    settings = settings or get_settings()
    get_spec(model_type)
    registry = Registry(settings)
    if version is None and run_id is None:
        raise PromotionError("name the version (--version) or the run (--run-id) to promote")
    try:
        ref = registry.resolve(model_type, version=version, run_id=run_id)
        if not ref.complete:
            raise LookupError(f"{ref.name} version {ref.version} is incomplete: its training did not finish "
                              "(a killed process; the next training reconciles it)")
    except LookupError as exc:
        raise PromotionError(str(exc)) from exc
    return _move(model_type, ref.version, "promote", reason or "manual promotion", settings)


def rollback(model_type: str, reason: str = "", settings: Settings | None = None) -> Promotion:
    """Give the champion alias back to ``previous-champion``."""
    settings = settings or get_settings()
    registry = Registry(settings)
    recover(model_type, settings, registry)
    previous = registry.by_alias(model_type, PREVIOUS)
    if previous is None:
        raise PromotionError(f"{model_type} has no previous champion to roll back to")
    # the champion before `previous`, from the history, becomes the new previous-champion
    before = next((h.from_version for h in history(model_type, settings)
                   if h.to_version == previous.version and h.from_version != previous.version), None)
    return _move(model_type, previous.version, "rollback", reason or "manual rollback", settings,
                 previous_after=before)


def history(model_type: str | None = None, settings: Settings | None = None, limit: int = 100) -> list[AuditEvent]:
    """Promotions and rollbacks, newest first (who, when, from, to, why)."""
    return AuditLog(settings=settings).list(limit=limit, model_type=model_type, events=("promotion", "rollback"))
