"""Drift of features, target and predictions between a reference and a current window.

A functional core: ``seasonal_reference`` and ``detect_drift`` are pure functions of DataFrames
that return a matched reference frame and a ``DriftReport``; only ``write_reports`` touches files.

The verdict is ours, not evidently's:

* numerical column: two-sample Kolmogorov-Smirnov test **and** an effect size, the Wasserstein
  distance divided by the reference standard deviation. It drifts only when the KS p-value is
  below the Bonferroni-corrected alpha *and* the effect reaches ``numerical_threshold``: with
  400 000 hourly rows KS rejects for differences nobody cares about, and with a few hundred rows
  a large Wasserstein distance can be noise; asking for both avoids both mistakes.
* categorical column: chi-squared test of the 2 x K contingency table **and** the Jensen-Shannon
  distance (natural logarithm, as evidently computes it, so in [0, sqrt(ln 2)] ~ [0, 0.83]).
* Bonferroni: alpha is divided by the number of columns actually tested in the report
  (features, target and prediction).
* feature-share drift: share of drifted input features (target and prediction excluded) >=
  ``share_threshold``. ``drift_detected`` -- the one verdict, shown everywhere with its reasons
  (``DriftReport.reasons``) -- is feature-share drift OR target drift OR prediction drift.
* fewer than ``min_rows`` rows (current, reference, or the matched reference) gives the status
  ``insufficient_data`` and ``drift_detected = None``; any failure gives ``error`` with the
  message and ``drift_detected = None`` -- never a silent "no drift".

Hourly bike counts are strongly seasonal (summer vs winter, weekdays vs weekends, the hour of the
day), so by default the reference is restricted to the same ISO weeks of the year (+-2 weeks)
and re-sampled so its weekday x hour mix matches the current window (``seasonal_reference``).

Timestamps: tz-aware values are converted to Europe/Paris; naive values are taken as Paris local
time (as ``velocast.data.calendar`` does).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from velocast.data.schema import to_paris

logger = logging.getLogger(__name__)

STATUSES = ("ok", "drift", "insufficient_data", "error")
NUMERICAL = "numerical"
CATEGORICAL = "categorical"
TOP_CATEGORIES = 5
_WEEKS_PER_YEAR = 52  # ISO week 53 wraps onto week 1
_MIN_MIX_COVERAGE = 0.9  # share of current rows whose weekday x hour cell the reference must have


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class DriftPolicy:
    """Thresholds of the drift verdict.

    ``alpha`` is the per-report family-wise level (Bonferroni over the tested columns);
    ``numerical_threshold`` is on the normalised Wasserstein distance, ``categorical_threshold``
    on the Jensen-Shannon distance; ``window_weeks`` and ``seed`` drive the seasonal reference;
    ``min_days`` is the minimum of days for columns tested on daily means.
    """

    alpha: float = 0.05
    numerical_threshold: float = 0.1
    categorical_threshold: float = 0.1
    share_threshold: float = 0.5
    min_rows: int = 200
    bonferroni: bool = True
    window_weeks: int = 2
    seed: int = 0
    min_days: int = 5  # for ``daily`` columns, tested on one value per day

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.numerical_threshold < 0 or self.categorical_threshold < 0:
            raise ValueError("effect thresholds must be >= 0")
        if not 0.0 < self.share_threshold <= 1.0:
            raise ValueError(f"share_threshold must be in (0, 1], got {self.share_threshold}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows}")
        if self.window_weeks < 0:
            raise ValueError(f"window_weeks must be >= 0, got {self.window_weeks}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftPolicy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class FeatureDrift:
    """Test result of one column.

    ``test`` is ``"ks"`` (numerical), ``"chi2"`` (categorical) or ``"none"`` when the column had
    fewer than ``min_rows`` non-missing values on a side (then ``drifted`` is False, ``tested``
    is False and ``note`` says why). ``effect`` is the normalised Wasserstein distance or the
    Jensen-Shannon distance; ``alpha`` is the corrected level the p-value was compared with.
    """

    name: str
    kind: str
    test: str
    statistic: float | None
    p_value: float | None
    effect: float | None
    threshold: float
    alpha: float
    drifted: bool
    tested: bool
    reference_rows: int
    current_rows: int
    reference_missing: float
    current_missing: float
    reference_mean: float | None = None
    current_mean: float | None = None
    reference_top: dict[str, float] | None = None
    current_top: dict[str, float] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("statistic", "p_value", "effect", "reference_mean", "current_mean"):
            out[key] = _num(out[key])
        for key in ("threshold", "alpha", "reference_missing", "current_missing"):
            out[key] = float(out[key])
        for key in ("reference_rows", "current_rows"):
            out[key] = int(out[key])
        out["drifted"] = bool(out["drifted"])
        out["tested"] = bool(out["tested"])
        for key in ("reference_top", "current_top"):
            if out[key] is not None:
                out[key] = {str(k): float(v) for k, v in out[key].items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDrift:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DriftReport:
    """Verdict of one drift check; ``to_dict`` is its small, JSON-ready form.

    ``status``: ``ok`` | ``drift`` | ``insufficient_data`` | ``error``. ``drift_detected`` is
    None unless the check could be made (status ok or drift). ``error`` is set only with the
    status ``error``; ``note`` says why the data were insufficient. ``reference_rows`` counts the
    reference given, ``compared_reference_rows`` the rows left after seasonal matching.
    """

    status: str
    drift_detected: bool | None
    feature_share_drift: bool | None
    drift_share: float | None
    n_features: int
    n_drifted: int
    features: list[FeatureDrift] = field(default_factory=list)
    target_drift: FeatureDrift | None = None
    prediction_drift: FeatureDrift | None = None
    new_counters: list[str] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0
    compared_reference_rows: int = 0
    reference_period: tuple[str, str] | None = None
    current_period: tuple[str, str] | None = None
    seasonal_matching: bool = False
    error: str | None = None
    note: str | None = None
    policy: DriftPolicy = field(default_factory=DriftPolicy)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def headline(self) -> str:
        """The verdict in a word: ``drift``, ``no drift`` or ``unknown`` (insufficient data, error)."""
        return {True: "drift", False: "no drift"}.get(self.drift_detected, "unknown")

    @property
    def reasons(self) -> list[str]:
        """Why the verdict is what it is, each part with its numbers."""
        if self.drift_detected is None:
            return [self.error or self.note or self.status]
        out = []
        for label, extra in (("the target", self.target_drift), ("the predictions", self.prediction_drift)):
            if extra is not None and extra.tested:
                out.append(f"{label} ({extra.name}) {'drifted' if extra.drifted else 'did not drift'}"
                           f" (effect {_short(extra.effect)}, threshold {extra.threshold:g})")
        if self.n_features:
            share = self.drift_share or 0.0
            compare = ">=" if self.feature_share_drift else "<"
            named = f": {', '.join(self.drifted_features)}" if self.drifted_features else ""
            out.append(f"{self.n_drifted} of {self.n_features} input features drifted{named} (share "
                       f"{share:.2f} {compare} {self.policy.share_threshold:g} for feature drift)")
        return out

    def verdict(self) -> str:
        """One line: the verdict and its reasons, e.g. ``drift: the target (bike_count) drifted …``."""
        shown = self.headline if self.headline == self.status else f"{self.headline} ({self.status})"
        return f"{shown}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "drift_detected": None if self.drift_detected is None else bool(self.drift_detected),
            "verdict": self.verdict(),
            "reasons": self.reasons,
            "verdict_by": "velocast",
            "feature_share_drift": None if self.feature_share_drift is None else bool(self.feature_share_drift),
            "drift_share": _num(self.drift_share),
            "n_features": int(self.n_features),
            "n_drifted": int(self.n_drifted),
            "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
            "target_drift": None if self.target_drift is None else self.target_drift.to_dict(),
            "prediction_drift": None if self.prediction_drift is None else self.prediction_drift.to_dict(),
            "new_counters": [str(c) for c in self.new_counters],
            "reference_rows": int(self.reference_rows),
            "current_rows": int(self.current_rows),
            "compared_reference_rows": int(self.compared_reference_rows),
            "reference_period": None if self.reference_period is None else list(self.reference_period),
            "current_period": None if self.current_period is None else list(self.current_period),
            "seasonal_matching": bool(self.seasonal_matching),
            "error": self.error,
            "note": self.note,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        def feature(d: dict[str, Any] | None) -> FeatureDrift | None:
            return None if d is None else FeatureDrift.from_dict(d)

        def period(p: Iterable[str] | None) -> tuple[str, str] | None:
            return None if p is None else tuple(p)  # type: ignore[return-value]

        return cls(
            status=data["status"],
            drift_detected=data.get("drift_detected"),
            feature_share_drift=data.get("feature_share_drift", data.get("dataset_drift")),  # older reports
            drift_share=data.get("drift_share"),
            n_features=data.get("n_features", 0),
            n_drifted=data.get("n_drifted", 0),
            features=[FeatureDrift.from_dict(f) for f in data.get("features", [])],
            target_drift=feature(data.get("target_drift")),
            prediction_drift=feature(data.get("prediction_drift")),
            new_counters=list(data.get("new_counters", [])),
            reference_rows=data.get("reference_rows", 0),
            current_rows=data.get("current_rows", 0),
            compared_reference_rows=data.get("compared_reference_rows", 0),
            reference_period=period(data.get("reference_period")),
            current_period=period(data.get("current_period")),
            seasonal_matching=data.get("seasonal_matching", False),
            error=data.get("error"),
            note=data.get("note"),
            policy=DriftPolicy.from_dict(data.get("policy", {})),
        )


# --------------------------------------------------------------------------- helpers
def _short(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _num(x: Any) -> float | None:
    """A plain float, or None for missing / non-finite values (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _paris(ts: pd.Series) -> pd.Series:
    """Timestamps as Europe/Paris wall time (tz-aware converted, naive taken as Paris)."""
    if not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts)
    return to_paris(ts, naive="paris")


