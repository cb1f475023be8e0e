"""The weekly cycle run one step per task, as the Airflow DAG ``monitor_and_fine_tune`` does.

``cycle.monitor_and_fine_tune`` runs every step in one process. An orchestrator runs each step
function of :mod:`velocast.lifecycle.cycle` as its own task and passes their small dicts along;
what the in-process cycle does *between* the steps lives here, so both audit the same row:

- :func:`begin` — takes the cycle lease of the model type for ``owner`` (the DAG run: it holds
  across every task until :func:`release`), then the new-data check, plus a cycle id, the start
  time, the champion before (the one a promotion compares and swaps against), and whether to go on;
- :func:`finish` — the cycle result rebuilt from the steps' outputs, their final states and the
  error message of a failed one; the cycle state (the data this cycle saw, so the next one can
  skip) and one audit row: ``cycle``, or ``error`` naming the step that failed;
- :func:`notify` — the webhook, also when the audit itself failed;
- :func:`release` — gives the lease back (the DAG's last task, run whatever happened upstream).

Step names are those of the in-process cycle (``new_data``, ``drift``, ``health``, ``decide``,
``fine_tune``, ``evaluate``, ``promote``, ``recalibrate``), whatever the orchestrator calls its tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from velocast.config import Settings, get_settings
from velocast.lifecycle import lease
from velocast.lifecycle.cycle import (
    audit_cycle,
    champion_now,
    check_new_data,
    cycle_env,
    notify_cycle,
    record_cycle_state,
)

log = logging.getLogger(__name__)

STEPS = ("new_data", "drift", "health", "decide", "fine_tune", "evaluate", "promote", "recalibrate")
# final task states (Airflow's names) -> the cycle's step status
_DONE, _FAILED = {"success"}, {"failed"}
_SKIPPED = {"skipped", "upstream_failed", "removed"}


def begin(model_type: str, force_fine_tune: bool = False, settings: Settings | None = None, *,
          owner: str) -> dict[str, Any]:
    """Start a cycle: take the lease for ``owner`` (``CycleBusy`` while another cycle holds it), then
    check for new data. The caller gives the lease back with :func:`release`, whatever happens."""
    from velocast.models import get_spec
    from velocast.tracking.registry import Registry

    settings = settings or get_settings()
    get_spec(model_type)
    lease.acquire(model_type, owner, settings)
    champion = Registry(settings).champion(model_type)
    new = check_new_data(model_type, settings)
    proceed = bool(new["new_data"] or force_fine_tune)
    return {**new, "cycle_id": str(uuid.uuid4()), "started_at": datetime.now(UTC).isoformat(),
            "model_type": model_type, "champion_before": champion.version if champion else None,
            "proceed": proceed,
            "summary": new["summary"] + ("" if proceed else "; nothing new: the cycle skips to the audit")}


def _step(name: str, state: str | None, output: Mapping[str, Any] | None, error: str | None,
          skip_reason: str) -> dict[str, Any]:
    if state in _FAILED:
        return {"name": name, "status": "failed", "summary": error or "task failed (see its log)"}
    if state in _DONE:
        return {"name": name, "status": "done", "summary": (output or {}).get("summary", "")}
    if state in _SKIPPED:
        why = "an earlier step failed" if state == "upstream_failed" else skip_reason
        return {"name": name, "status": "skipped", "summary": why}
    return {"name": name, "status": "skipped", "summary": f"not run (task state {state})"}


def finish(outputs: Mapping[str, Mapping[str, Any] | None], states: Mapping[str, str | None],
           errors: Mapping[str, str | None] | None = None, *, model_type: str, force_fine_tune: bool = False,
           test_mode: bool = False, window_days: int = 30, strategy: str = "sliding_window",
           policy: str = "double_eval", env: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Assemble the cycle result from the steps, record the cycle state and its audit row.

    ``outputs``, ``states`` and ``errors`` are keyed by step name (:data:`STEPS`): a step's
    returned dict (``None`` when it did not run), its final task state (``success``, ``failed``,
    ``skipped``, ``upstream_failed``...) and, for a failed step, ``"<ExceptionType>: <message>"``.
    The first failed step makes the row an ``error`` whose message names it, exactly like the
    in-process cycle's. Returns the result dict (as ``CycleResult.to_dict`` plus ``env``) with
    ``audit_event_id`` set; raises if the audit log cannot be written.
    """
    settings = settings or get_settings()
    env = env or settings.env
    errors = errors or {}
    out = {name: dict(outputs.get(name) or {}) for name in STEPS}
    new, drift, health, verdict = out["new_data"], out["drift"], out["health"], out["decide"]
    tuned, evaluated, promoted = out["fine_tune"], out["evaluate"], out["promote"]
    recalibrated = out["recalibrate"]
    failed = next((name for name in STEPS if states.get(name) in _FAILED), None)
    error = None
    if failed:
        error = f"{failed} step failed: {errors.get(failed) or 'the task failed (see its Airflow log)'}"
    env = cycle_env(env, test_mode)
    champion_before = new.get("champion_before")
    if not new:  # the first step failed: say who the champion is from the registry, if it answers
        champion_before = champion_now(model_type, settings, None)
    skip_reason = ("no new data since the last training or cycle" if new.get("proceed") is False
                   else (verdict.get("reasons") or ["not needed"])[0] if verdict.get("fine_tune") is False
                   else "not reached")
    result: dict[str, Any] = {
        "cycle_id": new.get("cycle_id") or str(uuid.uuid4()), "model_type": model_type,
        "started_at": new.get("started_at") or datetime.now(UTC).isoformat(),
        "test_mode": test_mode, "forced": force_fine_tune, "strategy": strategy, "policy": policy,
        "window_days": window_days,
        "steps": [_step(name, states.get(name), out[name], errors.get(name), skip_reason) for name in STEPS
                  if name != "decide"],
        "new_data": new.get("new_data"), "drift_detected": drift.get("drift_detected"),
        "drift_share": drift.get("drift_share"), "health_state": health.get("state"),
        "fine_tuned": bool(tuned), "challenger_version": tuned.get("version"),
        "challenger_run_id": tuned.get("run_id"), "challenger_uri": tuned.get("registry_uri"),
        "decision": evaluated.get("decision"),
        "reasons": list(verdict.get("reasons") or []) + list(evaluated.get("reasons") or []),
        "promoted": bool(promoted.get("promoted")), "champion_before": champion_before,
        "champion_after": champion_before, "recalibrated_version": None, "metrics": {}, "audit_event_id": None,
        "notified": None,
        "error": error, "env": env,
    }
    if tuned:
        result["metrics"]["train"] = tuned.get("metrics_train")
    if evaluated:
        result["metrics"].update(evaluated.get("metrics") or {})
        result["metrics"]["baseline_regression"] = evaluated.get("baseline_regression")
    if promoted and not error:
        result["champion_after"] = promoted.get("champion_after")
        result["reasons"] += list(promoted.get("reasons") or [])
    elif error and new:  # a rollback may have moved the champion meanwhile: say where it is now
        result["champion_after"] = champion_now(model_type, settings, champion_before)
    if recalibrated.get("status") == "done" and not error:
        result["champion_after"] = result["recalibrated_version"] = recalibrated.get("to_version")
    if test_mode:
        result["reasons"].append("test mode: small samples were used for training and evaluation")
    result["baseline_regression"] = result["metrics"].get("baseline_regression")
    result["model_improvement"] = result["promoted"] if result["decision"] else None
    result["status"] = "error" if error else "skipped" if result["new_data"] is False and not force_fine_tune \
        else "ok"  # as CycleResult.status
    if not error and states.get("drift") in _DONE:
        # like the in-process cycle: the data this cycle looked at, so the next one can skip
        record_cycle_state(settings, model_type, data_end=new.get("latest"), last_cycle=result["started_at"],
                     last_cycle_id=result["cycle_id"])
    result["audit_event_id"] = audit_cycle(result, settings)
    result["steps"].append({"name": "audit", "status": "done", "summary": f"audit event {result['audit_event_id']}"})
    log.info("cycle %s audited: %s", result["cycle_id"], error or result["decision"] or result["status"])
    return result


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


__all__ = ["STEPS", "begin", "finish", "notify", "release"]
