"""Promotion and rollback: the MLflow alias moves, the audit log records it, summary.json follows.

The registry's alias ``champion`` is the one truth about who is champion. A promotion is two
idempotent writes — the aliases (``champion`` and ``previous-champion``), then the audit row —
done under a per-model-type lock and guarded by a journal written *before the first write* that
holds both the promotion and its undo (what the aliases were):

- the audit row is written last and is the commit point: once it is there, the promotion happened;
- if a write raises, the writes already made are undone at once and the error re-raised;
- if the process dies half-way (kill -9), or its undo fails too, the journal survives and the next
  write (``recover``, run before every promotion and rollback and at API start-up) finishes the
  *undo*: a promotion that did not commit never completes later by itself, and a fault leaves the
  champion as it was. Reads (``GET /models``, the UI, the serving cache) never run it.

summary.json's ``is_champion`` flags are a view of the alias, not part of the transaction: they are
brought in line after the commit and by every ``recover`` (:meth:`Registry.sync_summary`); if
summary.json cannot be written then, the promotion stands and the flags catch up at the next write
(or ``velocast summary rebuild``).

Compare-and-swap: a caller that compared a challenger against a champion passes that champion as
``expected_champion``; the promotion refuses (``ChampionChanged``, audited) when the champion moved
meanwhile — a rollback made during a weekly cycle wins over the cycle's promotion.

A version that is a test-mode model or failed the baseline gate (``Registry.blockers``) is promoted
only with ``force=True`` and a reason, and the audit row says it was an override. A rollback goes to
the champion before the current one in the promotion history, skipping versions that were rolled
back from, so a second rollback never brings back the version the first one removed; it brings back
a version with blockers under the same rule as a promotion (``force=True`` and a reason, an override).

Loading ``models:/bike-traffic-<type>@champion`` therefore always gives the current champion.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from velocast.config import Settings, get_settings, redact_secrets
from velocast.fileio import atomic_write_json, file_lock
from velocast.lifecycle.audit import AuditEvent, AuditLog, current_actor
from velocast.models import check_model_type
from velocast.tracking.registry import CHAMPION, PREVIOUS, ModelRef, Registry

log = logging.getLogger(__name__)

# Fault injection for crash tests: VELOCAST_FAULT=promotion:after_alias makes the process die
# between the alias write and the audit row (its commit point), exactly like a kill -9 at that point;
# promotion:after_audit dies once it committed, before summary.json's flags follow the alias.
_FAULT_ENV = "VELOCAST_FAULT"
HISTORY_LIMIT = 10_000  # promotions and rollbacks read to find where a rollback goes


class PromotionError(RuntimeError):
    """A promotion or rollback cannot be done (unknown version, nothing to roll back to...)."""


class ChampionChanged(PromotionError):
    """The champion is not the one the caller compared against (compare-and-swap refused)."""


class _AnyChampion:
    def __repr__(self) -> str:
        return "ANY_CHAMPION"


ANY_CHAMPION: Any = _AnyChampion()  # ``expected_champion`` default: no compare-and-swap check


def expected_from_text(value: str | None) -> Any:
    """``--expected-champion`` / the API field: a version, ``none`` (no champion), or unset (no check).

    Anything else is a ``ValueError``: a typo must not read as "the champion changed".
    """
    if value is None or value == "":
        return ANY_CHAMPION
    text = value.strip()
    if text.lower() in ("none", "-"):
        return None
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"expected champion {text[:40]!r} is not a version: give the champion version you compared "
                         "against (a number, e.g. 3) or 'none' (there was no champion)")
    return str(int(text))


@dataclass
class Promotion:
    """One move of the champion alias (also what ``/promote_champion`` and ``/rollback`` answer)."""

    promotion_id: str
    model_type: str
    action: str  # promote | rollback | undo
    from_version: str | None
    to_version: str | None  # None only for the undo of a first promotion (no champion before)
    to_run_id: str | None
    previous_alias_before: str | None
    previous_alias_after: str | None
    reason: str
    actor: str
    at: str
    override: bool = False  # promoted with force over these blockers
    overridden: list[str] = field(default_factory=list)
    decision: str | None = None  # the audit row's decision when not a deploy (a recalibration's new version)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promotion:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _journal(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"promotion-{model_type}.journal.json"


def _lock(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"promotion-{model_type}.lock"


def _fault(point: str) -> None:
    if os.environ.get(_FAULT_ENV) == f"promotion:{point}":
        log.error("fault injection: dying at %s", point)
        os._exit(137)


# ------------------------------------------------------------------------------------ the writes
def _apply(registry: Registry, audit: AuditLog, p: Promotion) -> None:
    """The three writes, each idempotent; the audit row last (the commit point)."""
    registry.set_alias(p.model_type, CHAMPION, p.to_version)
    registry.set_alias(p.model_type, PREVIOUS, p.previous_alias_after)
    _fault("after_alias")
    if p.action == "undo":
        audit.record(AuditEvent(event="error", model_type=p.model_type, actor=p.actor, from_version=p.from_version,
                                to_version=p.to_version, error_message=p.reason, event_id=p.promotion_id,
                                details={"undo": True}))
        return
    details: dict[str, Any] = {"previous_champion_alias": p.previous_alias_after}
    reasons = [p.reason] if p.reason else []
    if p.override:
        details.update(override=True, overridden=p.overridden)
        reasons += [f"override (--force): {b}" for b in p.overridden]
    audit.record(AuditEvent(
        event="promotion" if p.action == "promote" else "rollback", model_type=p.model_type,
        deployment_decision=(p.decision or ("override" if p.override else "deploy")) if p.action == "promote"
        else "rollback",
        model_uri=f"models:/{registry.get(p.model_type, p.to_version).name}/{p.to_version}", run_id=p.to_run_id,
        actor=p.actor, from_version=p.from_version, to_version=p.to_version, reasons=reasons,
        event_id=p.promotion_id, details=details))
    _fault("after_audit")


def _sync_view(registry: Registry, model_type: str) -> None:
    """summary.json's flags after the alias; a failure is logged, never undoes a committed promotion."""
    try:
        registry.sync_summary(model_type)
    except Exception as exc:
        log.warning("summary.json's champion flags of %s could not follow the alias (%s: %s); the next promotion, "
                    "recovery or `velocast summary rebuild` brings them in line", model_type, type(exc).__name__,
                    redact_secrets(str(exc), registry.settings))