def _period(frame: pd.DataFrame, timestamp_col: str) -> tuple[str, str] | None:
    if timestamp_col not in frame.columns or frame.empty:
        return None
    ts = frame[timestamp_col].dropna()
    if ts.empty:
        return None
    ts = _paris(ts)
    return (ts.min().isoformat(), ts.max().isoformat())


def _cells(ts: pd.Series, coarse: bool = False) -> np.ndarray:
    """weekday x hour cell (0..167) of each Paris timestamp, -1 where missing.

    ``coarse``: day type (weekday 0 / weekend 1) x hour instead (0..47).
    """
    ts = _paris(ts)
    day = (ts.dt.weekday >= 5).astype(float) if coarse else ts.dt.weekday
    cell = (day * 24 + ts.dt.hour).to_numpy(dtype=float, na_value=np.nan)
    return np.where(np.isnan(cell), -1, cell).astype(np.int64)


def _iso_weeks(ts: pd.Series) -> np.ndarray:
    week = _paris(ts).dt.isocalendar().week
    return week.to_numpy(dtype=float, na_value=np.nan)


def _match_mix(frame: pd.DataFrame, frame_cells: np.ndarray, current_cells: np.ndarray,
               seed: int) -> tuple[pd.DataFrame, float]:
    """Rows of ``frame`` drawn without replacement so the weekday x hour mix equals the current's.

    The sample is the largest one whose every cell fits in what ``frame`` has; cells of the current
    window that ``frame`` lacks are left out (the returned coverage is the share of current rows
    whose cell could be matched).
    """
    cur_counts = np.bincount(current_cells[current_cells >= 0], minlength=168).astype(float)
    ref_counts = np.bincount(frame_cells[frame_cells >= 0], minlength=168).astype(float)
    common = (cur_counts > 0) & (ref_counts > 0)
    total_cur = cur_counts.sum()
    coverage = float(cur_counts[common].sum() / total_cur) if total_cur else 0.0
    if not common.any():
        return frame.iloc[:0], coverage
    p = np.where(common, cur_counts, 0.0)
    p /= p.sum()
    n_total = np.min(ref_counts[common] / p[common])
    quota = np.minimum(np.floor(p * n_total + 1e-9), ref_counts).astype(np.int64)
    rng = np.random.default_rng(seed)
    keys = rng.random(len(frame))
    valid = frame_cells >= 0
    cells = np.where(valid, frame_cells, 168)
    order = np.lexsort((keys, cells))
    sorted_cells = cells[order]
    starts = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(len(order)) - starts
    quota_ext = np.append(quota, 0)
    keep = order[rank < quota_ext[sorted_cells]]
    keep.sort()
    return frame.iloc[keep], coverage


