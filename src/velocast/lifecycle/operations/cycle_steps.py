"""The weekly cycle's steps as typed results, and the one function that assembles a cycle from them.

Each step of :mod:`velocast.lifecycle.operations.cycle` returns one of the results below; ``to_dict`` and
``from_dict`` carry it across an Airflow XCom unchanged. :func:`assemble_cycle` is pure: from the
steps' outcomes (done with a result, failed with a message, or skipped) it builds the
:class:`CycleResult` — which steps were skipped and why, the decision, the reasons, the champion
before and after, the error. The in-process runner (``cycle.monitor_and_fine_tune``) and the DAG's
audit task (``cycle_tasks.finish``) both call it, so both audit the same row.

Steps, in order: ``new_data``, ``drift``, ``health``, ``decide`` (not listed among the steps of a
result: its reasons are), ``fine_tune``, ``evaluate``, ``promote``, ``recalibrate``; a cycle then
adds ``audit`` and ``notify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from velocast.lifecycle.decisions.challenger import Judgement
from velocast.lifecycle.decisions.recalibrate import Recalibration
from velocast.monitoring.health import HealthReport

STEPS = ("new_data", "drift", "health", "decide", "fine_tune", "evaluate", "promote", "recalibrate")
NO_NEW_DATA = "no new data since the last training or cycle"
AFTER_FAILURE = "an earlier step failed"
TEST_MODE_REASON = "test mode: small samples were used for training and evaluation"


class StepResult:
    """What a step returns: a dataclass with a one-line ``summary``, JSON-able through ``to_dict``."""

    summary: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The result from its ``to_dict`` (keys it does not know are ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})  # type: ignore[arg-type]


@dataclass
class NewData(StepResult):
    new_data: bool
    latest: str | None  # the latest stored count (ISO): the end of the cycle's window
    seen_until: str | None  # the data the last training or cycle saw
    summary: str


@dataclass
class DriftCheck(StepResult):
    status: str
    drift_detected: bool
    drift_share: float | None
    drifted_features: list[str]
    target_drift: bool
    prediction_drift: bool
    new_counters: list[str]
    reports: dict[str, str]
    summary: str


@dataclass
class HealthCheck(StepResult, HealthReport):
    summary: str = ""


@dataclass
class FineTuneVerdict(StepResult):
    """The ``decide`` step: fine-tune or not, and why."""

    fine_tune: bool
    reasons: list[str]
    summary: str = ""


@dataclass
class FineTuned(StepResult):
    version: str
    run_id: str
    model_uri: str
    registry_uri: str
    metrics_train: dict[str, Any]
    metrics_baseline: dict[str, Any]
    metrics_current: dict[str, Any] | None
    rows: dict[str, int]
    notes: list[str]
    summary: str


@dataclass
class EvaluatedChallenger(StepResult, Judgement):
    summary: str = ""


@dataclass
class PromotionStep(StepResult):
    promoted: bool
    champion_before: str | None
    champion_after: str | None
    summary: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class Recalibrated(StepResult, Recalibration):
    champion_after: str | None = None


STEP_TYPES: dict[str, type[Any]] = {
    "new_data": NewData, "drift": DriftCheck, "health": HealthCheck, "decide": FineTuneVerdict,
    "fine_tune": FineTuned, "evaluate": EvaluatedChallenger, "promote": PromotionStep, "recalibrate": Recalibrated,
}


@dataclass
class StepOutcome:
    name: str
    status: str  # done | skipped | failed
    summary: str
    seconds: float = 0.0
    result: Any = None  # the step's typed result (STEP_TYPES) when done

    @property
    def details(self) -> dict[str, Any]:
        """The result's fields but the summary."""
        return {k: v for k, v in self.result.to_dict().items() if k != "summary"} if self.result else {}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "seconds": self.seconds,
                "details": self.details}


@dataclass(frozen=True)
class CycleParams:
    """How a cycle was asked to run."""

    model_type: str
    test_mode: bool = False
    forced: bool = False
    strategy: str = "sliding_window"
    policy: str = "double_eval"
    window_days: int = 30
    env: str | None = None