def _reverse(p: Promotion, from_run_id: str | None) -> Promotion:
    """The writes that put things back as they were before ``p`` (computed before its first write)."""
    return Promotion(
        promotion_id=str(uuid.uuid4()), model_type=p.model_type, action="undo", from_version=p.to_version,
        to_version=p.from_version, to_run_id=from_run_id,
        previous_alias_before=p.previous_alias_after, previous_alias_after=p.previous_alias_before,
        reason=f"{p.action} to version {p.to_version} did not complete and was undone", actor=p.actor, at=p.at)


def _write_journal(settings: Settings, forward: Promotion, undo: Promotion, state: str) -> None:
    atomic_write_json(_journal(settings, forward.model_type),
                      {"state": state, "promotion": forward.to_dict(), "undo": undo.to_dict()})


def _read_journal(settings: Settings, model_type: str, registry: Registry) -> tuple[str, Promotion, Promotion]:
    data = json.loads(_journal(settings, model_type).read_text(encoding="utf-8"))
    if "promotion" in data:
        return data["state"], Promotion.from_dict(data["promotion"]), Promotion.from_dict(data["undo"])
    # a journal of an earlier velocast (the promotion alone): its undo is rebuilt from it
    old = Promotion.from_dict(data)
    if old.action == "undo":
        return "undoing", old, old
    run = registry.get(model_type, old.from_version).run_id if old.from_version else None
    return "applying", old, _reverse(old, run)


def _recover_locked(model_type: str, settings: Settings, registry: Registry, audit: AuditLog) -> bool:
    journal = _journal(settings, model_type)
    if not journal.exists():
        return False
    state, forward, undo = _read_journal(settings, model_type, registry)
    if state == "applying" and forward.action != "undo" and audit.get(forward.promotion_id) is not None:
        log.info("the interrupted %s of %s to version %s had committed (its audit row is written)",
                 forward.action, model_type, forward.to_version)
        journal.unlink(missing_ok=True)
        return True
    log.warning("undoing the interrupted %s of %s to version %s (champion back to %s)", forward.action, model_type,
                forward.to_version, undo.to_version)
    if state == "applying":
        undo.reason = f"{forward.action} to version {forward.to_version} was interrupted and is undone by recovery"
        _write_journal(settings, forward, undo, "undoing")
    _apply(registry, audit, undo)
    journal.unlink(missing_ok=True)
    return True