def _as_float(series: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series):
        series = series.astype(float)
    if not (pd.api.types.is_numeric_dtype(series)):
        raise ValueError(f"numerical column {name!r} has non-numeric dtype {series.dtype}")
    values = series.to_numpy(dtype=float, na_value=np.nan)
    return values


def _category_counts(series: pd.Series) -> pd.Series:
    """Counts of non-missing values keyed by their string form (1.0 and 1 both give "1")."""
    counts = series.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    index = counts.index
    if pd.api.types.is_float_dtype(index.dtype):
        values = index.to_numpy(dtype=float)
        if np.all(np.mod(values, 1) == 0):
            index = pd.Index(values.astype(np.int64))
    keys = pd.Index([str(v) for v in index])
    return pd.Series(counts.to_numpy(), index=keys).groupby(level=0).sum()


def _top(counts: pd.Series) -> dict[str, float]:
    total = counts.sum()
    if total == 0:
        return {}
    top = counts.sort_values(ascending=False, kind="stable").head(TOP_CATEGORIES)
    return {str(k): float(v / total) for k, v in top.items()}


def _untested(name: str, kind: str, threshold: float, alpha: float, n_ref: int, n_cur: int,
              miss_ref: float, miss_cur: float, min_rows: int) -> FeatureDrift:
    return FeatureDrift(
        name=name, kind=kind, test="none", statistic=None, p_value=None, effect=None,
        threshold=threshold, alpha=alpha, drifted=False, tested=False,
        reference_rows=n_ref, current_rows=n_cur, reference_missing=miss_ref,
        current_missing=miss_cur,
        note=f"not tested: {n_ref} reference and {n_cur} current non-missing values (< {min_rows})",
    )


