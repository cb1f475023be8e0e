"""The weekly cycle ``monitor_and_fine_tune`` and the quarterly retrain.

new data since the last training? → drift → champion health → fine-tune? → fine-tune →
double evaluation → decision → promote or keep → recalibrate the champion's prediction intervals
on the newest labelled days it never saw (``velocast.lifecycle.decisions.recalibrate``: a new version of the
same point model, promoted and audited as ``recalibration``; also when the champion is kept) →
audit → notify.

Each step is a function taking small values (versions, run ids, paths) and returning a typed result
of ``velocast.lifecycle.operations.cycle_steps`` (JSON through its ``to_dict``/``from_dict``), so the Airflow DAG
can run them as separate tasks; ``monitor_and_fine_tune`` runs them in one process for the CLI, and
both build the cycle's result with ``cycle_steps.assemble_cycle``. The challenger is trained and judged
by ``velocast.lifecycle.decisions.challenger`` (as the API's jobs and the quarterly retrain are). An exception in any step is audited as ``error`` with its message and the
champion stays as it was (a promotion that fails undoes itself). Two cycles of one model type
never run at once: the second refuses with a clear message (the lease of ``lifecycle.lease``, also
held across the Airflow DAG's tasks and by the quarterly retrain).

A promotion is compare-and-swap against the champion the cycle started with: if a rollback (or
another promotion) moved it meanwhile, the promotion is refused and audited as ``error``. A cycle in
test mode (small samples) never promotes: it is audited with env ``dev`` and keeps the champion.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from velocast import progress
from velocast.choices import ENVS, STRATEGIES
from velocast.config import Settings, get_settings, redact_secrets
from velocast.data import splits, store
from velocast.data.schema import paris_midnight, to_paris
from velocast.data.splits import split_by_time
from velocast.evaluation.policies import Policy
from velocast.fileio import atomic_write_json, file_lock
from velocast.lifecycle.audit import AuditEvent, AuditLog
from velocast.lifecycle.decisions.challenger import judge, train_and_judge
from velocast.lifecycle.decisions.monitor import (
    champion_health,
    champion_model,
    check_drift,
    check_window,
    record_health,
    window,
)
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.decisions.recalibrate import ANY_CHAMPION, recalibrate
from velocast.lifecycle.operations import lease, notify
from velocast.lifecycle.operations.cycle_steps import (
    NO_NEW_DATA,
    CycleParams,
    CycleResult,
    DriftCheck,
    EvaluatedChallenger,
    FineTuned,
    FineTuneVerdict,
    HealthCheck,
    NewData,
    PromotionStep,
    Recalibrated,
    StepOutcome,
    assemble_cycle,
)
from velocast.lifecycle.operations.lease import CycleBusy  # noqa: F401 - where callers import it from
from velocast.lifecycle.training.datasets import (
    MODEL_TEST_EVAL_ROWS,
    Dataset,
    Datasets,
    days_unseen_by,
    load_datasets,
)
from velocast.lifecycle.training.train import train
from velocast.models import get_spec
from velocast.tracking.registry import Registry

log = logging.getLogger(__name__)

# what the progress line says when a step of the cycle starts
STEP_STARTS = {"new_data": "checking for counts newer than the last training or cycle",
               "drift": "drift check of the last window against test_baseline",
               "health": "champion health on the last 7 labelled days",
               "fine_tune": "fine-tuning a challenger on the recent window",
               "evaluate": "double evaluation of the challenger against the champion",
               "promote": "promotion (if the decision is deploy)"}


def check_options(model_type: str, policy: str, strategy: str | None = None, window_days: int | None = None,
                  env: str | None = None) -> None:
    """Refuse an unknown model type, policy, strategy or env, and a window under one day, before anything runs
    (nothing trained, recorded or audited for a typo)."""
    get_spec(model_type)
    Policy(name=policy)
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if window_days is not None:
        check_window(window_days)
    if env is not None and env not in ENVS:
        raise ValueError(f"unknown env {env!r}: expected one of {', '.join(ENVS)}")


# --------------------------------------------------------------------------- state
def _state_path(settings: Settings):
    return settings.home / "cycle_state.json"


def _read_state(settings: Settings) -> dict[str, Any]:
    path = _state_path(settings)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _state_key(model_type: str, test_mode: bool) -> str:
    """Test-mode cycles keep their own state: a smoke test never uses up the week's new data."""
    return f"{model_type} (test mode)" if test_mode else model_type


