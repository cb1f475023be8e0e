"""The cycle's typed steps and their assembly, and the audit row of a judged challenger (pure, no models)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from velocast.evaluation.policies import DoubleEvaluation, PairedScores, Policy, decide_all
from velocast.lifecycle.audit import AuditEvent, AuditLog, audit_table
from velocast.lifecycle.decisions.challenger import Judgement
from velocast.lifecycle.decisions.evaluate import EvaluationOutcome
from velocast.lifecycle.operations.cycle import should_fine_tune
from velocast.lifecycle.operations.cycle_steps import (
    AFTER_FAILURE,
    NO_NEW_DATA,
    STEP_TYPES,
    CycleParams,
    DriftCheck,
    EvaluatedChallenger,
    FineTuned,
    HealthCheck,
    NewData,
    PromotionStep,
    Recalibrated,
    StepOutcome,
    assemble_cycle,
)

PARAMS = CycleParams("lgbm", test_mode=False, forced=False, strategy="sliding_window", policy="double_eval",
                     window_days=30, env="prod")
START = {"cycle_id": "c-1", "started_at": "2021-08-09T00:00:00+00:00", "champion_before": "3"}


def _metrics(r2: float, rmse: float) -> dict:
    return {"r2": r2, "rmse": rmse, "mae": rmse * 0.6, "n": 500}


def _outcome(current_champion_r2: float = 0.70) -> EvaluationOutcome:
    evaluation = DoubleEvaluation(
        "lgbm", "regression", "models:/bike-traffic-lgbm/4", "models:/bike-traffic-lgbm/3",
        PairedScores("test_baseline", 5000, _metrics(0.81, 40.0), _metrics(0.79, 42.0)),
        PairedScores("test_current", 800, _metrics(0.74, 45.0), _metrics(current_champion_r2, 48.0)))
    return EvaluationOutcome(evaluation, decide_all(evaluation, Policy()), {"html": "reports/x.html"})


def _done(result, seconds: float = 1.5) -> StepOutcome:
    return StepOutcome(next(n for n, t in STEP_TYPES.items() if type(result) is t), "done", result.summary, seconds,
                       result)


def _full_cycle() -> list[StepOutcome]:
    """What the in-process runner records for a cycle that fine-tunes, deploys and recalibrates."""
    drift = DriftCheck("ok", True, 0.4, ["hour"], True, False, [], {"json": "d.json"}, "drift: hour")
    health = HealthCheck("ok", 40.0, 0.8, 38.0, 0.82, 0.05, 1000, "last 7 days", ["fine"], summary="ok: fine")
    judged = Judgement.of(_outcome(), "double_eval", "3")
    return [
        _done(NewData(True, "2021-08-09T23:00:00+02:00", "2021-08-01T23:00:00+02:00", "latest count ...")),
        _done(drift), _done(health),
        StepOutcome("decide", "done", "", result=should_fine_tune(drift, health, False, True)),
        _done(FineTuned("4", "run-4", "file:///m", "models:/bike-traffic-lgbm/4", _metrics(0.9, 30.0),
                        _metrics(0.81, 40.0), _metrics(0.74, 45.0), {"train": 1000}, [], "trained")),
        _done(EvaluatedChallenger(**judged.to_dict(), summary="deploy")),
        _done(PromotionStep(True, "3", "4", "champion 3 -> 4")),
        _done(Recalibrated(model_type="lgbm", status="done", summary="recalibrated", from_version="4",
                           to_version="5", champion_after="5")),
    ]


def _through_xcom(outcomes: list[StepOutcome]) -> list[StepOutcome]:
    """Each result as the DAG's tasks pass it: to_dict, JSON, from_dict."""
    return [dataclasses.replace(o, result=STEP_TYPES[o.name].from_dict(json.loads(json.dumps(o.result.to_dict()))))
            if o.result is not None else o for o in outcomes]


def test_the_same_cycle_result_in_process_and_through_xcom() -> None:
    outcomes = _full_cycle()
    result = assemble_cycle(PARAMS, outcomes, **START)
    assert result == assemble_cycle(PARAMS, _through_xcom(outcomes), **START)
    assert [s.name for s in result.steps] == ["new_data", "drift", "health", "fine_tune", "evaluate", "promote",
                                              "recalibrate"]
    assert result.status == "ok" and result.error is None and result.env == "prod"
    assert (result.decision, result.promoted, result.champion_before, result.champion_after) == ("deploy", True, "3",
                                                                                                  "5")
    assert result.recalibrated_version == "5" and result.challenger_version == "4" and result.drift_detected
    assert result.reasons[0].startswith("drift detected") and "0.74" in " ".join(result.reasons)
    assert result.metrics["train"]["r2"] == 0.9 and result.metrics["r2_current"] == 0.74
    assert result.metrics["champion_r2_current"] == 0.70 and result.metrics["baseline_regression"] is False
    assert result.result_of("evaluate").decisions["double_eval"] == "deploy"
    assert json.loads(json.dumps(result.to_dict()))["model_improvement"] is True
    assert result.champion_change == "champion v3 -> v4, its intervals recalibrated as v5"


