"""Calibrated prediction intervals: conformal prediction on time-ordered calibration days.

``ConformalRegressor`` is the ``model`` step of every regression pipeline: it wraps the point
regressor (``WeatherFallback`` or the seasonal baseline) and holds the calibration state, so the
one fitted object that is logged, registered, loaded and served carries its intervals.

How an interval is made (``calibrate``, then ``predict_interval``):

- Errors are multiplicative (a counter of 500 bikes/h misses by more bikes than one of 5), so the
  conformity score works in log space: ``r = log1p(count) - log1p(prediction)``; an interval
  built there and mapped back with ``expm1`` is never negative and widens with the count.
- Groups (Mondrian conformal prediction): rows are split by the *weather variant* that predicts
  them (the with-weather model or its no-weather sibling, whose errors are larger) and by *count
  level* (equal-frequency bins of the predicted ``log1p``, learned on the calibration rows). Each
  group has its own finite-sample conformal quantiles, so coverage holds per group, not only on
  average over the night's small counts and the rush hour's large ones.
- Counters: some counters are harder to forecast than others. Within its group a score is
  normalised by the group's centre and spread, then by the counter's own shift and spread, each
  shrunk towards the group's according to how many calibration days the counter has
  (``counter_prior_days``: a counter with that many days gets half its own). The counter
  statistics that normalise a calibration row are computed without that row's day (leave one day
  out), so the calibration scores are out-of-sample like a future day's.
- Quantiles: for a central coverage ``c`` (alpha = 1 - c), the lower bound uses the
  ``floor((n+1) alpha/2)``-th smallest score of the group and the upper bound the
  ``ceil((n+1)(1 - alpha/2))``-th: with calibration days exchangeable with the forecast days,
  each side misses at most alpha/2 of the time (split conformal; Vovk et al., Lei et al. 2018).
  The sorted scores are kept, so any coverage in [0.5, 0.99] is served exactly.

The calibration days must be days the point model never trained on, as served (history before
each day, the weather a forecast would have had): ``velocast.lifecycle`` takes the latest whole
days of the training period and fits the point model on the days before them, and the weekly
cycle recalibrates on the newest labelled days (``velocast.lifecycle.decisions.recalibrate``).

Following the recent errors (``day_by_day``, ``OnlineRule``): a counter's errors drift after
calibration (a summer drop, a sensor that degrades). A forecast of Paris day D may therefore follow
the errors the same model made on the labelled days before D that it never saw (``RecentErrors``):

- its interval ``adapted`` on days D-k..D-1 (k = ``VELOCAST_INTERVAL_ADAPT_DAYS``): each counter's
  shift and spread recomputed from those errors, shrunk towards the calibration's by
  ``counter_prior_days`` as at calibration;
- for day-ahead models, its prediction corrected by the counter's recent ``LevelBias`` (days
  D-b..D-1, b = ``VELOCAST_BIAS_CORRECTION_DAYS``) in the same block of hours of the day
  (``HOUR_BLOCKS``: a counter's morning rush can fall while its evening holds).

The interval is built around the forecast served: the corrected prediction, with the counters'
shift and spread adapted on the errors of the corrected forecasts of days D-k..D-1 (each of those
days corrected by the bias of the b days before it, as it was served). An interval around the
uncorrected prediction, adapted on uncorrected errors, lags a change of level the correction has
already followed. Scored as served (``python bench/interval_months.py``: lgbm day-ahead trained
before each month, 80% intervals), before -> after: 2020-12-10..2021-01-09 (Christmas holidays)
coverage 0.723 -> 0.757, counters inside 0.70-0.90 75% -> 96%, interval score 72.0 -> 62.2;
2021-04-01..04-30 coverage 0.801 -> 0.804, worst counter 0.580 -> 0.621, score 59.1 -> 57.1;
2021-07-10..08-09 coverage 0.794 -> 0.790, worst counter 0.720 -> 0.745, score 68.7 -> 70.7.

Only days before D are read, so nothing of D changes when counts of D or later change. Serving
(``velocast.lifecycle.serving.predict``) and scoring (``velocast.lifecycle.serving.scoring``) read the same days:
the store's labelled days after the calibration (``velocast.lifecycle.serving.adaptation``), and scored
rows of days the store lacks. On 2021-07-10..08-09 (``make bench``), lgbm day-ahead as served:
coverage of the 80% interval 0.766 -> 0.793, worst counter 0.575 -> 0.723, every counter with
>= 14 days inside 0.70-0.90 (52 of 52, from 48).
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone

from velocast.evaluation.intervals import DEFAULT_COVERAGE, check_coverage
from velocast.models.weather_fallback import WeatherFallback

log = logging.getLogger(__name__)

_SPREAD_QUANTILES = (0.1, 0.5, 0.9)  # a group's centre and spread: median, half the 10-90% range
_MIN_SPREAD = 1e-3
MIN_ADAPT_ROWS = 10  # fewer recent errors of a counter (and weather variant): its calibration's statistics


def _centre_spread(values: np.ndarray) -> tuple[float, float]:
    low, mid, high = np.quantile(values, _SPREAD_QUANTILES)
    return float(mid), float(max((high - low) / 2.0, _MIN_SPREAD))


def conformal_bounds(sorted_scores: np.ndarray, coverage: float) -> tuple[float, float]:
    """The split-conformal lower and upper quantiles of ``sorted_scores`` for a central ``coverage``.

    Ranks ``floor((n+1) alpha/2)`` and ``ceil((n+1)(1-alpha/2))`` (alpha = 1 - coverage); when the
    group is too small for a rank, the extreme score is used (the guarantee then no longer holds).
    """
    n = len(sorted_scores)
    if n == 0:
        raise ValueError("no calibration scores")
    alpha = 1.0 - coverage
    # a rank within 1e-9 of an integer is that integer (1 - 0.8 is 0.19999999999999996 in floating point)
    low_rank = int(np.floor((n + 1) * alpha / 2.0 + 1e-9))
    high_rank = int(np.ceil((n + 1) * (1.0 - alpha / 2.0) - 1e-9))
    return float(sorted_scores[min(max(low_rank, 1), n) - 1]), float(sorted_scores[min(max(high_rank, 1), n) - 1])


# (variant, level bin) quantile tables of a calibration's scores at a coverage (``ConformalRegressor._quantiles``)
_QUANTILES: dict[tuple[int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_FIELDS = ("prediction", "count", "variant", "counter", "day", "hour")
_EPOCH = pd.Timestamp("1970-01-01")


def day_number(day: Any) -> int:
    """The Paris day number (days since 1970-01-01) of an ISO date."""
    return _day_number_of(day) if isinstance(day, str) else \
        int((pd.Timestamp(day).normalize().tz_localize(None) - _EPOCH) // pd.Timedelta(days=1))


@functools.lru_cache(maxsize=4096)
def _day_number_of(text: str) -> int:  # a calibration's days, read on every forecast
    return day_number(pd.Timestamp(text))


@dataclass(frozen=True)
class RecentErrors:
    """Labelled rows of days a model never saw, as that model predicted them (see "Adaptation").

    ``day``: the Paris day number of each row (days since 1970-01-01), ``hour`` its Paris hour
    (0-23); ``variant`` and ``counter`` as in ``ConformalRegressor.bounds``.
    """

    prediction: np.ndarray
    count: np.ndarray
    variant: np.ndarray
    counter: np.ndarray
    day: np.ndarray
    hour: np.ndarray

    @classmethod
    def empty(cls) -> RecentErrors:
        nothing = np.zeros(0, np.int64)
        return cls(np.zeros(0), np.zeros(0), nothing, nothing, nothing, nothing)

    @classmethod
    def of(cls, prediction: Any, count: Any, variant: Any, counter: Any, day: Any, hour: Any) -> RecentErrors:
        """The rows with a count, as arrays."""
        count = np.asarray(count, float)
        known = np.isfinite(count)
        return cls(np.asarray(prediction, float)[known], count[known], np.asarray(variant, np.int64)[known],
                   np.asarray(counter, np.int64)[known], np.asarray(day, np.int64)[known],
                   np.asarray(hour, np.int64)[known])

    def plus_other_days(self, other: RecentErrors) -> RecentErrors:
        """These rows and ``other``'s of the days these lack."""
        other = other.where(~np.isin(other.day, self.day))
        return RecentErrors(*(np.concatenate([getattr(self, name), getattr(other, name)]) for name in _FIELDS))

    def where(self, keep: np.ndarray) -> RecentErrors:
        return RecentErrors(*(getattr(self, name)[keep] for name in _FIELDS))

    def between(self, first: int, last: int) -> RecentErrors:
        """The rows of days ``first`` .. ``last`` (inclusive)."""
        return self.where((self.day >= first) & (self.day <= last))

    def __len__(self) -> int:
        return len(self.day)