def _numerical_drift(name: str, ref: np.ndarray, cur: np.ndarray, alpha: float,
                     threshold: float, miss_ref: float, miss_cur: float) -> FeatureDrift:
    ks = stats.ks_2samp(ref, cur, method="asymp" if min(len(ref), len(cur)) > 10_000 else "auto")
    scale = float(np.std(ref))
    if scale == 0.0:  # constant reference: normalise by the pooled spread instead
        scale = float(np.std(np.concatenate([ref, cur])))
    wasserstein = float(stats.wasserstein_distance(ref, cur))
    effect = wasserstein / scale if scale > 0 else 0.0
    p_value = float(ks.pvalue)
    return FeatureDrift(
        name=name, kind=NUMERICAL, test="ks", statistic=float(ks.statistic), p_value=p_value,
        effect=effect, threshold=threshold, alpha=alpha,
        drifted=bool(p_value < alpha and effect >= threshold), tested=True,
        reference_rows=len(ref), current_rows=len(cur), reference_missing=miss_ref,
        current_missing=miss_cur, reference_mean=float(np.mean(ref)), current_mean=float(np.mean(cur)),
    )


def _categorical_drift(name: str, ref: pd.Series, cur: pd.Series, alpha: float,
                       threshold: float, miss_ref: float, miss_cur: float) -> FeatureDrift:
    ref_counts, cur_counts = _category_counts(ref), _category_counts(cur)
    categories = ref_counts.index.union(cur_counts.index)
    r = ref_counts.reindex(categories, fill_value=0).to_numpy(dtype=float)
    c = cur_counts.reindex(categories, fill_value=0).to_numpy(dtype=float)
    if len(categories) < 2:  # one and the same category on both sides
        statistic, p_value, effect = 0.0, 1.0, 0.0
    else:
        chi2 = stats.chi2_contingency(np.vstack([r, c]), correction=False)
        statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
        effect = float(distance.jensenshannon(r / r.sum(), c / c.sum()))
    return FeatureDrift(
        name=name, kind=CATEGORICAL, test="chi2", statistic=statistic, p_value=p_value,
        effect=effect, threshold=threshold, alpha=alpha,
        drifted=bool(p_value < alpha and effect >= threshold), tested=True,
        reference_rows=int(r.sum()), current_rows=int(c.sum()), reference_missing=miss_ref,
        current_missing=miss_cur, reference_top=_top(ref_counts), current_top=_top(cur_counts),
    )


