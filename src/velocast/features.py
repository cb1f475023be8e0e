"""Features for every model: one scikit-learn transformer plus the day-ahead history step.

``FeatureBuilder`` turns canonical rows (optionally carrying weather and history columns) into a
numeric frame. It learns, at fit time, each counter's location and traffic level (overall and per
hour of the week, on the log1p scale); a counter it never saw gets the levels of its nearest known
counters by distance, so unknown counters still get a sensible prediction.

Two horizons:
- ``calendar``: only what is known any time ahead (Paris-time calendar, holidays, events,
  weather when given, counter identity and location);
- ``day-ahead``: adds history features that ``add_history`` computes from counts strictly before
  the day being predicted.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from velocast.choices import HORIZONS
from velocast.config import PARIS_TZ
from velocast.data.calendar import CALENDAR_COLUMNS, calendar_features, hour_fields
from velocast.data.quality import DEFAULT_MIN_ZERO_HOURS, zero_runs
from velocast.data.schema import to_paris
from velocast.data.weather import WEATHER_COLUMNS

log = logging.getLogger(__name__)

FEATURE_SETS = ("full", "original")
HISTORY_LAGS = (1, 2, 7, 14)
HISTORY_WINDOW_DAYS = 28  # the longest look-back of any history feature (lag 28 days)
HISTORY_COLUMNS = [*(f"lag_{k}d" for k in HISTORY_LAGS), "mean_7d_same_hour", "yesterday_total",
                   "median_7d_same_hour", "max_7d_same_hour", "median_4w_same_how", "median_daily_7d"]
# what a fitted pipeline reads: identity and location (the rest of a canonical row is ignored), the
# weather of the hour and, for day-ahead models, the history columns ``add_history`` computes
IDENTITY_COLUMNS = ["counter_id", "timestamp", "counter_name", "site_id", "site_name", "latitude", "longitude"]
MODEL_INPUT_COLUMNS = [*IDENTITY_COLUMNS, *WEATHER_COLUMNS, *HISTORY_COLUMNS]
TIME_COLUMNS = ["hour", "weekday", "month", "day_of_year", "is_weekend", "hour_of_week"]
# a calendar model has no day of year: with a year or two of history it can only memorise that
# year's trajectory (the 2020-21 lockdowns, a flood), and days it never saw fall to whatever split
# is nearest; without it the calendar lgbm scored lower RMSE as served on each of three months
# (README, "Accuracy"). A day-ahead model keeps it: there its recent level bias builds on it (all
# three months were worse as served without it). Builders fitted before keep their own columns.
# ``FeatureBuilder(day_of_year=...)`` overrides the choice.
CALENDAR_ONLY_DROPS = ("day_of_year",)
LEVEL_COLUMNS = ["counter_level", "counter_how_level"]
_EPOCH = np.datetime64("1970-01-01")
HOUR_NS = 3_600_000_000_000
_HOURS_OF_WEEK = 168
LEVEL_FOLDS = 5  # out-of-fold levels of training rows: folds of whole Paris weeks


def local_time(timestamps: pd.Series, counter_ids: pd.Series | None = None) -> pd.Series:
    """Naive Europe/Paris wall-clock time."""
    return to_paris(timestamps, naive="paris", counter_ids=counter_ids).dt.tz_localize(None)


def paris_day_hour(timestamps: pd.Series, counter_ids: pd.Series | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paris day number (days since 1970-01-01) and Paris hour of each timestamp."""
    local = local_time(timestamps, counter_ids)
    days = ((local.dt.normalize().to_numpy() - _EPOCH) // np.timedelta64(1, "D")).astype(np.int64)
    return days, local.dt.hour.to_numpy().astype(np.int64)


def midnight_utc_hours(days: np.ndarray) -> np.ndarray:
    """UTC hour number of 00:00 Europe/Paris of each Paris day number (calendar days, DST-safe)."""
    days = np.asarray(days, np.int64)
    if len(days) and _MIDNIGHT_DAYS[0] <= days.min() and days.max() < _MIDNIGHT_DAYS[1]:
        return _midnight_table()[days - _MIDNIGHT_DAYS[0]]
    return _midnight_utc_hours(days)


_MIDNIGHT_DAYS = (10_957, 47_482)  # 2000-01-01 .. 2099: a table of every day, computed once by the function below


def _midnight_utc_hours(days: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(days, return_inverse=True)
    midnights = pd.DatetimeIndex(_EPOCH + unique.astype("timedelta64[D]")).tz_localize(PARIS_TZ)
    hours = midnights.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[h]").astype(np.int64)
    return hours[inverse]


@functools.lru_cache(maxsize=1)
def _midnight_table() -> np.ndarray:
    table = _midnight_utc_hours(np.arange(*_MIDNIGHT_DAYS, dtype=np.int64))
    table.flags.writeable = False
    return table


class HourlyHistory:
    """Counts on a dense counter x Paris day x Paris hour grid, with their zero runs.

    ``value`` holds the mean count of each cell (the autumn fold hour averages its two hours), NaN
    where nothing is known; ``run_start``/``run_end`` the UTC hours of the zero run a cell of zeros
    belongs to (-1 otherwise). Built from counts given as arrays (``code`` in ``range(n_counters)``,
    Paris day number, Paris hour, count, and the zero run of each count, see ``zero_runs``).
    """

    def __init__(self, code: np.ndarray, day: np.ndarray, hour: np.ndarray, counts: np.ndarray,
                 runs_start: np.ndarray, runs_end: np.ndarray, n_counters: int, min_zero_hours: int):
        self.min_zero_hours = min_zero_hours
        self.first_day = int(day.min()) if len(day) else 0
        n_days = int(day.max()) - self.first_day + 1 if len(day) else 1
        shape = (n_counters, n_days, 24)
        size = int(np.prod(shape))
        flat = (code * n_days + (day - self.first_day)) * 24 + hour
        total = np.bincount(flat, weights=counts, minlength=size)
        seen = np.bincount(flat, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.value = np.where(seen > 0, total / np.maximum(seen, 1), np.nan).reshape(shape)
        start = np.full(size, np.iinfo(np.int64).max, np.int64)
        end = np.full(size, -1, np.int64)
        zero = runs_start >= 0
        np.minimum.at(start, flat[zero], runs_start[zero])
        np.maximum.at(end, flat[zero], runs_end[zero])
        # a cell is a zero-run cell only if every count in it is a zero of a run
        zero_cells = (np.bincount(flat[zero], minlength=size) == seen) & (seen > 0)
        self.run_start = np.where(zero_cells, start, -1).reshape(shape)
        self.run_end = np.where(zero_cells, end, -1).reshape(shape)

    @classmethod
    def from_frame(cls, history: pd.DataFrame, ids: pd.Index, min_zero_hours: int) -> HourlyHistory:
        """The grid of ``history`` (``counter_id``, ``timestamp``, ``bike_count``), counters coded by ``ids``."""
        counts = history["bike_count"].to_numpy(float)
        day, hour = paris_day_hour(history["timestamp"], history["counter_id"])
        runs = zero_runs(history["counter_id"], history["timestamp"], counts)
        return cls(ids.get_indexer(history["counter_id"].astype(str)), day, hour, counts, runs.start, runs.end,
                   len(ids), min_zero_hours)

    def lookup(self, code: np.ndarray, day: np.ndarray, hour: np.ndarray,
               window: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Counts at (counter, Paris day, hour), broadcast together; NaN when unknown or in a sensor outage.

        A zero is an outage when its run, seen only within ``window`` (UTC hours [start, end) of the
        forecast's history window, broadcast like the others: the run is cut at the forecast's
        cut-off, so what came later is never read), lasts at least ``min_zero_hours``.
        """
        code, day, hour = np.broadcast_arrays(code, day, hour)
        offset = day - self.first_day
        n_days = self.value.shape[1]
        inside = (code >= 0) & (offset >= 0) & (offset < n_days)
        flat = ((np.where(inside, code, 0) * n_days + np.where(inside, offset, 0)) * 24 + hour).ravel()
        values = np.where(inside.ravel(), self.value.ravel()[flat], np.nan)
        zero_run = np.flatnonzero(self.run_start.ravel()[flat] >= 0)  # the few cells that may be an outage
        if len(zero_run):
            w0, w1 = (np.broadcast_to(w, code.shape).ravel()[zero_run] for w in window)
            start = self.run_start.ravel()[flat[zero_run]]
            end = self.run_end.ravel()[flat[zero_run]]
            seen_hours = np.minimum(end, w1 - 1) - np.maximum(start, w0) + 1
            values[zero_run[seen_hours >= self.min_zero_hours]] = np.nan
        return values.reshape(code.shape)


def add_history(rows: pd.DataFrame, history: pd.DataFrame,
                min_zero_hours: int = DEFAULT_MIN_ZERO_HOURS) -> pd.DataFrame:
    """Day-ahead features of each row from ``history`` counts strictly before the row's Paris day.

    A forecast for Paris day D is made at the end of D-1 (cut-off 00:00 of D): it reads the
    counts of the ``HISTORY_WINDOW_DAYS`` days before D and nothing of D or later. Features: the
    same Paris-time hour 1, 2, 7 and 14 days before; the mean, median and maximum of that hour
    over the last 7 days; the median of the same hour of the week over the last 4 weeks;
    yesterday's total and the median daily total of the last 7 days (mean hourly count x 24,
    robust to missing hours). Zeros of a sensor outage (a run of ``min_zero_hours`` zero hours
    within the window, see ``velocast.data.quality``) are unknown, not 0. Rows without history
    get NaN. The features are a function of the window alone: whatever else ``history`` holds
    (later days, older ones) changes nothing.
    """
    out = rows.copy()
    hist = history[history["bike_count"].notna()] if "bike_count" in history else history.iloc[:0]
    if hist.empty or rows.empty:
        for column in HISTORY_COLUMNS:
            out[column] = np.nan
        return out
    ids = pd.Index(pd.unique(pd.concat([hist["counter_id"], rows["counter_id"]], ignore_index=True).astype(str)))
    grid = HourlyHistory.from_frame(hist, ids, min_zero_hours)
    r_day, r_hour = paris_day_hour(rows["timestamp"], rows["counter_id"])
    columns = history_features(grid, ids.get_indexer(rows["counter_id"].astype(str)), r_day, r_hour)
    for column in HISTORY_COLUMNS:
        out[column] = columns[column]
    return out


def history_features(grid: HourlyHistory, r_code: np.ndarray, r_day: np.ndarray,
                     r_hour: np.ndarray) -> dict[str, np.ndarray]:
    """The ``HISTORY_COLUMNS`` of rows (counter code in ``grid``, Paris day number, Paris hour).

    The one computation of the day-ahead history: ``add_history`` feeds it a grid of the history
    it is given, the serving path (``velocast.lifecycle.serving.served_history``) its in-memory grid of
    the store. Unknown counters (code -1) get NaN.
    """
    if len(r_code) == 0:
        return {column: np.zeros(0) for column in HISTORY_COLUMNS}
    # one forecast per (counter, day): its window, its lags at every hour, its daily totals
    first = int(r_day.min())
    pair_key = (r_code + 1) * (1 << 24) + (r_day - first)
    pair_keys, pair_of = np.unique(pair_key, return_inverse=True)
    p_code, p_day = pair_keys // (1 << 24) - 1, pair_keys % (1 << 24) + first
    window = (midnight_utc_hours(p_day - HISTORY_WINDOW_DAYS)[:, None, None],
              midnight_utc_hours(p_day)[:, None, None])
    back = np.arange(1, HISTORY_WINDOW_DAYS + 1)
    # counts[pair, k-1, hour] = the count k days before the pair's day at that hour
    counts = grid.lookup(p_code[:, None, None], p_day[:, None, None] - back[None, :, None],
                         np.arange(24)[None, None, :], window)
    lags = counts[pair_of, :, r_hour]  # rows x days back
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        daily = np.nanmean(counts[:, :7, :], axis=2) * 24.0  # pairs x 7 (mean hourly count x 24)
        for k in HISTORY_LAGS:
            out[f"lag_{k}d"] = lags[:, k - 1]
        week = lags[:, :7]
        out["mean_7d_same_hour"] = np.nanmean(week, axis=1)
        out["yesterday_total"] = daily[pair_of, 0]
        out["median_7d_same_hour"] = _nanmedian(week)
        out["max_7d_same_hour"] = np.nanmax(week, axis=1)
        out["median_4w_same_how"] = _nanmedian(lags[:, [6, 13, 20, 27]])
        out["median_daily_7d"] = _nanmedian(daily)[pair_of]
    return out


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row); faster than numpy's for short rows."""
    ordered = np.sort(values, axis=1)  # NaN sort last
    valid = np.sum(~np.isnan(values), axis=1)
    low = np.take_along_axis(ordered, np.maximum((valid - 1) // 2, 0)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, np.maximum(valid // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(valid > 0, (low + high) / 2.0, np.nan)


NO_HISTORY_WARNING = (
    "a day-ahead model was given {n} row(s) without any of its history columns ({columns}): they are "
    "predicted as if no count before their day were known, which is far off for a known counter. Build the "
    "inputs as velocast serves them: from velocast.lifecycle.inputs import enrich, model_inputs; "
    "model.predict(model_inputs(enrich(rows, weather='served'))) (counts from the store), or call POST /predict "
    "or `velocast predict`.")


def _warn_no_history(n: int) -> None:
    """Say loudly that a day-ahead model is used without its history (plain MLflow pyfunc use)."""
    import warnings

    message = NO_HISTORY_WARNING.format(n=n, columns=", ".join(HISTORY_COLUMNS))
    log.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


class _quiet_nanmean:
    """Silence numpy's 'mean of empty slice' warnings (all-NaN columns are expected)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def numeric_column(X: pd.DataFrame, column: str) -> np.ndarray:
    """``X[column]`` as floats (unparseable values NaN); all NaN when the column is absent."""
    if column not in X:
        return np.full(len(X), np.nan)
    values = X[column]
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(float, na_value=np.nan)


@dataclass(frozen=True)
class _Levels:
    """Mean log1p count per counter, overall, per hour of the week, and per counter x hour of the week."""

    counter: np.ndarray
    overall: float
    overall_how: np.ndarray
    counter_how: np.ndarray

    @classmethod
    def learn(cls, codes: np.ndarray, y: np.ndarray, how: np.ndarray, n: int) -> _Levels:
        overall = float(y.mean()) if len(y) else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            counter = np.bincount(codes, weights=y, minlength=n) / np.bincount(codes, minlength=n)
            overall_how = np.bincount(how, weights=y, minlength=_HOURS_OF_WEEK) / np.bincount(how, minlength=_HOURS_OF_WEEK)
            cell = codes * _HOURS_OF_WEEK + how
            size = n * _HOURS_OF_WEEK
            table = (np.bincount(cell, weights=y, minlength=size) / np.bincount(cell, minlength=size)).reshape(n, _HOURS_OF_WEEK)
        overall_how = np.where(np.isnan(overall_how), overall, overall_how)
        # Cells never seen: the counter's level plus the city-wide hour-of-week shape.
        fallback = counter[:, None] + (overall_how - overall)[None, :]
        return cls(counter, overall, overall_how, np.where(np.isnan(table), fallback, table))

    def at(self, codes: np.ndarray, how: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Levels of known counters (codes >= 0); a counter without rows here gets the overall ones."""
        level = self.counter[codes]
        how_level = self.counter_how[codes, how]
        missing = np.isnan(level)
        level = np.where(missing, self.overall, level)
        how_level = np.where(np.isnan(how_level), self.overall_how[how], how_level)
        return level, how_level


class FeatureBuilder(BaseEstimator, TransformerMixin):
    """Canonical rows -> numeric model inputs (see the module docstring).

    Parameters
    ----------
    horizon: ``calendar`` or ``day-ahead`` (adds the history columns).
    feature_set: ``full`` (velocast's features) or ``original`` (the original system's recipe:
        counter one-hot plus Paris-time calendar fields and coordinates).
    counter_as_category: give ``counter_code`` a pandas category dtype (LightGBM uses it natively).
    n_neighbors: known counters averaged to describe an unknown one.
    day_of_year: give the model the Paris day of the year; None: only day-ahead models (see
        ``CALENDAR_ONLY_DROPS``; ``bench/months.py`` compares both).
    """

    # a builder saved before this parameter existed has no such attribute once loaded: the class
    # default keeps its get_params (repr, clone) working
    day_of_year: bool | None = None

    def __init__(self, horizon: str = "calendar", feature_set: str = "full",
                 counter_as_category: bool = False, n_neighbors: int = 3, day_of_year: bool | None = None):
        self.horizon = horizon
        self.feature_set = feature_set
        self.counter_as_category = counter_as_category
        self.n_neighbors = n_neighbors
        self.day_of_year = day_of_year

    # ------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, y: pd.Series | np.ndarray | None = None) -> FeatureBuilder:
        if self.horizon not in HORIZONS:
            raise ValueError(f"horizon must be one of {HORIZONS}, got {self.horizon!r}")
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {self.feature_set!r}")
        target = np.asarray(y if y is not None else X["bike_count"], dtype=float)
        ids = X["counter_id"].astype(str).to_numpy()
        self.counter_ids_ = sorted(pd.unique(ids).tolist())
        codes = pd.Categorical(ids, categories=self.counter_ids_).codes.astype(np.int64)
        n = len(self.counter_ids_)
        frame = pd.DataFrame({"code": codes, "lat": X["latitude"].to_numpy(float), "lon": X["longitude"].to_numpy(float)})
        by_counter = frame.groupby("code")
        self.counter_lat_ = by_counter["lat"].median().reindex(range(n)).to_numpy(float)
        self.counter_lon_ = by_counter["lon"].median().reindex(range(n)).to_numpy(float)
        levels = _Levels.learn(codes, np.log1p(np.clip(target, 0, None)), self._hour_of_week(X), n)
        self.counter_level_, self.global_level_ = levels.counter, levels.overall
        self.global_how_level_, self.counter_how_level_ = levels.overall_how, levels.counter_how
        self.feature_names_out_ = self._columns()
        return self

    def fit_transform(self, X: pd.DataFrame, y: pd.Series | np.ndarray | None = None, **fit_params: Any) -> pd.DataFrame:
        """``fit`` then ``transform``, with the learned levels of each training row out of fold.

        The counter and counter x hour-of-week levels of a training row come from the other
        weeks only (``LEVEL_FOLDS`` folds of whole Paris weeks), never from its own count: a
        training row sees its level the way a test row does.
        """
        out = self.fit(X, y).transform(X)
        if self.feature_set != "full" or len(X) == 0:
            return out
        return self.with_out_of_fold_levels(out, X, self.fold_levels(X, y))

    def _folds(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Counter code, hour of week and level fold (Paris weeks, Monday first) of each row."""
        day, _ = paris_day_hour(X["timestamp"], X["counter_id"])
        return self.counter_codes(X["counter_id"]), self._hour_of_week(X), ((day + 3) // 7) % LEVEL_FOLDS

    def fold_levels(self, X: pd.DataFrame, y: pd.Series | np.ndarray | None = None) -> list[_Levels | None]:
        """For each fold, the levels learned on the training rows of the other folds (None: nothing to hold out).

        Small (counters x hours of the week): what a distributed fit sends to the workers, each of
        which then applies :meth:`with_out_of_fold_levels` to its own rows.
        """
        target = np.log1p(np.clip(np.asarray(y if y is not None else X["bike_count"], dtype=float), 0, None))
        codes, how, fold = self._folds(X)
        out: list[_Levels | None] = []
        for k in range(LEVEL_FOLDS):
            held = fold == k
            out.append(None if not held.any() or held.all() else
                       _Levels.learn(codes[~held], target[~held], how[~held], len(self.counter_ids_)))
        return out

    def with_out_of_fold_levels(self, out: pd.DataFrame, X: pd.DataFrame,
                                folds: list[_Levels | None]) -> pd.DataFrame:
        """``out`` (features of training rows ``X``) with each row's levels from the other folds."""
        codes, how, fold = self._folds(X)
        level = out["counter_level"].to_numpy(np.float64).copy()
        how_level = out["counter_how_level"].to_numpy(np.float64).copy()
        for k, others in enumerate(folds):
            held = fold == k
            if others is None or not held.any():
                continue
            level[held], how_level[held] = others.at(codes[held], how[held])
        out["counter_level"] = level.astype(np.float32)
        out["counter_how_level"] = how_level.astype(np.float32)
        return out

    def _columns(self) -> list[str]:
        if self.feature_set == "original":
            return [*(f"counter={c}" for c in self.counter_ids_),
                    "hour", "weekday", "day", "month", "year", "latitude", "longitude"]
        with_day = self.horizon != "calendar" if self.day_of_year is None else self.day_of_year
        time = [c for c in TIME_COLUMNS if with_day or c not in CALENDAR_ONLY_DROPS]
        cols = ["counter_code", "latitude", "longitude", *time, *CALENDAR_COLUMNS, *WEATHER_COLUMNS, *LEVEL_COLUMNS]
        if self.horizon == "day-ahead":
            cols += HISTORY_COLUMNS
        return cols

    @staticmethod
    def _hour_of_week(X: pd.DataFrame) -> np.ndarray:
        local = local_time(X["timestamp"], X["counter_id"])
        return (local.dt.weekday * 24 + local.dt.hour).to_numpy(np.int64)

    # ------------------------------------------------------------------ transform
    def counter_codes(self, counter_ids: pd.Series) -> np.ndarray:
        """Code of each counter in the fitted vocabulary; -1 for a counter never seen."""
        return pd.Categorical(counter_ids.astype(str), categories=self.counter_ids_).codes.astype(np.int64)

    def unknown_counters(self, X: pd.DataFrame) -> list[str]:
        codes = self.counter_codes(X["counter_id"])
        return sorted(pd.unique(X["counter_id"].astype(str).to_numpy()[codes < 0]).tolist())

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("counter_id", "timestamp") if c not in X]
        if missing:
            raise ValueError(f"input is missing required columns {missing}")
        timestamps = to_paris(X["timestamp"], naive="paris", counter_ids=X["counter_id"])
        local = timestamps.dt.tz_localize(None)
        if self.feature_set == "original":
            return self._original(X, local)
        codes = self.counter_codes(X["counter_id"])
        time = {"hour": local.dt.hour.to_numpy(), "weekday": local.dt.weekday.to_numpy(),
                "month": local.dt.month.to_numpy(), "day_of_year": local.dt.dayofyear.to_numpy()}
        calendar = calendar_features(timestamps)
        time.update({name: calendar[name].to_numpy() for name in calendar.columns})
        given = WEATHER_COLUMNS + (HISTORY_COLUMNS if self.horizon == "day-ahead" else [])
        if self.horizon == "day-ahead" and len(X) and not any(name in X for name in HISTORY_COLUMNS):
            _warn_no_history(len(X))
        columns = self._feature_columns(codes, numeric_column(X, "latitude"), numeric_column(X, "longitude"), time,
                                        {name: numeric_column(X, name) for name in given})
        # columns gathered as arrays and framed once: a column-by-column frame costs ~10 ms per request
        out = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float32) for name in self.feature_names_out_},
                           index=X.index)
        if self.counter_as_category:
            out["counter_code"] = pd.Categorical(codes, categories=range(len(self.counter_ids_)))
        return out

    def _feature_columns(self, codes: np.ndarray, lat: np.ndarray, lon: np.ndarray, time: dict[str, np.ndarray],
                         given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every ``full`` feature column from arrays: the one definition ``transform`` and ``FeaturePlan`` share.

        ``time``: the Paris-time ``hour``, ``weekday``, ``month``, ``day_of_year`` and the
        ``CALENDAR_COLUMNS``; ``given``: the weather (and history) columns as floats.
        """
        known = codes >= 0
        lat = np.where(known & np.isnan(lat), self.counter_lat_[np.maximum(codes, 0)], lat)
        lon = np.where(known & np.isnan(lon), self.counter_lon_[np.maximum(codes, 0)], lon)
        hour, weekday = time["hour"], time["weekday"]
        how = (weekday * 24 + hour).astype(np.int64)
        level, how_level = self._levels(codes, lat, lon, how)
        columns: dict[str, Any] = {
            "counter_code": codes, "latitude": lat, "longitude": lon, "hour": hour, "weekday": weekday,
            "month": time["month"], "day_of_year": time["day_of_year"],
            "is_weekend": (weekday >= 5).astype(np.int8), "hour_of_week": how,
            "counter_level": level, "counter_how_level": how_level}
        columns.update({name: time[name] for name in CALENDAR_COLUMNS})
        columns.update(given)
        return columns

    def plan(self) -> FeaturePlan:
        """This fitted builder compiled for serving: features from arrays, without pandas (see ``FeaturePlan``)."""
        return FeaturePlan(self)

    def _levels(self, codes: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                how: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        safe = np.maximum(codes, 0)
        level = self.counter_level_[safe].copy()
        how_level = self.counter_how_level_[safe, how].copy()
        unknown = np.flatnonzero(codes < 0)
        if len(unknown):
            neighbours = self._neighbours(lat[unknown], lon[unknown])
            if neighbours is None:
                level[unknown] = self.global_level_
                how_level[unknown] = self.global_how_level_[how[unknown]]
            else:
                level[unknown] = np.nanmean(self.counter_level_[neighbours], axis=1)
                how_level[unknown] = np.nanmean(self.counter_how_level_[neighbours, how[unknown, None]], axis=1)
                no_location = np.isnan(lat[unknown]) | np.isnan(lon[unknown])
                level[unknown[no_location]] = self.global_level_
                how_level[unknown[no_location]] = self.global_how_level_[how[unknown[no_location]]]
        return level, how_level

    def _neighbours(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray | None:
        valid = ~np.isnan(self.counter_lat_)
        if not valid.any():
            return None
        k = min(self.n_neighbors, int(valid.sum()))
        ref_lat, ref_lon = self.counter_lat_[valid], self.counter_lon_[valid]
        # equirectangular distance is plenty at city scale
        dy = lat[:, None] - ref_lat[None, :]
        dx = (lon[:, None] - ref_lon[None, :]) * np.cos(np.radians(48.86))
        dist = np.hypot(dx, dy)
        dist = np.where(np.isnan(dist), np.inf, dist)
        nearest = np.argsort(dist, axis=1)[:, :k]
        return np.flatnonzero(valid)[nearest]

    def _original(self, X: pd.DataFrame, local: pd.Series) -> pd.DataFrame:
        codes = self.counter_codes(X["counter_id"])
        onehot = np.zeros((len(X), len(self.counter_ids_)), dtype=np.float32)
        rows = np.flatnonzero(codes >= 0)
        onehot[rows, codes[rows]] = 1.0
        out = pd.DataFrame(onehot, columns=[f"counter={c}" for c in self.counter_ids_], index=X.index)
        out["hour"] = local.dt.hour.to_numpy()
        out["weekday"] = local.dt.weekday.to_numpy()
        out["day"] = local.dt.day.to_numpy()
        out["month"] = local.dt.month.to_numpy()
        out["year"] = local.dt.year.to_numpy()
        out["latitude"] = pd.to_numeric(X["latitude"], errors="coerce").to_numpy() if "latitude" in X else np.nan
        out["longitude"] = pd.to_numeric(X["longitude"], errors="coerce").to_numpy() if "longitude" in X else np.nan
        return out.astype(np.float32)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.feature_names_out_, dtype=object)


class FeaturePlan:
    """A fitted ``FeatureBuilder`` (``full`` features) compiled once per loaded model for serving.

    ``matrix`` builds the same values as ``FeatureBuilder.transform`` (the same
    ``_feature_columns``), from arrays instead of a frame: counter ids, UTC hour numbers, the given
    location, weather and history. The Paris-time and calendar fields come from
    ``velocast.data.calendar.hour_fields`` (a table computed with ``calendar_features`` itself).
    ``tests/lifecycle/test_fast_path.py`` proves both paths equal, value for value.
    """

    def __init__(self, builder: FeatureBuilder):
        if builder.feature_set != "full":
            raise ValueError("only the 'full' feature set has a serving plan")
        self.builder = builder
        self.names: list[str] = list(builder.feature_names_out_)
        self.day_ahead = builder.horizon == "day-ahead"
        self._code_of = {counter: i for i, counter in enumerate(builder.counter_ids_)}
        self._given = WEATHER_COLUMNS + (HISTORY_COLUMNS if self.day_ahead else [])

    def codes(self, counter_ids: list[str] | np.ndarray) -> np.ndarray:
        """Code of each counter in the fitted vocabulary; -1 for a counter never seen."""
        get = self._code_of.get
        return np.fromiter((get(str(c), -1) for c in counter_ids), np.int64, len(counter_ids))

    def matrix(self, codes: np.ndarray, time: dict[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
               given: dict[str, np.ndarray]) -> np.ndarray:
        """Rows x ``names`` float32 features (``counter_code`` as its integer code, -1 when unknown).

        ``time``: ``velocast.data.calendar.hour_fields`` of the rows' UTC hours; ``given``: the
        weather and history columns (absent ones are NaN).
        """
        n = len(codes)
        missing = np.full(n, np.nan)
        columns = self.builder._feature_columns(codes, np.asarray(lat, float), np.asarray(lon, float), time,
                                                {name: given.get(name, missing) for name in self._given})
        out = np.empty((n, len(self.names)), np.float32, order="F")  # written column by column
        for j, name in enumerate(self.names):
            out[:, j] = columns[name]
        return out

    def matrix_of(self, X: pd.DataFrame) -> np.ndarray | None:
        """``matrix`` of rows as ``transform`` takes them (enriched rows); None unless their timestamps are aware."""
        stamps = X["timestamp"]
        if not isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.isna().any():
            return None
        if self.day_ahead and len(X) and not any(name in X for name in HISTORY_COLUMNS):
            _warn_no_history(len(X))
        time = hour_fields(stamps.array.asi8 // HOUR_NS)
        return self.matrix(self.codes(X["counter_id"].astype(str).to_numpy(object)), time,
                           numeric_column(X, "latitude"), numeric_column(X, "longitude"),
                           {name: numeric_column(X, name) for name in self._given if name in X})

    def frame(self, matrix: np.ndarray) -> pd.DataFrame:
        """``matrix`` as ``transform`` returns it (for estimators that read a frame)."""
        out = pd.DataFrame(matrix, columns=self.names)
        if self.builder.counter_as_category:
            out["counter_code"] = pd.Categorical(matrix[:, 0].astype(np.int64),
                                                 categories=range(len(self.builder.counter_ids_)))
        return out
