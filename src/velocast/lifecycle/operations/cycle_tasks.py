"""The weekly cycle run one step per task, as the Airflow DAG ``monitor_and_fine_tune`` does.

``cycle.monitor_and_fine_tune`` runs every step in one process. An orchestrator runs each step
function of :mod:`velocast.lifecycle.operations.cycle` as its own task and passes their results along as
dicts (``to_dict``; ``from_dict`` back, :data:`~velocast.lifecycle.operations.cycle_steps.STEP_TYPES`); what
the in-process cycle does *between* the steps lives here, so both audit the same row:

- :func:`begin` — takes the cycle lease of the model type for ``owner`` (the DAG run: it holds
  across every task until :func:`release`), then the new-data check, plus a cycle id, the start
  time, the champion before (the one a promotion compares and swaps against), and whether to go on;
- :func:`decide` — the ``decide`` step on the drift and health results as the tasks passed them;
- :func:`finish` — the steps' outcomes from their results, final task states and the error message
  of a failed one, assembled by ``cycle_steps.assemble_cycle`` (as the in-process cycle does); the
  cycle state (the data this cycle saw, so the next one can skip) and one audit row: ``cycle``, or
  ``error`` naming the step that failed;
- :func:`notify` — the webhook, also when the audit itself failed;
- :func:`release` — gives the lease back (the DAG's last task, run whatever happened upstream).

Step names are those of the in-process cycle (:data:`~velocast.lifecycle.operations.cycle_steps.STEPS`),
whatever the orchestrator calls its tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from velocast.config import Settings, get_settings
from velocast.lifecycle.operations import lease
from velocast.lifecycle.operations.cycle import (
    audit_cycle,
    champion_now,
    check_new_data,
    cycle_env,
    notify_cycle,
    record_cycle_state,
    should_fine_tune,
)
from velocast.lifecycle.operations.cycle_steps import (
    STEP_TYPES,
    STEPS,
    CycleParams,
    DriftCheck,
    HealthCheck,
    StepOutcome,
    assemble_cycle,
)

log = logging.getLogger(__name__)

# final task states (Airflow's names) -> the cycle's step status
_DONE, _FAILED = {"success"}, {"failed"}
_SKIPPED = {"skipped", "upstream_failed", "removed"}  # the assembly says why


def begin(model_type: str, force_fine_tune: bool = False, settings: Settings | None = None, *,
          owner: str, test_mode: bool = False) -> dict[str, Any]:
    """Start a cycle: take the lease for ``owner`` (``CycleBusy`` while another cycle holds it), then
    check for new data. The caller gives the lease back with :func:`release`, whatever happens.

    Returns the ``new_data`` step's result (``NewData.to_dict``) with the cycle's ``cycle_id``,
    ``started_at``, ``model_type``, ``champion_before`` and ``proceed``."""
    from velocast.models import get_spec
    from velocast.tracking.registry import Registry

    settings = settings or get_settings()
    get_spec(model_type)
    lease.acquire(model_type, owner, settings)
    champion = Registry(settings).champion(model_type)
    new = check_new_data(model_type, settings, test_mode)
    proceed = bool(new.new_data or force_fine_tune)
    return {**new.to_dict(), "cycle_id": str(uuid.uuid4()), "started_at": datetime.now(UTC).isoformat(),
            "model_type": model_type, "champion_before": champion.version if champion else None,
            "proceed": proceed,
            "summary": new.summary + ("" if proceed else "; nothing new: the cycle skips to the audit")}


def decide(drift: Mapping[str, Any], health: Mapping[str, Any], force_fine_tune: bool,
           champion_before: str | None) -> dict[str, Any]:
    """The ``decide`` step on the dicts of the drift and health tasks (``FineTuneVerdict.to_dict``)."""
    verdict = should_fine_tune(DriftCheck.from_dict(dict(drift)), HealthCheck.from_dict(dict(health)),
                               force_fine_tune, champion_before is not None)
    return verdict.to_dict()


def _outcome(name: str, state: str | None, output: Mapping[str, Any] | None, error: str | None) -> StepOutcome | None:
    """A step's outcome from its task (None: skipped, the assembly says why)."""
    if state in _FAILED:
        return StepOutcome(name, "failed", error or "the task failed (see its Airflow log)")
    if state in _DONE and output is not None:
        result = STEP_TYPES[name].from_dict(dict(output))
        return StepOutcome(name, "done", result.summary, result=result)
    if state in _SKIPPED:
        return None
    return StepOutcome(name, "skipped", f"not run (task state {state})")


