"""How good prediction intervals are: pure functions of arrays, no I/O.

An interval ``[lower, upper]`` of nominal central coverage ``c`` (e.g. 0.8) should hold the truth
``c`` of the time (*empirical coverage*), be as narrow as possible (*mean width*), and miss by
little when it misses. The *interval score* (Gneiting & Raftery 2007, also called Winkler score)
rewards both at once::

    IS = (upper - lower) + 2/alpha * (lower - y) * [y < lower] + 2/alpha * (y - upper) * [y > upper]

with ``alpha = 1 - c``; lower is better. It equals ``2/alpha`` times the summed pinball losses of
the two quantiles ``alpha/2`` (lower) and ``1 - alpha/2`` (upper), which are reported too.

Coverage per counter tells whether an interval is honest for every counter, not only on average:
``counter_coverage`` gives it for counters seen on at least ``min_days`` days.

``hourly_residual_intervals`` is the naive baseline: the empirical quantiles of the residuals of
each hour of the day, added to the point forecast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

DEFAULT_COVERAGE = 0.8
MIN_COVERAGE, MAX_COVERAGE = 0.5, 0.99


def check_coverage(coverage: float) -> float:
    """``coverage`` as a float in [0.5, 0.99]; a clear error otherwise."""
    try:
        value = float(coverage)
    except (TypeError, ValueError):
        raise ValueError(f"coverage={coverage!r}: expected a number between {MIN_COVERAGE} and {MAX_COVERAGE}") from None
    if not (MIN_COVERAGE <= value <= MAX_COVERAGE):
        raise ValueError(f"coverage={coverage!r}: expected a number between {MIN_COVERAGE} and {MAX_COVERAGE}")
    return value


def _arrays(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, lower, upper = (np.asarray(a, float) for a in (y, lower, upper))
    if not (len(y) == len(lower) == len(upper)):
        raise ValueError(f"{len(y)} true values but {len(lower)} lower and {len(upper)} upper bounds")
    if len(y) == 0:
        raise ValueError("cannot score an empty dataset")
    if np.any(lower > upper):
        first = int(np.flatnonzero(lower > upper)[0])
        raise ValueError(f"row {first}: lower bound {lower[first]} above upper bound {upper[first]}")
    return y, lower, upper


def covered(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """True where ``lower <= y <= upper``."""
    y, lower, upper = _arrays(y, lower, upper)
    return (y >= lower) & (y <= upper)


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of the truths inside their interval."""
    return float(np.mean(covered(y, lower, upper)))


def mean_width(lower: np.ndarray, upper: np.ndarray) -> float:
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    return float(np.mean(upper - lower))


def pinball_loss(y: np.ndarray, quantile: np.ndarray, tau: float) -> float:
    """Mean pinball (quantile) loss of ``quantile`` as the ``tau``-quantile of ``y``."""
    diff = np.asarray(y, float) - np.asarray(quantile, float)
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


def interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, coverage_level: float) -> float:
    """Mean interval (Winkler) score of central intervals of nominal coverage ``coverage_level``."""
    y, lower, upper = _arrays(y, lower, upper)
    alpha = 1.0 - coverage_level
    below = np.clip(lower - y, 0, None)
    above = np.clip(y - upper, 0, None)
    return float(np.mean((upper - lower) + 2.0 / alpha * (below + above)))


@dataclass(frozen=True)
class IntervalMetrics:
    """Interval quality on one dataset; keys are prefixed ``interval_`` where they are logged."""

    coverage: float  # empirical coverage
    nominal: float  # the coverage the intervals were made for
    width: float  # mean width (bikes per hour)
    score: float  # interval (Winkler) score, lower is better
    pinball: float  # mean pinball loss of the two bounds as quantiles alpha/2 and 1 - alpha/2
    n: int

    def to_dict(self) -> dict[str, float]:
        return {f"interval_{k}" if k != "n" else "interval_n": v for k, v in asdict(self).items()}