# --------------------------------------------------------------------------- core
def seasonal_reference(reference: pd.DataFrame, current: pd.DataFrame,
                       timestamp_col: str = "timestamp", min_rows: int = DriftPolicy.min_rows,
                       window_weeks: int = DriftPolicy.window_weeks,
                       seed: int = DriftPolicy.seed) -> tuple[pd.DataFrame, bool]:
    """The part of ``reference`` comparable with ``current``, and whether it is season-matched.

    Keeps reference rows whose ISO week of the year is within ``window_weeks`` of a week of the
    current window (circularly: week 52 neighbours week 1; widened to 2x then 3x ``window_weeks``
    when that leaves too few rows or cells, then matched on weekday/weekend x hour when the window
    lacks some weekdays), then draws from them, without
    replacement and seeded, a sample whose weekday x hour mix equals the current window's.
    When fewer than ``min_rows`` rows remain, or the window lacks the weekday x hour cells of
    more than 10 % of the current rows (e.g. the reference covers another season only), the
    whole reference re-mixed the same way is returned with ``False``.
    """
    for name, frame in (("reference", reference), ("current", current)):
        if timestamp_col not in frame.columns:
            raise KeyError(f"timestamp column {timestamp_col!r} missing from {name}")
    if reference.empty or current.empty:
        return reference, False
    ref_ts, cur_ts = reference[timestamp_col], current[timestamp_col]
    ref_cells, cur_cells = _cells(ref_ts), _cells(cur_ts)

    ref_weeks = _iso_weeks(ref_ts)
    cur_weeks = np.unique(_iso_weeks(cur_ts))
    cur_weeks = cur_weeks[~np.isnan(cur_weeks)]
    if len(cur_weeks):
        diff = np.abs(ref_weeks[:, None] - cur_weeks[None, :]) % _WEEKS_PER_YEAR
        dist = np.nanmin(np.minimum(diff, _WEEKS_PER_YEAR - diff), axis=1, initial=np.inf)
        dist = np.nan_to_num(dist, nan=np.inf)
        # a sparse reference (e.g. test_baseline: one day in five) may need a wider window
        for width in (window_weeks, 2 * window_weeks, 3 * window_weeks):
            in_window = dist <= width
            if not in_window.any():
                continue
            subset = reference.iloc[np.flatnonzero(in_window)]
            matched, coverage = _match_mix(subset, ref_cells[in_window], cur_cells, seed)
            if len(matched) >= min_rows and coverage >= _MIN_MIX_COVERAGE:
                return matched, True
        # still not every weekday in the window: match weekday/weekend x hour instead
        if in_window.any():
            coarse_ref, coarse_cur = _cells(ref_ts, coarse=True), _cells(cur_ts, coarse=True)
            matched, coverage = _match_mix(subset, coarse_ref[in_window], coarse_cur, seed)
            if len(matched) >= min_rows and coverage >= _MIN_MIX_COVERAGE:
                return matched, True
    matched, coverage = _match_mix(reference, ref_cells, cur_cells, seed)
    if len(matched) == 0:
        return reference, False
    return matched, False


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
                 categorical: list[str], target: str | None = None, prediction: str | None = None,
                 known_counters: set[str] | None = None, counter_col: str = "counter_id",
                 policy: DriftPolicy = DriftPolicy(), seasonal: bool = True,
                 timestamp_col: str = "timestamp", daily: list[str] | None = None) -> DriftReport:
    """Drift of ``current`` against ``reference``; never raises, failures give status "error".

    ``known_counters``: the counter ids the model knows; when None, those of ``reference``
    (if it has ``counter_col``). ``new_counters`` lists the current ids outside that set.
    ``seasonal``: compare with ``seasonal_reference(reference, current)`` rather than the
    whole reference (needs ``timestamp_col``).
    ``daily``: numerical columns whose values are shared by all rows of an hour and autocorrelated
    over the day (weather): they are tested on their daily means, so the test counts independent
    observations (days), not thousands of repeated hourly rows.
    """
    base: dict[str, Any] = {"policy": policy}
    try:
        base["reference_rows"] = len(reference)
        base["current_rows"] = len(current)
        return _detect(reference, current, list(numerical), list(categorical), target, prediction,
                       known_counters, counter_col, policy, seasonal, timestamp_col, base, list(daily or []))
    except Exception as exc:  # a failed check must say so, never pass as "no drift"
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        message = f"{type(exc).__name__}: {detail}"
        logger.exception("drift detection failed: %s", message)
        return DriftReport(status="error", drift_detected=None, feature_share_drift=None, drift_share=None,
                           n_features=0, n_drifted=0, error=message, **base)


