"""Champion/challenger decisions: pure functions of a ``DoubleEvaluation`` and a policy.

The challenger and the champion are always scored on the same rows (``test_baseline`` and
``test_current``) at the same moment; decisions read only those numbers.

Every policy first applies the **baseline gate**: a challenger whose R² on ``test_baseline`` falls
below the threshold (0.60 by default) is ``reject_regression``, whatever it does on new data.
Then:
- ``double_eval`` (default): deploy if the challenger's R² on ``test_current`` beats the champion's;
- ``relative_rmse`` (the original system's rule): deploy if its RMSE on ``test_current`` is below
  0.95 × the champion's;
- ``significant``: deploy only if a paired bootstrap over days says the challenger's RMSE on
  ``test_current`` is lower with 95% confidence, and no counter's RMSE got worse by more than 25%.
With no champion yet, passing the gate deploys. With no ``test_current`` (or fewer than
``min_current_rows`` rows of it), the comparison is made on ``test_baseline`` instead, and the
reasons say so. A tie never deploys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from velocast.choices import POLICIES

DecisionKind = Literal["deploy", "reject_regression", "skip_no_improvement"]


@dataclass
class PairedScores:
    """Challenger and champion metrics on one test set, plus per-day and per-counter errors."""

    name: str
    rows: int
    challenger: dict[str, Any]
    champion: dict[str, Any] | None = None
    # one row per day: day, n, se_challenger, se_champion (sum of squared errors)
    daily: pd.DataFrame | None = None
    # one row per counter: counter, n, rmse_challenger, rmse_champion
    per_counter: pd.DataFrame | None = None
    # the challenger's predictions on the decision's rows, as served (its reports are drawn from them)
    predictions: np.ndarray | None = None


@dataclass
class DoubleEvaluation:
    model_type: str
    task: str  # regression | classification
    challenger: str  # URI of the challenger
    champion: str | None  # URI of the champion (None: no champion yet)
    baseline: PairedScores
    current: PairedScores | None = None
    classifier_gates_passed: bool | None = None  # rf_class: validation suite verdict
    notes: list[str] = field(default_factory=list)
    classifier_failures: list[str] = field(default_factory=list)  # rf_class: each failed gate, with its numbers

    @property
    def has_champion(self) -> bool:
        return self.champion is not None and self.baseline.champion is not None

    def to_dict(self) -> dict[str, Any]:
        def part(p: PairedScores | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {"name": p.name, "rows": p.rows, "challenger": p.challenger, "champion": p.champion}
        return {"model_type": self.model_type, "task": self.task, "challenger": self.challenger,
                "champion": self.champion, "metrics_baseline": part(self.baseline),
                "metrics_current": part(self.current), "classifier_gates_passed": self.classifier_gates_passed,
                "classifier_failures": self.classifier_failures, "notes": self.notes}


@dataclass(frozen=True)
class Policy:
    name: str = "double_eval"
    r2_threshold: float = 0.60
    relative_rmse_factor: float = 0.95
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    max_counter_regression: float = 0.25
    min_counter_rows: int = 24
    min_current_rows: int = 200  # fewer test_current rows compare nothing: test_baseline decides instead
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown policy {self.name!r}: expected one of {', '.join(POLICIES)}")


@dataclass
class Decision:
    kind: DecisionKind
    policy: str
    reasons: list[str]
    baseline_regression: bool
    model_improvement: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(evaluation: DoubleEvaluation, policy: Policy | None = None) -> Decision:
    """The decision of ``policy`` on ``evaluation`` (pure)."""
    policy = policy or Policy()
    gate = _baseline_gate(evaluation, policy)
    if gate is not None:
        return gate
    passed = _gate_reason(evaluation, policy)
    if not evaluation.has_champion:
        return Decision("deploy", policy.name, [passed, "there is no champion yet"], False, True)
    current = evaluation.current
    compared, note = evaluation.baseline, ["no test_current rows: compared on test_baseline instead"]
    if current is not None and current.champion and current.rows >= policy.min_current_rows:
        compared, note = current, []
    elif current is not None and current.champion:
        note = [f"only {current.rows} test_current rows (fewer than {policy.min_current_rows}): compared on "
                "test_baseline instead"]
    if evaluation.task == "classification":
        return _classification(evaluation, compared, policy, [passed, *note])
    if policy.name == "double_eval":
        return _double_eval(compared, policy, [passed, *note])
    if policy.name == "relative_rmse":
        return _relative_rmse(compared, policy, [passed, *note])
    return _significant(compared, policy, [passed, *note])


def decide_all(evaluation: DoubleEvaluation, base: Policy | None = None) -> dict[str, Decision]:
    """What every policy would decide (same thresholds as ``base``)."""
    base = base or Policy()
    return {name: decide(evaluation, Policy(**{**asdict(base), "name": name})) for name in POLICIES}


# --------------------------------------------------------------------------- the rules
def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _baseline_gate(evaluation: DoubleEvaluation, policy: Policy) -> Decision | None:
    if evaluation.task == "classification":
        if evaluation.classifier_gates_passed is False:
            failed = "; ".join(evaluation.classifier_failures) or "see the report"
            return Decision("reject_regression", policy.name,
                            [f"the classifier validation gates failed on test_baseline: {failed}"], True, False)
        return None
    r2 = evaluation.baseline.challenger.get("r2")
    # fail closed: a missing or non-finite R² (NaN predictions) is no evidence the model is fine
    if r2 is None or not math.isfinite(r2) or r2 < policy.r2_threshold:
        shown = f"{_fmt(r2)} < {policy.r2_threshold}" if r2 is not None and math.isfinite(r2) else \
            f"{_fmt(r2)}, not a finite number (are some predictions NaN?)"
        return Decision("reject_regression", policy.name,
                        [f"challenger R² on test_baseline is {shown} "
                         f"({evaluation.baseline.rows} rows): it regressed on known data"], True, False,
                        {"r2_baseline": r2})
    return None


def _gate_reason(evaluation: DoubleEvaluation, policy: Policy) -> str:
    if evaluation.task == "classification":
        return "the classifier validation gates pass" if evaluation.classifier_gates_passed else \
            "no classifier validation gates were evaluated"
    return (f"challenger R² on test_baseline is {_fmt(evaluation.baseline.challenger['r2'])} "
            f">= {policy.r2_threshold} ({evaluation.baseline.rows} rows)")


def _double_eval(scores: PairedScores, policy: Policy, reasons: list[str]) -> Decision:
    ch, cp = scores.challenger["r2"], scores.champion["r2"]
    details = {"r2_challenger": ch, "r2_champion": cp, "rows": scores.rows, "set": scores.name}
    if ch is None or cp is None:  # one row: R² is not defined, nothing shows the challenger is better
        return Decision("skip_no_improvement", policy.name,
                        [*reasons, f"R² is not defined on the {scores.rows} row(s) of {scores.name}: no comparison"],
                        False, False, details)
    if ch > cp:
        return Decision("deploy", policy.name, [*reasons, f"challenger R² on {scores.name} {_fmt(ch)} > champion "
                                                f"{_fmt(cp)} on the same {scores.rows} rows"], False, True, details)
    return Decision("skip_no_improvement", policy.name,
                    [*reasons, f"challenger R² on {scores.name} {_fmt(ch)} does not beat the champion's "
                     f"{_fmt(cp)} on the same {scores.rows} rows"], False, False, details)


def _relative_rmse(scores: PairedScores, policy: Policy, reasons: list[str]) -> Decision:
    ch, cp = scores.challenger["rmse"], scores.champion["rmse"]
    limit = policy.relative_rmse_factor * cp
    details = {"rmse_challenger": ch, "rmse_champion": cp, "limit": limit, "rows": scores.rows, "set": scores.name}
    if ch < limit:
        return Decision("deploy", policy.name, [*reasons, f"challenger RMSE on {scores.name} {_fmt(ch)} < "
                                                f"{policy.relative_rmse_factor} × champion {_fmt(cp)} = {_fmt(limit)}"],
                        False, True, details)
    return Decision("skip_no_improvement", policy.name,
                    [*reasons, f"challenger RMSE on {scores.name} {_fmt(ch)} is not below {policy.relative_rmse_factor} "
                     f"× champion {_fmt(cp)} = {_fmt(limit)}"], False, False, details)


def bootstrap_rmse_difference(daily: pd.DataFrame, resamples: int, seed: int) -> np.ndarray:
    """Challenger RMSE minus champion RMSE over days resampled with replacement (paired)."""
    n = daily["n"].to_numpy(float)
    se_ch = daily["se_challenger"].to_numpy(float)
    se_cp = daily["se_champion"].to_numpy(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(daily), size=(resamples, len(daily)))
    rows = n[picks].sum(axis=1)
    return np.sqrt(se_ch[picks].sum(axis=1) / rows) - np.sqrt(se_cp[picks].sum(axis=1) / rows)


def _significant(scores: PairedScores, policy: Policy, reasons: list[str]) -> Decision:
    if scores.daily is None or len(scores.daily) < 2:
        return Decision("skip_no_improvement", policy.name,
                        [*reasons, f"fewer than 2 days in {scores.name}: no significance can be shown"], False, False)
    diffs = bootstrap_rmse_difference(scores.daily, policy.bootstrap_resamples, policy.seed)
    upper = float(np.quantile(diffs, policy.confidence))
    share_better = float(np.mean(diffs < 0))
    details = {"rmse_challenger": scores.challenger["rmse"], "rmse_champion": scores.champion["rmse"],
               "bootstrap_upper": upper, "share_better": share_better, "days": len(scores.daily),
               "resamples": policy.bootstrap_resamples}
    if not upper < 0:
        return Decision("skip_no_improvement", policy.name,
                        [*reasons, f"challenger RMSE on {scores.name} is lower in {share_better:.1%} of "
                         f"{policy.bootstrap_resamples} day resamples: not {policy.confidence:.0%} confident "
                         f"(upper bound of the difference {upper:+.3g})"], False, False, details)
    worse = _counter_regressions(scores.per_counter, policy)
    details["counters_worse"] = worse
    if worse:
        listed = ", ".join(f"{c} (+{r:.0%})" for c, r in worse[:5])
        return Decision("skip_no_improvement", policy.name,
                        [*reasons, f"lower RMSE with {policy.confidence:.0%} confidence, but {len(worse)} counter(s) "
                         f"got worse by more than {policy.max_counter_regression:.0%}: {listed}"], False, False, details)
    return Decision("deploy", policy.name,
                    [*reasons, f"challenger RMSE on {scores.name} is lower with {policy.confidence:.0%} confidence "
                     f"({share_better:.1%} of day resamples; {scores.challenger['rmse']:.4g} vs "
                     f"{scores.champion['rmse']:.4g}) and no counter got worse by more than "
                     f"{policy.max_counter_regression:.0%}"], False, True, details)


def _counter_regressions(per_counter: pd.DataFrame | None, policy: Policy) -> list[tuple[str, float]]:
    if per_counter is None or per_counter.empty:
        return []
    table = per_counter[per_counter["n"] >= policy.min_counter_rows]
    ratio = table["rmse_challenger"] / table["rmse_champion"].where(table["rmse_champion"] > 0)
    bad = table.assign(ratio=ratio)[ratio > 1 + policy.max_counter_regression].sort_values("ratio", ascending=False)
    return [(str(c), float(r) - 1) for c, r in zip(bad["counter"], bad["ratio"])]


def _classification(evaluation: DoubleEvaluation, scores: PairedScores, policy: Policy,
                    reasons: list[str]) -> Decision:
    ch, cp = scores.challenger.get("auc"), scores.champion.get("auc")
    details = {"auc_challenger": ch, "auc_champion": cp, "rows": scores.rows, "set": scores.name}
    if ch is not None and (cp is None or ch > cp):
        return Decision("deploy", policy.name, [*reasons, f"challenger AUC on {scores.name} {_fmt(ch)} > champion "
                                                f"{_fmt(cp)} on the same {scores.rows} rows"], False, True, details)
    return Decision("skip_no_improvement", policy.name,
                    [*reasons, f"challenger AUC on {scores.name} {_fmt(ch)} does not beat the champion's {_fmt(cp)}"],
                    False, False, details)