def record_cycle_state(settings: Settings, model_type: str, test_mode: bool = False, **values: Any) -> None:
    """Remember what the last completed cycle saw (``data_end``), for the next new-data check (per mode)."""
    with file_lock(settings.locks_dir / "cycle_state.lock"):
        state = _read_state(settings)
        state.setdefault(_state_key(model_type, test_mode), {}).update(values)
        atomic_write_json(_state_path(settings), state)


def _ts(value: str | None) -> pd.Timestamp | None:
    return None if value is None else to_paris(value, naive="utc")


# --------------------------------------------------------------------------- steps
def check_new_data(model_type: str, settings: Settings | None = None, test_mode: bool = False) -> NewData:
    """Did counts arrive after the data the last training or cycle of this type (and mode) saw?"""
    settings = settings or get_settings()
    latest = store.latest_timestamp(settings)
    if latest is None:
        return NewData(False, None, None, "the store is empty")
    seen = [_ts(_read_state(settings).get(_state_key(model_type, test_mode), {}).get("data_end"))]
    champion = Registry(settings).champion(model_type)
    if champion and champion.tags.get("data_end"):
        seen.append(_ts(champion.tags["data_end"]))
    seen_until = max((s for s in seen if s is not None), default=None)
    new = seen_until is None or latest > seen_until
    summary = (f"latest count {latest}; last training/cycle saw data until {seen_until}" if seen_until
               else f"latest count {latest}; nothing trained or checked yet")
    return NewData(bool(new), latest.isoformat(), seen_until.isoformat() if seen_until else None, summary)


def run_drift(model_type: str, window_days: int, end: str | None, settings: Settings | None = None) -> DriftCheck:
    check = check_drift(model_type, window_days=window_days, end=_ts(end), settings=settings)
    r = check.report
    return DriftCheck(status=r.status, drift_detected=r.drift_detected, drift_share=r.drift_share,
                      drifted_features=[f.name for f in r.features if f.drifted],
                      target_drift=bool(r.target_drift and r.target_drift.drifted),
                      prediction_drift=bool(r.prediction_drift and r.prediction_drift.drifted),
                      new_counters=list(r.new_counters), reports=check.paths,
                      summary=f"{r.headline}: {'; '.join(r.reasons)}; new counters {len(r.new_counters)}")


def run_health(model_type: str, end: str | None, settings: Settings | None = None, days: int = 7) -> HealthCheck:
    report = champion_health(model_type, days=days, end=_ts(end), settings=settings)
    record_health(model_type, report, settings)  # the latest health, for the API's metrics
    return HealthCheck(**report.to_dict(), summary=f"{report.state}: {'; '.join(report.reasons)}")


def should_fine_tune(drift: DriftCheck, health: HealthCheck, force: bool, has_champion: bool) -> FineTuneVerdict:
    """Pure: fine-tune when forced, without champion, on drift, or when the champion is not ok."""
    reasons = []
    if force:
        reasons.append("forced (force_fine_tune)")
    if not has_champion:
        reasons.append("there is no champion yet")
    if drift.drift_detected:
        parts = [label for label, drifted in (("the target", drift.target_drift),
                                              ("the predictions", drift.prediction_drift)) if drifted]
        if drift.drifted_features:
            parts.append(f"input features {', '.join(drift.drifted_features)}")
        reasons.append(f"drift detected ({'; '.join(parts) or 'see the drift report'} drifted)")
    if drift.status in ("error", "insufficient_data"):
        reasons.append(f"the drift check could not conclude ({drift.status})")
    if health.state in ("degraded", "critical"):
        reasons.append(f"champion health is {health.state}")
    if not reasons:
        reasons.append("no drift and the champion is healthy: nothing to fine-tune")
        return FineTuneVerdict(False, reasons, reasons[0])
    return FineTuneVerdict(True, reasons, "; ".join(reasons))