def test_the_champion_change_in_words() -> None:
    kept_recalibrated = _full_cycle()[:4] + [
        _done(Recalibrated(model_type="lgbm", status="done", summary="recalibrated", from_version="3",
                           to_version="6", champion_after="6"))]
    result = assemble_cycle(PARAMS, kept_recalibrated, **START)
    assert (result.promoted, result.champion_after) == (False, "6")
    assert result.champion_change == "champion v3 kept, its intervals recalibrated as v6"
    assert assemble_cycle(PARAMS, _full_cycle()[:4], **START).champion_change == "champion v3 kept"
    replaced = _full_cycle()[:7]  # deployed, not recalibrated
    assert assemble_cycle(PARAMS, replaced, **START).champion_change == "champion v3 -> v4"


def test_skipped_and_failed_steps_say_why() -> None:
    nothing_new = [_done(NewData(False, "2021-08-09T23:00:00+02:00", "2021-08-09T23:00:00+02:00", "nothing new"))]
    skipped = assemble_cycle(PARAMS, nothing_new, **START)
    assert skipped.status == "skipped" and skipped.decision is None and skipped.champion_after == "3"
    assert [(s.status, s.summary) for s in skipped.steps[1:]] == [("skipped", NO_NEW_DATA)] * 6

    healthy = _full_cycle()[:3]
    healthy.append(StepOutcome("decide", "done", "", result=STEP_TYPES["decide"](False, ["nothing to fine-tune"])))
    kept = assemble_cycle(dataclasses.replace(PARAMS, test_mode=True), healthy, **START)
    assert {s.name: s.summary for s in kept.steps if s.status == "skipped"} == {
        "fine_tune": "nothing to fine-tune", "evaluate": "nothing to fine-tune", "promote": "nothing to fine-tune",
        "recalibrate": "not reached"}
    assert kept.reasons[-1].startswith("test mode") and not kept.fine_tuned

    failing = [*_full_cycle()[:4], StepOutcome("fine_tune", "failed", "OSError: disk full")]
    failed = assemble_cycle(PARAMS, failing, **START, champion_after_error="2")  # a rollback happened meanwhile
    assert failed.status == "error" and failed.error == "fine_tune step failed: OSError: disk full"
    assert [(s.name, s.status) for s in failed.steps][3:] == [("fine_tune", "failed"), ("evaluate", "skipped"),
                                                             ("promote", "skipped"), ("recalibrate", "skipped")]
    assert failed.steps[-1].summary == AFTER_FAILURE and failed.champion_after == "2"


def test_an_audit_row_from_a_judged_challenger(tmp_path: Path) -> None:
    judged = Judgement.of(_outcome(current_champion_r2=0.80), "double_eval", "3", metrics_train=_metrics(0.9, 30.0))
    assert judged.decision == "skip_no_improvement" and Judgement.from_dict(judged.to_dict()) == judged
    event = AuditEvent.from_outcome("training", judged, model_type="lgbm", run_id="run-4", to_version="4",
                                    env="dev", actor="api")
    assert (event.deployment_decision, event.reasons) == ("skip_no_improvement", judged.reasons)
    assert (event.r2_train, event.r2_baseline, event.rmse_baseline) == (0.9, 0.81, 40.0)
    assert (event.r2_current, event.champion_r2_current, event.champion_rmse_baseline) == (0.74, 0.80, 42.0)
    assert event.baseline_regression is False and event.model_improvement is False and event.run_id == "run-4"
    # what the caller says wins over the judgement (a cycle's reasons, a failed cycle's missing decision)
    cycle = AuditEvent.from_outcome("error", judged, deployment_decision=None, reasons=["a", "b"])
    assert cycle.deployment_decision is None and cycle.reasons == ["a", "b"] and cycle.r2_current == 0.74
    assert AuditEvent.from_outcome("cycle", None, model_type="lgbm").r2_baseline is None
    with pytest.raises(ValueError, match="unknown audit event 'trained'"):
        AuditEvent.from_outcome("trained", judged)

    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    assert log.get(log.record(event).event_id) == event  # every field has its column
    assert [c.name for c in audit_table.columns][1:] == [*AuditEvent.KEY_FIELDS, *(
        f.name for f in dataclasses.fields(AuditEvent) if f.name not in AuditEvent.KEY_FIELDS)]