def _detect(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
            categorical: list[str], target: str | None, prediction: str | None,
            known_counters: set[str] | None, counter_col: str, policy: DriftPolicy,
            seasonal: bool, timestamp_col: str, base: dict[str, Any],
            daily: list[str] | None = None) -> DriftReport:
    # ---- validate the request
    daily = list(daily or [])
    if set(daily) - set(numerical):
        raise ValueError(f"daily columns must be numerical features: {sorted(set(daily) - set(numerical))}")
    both = set(numerical) & set(categorical)
    if both:
        raise ValueError(f"columns listed as both numerical and categorical: {sorted(both)}")
    extra = [c for c in (target, prediction) if c is not None]
    if set(extra) & (set(numerical) | set(categorical)):
        raise ValueError("target/prediction must not also be listed as features")
    columns = [*numerical, *categorical, *extra]
    if not columns:
        raise ValueError("no columns to test: give numerical, categorical, target or prediction")
    if seasonal or daily:
        columns_needed = [*columns, timestamp_col]
    else:
        columns_needed = columns
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in dict.fromkeys(columns_needed) if c not in frame.columns]
        if missing:
            hint = (f" (the seasonal reference needs {timestamp_col!r}; or pass seasonal=False)"
                    if timestamp_col in missing else "")
            raise KeyError(f"columns missing from {name}: {missing}{hint}")
    base["reference_period"] = _period(reference, timestamp_col)
    base["current_period"] = _period(current, timestamp_col)

    # ---- new counters (against the whole reference, not the seasonal part)
    new_counters: list[str] = []
    if known_counters is not None and counter_col not in current.columns:
        raise KeyError(f"counter column {counter_col!r} missing from current")
    if counter_col in current.columns:
        if known_counters is not None:
            known = {str(c) for c in known_counters}
        elif counter_col in reference.columns:
            known = {str(c) for c in pd.unique(reference[counter_col].dropna())}
        else:
            known = None
        if known is not None:
            seen = {str(c) for c in pd.unique(current[counter_col].dropna())}
            new_counters = sorted(seen - known)
    base["new_counters"] = new_counters

    def insufficient(reason: str, **extra_fields: Any) -> DriftReport:
        return DriftReport(status="insufficient_data", drift_detected=None, feature_share_drift=None,
                           drift_share=None, n_features=0, n_drifted=0, note=reason,
                           **base, **extra_fields)

    if len(current) < policy.min_rows or len(reference) < policy.min_rows:
        return insufficient(f"{len(reference)} reference and {len(current)} current rows "
                            f"(minimum {policy.min_rows})")

    # ---- the reference we compare with
    if seasonal:
        ref_used, matched = seasonal_reference(reference, current, timestamp_col, policy.min_rows,
                                               policy.window_weeks, policy.seed)
    else:
        ref_used, matched = reference, False
    base["seasonal_matching"] = bool(matched)
    base["compared_reference_rows"] = len(ref_used)
    if len(ref_used) < policy.min_rows:
        return insufficient(f"only {len(ref_used)} comparable reference rows "
                            f"(minimum {policy.min_rows})")

    # ---- gather the non-missing values of each column, then test
    kinds = {**{c: NUMERICAL for c in numerical}, **{c: CATEGORICAL for c in categorical}}
    for c in extra:
        kinds[c] = NUMERICAL if pd.api.types.is_numeric_dtype(reference[c]) else CATEGORICAL
    prepared: dict[str, tuple[Any, Any, float, float]] = {}
    days_ref = _paris(ref_used[timestamp_col]).dt.date.to_numpy() if daily else None
    days_cur = _paris(current[timestamp_col]).dt.date.to_numpy() if daily else None
    for col in columns:
        if col in daily:
            r = pd.Series(_as_float(ref_used[col], col)).groupby(days_ref).mean().to_numpy()
            c = pd.Series(_as_float(current[col], col)).groupby(days_cur).mean().to_numpy()
            r_ok, c_ok = np.isfinite(r), np.isfinite(c)
            prepared[col] = (r[r_ok], c[c_ok], 1 - r_ok.mean() if len(r) else 1.0, 1 - c_ok.mean() if len(c) else 1.0)
        elif kinds[col] == NUMERICAL:
            r, c = _as_float(ref_used[col], col), _as_float(current[col], col)
            r_ok, c_ok = np.isfinite(r), np.isfinite(c)
            prepared[col] = (r[r_ok], c[c_ok], 1 - r_ok.mean(), 1 - c_ok.mean())
        else:
            r_s, c_s = ref_used[col], current[col]
            prepared[col] = (r_s.dropna(), c_s.dropna(), float(r_s.isna().mean()),
                             float(c_s.isna().mean()))
    def minimum(col: str) -> int:
        return policy.min_days if col in daily else policy.min_rows

    testable = [c for c, (r, cu, _, _) in prepared.items()
                if len(r) >= minimum(c) and len(cu) >= minimum(c)]
    n_tests = max(len(testable), 1)
    alpha = policy.alpha / n_tests if policy.bonferroni else policy.alpha

    results: dict[str, FeatureDrift] = {}
    for col, (r, cu, miss_r, miss_c) in prepared.items():
        kind = kinds[col]
        threshold = policy.numerical_threshold if kind == NUMERICAL else policy.categorical_threshold
        if col not in testable:
            results[col] = _untested(col, kind, threshold, alpha, len(r), len(cu), float(miss_r),
                                     float(miss_c), minimum(col))
        elif kind == NUMERICAL:
            results[col] = _numerical_drift(col, r, cu, alpha, threshold, float(miss_r), float(miss_c))
        else:
            results[col] = _categorical_drift(col, r, cu, alpha, threshold, float(miss_r), float(miss_c))

    features = [results[c] for c in [*numerical, *categorical]]
    target_drift = results[target] if target is not None else None
    prediction_drift = results[prediction] if prediction is not None else None
    tested = [f for f in features if f.tested]
    n_drifted = sum(f.drifted for f in tested)
    extras_tested = any(f is not None and f.tested for f in (target_drift, prediction_drift))
    if not tested and not extras_tested:
        return insufficient("no column has enough non-missing values on both sides",
                            features=features, target_drift=target_drift,
                            prediction_drift=prediction_drift)
    drift_share = n_drifted / len(tested) if tested else None
    feature_share_drift = bool(drift_share is not None and drift_share >= policy.share_threshold)
    drift_detected = bool(
        feature_share_drift
        or (target_drift is not None and target_drift.drifted)
        or (prediction_drift is not None and prediction_drift.drifted)
    )
    return DriftReport(
        status="drift" if drift_detected else "ok", drift_detected=drift_detected,
        feature_share_drift=feature_share_drift, drift_share=drift_share, n_features=len(tested),
        n_drifted=n_drifted, features=features, target_drift=target_drift,
        prediction_drift=prediction_drift, **base,
    )