def _window_parts(window_days: int, end: str | None, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = window(window_days, _ts(end), settings)
    if rows.empty:
        raise ValueError(f"no counts in the last {window_days} days to fine-tune on")
    return split_by_time(rows.sort_values(["timestamp", "counter_id"]).reset_index(drop=True), 0.2)


def fine_tune(model_type: str, strategy: str = "sliding_window", window_days: int = 30, end: str | None = None,
              test_mode: bool = False, env: str | None = None, seed: int = 42,
              settings: Settings | None = None) -> FineTuned:
    """Train a challenger on the recent window (sliding window, or continuing from the champion)."""
    settings = settings or get_settings()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    train_w, test_w = _window_parts(window_days, end, settings)
    datasets = load_datasets("baseline", settings, current_data=pd.concat([train_w, test_w], ignore_index=True),
                             model_test=test_mode, seed=seed)
    continue_from, lineage = None, {}
    if strategy == "continue":
        champion = champion_model(model_type, settings)
        if champion is None:
            raise ValueError("the 'continue' strategy needs a champion to continue from")
        continue_from = champion.pipeline
        recent = datasets.train.frame[datasets.train.frame["timestamp"] >= train_w["timestamp"].min()]
        datasets.train = Dataset("train_current_window", recent, f"last {window_days} days (80%)")
        # the challenger keeps the champion's trees: the days they learned are days it trained on too
        parent = Registry(settings).run_json(champion.ref.run_id, "data/days.json") if champion.ref else None
        if parent is None:
            raise ValueError(f"the champion ({champion.uri}) has no record of its training days: a model continued "
                             "from it could be judged on days its trees learned; use the sliding_window strategy")
        datasets.trained_before = {str(k): int(v) for k, v in parent.get("train_days", {}).items()}
        datasets.continued_from = champion.ref.run_id
        _leave_out_days_learned_before(datasets)
        # its lineage, as MLflow shows it: the version and run whose trees it continues, what it fitted on
        lineage = {"continued_from_version": str(champion.ref.version), "continued_from_run": champion.ref.run_id,
                   "data_source": datasets.train.name}
    horizon = None
    if continue_from is not None:
        horizon = continue_from.named_steps["features"].horizon
    result = train(model_type, data_source="reference", env=env, model_test=test_mode, horizon=horizon, seed=seed,
                   settings=settings, datasets=datasets, continue_from=continue_from,
                   run_name=f"{model_type}-fine-tune-{strategy}",
                   tags={"strategy": strategy, "cycle": "weekly", **lineage})
    return FineTuned(version=result.model_version, run_id=result.run_id, model_uri=result.model_uri,
                     registry_uri=result.registry_uri, metrics_train=result.metrics_train,
                     metrics_baseline=result.metrics_baseline, metrics_current=result.metrics_current,
                     rows=result.rows, notes=result.notes,
                     summary=f"{strategy}: {result.registry_uri} trained on {result.rows['train']:,} rows"
                             + (" (test mode sample)" if test_mode else ""))


def _leave_out_days_learned_before(datasets: Datasets) -> None:
    """A continued model is not judged on days its inherited trees learned: such test_current days
    (the window's latest, which an earlier fine-tune may have trained on) are left out, with a note."""
    test = datasets.test_current
    if test is None or not datasets.trained_before:
        return
    days = splits.paris_day(test.frame["timestamp"]).astype(str)
    learned = days.isin(set(datasets.trained_before)).to_numpy()
    if not learned.any():
        return
    seen = sorted(set(days[learned]))
    datasets.notes.append(f"{int(learned.sum()):,} test_current rows of {len(seen)} day(s) the champion's trees "
                          f"trained on ({seen[0]} .. {seen[-1]}) left out of the score")
    kept = test.frame[~learned].reset_index(drop=True)
    datasets.test_current = Dataset(test.name, kept, test.source) if len(kept) else None
    datasets.held_out = datasets.held_out - set(seen)


def evaluate_challenger(model_type: str, version: str, window_days: int = 30, end: str | None = None,
                        policy: str = "double_eval", test_mode: bool = False,
                        settings: Settings | None = None) -> EvaluatedChallenger:
    """Double evaluation of a registered challenger vs the champion on the recent window, then the policy's decision."""
    settings = settings or get_settings()
    _, test_w = _window_parts(window_days, end, settings)
    judged = judge(model_type, version, settings, policy, current=test_w,
                   sample=MODEL_TEST_EVAL_ROWS if test_mode else None)
    return EvaluatedChallenger(**judged.to_dict(), summary=f"{judged.decision} ({policy}): {judged.reasons[-1]}")


def promote_if_deployed(model_type: str, version: str, decision: str, reasons: list[str],
                        settings: Settings | None = None, *, expected_champion: str | None,
                        test_mode: bool = False) -> PromotionStep:
    """Promote ``version`` on ``deploy`` if the champion is still ``expected_champion`` (the one compared
    against). Never promotes in test mode, nor a version with blockers (test-mode, gate failed)."""
    settings = settings or get_settings()
    registry = Registry(settings)
    before = registry.champion(model_type)
    kept = before.version if before else None
    if decision != "deploy":
        return PromotionStep(False, kept, kept, f"champion kept ({before.uri if before else 'none'}): decision {decision}")
    blockers = registry.blockers(registry.get(model_type, version))
    if test_mode or blockers:
        why = "; ".join(blockers) or "the cycle ran in test mode"
        return PromotionStep(False, kept, kept,
                             f"champion kept ({before.uri if before else 'none'}): decision deploy, but {why}",
                             [f"not promoted: {why} (a cycle never promotes a test-mode or gate-failing "
                              "model; `velocast promote --force --reason` can)"])
    done = promote(model_type, version=version, reason="; ".join(reasons), settings=settings,
                   expected_champion=expected_champion)
    return PromotionStep(True, done.from_version, done.to_version,
                         f"champion {done.from_version or '-'} -> {done.to_version}")


def run_recalibration(model_type: str, end: str | None, settings: Settings | None = None,
                      test_mode: bool = False, expected_champion: str | None | object = ANY_CHAMPION) -> Recalibrated:
    """Recalibrate the (possibly new) champion's intervals on its newest unseen labelled days.

    ``expected_champion``: the version the cycle left as champion (None: none); if another one is
    champion now (a rollback or promotion meanwhile), nothing is recalibrated. Never in test mode: a
    test-mode cycle does not change the champion.
    """
    if test_mode:
        why = "test mode: the champion's intervals are not recalibrated (a test-mode cycle changes no champion)"
        return Recalibrated(model_type=model_type, status="skipped", summary=why)
    done = recalibrate(model_type, end=end, settings=settings, reason="weekly recalibration",
                       expected_champion=expected_champion)
    return Recalibrated(**done.to_dict(), champion_after=done.to_version)


def audit_cycle(result: CycleResult, settings: Settings | None = None) -> str:
    """One audit row for the whole cycle (``error`` when a step failed)."""
    settings = settings or get_settings()
    train_metrics = result.metrics.get("train") or {}
    event = AuditEvent.from_outcome(
        "error" if result.error else "cycle", result.result_of("evaluate"), model_type=result.model_type,
        deployment_decision=None if result.error else result.decision or (
            "skip_no_new_data" if result.new_data is False and not result.forced else "no_fine_tune"),
        drift_detected=result.drift_detected, drift_share=result.drift_share, health_state=result.health_state,
        r2_train=train_metrics.get("r2"), rmse_train=train_metrics.get("rmse"),
        baseline_regression=result.metrics.get("baseline_regression"),
        model_improvement=result.promoted if result.decision else None,
        model_uri=result.challenger_uri, run_id=result.challenger_run_id, env=result.env,
        from_version=result.champion_before, to_version=result.champion_after, reasons=list(result.reasons),
        error_message=result.error,
        details={"cycle_id": result.cycle_id, "test_mode": result.test_mode, "forced": result.forced,
                 "strategy": result.strategy, "policy": result.policy,
                 "steps": [{"name": s.name, "status": s.status, "summary": s.summary} for s in result.steps]},
        event_id=result.cycle_id)
    AuditLog(settings=settings).record(event)
    return event.event_id


def notify_cycle(result: dict[str, Any], settings: Settings | None = None, what: str = "weekly cycle") -> bool:
    """Webhook on promotion, rejection and error of a weekly cycle or a quarterly retrain (``what``);
    other outcomes are not worth a message."""
    decision, error = result.get("decision"), result.get("error")
    if not (error or result.get("promoted") or decision == "reject_regression"):
        return False
    if error:
        message = f"velocast {result['model_type']}: {what} FAILED: {error}"
    elif result.get("promoted"):
        message = (f"velocast {result['model_type']}: new champion v{result.get('champion_after')} "
                   f"(was v{result.get('champion_before') or '-'}): {'; '.join(result.get('reasons', [])[-1:])}")
    else:
        message = f"velocast {result['model_type']}: challenger v{result.get('challenger_version')} rejected: " \
                  f"{'; '.join(result.get('reasons', [])[:1])}"
    return notify.send(message, {k: result.get(k) for k in ("cycle_id", "model_type", "decision", "promoted",
                                                             "champion_before", "champion_after", "error")},
                       settings)


# --------------------------------------------------------------------------- the whole cycle
def monitor_and_fine_tune(model_type: str = "lgbm", force_fine_tune: bool = False, test_mode: bool = False,
                          window_days: int = 30, strategy: str = "sliding_window", policy: str = "double_eval",
                          env: str | None = None, settings: Settings | None = None,
                          on_step: Callable[[StepOutcome], None] | None = None) -> CycleResult:
    """Run the weekly cycle once; never raises for a failing step (it is audited as ``error``).

    ``env`` (default ``VELOCAST_ENV``) is recorded with the challenger and the audit row.
    """
    settings = settings or get_settings()
    env = env or settings.env
    check_options(model_type, policy, strategy, window_days, env)
    params = CycleParams(model_type, test_mode, force_fine_tune, strategy, policy, window_days, cycle_env(env, test_mode))
    with lease.held(model_type, settings):
        return _run_cycle(params, settings, on_step)


def champion_now(model_type: str, settings: Settings, fallback: str | None) -> str | None:
    """The champion after a failed step (a rollback may have moved it meanwhile); ``fallback`` if unreadable."""
    try:
        ref = Registry(settings).champion(model_type)
    except Exception as exc:  # noqa: BLE001 - the step's error is what the audit reports
        log.warning("cannot read the champion of %s: %s", model_type, exc)
        return fallback
    return ref.version if ref else None


def cycle_env(env: str, test_mode: bool) -> str:
    """A test-mode cycle is never production: its models and audit row say ``dev``."""
    return "dev" if test_mode else env


def _run_cycle(params: CycleParams, settings: Settings, on_step: Callable[[StepOutcome], None] | None) -> CycleResult:
    """The steps in one process; :func:`~velocast.lifecycle.operations.cycle_steps.assemble_cycle` makes the result."""
    started = time.perf_counter()
    cycle_id, started_at = str(uuid.uuid4()), datetime.now(timezone.utc).isoformat()
    model_type, test_mode, window_days = params.model_type, params.test_mode, params.window_days
    outcomes: list[StepOutcome] = []
    reported: list[StepOutcome] = []

    def report(outcome: StepOutcome) -> None:
        outcomes.append(outcome)
        if outcome.name != "decide":
            reported.append(outcome)
            if on_step:
                on_step(outcome)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        progress.step(STEP_STARTS.get(name, name))
        with progress.scope(name):
            out = fn()
        report(StepOutcome(name, "done", out.summary, round(time.perf_counter() - t0, 3), out))
        return out

    def skip(names: tuple[str, ...], why: str) -> None:
        for name in names:
            report(StepOutcome(name, "skipped", why))

    current, champion_before, champion_after_error = "new_data", None, None  # the champion lookup is new_data's
    moved: PromotionStep | None = None
    try:
        champion = Registry(settings).champion(model_type)
        champion_before = champion.version if champion else None
        new = step("new_data", lambda: check_new_data(model_type, settings, test_mode))
        if not new.new_data and not params.forced:
            skip(("drift", "health", "fine_tune", "evaluate", "promote", "recalibrate"), NO_NEW_DATA)
        else:
            current = "drift"
            drift = step("drift", lambda: run_drift(model_type, window_days, new.latest, settings))
            current = "health"
            health = step("health", lambda: run_health(model_type, new.latest, settings))
            verdict = should_fine_tune(drift, health, params.forced, champion is not None)
            report(StepOutcome("decide", "done", verdict.summary, result=verdict))
            if not verdict.fine_tune:
                skip(("fine_tune", "evaluate", "promote"), verdict.reasons[0])
            else:
                current = "fine_tune"
                tuned = step("fine_tune", lambda: fine_tune(model_type, params.strategy, window_days, new.latest,
                                                            test_mode, params.env, settings=settings))
                current = "evaluate"
                evaluated = step("evaluate", lambda: evaluate_challenger(model_type, tuned.version, window_days,
                                                                         new.latest, params.policy, test_mode,
                                                                         settings))
                current = "promote"
                moved = step("promote", lambda: promote_if_deployed(model_type, tuned.version, evaluated.decision,
                                                                    evaluated.reasons, settings,
                                                                    expected_champion=champion_before,
                                                                    test_mode=test_mode))
            current = "recalibrate"
            left = moved.champion_after if moved is not None and moved.promoted else champion_before
            step("recalibrate", lambda: run_recalibration(model_type, new.latest, settings, test_mode,
                                                          expected_champion=left))
            current = "cycle_state"
            record_cycle_state(settings, model_type, test_mode, data_end=new.latest, last_cycle=started_at,
                               last_cycle_id=cycle_id)
    except Exception as exc:
        # the audit log keeps it for ever and serves it (GET /audit): no password of a URL in it
        message = redact_secrets(f"{type(exc).__name__}: {exc}", settings)
        log.error("cycle %s: %s step failed: %s\n%s", cycle_id, current, message,
                  redact_secrets(traceback.format_exc(), settings))
        report(StepOutcome(current, "failed", message))
        champion_after_error = champion_now(model_type, settings, champion_before)  # nothing promoted
    result = assemble_cycle(params, outcomes, cycle_id=cycle_id, started_at=started_at,
                            champion_before=champion_before, champion_after_error=champion_after_error)
    for outcome in result.steps:  # the steps skipped after a failure
        if on_step and not any(outcome is done for done in reported):
            on_step(outcome)
    try:
        t0 = time.perf_counter()
        result.audit_event_id = audit_cycle(result, settings)
        result.steps.append(StepOutcome("audit", "done", f"audit event {result.audit_event_id}",
                                        round(time.perf_counter() - t0, 3)))
    except Exception as exc:  # the audit log being down must be visible too
        message = redact_secrets(f"{type(exc).__name__}: {exc}", settings)
        result.steps.append(StepOutcome("audit", "failed", message))
        result.error = result.error or f"audit step failed: {message}"
    if on_step:
        on_step(result.steps[-1])
    result.notified = notify_cycle(result.to_dict(), settings)
    result.steps.append(StepOutcome("notify", "done" if result.notified else "skipped",
                                    "webhook sent" if result.notified else
                                    ("no webhook configured" if not settings.webhook_url else
                                     "nothing to notify or webhook failed (see log)")))
    if on_step:
        on_step(result.steps[-1])
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --------------------------------------------------------------------------- quarterly retrain
def quarterly_retrain(model_type: str = "lgbm", merge: bool = True, cutoff: str | None = None,
                      policy: str = "double_eval", settings: Settings | None = None, test_mode: bool = False,
                      promote_on_deploy: bool = False, env: str | None = None) -> dict[str, Any]:
    """Merge current data into a new baseline version and retrain from scratch.

    The new baseline (default cutoff: the day after the latest stored count, so every stored day is
    merged) keeps the old test days held out and holds out new ones from the added period. The new
    model is then compared with the champion only on held-out days that neither of them trained on
    (the champion may have been fine-tuned on recent days): the result names them. The retrain
    holds the model type's cycle lease for its whole run.
    """
    settings = settings or get_settings()
    if not merge:
        raise ValueError("quarterly retrain without --merge is a plain `velocast train`")
    check_options(model_type, policy, env=env or settings.env)  # before the new baseline is recorded
    with lease.held(model_type, settings):
        return _quarterly_retrain(model_type, cutoff, policy, settings, test_mode, promote_on_deploy,
                                  cycle_env(env or settings.env, test_mode))


def _quarterly_retrain(model_type: str, cutoff: str | None, policy: str, settings: Settings, test_mode: bool,
                       promote_on_deploy: bool, env: str) -> dict[str, Any]:
    old = splits.ensure_split(settings)
    if cutoff is None:
        cutoff = str(paris_midnight(store.latest_timestamp(settings), 1).date())
    # the old test_current days stay held out: fine-tunes and the champion never trained on them, so they
    # are the recent days both models can be compared on
    old_current = sorted(splits.paris_day(splits.load_split("test_current", old, settings)["timestamp"]).astype(str).unique())
    new = splits.record_split(cutoff, old.test_fraction, old.seed, old.current_test_fraction, settings,
                              parent_version=old.version, held_out=old_current,
                              notes=[f"quarterly retrain: merged current data into v{old.version}"
                                     + (f"; its test_current days {old_current[0]} .. {old_current[-1]} held out"
                                        if old_current else "")])
    done = False
    try:
        outcome = _retrain_on(model_type, old, new, policy, settings, test_mode, promote_on_deploy, env)
        done = True
    except Exception as exc:
        notify_cycle({"model_type": model_type, "error": redact_secrets(f"{type(exc).__name__}: {exc}", settings)},
                     settings, "quarterly retrain")
        try:
            AuditLog(settings=settings).record(AuditEvent(
                event="error", model_type=model_type, env=env,
                error_message=redact_secrets(f"{type(exc).__name__}: {exc}", settings),
                reasons=[f"quarterly retrain failed: baseline v{new.version} recorded, v{old.version} stays active"],
                details={"retrain": "quarterly", "old_split": old.version, "new_split": new.version}))
        except Exception:  # the retrain's own error is the one to raise
            log.exception("could not audit the failed quarterly retrain")
        raise
    finally:
        if test_mode or not done:  # a test-mode or failed retrain changes nothing that serves or decides
            splits.activate(old.version, settings)
    if test_mode:
        outcome["reasons"].append(f"test mode: baseline v{new.version} recorded, v{old.version} stays active")
    outcome["notified"] = notify_cycle({**outcome, "model_type": model_type, "challenger_version": outcome["version"],
                                        "champion_after": outcome["promoted"]}, settings, "quarterly retrain")
    return outcome


def _retrain_on(model_type: str, old: splits.SplitRecord, new: splits.SplitRecord, policy: str, settings: Settings,
                test_mode: bool, promote_on_deploy: bool, env: str) -> dict[str, Any]:
    """Retrain on the new baseline ``new`` (recorded from ``old``), judge, maybe promote, audit."""
    registry = Registry(settings)
    compared = registry.champion(model_type)  # the champion judged against, for compare-and-swap
    judged = set(new.test_days)
    if compared is not None:
        judged = days_unseen_by(registry, compared, judged, settings)
    test_b = splits.load_split("test_baseline", new, settings)
    days = splits.paris_day(test_b["timestamp"]).astype(str)
    if not days.isin(judged).any():
        raise ValueError("no held-out day is unseen by both the new model and the champion: no fair comparison "
                         "is possible (the champion trained on every test day of the new baseline)")
    # the double evaluation's two sets: every held-out day (test_baseline, filtered again by the evaluation)
    # and, as test_current, those the new baseline held out from the period it added (the recent data)
    recent = judged - set(old.test_days)
    current = test_b[days.isin(recent).to_numpy()].reset_index(drop=True)
    progress.step(f"baseline v{new.version} recorded (cutoff {new.cutoff}): retraining {model_type} from scratch, "
                  f"then a double evaluation on {len(judged)} held-out days neither model trained on")
    done = train_and_judge(model_type, settings, policy, champion=compared, current=current, split=new,
                           sample=MODEL_TEST_EVAL_ROWS if test_mode else None, data_source="baseline", env=env,
                           model_test=test_mode, run_name=f"{model_type}-quarterly-retrain",
                           tags={"retrain": "quarterly", "split_parent": str(old.version)})
    result, judgement = done.trained, done.judgement
    promoted = None
    days_note = (f"held-out days neither model trained on: {len(judged)} ({min(judged)} .. {max(judged)}); "
                 f"test_current is the {len(recent)} of them held out from the period the new baseline added "
                 f"({len(current):,} rows)")
    reasons = [*judgement.reasons, days_note]
    if promote_on_deploy and judgement.decision == "deploy":
        moved = promote_if_deployed(model_type, result.model_version, judgement.decision,
                                    ["quarterly retrain: " + judgement.reasons[-1]], settings,
                                    expected_champion=judgement.compared_champion, test_mode=test_mode)
        promoted = moved.champion_after if moved.promoted else None
        reasons += moved.reasons
    AuditLog(settings=settings).record(AuditEvent.from_outcome(
        "retrain", judgement, model_type=model_type, model_uri=result.registry_uri, run_id=result.run_id, env=env,
        reasons=reasons, to_version=promoted,
        details={"old_split": old.version, "new_split": new.version, "test_mode": test_mode,
                 "compared_days": sorted(judged)}))
    return {"old_split": old.version, "new_split": new.version, "new_cutoff": new.cutoff,
            "version": result.model_version, "run_id": result.run_id, "decision": judgement.decision,
            "reasons": reasons, "promoted": promoted, "compared_days": sorted(judged),
            "champion_before": compared.version if compared is not None else None,
            "evaluation": judgement.evaluation}