def recover(model_type: str, settings: Settings | None = None, registry: Registry | None = None) -> bool:
    """Undo a promotion a dead process (or a failed undo) left half-done. True if a journal was handled.

    Then bring summary.json's flags in line with the alias. Writes: runs before every promotion and
    rollback and at API start-up, never on a read path.
    """
    settings = settings or get_settings()
    handled = False
    if _journal(settings, model_type).exists():
        registry = registry or Registry(settings)
        with file_lock(_lock(settings, model_type)):
            handled = _recover_locked(model_type, settings, registry, AuditLog(settings=settings))
    _sync_view(registry or Registry(settings), model_type)
    return handled


def pending(model_type: str, settings: Settings | None = None) -> Promotion | None:
    """The undo an interrupted promotion still needs (read-only), or None."""
    settings = settings or get_settings()
    try:
        data = json.loads(_journal(settings, model_type).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return Promotion.from_dict(data["undo"]) if "undo" in data else None


# ------------------------------------------------------------------------------------ one move
# champion -> (target, previous-champion after, the blockers of the target that are overridden)
Plan = Callable[[ModelRef | None], tuple[ModelRef, str | None, list[str]]]


def _refuse(audit: AuditLog, model_type: str, action: str, target: str | None, current: str | None,
            expected: str | None) -> ChampionChanged:
    message = (f"{action} of {model_type} version {target} refused: the champion is "
               f"{'version ' + current if current else 'unset'}, not "
               f"{'version ' + expected if expected else 'unset'} as when it was compared (a rollback or another "
               "promotion happened meanwhile); compare against the current champion again")
    audit.record(AuditEvent(event="error", model_type=model_type, actor=current_actor(), from_version=current,
                            to_version=target, error_message=message,
                            details={"refused": "champion_changed", "requested_version": target,
                                     "expected_champion": expected, "champion": current}))
    return ChampionChanged(message)


def _move(model_type: str, action: str, reason: str, settings: Settings, plan: Plan,
          expected_champion: Any = ANY_CHAMPION, decision: str | None = None) -> Promotion:
    registry = Registry(settings)
    audit = AuditLog(settings=settings)
    with file_lock(_lock(settings, model_type)):
        _recover_locked(model_type, settings, registry, audit)
        current = registry.champion(model_type)
        from_version = current.version if current else None
        target, previous_after, overridden = plan(current)
        if expected_champion is not ANY_CHAMPION and from_version != expected_champion:
            raise _refuse(audit, model_type, action, target.version, from_version, expected_champion)
        previous = registry.by_alias(model_type, PREVIOUS)
        forward = Promotion(
            promotion_id=str(uuid.uuid4()), model_type=model_type, action=action, from_version=from_version,
            to_version=target.version, to_run_id=target.run_id,
            previous_alias_before=previous.version if previous else None,
            previous_alias_after=previous_after if from_version != target.version
            else (previous.version if previous else None),
            reason=reason, actor=current_actor(), at=_now(), override=bool(overridden), overridden=list(overridden),
            decision=decision)
        if action == "promote" and from_version == target.version:  # nothing moves: nothing to record
            log.info("promote %s: version %s already is the champion", model_type, from_version)
            return forward
        undo = _reverse(forward, current.run_id if current else None)
        _write_journal(settings, forward, undo, "applying")  # before the first write: what the undo needs
        try:
            _apply(registry, audit, forward)
        except Exception as exc:
            log.error("%s of %s failed (%s): undoing the writes already made", action, model_type, exc)
            undo.reason = (f"{action} to version {target.version} failed and was undone: "
                           f"{redact_secrets(f'{type(exc).__name__}: {exc}', settings)}")
            try:
                _write_journal(settings, forward, undo, "undoing")
            except Exception:
                log.exception("could not update the journal: it still holds the undo, which recovery will run")
            try:
                _apply(registry, audit, undo)
                _journal(settings, model_type).unlink(missing_ok=True)
            except Exception:
                log.exception("undo incomplete: the journal is kept and the next write (or API start) finishes it")
            raise
        _journal(settings, model_type).unlink(missing_ok=True)  # committed: the audit row is written
        _sync_view(registry, model_type)
    log.info("%s %s: champion %s -> %s", action, model_type, from_version, target.version)
    return forward


# ------------------------------------------------------------------------------------ commands
def promote(model_type: str, version: str | None = None, run_id: str | None = None, reason: str = "",
            settings: Settings | None = None, expected_champion: Any = ANY_CHAMPION,
            force: bool = False, decision: str | None = None) -> Promotion:
    """Make a registered version (by number or run id) the champion of its type.

    ``expected_champion``: the champion version (None: no champion) the caller compared against;
    refused with ``ChampionChanged`` if it moved. ``force``: promote a test-mode or gate-failing
    version anyway (needs a ``reason``; audited as an override). ``decision``: the audit row's
    decision when the move is no deployment of another model (``recalibrate``: the same point model
    with new intervals), else ``deploy`` (or ``override``).
    """
    settings = settings or get_settings()
    check_model_type(model_type)
    if version is None and run_id is None:
        raise PromotionError("name the version (--version) or the run (--run-id) to promote")
    registry = Registry(settings)
    recover(model_type, settings, registry)
    try:
        ref = registry.resolve(model_type, version=version, run_id=run_id)
        if not ref.complete:
            raise LookupError(f"{ref.name} version {ref.version} is incomplete: its training did not finish "
                              "(a killed process; the next training reconciles it)")
    except LookupError as exc:
        raise PromotionError(str(exc)) from exc
    blockers = _overridden(registry, ref, "promotion", force, reason)

    def plan(current: ModelRef | None) -> tuple[ModelRef, str | None, list[str]]:
        return ref, current.version if current else None, blockers

    return _move(model_type, "promote", reason or "manual promotion", settings, plan, expected_champion, decision)


def _overridden(registry: Registry, ref: ModelRef, action: str, force: bool, reason: str) -> list[str]:
    """The blockers of ``ref`` that ``force`` overrides (empty: none); a ``PromotionError`` when it has
    some and is not forced with a reason. The same rule for a promotion and a rollback."""
    blockers = registry.blockers(ref)
    verb = "promoted" if action == "promotion" else "brought back by a rollback"
    if blockers and not force:
        raise PromotionError(f"{'; '.join(blockers)}: it is not {verb} without an explicit override "
                             "(CLI: --force --reason \"why\"; API: \"force\": true and a reason)")
    if blockers and not reason.strip():
        raise PromotionError(f"a forced {action} needs a reason (--reason): {'; '.join(blockers)}")
    return blockers


def _rollback_order(model_type: str, settings: Settings) -> tuple[list[str], set[str]]:
    """Champions from the promotion history, oldest first (each once, at its latest place), and the
    versions rolled back from (until promoted again)."""
    stack: list[str] = []
    rolled: set[str] = set()
    for h in reversed(history(model_type, settings, limit=HISTORY_LIMIT)):
        if h.event == "rollback" and h.from_version:
            rolled.add(h.from_version)
            if h.from_version in stack:
                stack.remove(h.from_version)
        elif h.event == "promotion" and h.to_version:
            rolled.discard(h.to_version)
        if h.to_version:
            if h.to_version in stack:
                stack.remove(h.to_version)
            stack.append(h.to_version)
    return stack, rolled


def rollback(model_type: str, reason: str = "", settings: Settings | None = None, force: bool = False) -> Promotion:
    """Give the champion back to the champion before it (from the history; never a version rolled back from).

    That version is checked as a promotion is: a test-mode or gate-failing one is brought back only
    with ``force`` and a ``reason`` (audited as an override), else ``PromotionError`` and nothing moves.
    """
    settings = settings or get_settings()
    check_model_type(model_type)
    registry = Registry(settings)
    recover(model_type, settings, registry)

    def plan(current: ModelRef | None) -> tuple[ModelRef, str | None, list[str]]:
        stack, rolled = _rollback_order(model_type, settings)
        if not stack:  # no history (an older home): the previous-champion alias
            previous = registry.by_alias(model_type, PREVIOUS)
            stack = [previous.version] if previous else []
        candidates = [v for v in reversed(stack)
                      if v != (current.version if current else None) and v not in rolled]
        if not candidates:
            raise PromotionError(f"{model_type} has no previous champion to roll back to"
                                 + (f" (versions rolled back from are skipped: {', '.join(sorted(rolled))})"
                                    if rolled else ""))
        try:
            target = registry.get(model_type, candidates[0])
        except LookupError as exc:
            raise PromotionError(f"{model_type}: the previous champion {candidates[0]} is gone: {exc}") from exc
        return target, candidates[1] if len(candidates) > 1 else None, _overridden(registry, target, "rollback",
                                                                                   force, reason)

    return _move(model_type, "rollback", reason or "manual rollback", settings, plan)


def history(model_type: str | None = None, settings: Settings | None = None, limit: int = 100) -> list[AuditEvent]:
    """Promotions and rollbacks, newest first (who, when, from, to, why)."""
    return AuditLog(settings=settings).list(limit=limit, model_type=model_type, events=("promotion", "rollback"))