# --------------------------------------------------------------------------- writers
def write_reports(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame,
                  columns: list[str], out_dir: Path, max_rows: int = 20_000,
                  seed: int = 0) -> dict[str, Path]:
    """Write ``drift.json`` (our verdict) and ``drift.html`` (our verdict above evidently's panels).

    ``reference`` should be the reference the verdict was computed on (e.g. the output of
    ``seasonal_reference``). Both frames are sampled to ``max_rows`` rows (seeded) before
    evidently. If evidently fails the JSON is still written, a warning is logged and the result
    has no ``"html"`` entry.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    json_path = out_dir / "drift.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    paths["json"] = json_path
    html_path = out_dir / "drift.html"
    tmp_path = out_dir / f".drift.html.{os.getpid()}.tmp"
    try:
        _evidently_html(report, reference, current, columns, tmp_path, max_rows, seed)
        os.replace(tmp_path, html_path)
        paths["html"] = html_path
    except Exception as exc:  # noqa: BLE001 - the HTML is a rendering; the verdict is in the JSON
        logger.warning("evidently drift report not written: %s: %s", type(exc).__name__, exc)
        tmp_path.unlink(missing_ok=True)
    return paths


def _evidently_html(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame,
                    columns: list[str], path: Path, max_rows: int, seed: int) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    cols = [c for c in dict.fromkeys(columns) if c in reference.columns and c in current.columns]
    dropped = [c for c in columns if c not in cols]
    if dropped:
        logger.warning("columns left out of the HTML report (missing from a frame): %s", dropped)
    empty = [c for c in cols if reference[c].isna().all() or current[c].isna().all()]
    if empty:  # evidently refuses an empty column; the banner lists it as not tested
        logger.info("columns without values left out of the HTML panels: %s", empty)
        cols = [c for c in cols if c not in empty]
    if not cols:
        raise ValueError("no column common to reference and current to render")
    kinds = {f.name: f.kind for f in report.features}
    for extra in (report.target_drift, report.prediction_drift):
        if extra is not None:
            kinds[extra.name] = extra.kind

    def prepare(frame: pd.DataFrame, salt: int) -> pd.DataFrame:
        if len(frame) > max_rows:
            frame = frame.sample(n=max_rows, random_state=seed + salt)
        out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
        for c in cols:
            s = frame[c].reset_index(drop=True)
            kind = kinds.get(c, NUMERICAL if pd.api.types.is_numeric_dtype(s) else CATEGORICAL)
            if kind == NUMERICAL:
                out[c] = s.to_numpy(dtype=float, na_value=np.nan)
            else:
                out[c] = s.astype(object).where(s.notna(), None).map(
                    lambda v: None if v is None else str(v))
        return out

    ref, cur = prepare(reference, 0), prepare(current, 1)
    numerical = [c for c in cols if kinds.get(c) == NUMERICAL or
                 (c not in kinds and pd.api.types.is_float_dtype(ref[c]))]
    categorical = [c for c in cols if c not in numerical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    policy = report.policy
    # one distribution panel per column, and no dataset-level "drift" headline of evidently's own:
    # the verdict is velocast's (the banner written above the panels)
    panels = [ValueDrift(column=c, method="wasserstein" if c in numerical else "jensenshannon",
                         threshold=policy.numerical_threshold if c in numerical else policy.categorical_threshold)
              for c in cols]
    snapshot = Report(panels).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    snapshot.save_html(str(path))
    if not path.exists() or path.stat().st_size == 0:
        raise RuntimeError("evidently wrote an empty HTML file")
    html = path.read_text(encoding="utf-8")
    at = html.find("<body>")
    if at < 0:
        raise RuntimeError("evidently's HTML has no <body>: the verdict banner cannot be placed")
    at += len("<body>")
    path.write_text(html[:at] + verdict_banner(report, max_rows) + html[at:], encoding="utf-8")


def verdict_banner(report: DriftReport, sampled_rows: int) -> str:
    """The HTML block above evidently's panels: velocast's verdict, its reasons and every column's test."""
    from html import escape

    colour = {"drift": "#c0392b", "no drift": "#1e8449"}.get(report.headline, "#7f8c8d")
    rows = []
    for role, f in ([("input", f) for f in report.features]
                    + [(role, f) for role, f in (("target", report.target_drift),
                                                  ("prediction", report.prediction_drift)) if f is not None]):
        verdict = "drift" if f.drifted else ("no drift" if f.tested else f"not tested: {f.note or ''}")
        rows.append(f"<tr><td>{escape(f.name)}</td><td>{role}</td><td>{escape(f.test)}</td>"
                    f"<td>{'' if f.p_value is None else f'{f.p_value:.2g}'}</td>"
                    f"<td>{_short(f.effect)}</td><td>{f.threshold:g}</td><td><b>{escape(verdict)}</b></td></tr>")
    reasons = "".join(f"<li>{escape(r)}</li>" for r in report.reasons)
    new = (f"<p>New counters unknown to the champion: {escape(', '.join(report.new_counters))}</p>"
           if report.new_counters else "")
    return f"""
<div id="velocast-verdict" style="font-family:sans-serif;margin:16px;padding:12px 18px;border:3px solid {colour};
     background:#fff;color:#222">
<h2 style="margin:0 0 6px 0;color:{colour}">velocast drift verdict: {escape(report.headline.upper())}</h2>
<ul style="margin:4px 0">{reasons}</ul>
<p style="margin:6px 0">Reference {report.compared_reference_rows:,} rows {escape(str(report.reference_period))}
(seasonally matched: {'yes' if report.seasonal_matching else 'no'}); current {report.current_rows:,} rows
{escape(str(report.current_period))}. {new}</p>
<p style="margin:6px 0;font-size:90%">This verdict is velocast's: a column drifts only when its test
(Kolmogorov-Smirnov or chi-squared, Bonferroni-corrected) is significant <i>and</i> its effect (normalised
Wasserstein or Jensen-Shannon distance) reaches the threshold; weather is tested on daily means; the whole
report says drift when the target or the predictions drift, or when at least {report.policy.share_threshold:g} of the
input features do. The Evidently panels below only draw the distributions (on at most {sampled_rows:,} sampled
rows per side); their own per-column "drift" flags use the effect size alone and are not the verdict.</p>
<table style="border-collapse:collapse;font-size:90%" border="1" cellpadding="4">
<tr><th>column</th><th>role</th><th>test</th><th>p-value</th><th>effect</th><th>threshold</th><th>velocast</th></tr>
{''.join(rows)}
</table>
</div>
"""