def interval_metrics(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, coverage_level: float) -> IntervalMetrics:
    y, lower, upper = _arrays(y, lower, upper)
    alpha = 1.0 - coverage_level
    pinball = (pinball_loss(y, lower, alpha / 2) + pinball_loss(y, upper, 1 - alpha / 2)) / 2
    return IntervalMetrics(coverage=coverage(y, lower, upper), nominal=float(coverage_level),
                           width=mean_width(lower, upper), score=interval_score(y, lower, upper, coverage_level),
                           pinball=pinball, n=len(y))


def counter_coverage(counter_ids: np.ndarray, days: np.ndarray, y: np.ndarray, lower: np.ndarray,
                     upper: np.ndarray, min_days: int = 14) -> pd.DataFrame:
    """Coverage and mean width per counter seen on at least ``min_days`` distinct days.

    Columns: ``counter_id``, ``days``, ``rows``, ``coverage``, ``width``; sorted by coverage.
    """
    inside = covered(y, lower, upper)
    frame = pd.DataFrame({"counter_id": np.asarray(counter_ids).astype(str), "day": np.asarray(days),
                          "inside": inside, "width": np.asarray(upper, float) - np.asarray(lower, float)})
    grouped = frame.groupby("counter_id")
    out = pd.DataFrame({"days": grouped["day"].nunique(), "rows": grouped.size(),
                        "coverage": grouped["inside"].mean(), "width": grouped["width"].mean()}).reset_index()
    return out[out["days"] >= min_days].sort_values("coverage").reset_index(drop=True)


def coverage_band(nominal: float, tolerance: float) -> tuple[float, float]:
    """The band an empirical coverage should stay in: ``nominal ± tolerance``, within [0, 1]."""
    return max(0.0, nominal - tolerance), min(1.0, nominal + tolerance)


def counter_summary(per_counter: pd.DataFrame, band: tuple[float, float]) -> dict[str, float | int | None]:
    """The worst counter's coverage and the share of counters inside ``band`` (of ``counter_coverage``)."""
    if per_counter.empty:
        return {"interval_counters": 0, "interval_worst_counter_coverage": None, "interval_counters_in_band": None}
    inside = per_counter["coverage"].between(*band)
    return {"interval_counters": int(len(per_counter)),
            "interval_worst_counter_coverage": float(per_counter["coverage"].min()),
            "interval_counters_in_band": float(inside.mean())}


def hourly_residual_intervals(calibration_hours: np.ndarray, calibration_residuals: np.ndarray,
                              hours: np.ndarray, predictions: np.ndarray,
                              coverage_level: float) -> tuple[np.ndarray, np.ndarray]:
    """The naive baseline: ``prediction + `` the empirical residual quantiles of the row's hour of day.

    ``calibration_residuals`` are ``truth - prediction`` in bikes on calibration rows, whose hours
    of the day are ``calibration_hours``; an hour without calibration rows uses all rows. Lower
    bounds are clipped at 0.
    """
    alpha = 1.0 - coverage_level
    cal_hours = np.asarray(calibration_hours, int)
    residuals = np.asarray(calibration_residuals, float)
    overall = np.quantile(residuals, [alpha / 2, 1 - alpha / 2])
    table = np.tile(overall, (24, 1))
    for hour in range(24):
        own = residuals[cal_hours == hour]
        if len(own):
            table[hour] = np.quantile(own, [alpha / 2, 1 - alpha / 2])
    hours = np.asarray(hours, int)
    predictions = np.asarray(predictions, float)
    lower = np.clip(predictions + table[hours, 0], 0, None)
    upper = np.clip(predictions + table[hours, 1], 0, None)
    return lower, np.maximum(upper, lower)


__all__ = ["DEFAULT_COVERAGE", "IntervalMetrics", "check_coverage", "counter_coverage", "counter_summary",
           "coverage", "coverage_band", "covered", "hourly_residual_intervals", "interval_metrics",
           "interval_score", "mean_width", "pinball_loss"]