@dataclass
class CycleResult:
    cycle_id: str
    model_type: str
    started_at: str
    test_mode: bool
    forced: bool
    strategy: str
    policy: str
    window_days: int
    env: str | None = None
    steps: list[StepOutcome] = field(default_factory=list)
    new_data: bool | None = None
    drift_detected: bool | None = None
    drift_share: float | None = None
    health_state: str | None = None
    fine_tuned: bool = False
    challenger_version: str | None = None
    challenger_run_id: str | None = None
    challenger_uri: str | None = None
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    promoted: bool = False
    champion_before: str | None = None
    champion_after: str | None = None
    recalibrated_version: str | None = None  # the champion with recalibrated intervals, when made
    metrics: dict[str, Any] = field(default_factory=dict)
    audit_event_id: str | None = None
    notified: bool | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "skipped" if self.new_data is False and not self.forced else "ok"

    @property
    def champion_change(self) -> str:
        """What happened to the champion, in words: kept, replaced, or kept with recalibrated intervals."""
        before, after = self.champion_before, self.champion_after
        if before and before == after:
            return f"champion v{before} kept"
        recalibrated = self.recalibrated_version and after == self.recalibrated_version
        if before and recalibrated and not self.promoted:
            return f"champion v{before} kept, its intervals recalibrated as v{after}"
        if before and recalibrated:
            challenger = f"v{self.challenger_version}" if self.challenger_version else "the challenger"
            return f"champion v{before} -> {challenger}, its intervals recalibrated as v{after}"
        return f"champion {f'v{before}' if before else '-'} -> {f'v{after}' if after else '-'}"

    def result_of(self, name: str) -> Any:
        """The typed result of step ``name`` if it was done, else None."""
        return next((s.result for s in self.steps if s.name == name and s.status == "done"), None)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "steps"}
        return {**out, "steps": [s.to_dict() for s in self.steps], "status": self.status,
                "baseline_regression": self.metrics.get("baseline_regression"),
                "model_improvement": self.promoted if self.decision else None}


def _skip_reason(name: str, failed_before: bool, new: NewData | None, forced: bool,
                 verdict: FineTuneVerdict | None) -> str:
    if failed_before:
        return AFTER_FAILURE
    if new is not None and not new.new_data and not forced:
        return NO_NEW_DATA
    if verdict is not None and not verdict.fine_tune and name in ("fine_tune", "evaluate", "promote"):
        return verdict.reasons[0]
    return "not reached"


def assemble_cycle(params: CycleParams, outcomes: Sequence[StepOutcome], *, cycle_id: str, started_at: str,
                   champion_before: str | None, champion_after_error: str | None = None) -> CycleResult:
    """The cycle result from its steps' outcomes (pure).

    ``outcomes``: the steps that ran (done, with their typed result; failed, with the message of the
    exception), in the order they ran, and any skipped step the caller already reported; a step of
    :data:`STEPS` missing from them is skipped, with the reason. The first failed outcome makes the
    error (``"<step> step failed: <message>"``); ``champion_after_error`` is then the champion read
    after the failure (a rollback may have moved it meanwhile).
    """
    by_name: dict[str, StepOutcome] = {}
    for outcome in outcomes:
        by_name.setdefault(outcome.name, outcome)
    failed = next((o for o in outcomes if o.status == "failed"), None)

    def done(name: str) -> Any:
        outcome = by_name.get(name)
        return outcome.result if outcome is not None and outcome.status == "done" else None

    new, drift, health, verdict = done("new_data"), done("drift"), done("health"), done("decide")
    tuned, evaluated, promoted, recalibrated = done("fine_tune"), done("evaluate"), done("promote"), done("recalibrate")
    steps, failed_before = [], False
    for name in STEPS:
        outcome = by_name.get(name) or StepOutcome(name, "skipped",
                                                   _skip_reason(name, failed_before, new, params.forced, verdict))
        failed_before = failed_before or outcome.status == "failed"
        if name != "decide":
            steps.append(outcome)
    steps += [o for o in outcomes if o.name not in STEPS]  # e.g. a failure between two steps

    result = CycleResult(cycle_id=cycle_id, started_at=started_at, steps=steps, champion_before=champion_before,
                         champion_after=champion_before, **asdict(params))
    result.error = f"{failed.name} step failed: {failed.summary}" if failed else None
    result.new_data = new.new_data if new else None
    if drift:
        result.drift_detected, result.drift_share = drift.drift_detected, drift.drift_share
    result.health_state = health.state if health else None
    result.reasons = list(verdict.reasons) if verdict else []
    if tuned:
        result.fine_tuned = True
        result.challenger_version, result.challenger_run_id = tuned.version, tuned.run_id
        result.challenger_uri = tuned.registry_uri
        result.metrics["train"] = tuned.metrics_train
    if evaluated:
        result.decision = evaluated.decision
        result.reasons += evaluated.reasons
        result.metrics.update({k: v for k, v in evaluated.metrics.items() if not k.endswith("_train")})
        result.metrics["baseline_regression"] = evaluated.baseline_regression
    if promoted:
        result.promoted, result.champion_after = promoted.promoted, promoted.champion_after
        result.reasons += promoted.reasons
    if recalibrated and recalibrated.status == "done":
        result.recalibrated_version = result.champion_after = recalibrated.to_version
    if failed:
        result.champion_after = champion_after_error
    if params.test_mode:
        result.reasons.append(TEST_MODE_REASON)
    return result


__all__ = ["STEPS", "STEP_TYPES", "CycleParams", "CycleResult", "DriftCheck", "EvaluatedChallenger", "FineTuneVerdict",
           "FineTuned", "HealthCheck", "NewData", "PromotionStep", "Recalibrated", "StepOutcome", "StepResult",
           "assemble_cycle"]