def finish(outputs: Mapping[str, Mapping[str, Any] | None], states: Mapping[str, str | None],
           errors: Mapping[str, str | None] | None = None, *, model_type: str, force_fine_tune: bool = False,
           test_mode: bool = False, window_days: int = 30, strategy: str = "sliding_window",
           policy: str = "double_eval", env: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Assemble the cycle result from the steps, record the cycle state and its audit row.

    ``outputs``, ``states`` and ``errors`` are keyed by step name (:data:`STEPS`): a step's
    returned dict (``None`` when it did not run), its final task state (``success``, ``failed``,
    ``skipped``, ``upstream_failed``...) and, for a failed step, ``"<ExceptionType>: <message>"``.
    The first failed step makes the row an ``error`` whose message names it, exactly like the
    in-process cycle's. Returns ``CycleResult.to_dict()`` with ``audit_event_id`` set; raises if
    the audit log cannot be written.
    """
    settings = settings or get_settings()
    errors = errors or {}
    params = CycleParams(model_type, test_mode, force_fine_tune, strategy, policy, window_days,
                         cycle_env(env or settings.env, test_mode))
    outcomes = [o for name in STEPS if (o := _outcome(name, states.get(name), outputs.get(name), errors.get(name)))]
    start = dict(outputs.get("new_data") or {})
    # without the first step, say who the champion is from the registry, if it answers
    champion_before = start["champion_before"] if start else champion_now(model_type, settings, None)
    failed = any(o.status == "failed" for o in outcomes)
    result = assemble_cycle(
        params, outcomes, cycle_id=start.get("cycle_id") or str(uuid.uuid4()),
        started_at=start.get("started_at") or datetime.now(UTC).isoformat(), champion_before=champion_before,
        # a rollback may have moved the champion meanwhile: say where it is now
        champion_after_error=champion_now(model_type, settings, champion_before) if failed and start
        else champion_before)
    if not result.error and states.get("drift") in _DONE:
        # like the in-process cycle: the data this cycle looked at, so the next one can skip
        record_cycle_state(settings, model_type, test_mode, data_end=start.get("latest"), last_cycle=result.started_at,
                           last_cycle_id=result.cycle_id)
    result.audit_event_id = audit_cycle(result, settings)
    result.steps.append(StepOutcome("audit", "done", f"audit event {result.audit_event_id}"))
    log.info("cycle %s audited: %s", result.cycle_id, result.error or result.decision or result.status)
    return result.to_dict()


def notify(result: Mapping[str, Any] | None, model_type: str, settings: Settings | None = None) -> dict[str, Any]:
    """The webhook of a finished cycle; ``result=None`` means the audit failed, which is notified."""
    settings = settings or get_settings()
    payload = dict(result) if result else {
        "model_type": model_type, "error": "the audit step failed: the cycle has no audit row (see the Airflow log)"}
    sent = notify_cycle(payload, settings)
    summary = ("webhook sent" if sent else "no webhook configured" if not settings.webhook_url
               else "nothing to notify or webhook failed (see log)")
    return {"notified": sent, "summary": summary}


def release(model_type: str, owner: str, settings: Settings | None = None) -> dict[str, Any]:
    """Give the cycle lease back if ``owner`` holds it (a run refused as busy leaves the other's lease alone)."""
    settings = settings or get_settings()
    released = lease.release(model_type, owner, settings)
    return {"released": released,
            "summary": f"cycle lease of {model_type} released" if released else f"{owner} held no {model_type} lease"}


__all__ = ["STEPS", "begin", "decide", "finish", "notify", "release"]
