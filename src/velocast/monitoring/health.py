"""Champion health: is the champion still as good on recent labelled days as on test_baseline?

States follow the original system's decision table (``unknown`` below ``min_rows`` recent labelled
rows): ``ok``; ``degraded`` when RMSE rose 10-20%
above its own test_baseline RMSE (lightweight adaptation); ``critical`` when it rose more than 20%
or the RMSE is above an absolute threshold (default 50). The prediction intervals are judged too:
an empirical coverage outside ``nominal ± coverage_tolerance`` (0.70-0.90 for an 80% interval)
makes an otherwise ``ok`` champion ``degraded`` (its intervals no longer say how sure it is; the
weekly cycle recalibrates them). A pure function of the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class HealthPolicy:
    degraded_drop: float = 0.10
    critical_drop: float = 0.20
    rmse_threshold: float = 50.0
    coverage_tolerance: float = 0.10  # the interval's empirical coverage must stay within nominal ± this
    min_rows: int = 200  # fewer recent labelled rows: "unknown" (a few hours of one counter judge nothing)


@dataclass
class HealthReport:
    state: str  # ok | degraded | critical | unknown
    rmse: float | None
    r2: float | None
    baseline_rmse: float | None
    baseline_r2: float | None
    drop: float | None  # relative RMSE increase vs test_baseline
    rows: int
    period: str | None = None
    reasons: list[str] = field(default_factory=list)
    coverage: float | None = None  # empirical coverage of the prediction intervals
    nominal_coverage: float | None = None  # what they were made for
    interval_width: float | None = None  # their mean width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def health_state(rmse: float | None, r2: float | None, baseline_rmse: float | None, baseline_r2: float | None,
                 rows: int, policy: HealthPolicy | None = None, period: str | None = None,
                 notes: list[str] | None = None, coverage: float | None = None,
                 nominal_coverage: float | None = None, interval_width: float | None = None) -> HealthReport:
    """The state for these numbers; ``notes`` (how they were measured) follow the reasons.

    ``coverage``: the empirical coverage of intervals made for ``nominal_coverage`` (None: the
    model has no intervals, nothing is judged).
    """
    policy = policy or HealthPolicy()
    report = _state(rmse, r2, baseline_rmse, baseline_r2, rows, policy, period)
    if report.state != "unknown" and coverage is not None and nominal_coverage is not None:
        report.coverage, report.nominal_coverage, report.interval_width = coverage, nominal_coverage, interval_width
        low, high = nominal_coverage - policy.coverage_tolerance, nominal_coverage + policy.coverage_tolerance
        if not low <= coverage <= high:
            side = "fewer" if coverage < low else "more"
            reason = (f"prediction intervals cover {coverage:.1%} of the counts, {side} than the {low:.0%}-{high:.0%} "
                      f"band of their nominal {nominal_coverage:.0%}: they no longer say how sure the forecast is")
            if report.state == "ok":
                report.state, report.reasons = "degraded", [reason, *report.reasons]
            else:
                report.reasons.append(reason)
        else:
            report.reasons.append(f"prediction intervals cover {coverage:.1%} (nominal {nominal_coverage:.0%}, band "
                                  f"{low:.0%}-{high:.0%})")
    report.reasons += list(notes or [])
    return report


def _state(rmse: float | None, r2: float | None, baseline_rmse: float | None, baseline_r2: float | None,
           rows: int, policy: HealthPolicy, period: str | None) -> HealthReport:
    if rmse is None or rows == 0:
        return HealthReport("unknown", rmse, r2, baseline_rmse, baseline_r2, None, rows, period,
                            ["no recent labelled rows to check the champion on"])
    if rows < policy.min_rows:
        return HealthReport("unknown", rmse, r2, baseline_rmse, baseline_r2, None, rows, period,
                            [f"only {rows} recent labelled rows ({period}), fewer than {policy.min_rows}: too few to "
                             f"judge the champion (RMSE {rmse:.2f} on them)"])
    drop = (rmse - baseline_rmse) / baseline_rmse if baseline_rmse else None
    reasons = []
    if rmse > policy.rmse_threshold:
        reasons.append(f"RMSE {rmse:.2f} is above the absolute threshold {policy.rmse_threshold:g}")
    if drop is not None and drop > policy.critical_drop:
        reasons.append(f"RMSE {rmse:.2f} is {drop:.0%} above its test_baseline RMSE {baseline_rmse:.2f} "
                       f"(> {policy.critical_drop:.0%})")
    if reasons:
        return HealthReport("critical", rmse, r2, baseline_rmse, baseline_r2, drop, rows, period, reasons)
    if drop is not None and drop > policy.degraded_drop:
        return HealthReport("degraded", rmse, r2, baseline_rmse, baseline_r2, drop, rows, period,
                            [f"RMSE {rmse:.2f} is {drop:.0%} above its test_baseline RMSE {baseline_rmse:.2f} "
                             f"({policy.degraded_drop:.0%}-{policy.critical_drop:.0%})"])
    shown = "n/a" if drop is None else f"{drop:+.0%}"
    return HealthReport("ok", rmse, r2, baseline_rmse, baseline_r2, drop, rows, period,
                        [f"RMSE {rmse:.2f} vs test_baseline {baseline_rmse if baseline_rmse is not None else float('nan'):.2f} "
                         f"({shown}), under {policy.rmse_threshold:g}"])