@dataclass
class AdaptationCache:
    """One loaded model's recent errors per key (store and forecasts versions, window), with each day's
    adapted calibration and bias (``day_by_day``'s ``cache``); the newest ``keep`` keys are kept."""

    keep: int = 4
    windows: dict[tuple, tuple[RecentErrors, dict[int, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    warmed: tuple[int, int] | None = None  # (store, forecasts) versions whose window of tomorrow is computed

    def window(self, key: tuple, compute: Callable[[], RecentErrors]) -> tuple[RecentErrors, dict[int, Any]]:
        """The recent errors of ``key`` (computed once, other callers wait) and its cache of days."""
        with self.lock:
            found = self.windows.get(key)
            if found is None:
                found = (compute(), {})
                self.windows = {**dict(list(self.windows.items())[-(self.keep - 1):]), key: found}
        return found


@dataclass(frozen=True)
class OnlineRule:
    """How a forecast of day D follows the errors of the days before it (0 days: not at all).

    ``interval_days``: its bounds adapt on the errors of days D-k..D-1 (``VELOCAST_INTERVAL_ADAPT_DAYS``);
    ``bias_days``: its prediction is corrected by its counter's recent level bias
    (``VELOCAST_BIAS_CORRECTION_DAYS``; day-ahead models only: a calendar forecast reads no count).
    """

    interval_days: int = 0
    bias_days: int = 0

    @property
    def window(self) -> int:
        """The most days before D read: the interval's days, and the bias days before the first of them
        (its forecast, as served, was corrected by them)."""
        if self.interval_days > 0 and self.bias_days > 0:
            return self.interval_days + self.bias_days
        return max(self.interval_days, self.bias_days)

    def without_bias(self) -> OnlineRule:
        return OnlineRule(self.interval_days, 0)


STATIC = OnlineRule()
BIAS_PRIOR_DAYS = 2.0  # recent days that weigh as much as "no bias" in a counter's correction
# Paris hours where a block of the day begins (00-06, 06-10, 10-16, 16-20, 20-24): a counter's level
# bias is learned per block. Measured as served on three months (lgbm day-ahead, each month trained on
# everything before it, bias over 3 days; `python bench/months.py --horizons day-ahead`), RMSE with one
# bias per counter -> one per counter and block: 2021-05-10..06-09 30.19 -> 29.57, 06-10..07-09
# 30.04 -> 29.53, 07-10..08-09 27.67 -> 27.45.
HOUR_BLOCKS = (6, 10, 16, 20)


def hour_block(hour: np.ndarray) -> np.ndarray:
    """The block of the day (``HOUR_BLOCKS``) of each Paris hour."""
    return np.searchsorted(np.asarray(HOUR_BLOCKS), np.asarray(hour, np.int64), side="right")


@dataclass(frozen=True)
class LevelBias:
    """Per counter, weather variant and block of hours (``HOUR_BLOCKS``): the shrunk median of
    ``log1p(count) - log1p(prediction)`` over recent days, ``d / (d + BIAS_PRIOR_DAYS)`` of it for
    errors spanning ``d`` days. With fewer than ``MIN_ADAPT_ROWS`` errors in a block (a single day of
    errors, say), the counter's errors of that variant in every block are used; with fewer of a
    variant, its errors of every variant; without any, it is not corrected.

    ``by_block``, ``by_pair`` and ``by_counter`` map ``(variant, counter, block)``, ``(variant,
    counter)`` and ``counter`` to the shift (log1p scale).
    """

    by_block: dict[tuple[int, int, int], float]
    by_pair: dict[tuple[int, int], float]
    by_counter: dict[int, float]

    @classmethod
    def of(cls, recent: RecentErrors) -> LevelBias:
        residual = np.log1p(np.clip(recent.count, 0, None)) - np.log1p(np.clip(recent.prediction, 0, None))
        usable = (recent.counter >= 0) & np.isfinite(residual)
        variant, counter, day, block, residual = (recent.variant[usable], recent.counter[usable], recent.day[usable],
                                                  hour_block(recent.hour[usable]), residual[usable])
        by_block = _shrunk_medians(_packed((variant, counter, block)), day, residual)
        by_pair = _shrunk_medians(_packed((variant, counter)), day, residual)
        return cls({_unpacked(k, 3): value for k, value in by_block.items()},
                   {_unpacked(k, 2): value for k, value in by_pair.items()}, _shrunk_medians(counter, day, residual))

    @functools.cached_property
    def table(self) -> np.ndarray:
        """The shift of every (variant, counter code, block), in ``shift``'s order of fallbacks:
        shape (2, 1 + the largest counter code, blocks); 0 where nothing is known."""
        codes = [k for k in self.by_counter] + [k[1] for k in self.by_pair] + [k[1] for k in self.by_block]
        out = np.zeros((2, max(codes, default=0) + 1, len(HOUR_BLOCKS) + 1))
        for table, width in ((self.by_counter, 1), (self.by_pair, 2), (self.by_block, 3)):  # each overrides the last
            if table:
                keys = np.array(list(table), np.int64).reshape(len(table), width)
                values = np.fromiter(table.values(), float, len(table))
                where = (slice(None), keys[:, 0]) if width == 1 else tuple(keys.T)
                out[where] = values[None, :, None] if width == 1 else values[:, None] if width == 2 else values
        return out

    def shift(self, variant: np.ndarray, counter: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """The log1p shift of each row: its block's, else its variant's, else its counter's, else 0."""
        return _shifts(self.table[None], np.zeros(len(variant), np.int64), variant, counter, hour)

    def apply(self, prediction: np.ndarray, variant: np.ndarray, counter: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """``prediction`` times its counter's recent level bias (in log1p space)."""
        return _shifted(prediction, self.shift(variant, counter, hour))


def _shifts(tables: np.ndarray, which: np.ndarray, variant: Any, counter: Any, hour: Any) -> np.ndarray:
    """``tables[which, variant, counter, block of hour]`` (stacked ``LevelBias.table`` arrays; ``which``:
    each row's table), 0 for a counter or variant outside the tables."""
    variant, counter = np.asarray(variant, np.int64), np.asarray(counter, np.int64)
    inside = (counter >= 0) & (counter < tables.shape[2]) & (variant >= 0) & (variant < tables.shape[1])
    looked = tables[which, np.where(inside, variant, 0), np.where(inside, counter, 0), hour_block(hour)]
    return np.where(inside, looked, 0.0)


def _stacked(tables: list[np.ndarray | None]) -> np.ndarray:
    """``LevelBias.table`` arrays (None: no bias, all 0) stacked on a first axis, padded to one shape."""
    empty = np.zeros((2, 1, len(HOUR_BLOCKS) + 1))
    tables = [t if t is not None else empty for t in tables]
    out = np.zeros((len(tables), 2, max(t.shape[1] for t in tables), len(HOUR_BLOCKS) + 1))
    for i, t in enumerate(tables):
        out[i, :, :t.shape[1]] = t
    return out


def _shifted(prediction: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return np.where(shift != 0, np.expm1(np.log1p(np.clip(prediction, 0, None)) + shift), prediction)


_KEY_BITS = 20  # bits per part of a packed key: counter codes below 1,048,576


def _packed(parts: tuple[np.ndarray, ...]) -> np.ndarray:
    """One int64 per row of small non-negative integer columns (variant, counter code, block)."""
    key = np.zeros(len(parts[0]), np.int64)
    for part in parts:
        key = (key << _KEY_BITS) + np.asarray(part, np.int64)
    return key


def _unpacked(key: int, n: int) -> tuple[int, ...]:
    """The ``n`` parts of a ``_packed`` key."""
    mask = (1 << _KEY_BITS) - 1
    return tuple(int(key >> (_KEY_BITS * (n - 1 - i))) & mask for i in range(n))


def _shrunk_medians(key: np.ndarray, day: np.ndarray, residual: np.ndarray) -> dict[int, float]:
    """Per ``key`` with at least ``MIN_ADAPT_ROWS`` rows: the median of its ``residual`` times
    ``d / (d + BIAS_PRIOR_DAYS)``, ``d`` the distinct days it spans (sorted arrays, no group-by)."""
    if not len(key):
        return {}
    order = np.lexsort((residual, key))
    key, ordered = key[order], residual[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    size = np.diff(np.r_[starts, len(key)])
    median = (ordered[starts + (size - 1) // 2] + ordered[starts + size // 2]) / 2.0
    pairs = np.unique(np.stack([key, day[order]], axis=1), axis=0)
    days = np.diff(np.r_[np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]), len(pairs)])
    value = median * days / (days + BIAS_PRIOR_DAYS)
    enough = size >= MIN_ADAPT_ROWS
    return {int(k): float(v) for k, v in zip(key[starts][enough], value[enough])}


class ConformalRegressor(BaseEstimator, RegressorMixin):
    """A point regressor plus conformal prediction intervals (see the module docstring).

    Parameters
    ----------
    estimator: the point regressor (fitted by ``fit``, or given fitted to ``around``).
    coverage: the default central coverage of ``predict_interval``.
    level_bins: count-level groups per weather variant (fewer when the calibration rows are few).
    min_group_rows: the fewest calibration rows a count-level group may hold.
    counter_prior_days: how many calibration days weigh as much as the group's own statistics in a
        counter's shrunk shift and spread.

    Learned by ``fit``: ``estimator_``. By ``calibrate``: ``edges_`` (per variant, the level-bin
    edges on ``log1p(prediction)``), ``centre_``/``spread_`` (per variant and bin),
    ``counter_shift_``/``counter_spread_`` (per variant and counter code), ``scores_`` and
    ``offsets_`` (the sorted scores of each group, concatenated), ``calibration_`` (what it was
    calibrated on).
    """

    def __init__(self, estimator: Any = None, coverage: float = DEFAULT_COVERAGE, level_bins: int = 8,
                 min_group_rows: int = 400, counter_prior_days: float = 7.0):
        self.estimator = estimator
        self.coverage = coverage
        self.level_bins = level_bins
        self.min_group_rows = min_group_rows
        self.counter_prior_days = counter_prior_days

    # ------------------------------------------------------------------ point model
    def fit(self, X: pd.DataFrame, y: np.ndarray, **fit_params: Any) -> ConformalRegressor:
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        self._forget_calibration()
        self._copy_attributes()
        return self

    @classmethod
    def around(cls, fitted: Any, **params: Any) -> ConformalRegressor:
        """Wrap an already fitted regressor (continued training, a model made before intervals existed)."""
        out = cls(fitted, **params)
        out.estimator_ = fitted
        out._copy_attributes()
        return out

    def _copy_attributes(self) -> None:
        if hasattr(self.estimator_, "feature_importances_"):
            self.feature_importances_ = self.estimator_.feature_importances_

    def _forget_calibration(self) -> None:
        for name in ("edges_", "centre_", "spread_", "counter_shift_", "counter_spread_", "scores_", "offsets_",
                     "calibration_"):
            self.__dict__.pop(name, None)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator_.predict(X), float)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "estimator_")

    @property
    def calibrated(self) -> bool:
        return hasattr(self, "scores_")

    @property
    def calibrated_through(self) -> int:
        """Paris day number of the last calibration day: the intervals already know the days up to it."""
        return day_number(self.calibration_["last_day"])

    @property
    def unseen_from(self) -> int:
        """Paris day number of the first day the point model never trained on, as far as the
        calibration tells: its first day when the served model itself was calibrated on days it
        never saw (``calibrate`` without a twin: a recalibration), else the day after its last."""
        first = self.calibration_.get("unseen_from")
        return day_number(first) if first is not None else self.calibrated_through + 1

    # ------------------------------------------------------------------ groups
    @property
    def n_variants(self) -> int:
        return 2 if isinstance(self.estimator_, WeatherFallback) else 1

    def variant_of(self, X: pd.DataFrame) -> np.ndarray:
        """0: predicted without weather (or a model that reads none), 1: with weather."""
        if self.n_variants == 1:
            return np.zeros(len(X), np.int64)
        return self.estimator_.uses_weather(X).astype(np.int64)

    @staticmethod
    def counter_of(X: pd.DataFrame) -> np.ndarray:
        """The counter code of each row (-1: unknown to the model, or no counter feature)."""
        if "counter_code" not in X:
            return np.full(len(X), -1, np.int64)
        column = X["counter_code"]
        if isinstance(column.dtype, pd.CategoricalDtype):  # LightGBM's: categories 0..n-1, unknown is NaN
            categories = np.asarray(column.cat.categories, float)
            position = column.cat.codes.to_numpy()
            codes = np.where(position >= 0, categories[np.maximum(position, 0)], np.nan)
        else:
            codes = pd.to_numeric(column, errors="coerce").to_numpy(float)
        return np.where(np.isfinite(codes), codes, -1).astype(np.int64)

    def _bins(self, variant: np.ndarray, level: np.ndarray) -> np.ndarray:
        out = np.zeros(len(level), np.int64)
        for v in range(self.n_variants):
            mine = variant == v
            out[mine] = np.searchsorted(self.edges_[v], level[mine], side="right")
        return out

    # ------------------------------------------------------------------ calibration
    def calibrate(self, X: pd.DataFrame, y: np.ndarray, days: np.ndarray) -> ConformalRegressor:
        """A copy of this fitted model whose intervals are calibrated on labelled rows ``X``, ``y``.

        ``X``: feature rows as served (both weather variants of the calibration days, for a model
        with a no-weather sibling); ``days``: the (Paris) day of each row. The point model is
        unchanged.
        """
        y = np.asarray(y, float)
        days = np.asarray(days)
        if len(y) != len(X) or len(days) != len(X):
            raise ValueError(f"{len(X)} rows, {len(y)} counts and {len(days)} days: expected as many of each")
        if not len(X):
            raise ValueError("no calibration rows")
        out = copy.copy(self)
        out._forget_calibration()
        prediction = out.predict(X)
        level = np.log1p(np.clip(prediction, 0, None))
        score = np.log1p(np.clip(y, 0, None)) - level
        variant = out.variant_of(X)
        counter = out.counter_of(X)
        day_names, day_code = np.unique(days.astype(str), return_inverse=True)
        n_variants, n_codes = out.n_variants, int(max(counter.max(initial=-1) + 1, 1))
        bins = max(1, int(self.level_bins))
        out.edges_ = np.full((n_variants, bins - 1), np.inf)
        out.centre_ = np.zeros((n_variants, bins))
        out.spread_ = np.ones((n_variants, bins))
        out.counter_shift_ = np.zeros((n_variants, n_codes))
        out.counter_spread_ = np.ones((n_variants, n_codes))
        scores: list[np.ndarray] = []
        groups: dict[str, int] = {}
        borrowed = False
        for v in range(n_variants):
            mine = np.flatnonzero(variant == v)
            if not len(mine) and v == 1:  # no weather on any calibration day (none in the store, say)
                borrowed = True
                out._borrow_variant(0, 1, scores[-bins:], scores)
                continue
            if not len(mine):
                raise ValueError(f"no calibration rows {'with' if v else 'without'} weather: calibrate on both "
                                 "weather variants of the calibration days")
            used = max(1, min(bins, len(mine) // max(int(self.min_group_rows), 1)))
            edges = np.unique(np.quantile(level[mine], np.linspace(0, 1, used + 1)[1:-1])) if used > 1 else np.array([])
            out.edges_[v, :len(edges)] = edges
            group = np.searchsorted(out.edges_[v], level[mine], side="right")
            for b in range(bins):
                inside = group == b
                if inside.any():
                    out.centre_[v, b], out.spread_[v, b] = _centre_spread(score[mine][inside])
            z = (score[mine] - out.centre_[v, group]) / out.spread_[v, group]
            shift, spread, honest_shift, honest_spread = self._counter_normalisation(z, counter[mine], day_code[mine],
                                                                                   n_codes)
            out.counter_shift_[v], out.counter_spread_[v] = shift, spread
            u = (z - honest_shift) / honest_spread
            for b in range(bins):
                inside = group == b
                scores.append(np.sort(u[inside]))
                if inside.any():
                    groups[f"{'with' if v else 'without'}_weather/level{b}"] = int(inside.sum())
        out.scores_ = np.concatenate(scores)
        out.offsets_ = np.concatenate([[0], np.cumsum([len(s) for s in scores])]).astype(np.int64)
        out.calibration_ = {"rows": len(X), "days": len(day_names),
                            "first_day": str(day_names[0]), "last_day": str(day_names[-1]),
                            "counters": len(np.unique(counter[counter >= 0])), "groups": groups}
        if borrowed:
            log.info("no calibration day had weather: rows forecast with weather get the intervals of the "
                     "rows without it (calibrated on %d days)", len(day_names))
            out.calibration_["with_weather_from"] = "without_weather"
        return out

    def _borrow_variant(self, source: int, target: int, source_scores: list[np.ndarray],
                        scores: list[np.ndarray]) -> None:
        """Give weather variant ``target`` the calibration of ``source`` (its level bins, centres,
        spreads, counter statistics and sorted scores), appended to ``scores``."""
        for name in ("edges_", "centre_", "spread_", "counter_shift_", "counter_spread_"):
            getattr(self, name)[target] = getattr(self, name)[source]
        scores.extend(list(source_scores))

    def onto(self, estimator: Any, counter_map: np.ndarray) -> ConformalRegressor:
        """This calibration carried onto another fitted point model of the same rows' features.

        ``counter_map[code]``: this model's counter code of the other model's counter ``code`` (-1
        when this calibration never saw it). Used to calibrate with a twin fitted on the days before
        the calibration days, then serve the model fitted on every training day (see the module
        docstring of ``velocast.lifecycle.training.train``).
        """
        out = copy.copy(self)
        out.estimator_ = estimator
        out._copy_attributes()
        if not self.calibrated:
            return out
        counter_map = np.asarray(counter_map, np.int64)
        seen = (counter_map >= 0) & (counter_map < self.counter_shift_.shape[1])
        safe = np.where(seen, counter_map, 0)
        out.counter_shift_ = np.where(seen[None, :], self.counter_shift_[:, safe], 0.0)
        out.counter_spread_ = np.where(seen[None, :], self.counter_spread_[:, safe], 1.0)
        if isinstance(estimator, WeatherFallback) != isinstance(self.estimator_, WeatherFallback):
            raise ValueError("the calibration and the point model differ in their weather variants")
        return out

    def _counter_normalisation(self, z: np.ndarray, counter: np.ndarray, day: np.ndarray,
                               n_codes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per counter code: shrunk shift and spread of ``z`` (all days), and per row the same without its day."""
        _, overall = _centre_spread(z)
        prior = float(self.counter_prior_days)
        shift, spread = np.zeros(n_codes), np.ones(n_codes)
        row_shift, row_spread = np.zeros(len(z)), np.ones(len(z))
        for code in np.unique(counter[counter >= 0]):
            own = np.flatnonzero(counter == code)
            own_days = day[own]
            distinct = np.unique(own_days)
            shift[code], spread[code] = self._shrunk(z[own], len(distinct), overall, prior)
            for d in distinct:
                held = own_days == d
                rest = z[own[~held]]
                if len(distinct) < 2 or len(rest) < 10:
                    continue  # no other day to learn from: the group's own normalisation
                row_shift[own[held]], row_spread[own[held]] = self._shrunk(rest, len(distinct) - 1, overall, prior)
        return shift, spread, row_shift, row_spread

    @staticmethod
    def _shrunk(values: np.ndarray, days: int, overall: float, prior: float) -> tuple[float, float]:
        centre, spread = _centre_spread(values)
        weight = days / (days + prior) if prior > 0 else 1.0
        return weight * centre, weight * spread / overall + (1.0 - weight)

    # ------------------------------------------------------------------ intervals
    def _group_scores(self, v: int, b: int) -> np.ndarray:
        index = v * self.centre_.shape[1] + b
        return self.scores_[self.offsets_[index]:self.offsets_[index + 1]]

    def predict_interval(self, X: pd.DataFrame, coverage: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, lower, upper)`` for rows ``X`` at central ``coverage`` (default: ``self.coverage``).

        Bounds are NaN when the model was never calibrated. Lower bounds are >= 0.
        """
        prediction = self.predict(X)
        if not self.calibrated:
            nan = np.full(len(X), np.nan)
            return prediction, nan, nan
        lower, upper = self.bounds(prediction, self.variant_of(X), self.counter_of(X), coverage)
        return prediction, lower, upper

    def bounds(self, prediction: np.ndarray, variant: np.ndarray, counter: np.ndarray,
               coverage: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` around point predictions, from arrays: ``variant`` 1 where the row was
        predicted with weather (0 without), ``counter`` the counter code (-1: unknown). The serving
        path (``velocast.models.compiled``) calls it with its matrices; ``predict_interval`` with frames."""
        return self._bounds(prediction, variant, counter, coverage, [self], np.zeros(len(prediction), np.int64))

    def _bounds(self, prediction: np.ndarray, variant: np.ndarray, counter: np.ndarray, coverage: float | None,
                counters_of: list[ConformalRegressor], which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``bounds``, each row normalised by the counter statistics of ``counters_of[which]`` (copies
        of this calibration ``adapted`` to different days)."""
        coverage = check_coverage(self.coverage if coverage is None else coverage)
        prediction = np.asarray(prediction, float)
        level = np.log1p(np.clip(prediction, 0, None))
        variant = np.asarray(variant, np.int64) if self.n_variants > 1 else np.zeros(len(prediction), np.int64)
        group = self._bins(variant, level)
        counter = np.asarray(counter, np.int64)
        n_codes = self.counter_shift_.shape[1]
        known = (counter >= 0) & (counter < n_codes)
        at = (which, variant, np.where(known, counter, 0))
        shifts, spreads = (np.stack([getattr(m, name) for m in counters_of]) for name in ("counter_shift_",
                                                                                          "counter_spread_"))
        shift, spread = np.where(known, shifts[at], 0.0), np.where(known, spreads[at], 1.0)
        low_table, high_table = self._quantiles(coverage)
        low_q, high_q = low_table[variant, group], high_table[variant, group]
        centre, width = self.centre_[variant, group], self.spread_[variant, group]
        lower = level + centre + width * (shift + spread * low_q)
        upper = level + centre + width * (shift + spread * high_q)
        lower = np.clip(np.expm1(lower), 0, None)
        upper = np.maximum(np.clip(np.expm1(upper), 0, None), lower)
        return lower, upper

    def _quantiles(self, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """Per (variant, level bin): the conformal lower and upper score quantiles at ``coverage``
        (a bin without calibration rows takes its nearest bin's). Kept per calibration and coverage."""
        key = (id(self.scores_), coverage)
        found = _QUANTILES.get(key)
        if found is not None and found[0] is self.scores_:
            return found[1], found[2]
        shape = self.centre_.shape
        low, high = np.zeros(shape), np.zeros(shape)
        for v in range(shape[0]):
            for b in range(shape[1]):
                scores = self._group_scores(v, b)
                if not len(scores):
                    scores = self._nearest_scores(v, b)
                low[v, b], high[v, b] = conformal_bounds(scores, coverage)
        if len(_QUANTILES) >= 64:
            _QUANTILES.clear()
        _QUANTILES[key] = (self.scores_, low, high)  # the scores held: their id is not reused meanwhile
        return low, high

    # ------------------------------------------------------------------ adaptation
    def adapted(self, recent: RecentErrors) -> ConformalRegressor:
        """A copy whose counters' shift and spread follow ``recent`` errors (module docstring, "Adaptation").

        Per weather variant and counter with at least ``MIN_ADAPT_ROWS`` recent rows: the centre and
        spread of their normalised scores, weighted ``d / (d + counter_prior_days)`` (``d``: the
        days they span) against the calibration's. Other counters keep the calibration's.
        """
        if not self.calibrated or not len(recent):
            return self
        level = np.log1p(np.clip(recent.prediction, 0, None))
        variant = recent.variant if self.n_variants > 1 else np.zeros(len(recent), np.int64)
        group = self._bins(variant, level)
        z = (np.log1p(np.clip(recent.count, 0, None)) - level - self.centre_[variant, group]) / self.spread_[variant, group]
        out = copy.copy(self)
        out.counter_shift_, out.counter_spread_ = self.counter_shift_.copy(), self.counter_spread_.copy()
        n_codes = self.counter_shift_.shape[1]
        usable = (recent.counter >= 0) & (recent.counter < n_codes)
        pairs, which = np.unique(np.stack([variant[usable], recent.counter[usable]], axis=1), axis=0,
                                 return_inverse=True)
        z, days = z[usable], recent.day[usable]
        prior = float(self.counter_prior_days)
        for index, (v, code) in enumerate(pairs):
            own = which.ravel() == index
            if own.sum() < MIN_ADAPT_ROWS:
                continue
            span = len(np.unique(days[own]))
            weight = span / (span + prior) if prior > 0 else 1.0
            centre, spread = _centre_spread(z[own])
            out.counter_shift_[v, code] = weight * centre + (1 - weight) * self.counter_shift_[v, code]
            out.counter_spread_[v, code] = weight * spread + (1 - weight) * self.counter_spread_[v, code]
        return out

    def day_by_day(self, prediction: np.ndarray, variant: np.ndarray, counter: np.ndarray, day: np.ndarray,
                   hour: np.ndarray, recent: RecentErrors, rule: OnlineRule, coverage: float | None = None,
                   cache: dict[int, tuple[ConformalRegressor, LevelBias | None]] | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, lower, upper)`` where each Paris day D (``day``: day numbers) follows the
        ``recent`` errors of the days before it (module docstring, "Following the recent errors"):
        bounds ``adapted`` on days D-``rule.interval_days`` .. D-1, and the prediction corrected by
        the ``LevelBias`` of days D-``rule.bias_days`` .. D-1 (then kept inside its bounds).

        ``prediction``: the point model's; ``day``, ``hour``: each row's Paris day number and hour.
        ``cache``: each day's adapted copy and bias, filled and reused (the serving path keeps one per
        model and store version)."""
        prediction, variant, counter = (np.asarray(prediction, float), np.asarray(variant, np.int64),
                                        np.asarray(counter, np.int64))
        days, which = np.unique(np.asarray(day, np.int64), return_inverse=True)
        biases: dict[int, LevelBias] = {}
        entries = [self._day(int(d), recent, rule, cache, biases) for d in days]
        out = prediction.copy()
        biased = np.array([bias is not None for _, bias in entries], bool)
        if biased.any():
            stacked = _stacked([bias.table if bias is not None else None for _, bias in entries])
            rows = biased[which]
            shift = _shifts(stacked, which, variant, counter, hour)
            out[rows] = _shifted(prediction[rows], shift[rows])
        lower, upper = np.full(len(prediction), np.nan), np.full(len(prediction), np.nan)
        if self.calibrated:  # around the forecast served
            lower, upper = self._bounds(out, variant, counter, coverage, [model for model, _ in entries], which)
            out = np.clip(out, lower, upper)
        return out, lower, upper

    def _day(self, d: int, recent: RecentErrors, rule: OnlineRule,
             cache: dict[int, tuple[ConformalRegressor, LevelBias | None]] | None,
             biases: dict[int, LevelBias] | None = None) -> tuple[ConformalRegressor, LevelBias | None]:
        """Day ``d``'s calibration ``adapted`` to the errors of the forecasts served before it, and
        its level bias (cached in ``cache``; ``biases``: each day's bias, shared by the days of a call)."""
        entry = cache.get(d) if cache is not None else None
        if entry is None:
            biases = {} if biases is None else biases
            model, bias = self, None
            if rule.bias_days > 0:
                bias = self._bias(d, recent, rule, biases)
            if rule.interval_days > 0 and self.calibrated:  # days the calibration does not hold yet
                model = self.adapted(self._served(recent.between(
                    max(d - rule.interval_days, self.calibrated_through + 1), d - 1), recent, rule, biases))
            entry = (model, bias)
            if cache is not None:
                cache[d] = entry
        return entry

    def _bias(self, d: int, recent: RecentErrors, rule: OnlineRule, biases: dict[int, LevelBias]) -> LevelBias:
        """Day ``d``'s ``LevelBias``: the errors of days D-``rule.bias_days``..D-1 the point model never saw."""
        found = biases.get(d)
        if found is None:
            since = self.unseen_from if self.calibrated else d - rule.bias_days
            found = biases[d] = LevelBias.of(recent.between(max(d - rule.bias_days, since), d - 1))
        return found

    def _served(self, errors: RecentErrors, recent: RecentErrors, rule: OnlineRule,
                biases: dict[int, LevelBias]) -> RecentErrors:
        """``errors`` with each day's prediction as it was served: corrected by its own level bias."""
        if rule.bias_days <= 0 or not len(errors):
            return errors
        prediction = errors.prediction.copy()
        for day in np.unique(errors.day):
            own = errors.day == day
            prediction[own] = self._bias(int(day), recent, rule, biases).apply(
                errors.prediction[own], errors.variant[own], errors.counter[own], errors.hour[own])
        return RecentErrors(prediction, errors.count, errors.variant, errors.counter, errors.day, errors.hour)

    def _nearest_scores(self, v: int, b: int) -> np.ndarray:
        bins = self.centre_.shape[1]
        for distance in range(1, bins):
            for other in (b - distance, b + distance):
                if 0 <= other < bins and len(self._group_scores(v, other)):
                    return self._group_scores(v, other)
        return self.scores_


def with_intervals(model: Any) -> ConformalRegressor:
    """``model`` as a ``ConformalRegressor`` (wrapped if it is a bare fitted regressor)."""
    return model if isinstance(model, ConformalRegressor) else ConformalRegressor.around(model)


__all__ = ["BIAS_PRIOR_DAYS", "HOUR_BLOCKS", "MIN_ADAPT_ROWS", "STATIC", "AdaptationCache", "ConformalRegressor", "LevelBias", "OnlineRule",
           "RecentErrors", "conformal_bounds", "hour_block", "with_intervals"]
