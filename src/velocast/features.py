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

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from velocast.config import PARIS_TZ
from velocast.data.calendar import CALENDAR_COLUMNS, calendar_features
from velocast.data.ingest import parse_timestamps
from velocast.data.weather import WEATHER_COLUMNS

log = logging.getLogger(__name__)

HORIZONS = ("calendar", "day-ahead")
FEATURE_SETS = ("full", "original")
HISTORY_LAGS = (1, 2, 7, 14)
HISTORY_COLUMNS = [*(f"lag_{k}d" for k in HISTORY_LAGS), "mean_7d_same_hour", "yesterday_total"]
TIME_COLUMNS = ["hour", "weekday", "month", "day_of_year", "is_weekend", "hour_of_week"]
LEVEL_COLUMNS = ["counter_level", "counter_how_level"]
_EPOCH = np.datetime64("1970-01-01")
_HOURS_OF_WEEK = 168


def as_paris(timestamps: pd.Series) -> pd.Series:
    """Timestamps as tz-aware Europe/Paris; strings with offsets keep them, naive values are Paris time."""
    if isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        return timestamps.dt.tz_convert(PARIS_TZ)
    parsed, reason = parse_timestamps(timestamps)
    bad = reason.notna() & (reason != "timestamp not on a whole hour")
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"row {first}: timestamp={timestamps.iloc[first]!r}: {reason.iloc[first]}")
    return parsed


def local_time(timestamps: pd.Series) -> pd.Series:
    """Naive Europe/Paris wall-clock time."""
    return as_paris(timestamps).dt.tz_localize(None)


def _day_hour(timestamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    local = local_time(timestamps)
    days = ((local.dt.normalize().to_numpy() - _EPOCH) // np.timedelta64(1, "D")).astype(np.int64)
    return days, local.dt.hour.to_numpy().astype(np.int64)


def add_history(rows: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Day-ahead features of each row from ``history`` counts strictly before the row's day.

    Same Paris-time hour 1, 2, 7 and 14 days before, the mean of that hour over the last 7 days,
    and yesterday's total (mean hourly count x 24, robust to missing hours). No value of the
    row's own day or later is ever read. Rows without history get NaN.
    """
    out = rows.copy()
    hist = history[history["bike_count"].notna()]
    if hist.empty or rows.empty:
        for column in HISTORY_COLUMNS:
            out[column] = np.nan
        return out
    ids = pd.Index(pd.unique(pd.concat([hist["counter_id"], rows["counter_id"]], ignore_index=True)))
    h_code = ids.get_indexer(hist["counter_id"])
    h_day, h_hour = _day_hour(hist["timestamp"])
    r_code = ids.get_indexer(rows["counter_id"])
    r_day, r_hour = _day_hour(rows["timestamp"])

    hourly = pd.Series(hist["bike_count"].to_numpy(float)).groupby((h_code * 100_000 + h_day) * 24 + h_hour).mean()
    daily = pd.Series(hist["bike_count"].to_numpy(float)).groupby(h_code * 100_000 + h_day).mean() * 24.0

    def lookup(series: pd.Series, keys: np.ndarray) -> np.ndarray:
        pos = series.index.get_indexer(keys)
        values = series.to_numpy()[pos]
        return np.where(pos >= 0, values, np.nan)

    lags = {}
    for k in range(1, 15):
        lags[k] = lookup(hourly, (r_code * 100_000 + r_day - k) * 24 + r_hour)
    for k in HISTORY_LAGS:
        out[f"lag_{k}d"] = lags[k]
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        out["mean_7d_same_hour"] = np.nanmean(np.vstack([lags[k] for k in range(1, 8)]), axis=0)
    out["yesterday_total"] = lookup(daily, r_code * 100_000 + r_day - 1)
    return out


class _quiet_nanmean:
    """Silence numpy's 'mean of empty slice' warning (all-NaN columns are expected)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _numeric(X: pd.DataFrame, column: str) -> np.ndarray:
    """``X[column]`` as floats (unparseable values NaN); all NaN when the column is absent."""
    if column not in X:
        return np.full(len(X), np.nan)
    values = X[column]
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(float, na_value=np.nan)


class FeatureBuilder(BaseEstimator, TransformerMixin):
    """Canonical rows -> numeric model inputs (see the module docstring).

    Parameters
    ----------
    horizon: ``calendar`` or ``day-ahead`` (adds the history columns).
    feature_set: ``full`` (velocast's features) or ``original`` (the original system's recipe:
        counter one-hot plus Paris-time calendar fields and coordinates).
    counter_as_category: give ``counter_code`` a pandas category dtype (LightGBM uses it natively).
    n_neighbors: known counters averaged to describe an unknown one.
    """

    def __init__(self, horizon: str = "calendar", feature_set: str = "full",
                 counter_as_category: bool = False, n_neighbors: int = 3):
        self.horizon = horizon
        self.feature_set = feature_set
        self.counter_as_category = counter_as_category
        self.n_neighbors = n_neighbors

    # ------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, y: pd.Series | np.ndarray | None = None) -> FeatureBuilder:
        if self.horizon not in HORIZONS:
            raise ValueError(f"horizon must be one of {HORIZONS}, got {self.horizon!r}")
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {FEATURE_SETS}, got {self.feature_set!r}")
        target = np.asarray(y if y is not None else X["bike_count"], dtype=float)
        ids = X["counter_id"].astype(str).to_numpy()
        self.counter_ids_ = sorted(pd.unique(ids).tolist())
        codes = pd.Categorical(ids, categories=self.counter_ids_).codes
        frame = pd.DataFrame({"code": codes, "lat": X["latitude"].to_numpy(float),
                              "lon": X["longitude"].to_numpy(float), "y": np.log1p(np.clip(target, 0, None)),
                              "how": self._hour_of_week(X["timestamp"])})
        by_counter = frame.groupby("code")
        n = len(self.counter_ids_)
        self.counter_lat_ = by_counter["lat"].median().reindex(range(n)).to_numpy(float)
        self.counter_lon_ = by_counter["lon"].median().reindex(range(n)).to_numpy(float)
        self.counter_level_ = by_counter["y"].mean().reindex(range(n)).to_numpy(float)
        self.global_level_ = float(frame["y"].mean())
        global_how = frame.groupby("how")["y"].mean().reindex(range(_HOURS_OF_WEEK))
        self.global_how_level_ = global_how.fillna(self.global_level_).to_numpy(float)
        table = frame.pivot_table(index="code", columns="how", values="y", aggfunc="mean")
        table = table.reindex(index=range(n), columns=range(_HOURS_OF_WEEK)).to_numpy(float)
        # Cells never seen: the counter's level plus the city-wide hour-of-week shape.
        shape = self.global_how_level_ - self.global_level_
        fallback = self.counter_level_[:, None] + shape[None, :]
        self.counter_how_level_ = np.where(np.isnan(table), fallback, table)
        self.feature_names_out_ = self._columns()
        return self

    def _columns(self) -> list[str]:
        if self.feature_set == "original":
            return [*(f"counter={c}" for c in self.counter_ids_),
                    "hour", "weekday", "day", "month", "year", "latitude", "longitude"]
        cols = ["counter_code", "latitude", "longitude", *TIME_COLUMNS, *CALENDAR_COLUMNS,
                *WEATHER_COLUMNS, *LEVEL_COLUMNS]
        if self.horizon == "day-ahead":
            cols += HISTORY_COLUMNS
        return cols

    @staticmethod
    def _hour_of_week(timestamps: pd.Series) -> np.ndarray:
        local = local_time(timestamps)
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
        timestamps = as_paris(X["timestamp"])
        local = timestamps.dt.tz_localize(None)
        if self.feature_set == "original":
            return self._original(X, local)
        codes = self.counter_codes(X["counter_id"])
        lat = pd.to_numeric(X.get("latitude"), errors="coerce") if "latitude" in X else pd.Series(np.nan, index=X.index)
        lon = pd.to_numeric(X.get("longitude"), errors="coerce") if "longitude" in X else pd.Series(np.nan, index=X.index)
        known = codes >= 0
        lat = np.where(known & np.isnan(lat.to_numpy(float)), self.counter_lat_[np.maximum(codes, 0)], lat)
        lon = np.where(known & np.isnan(lon.to_numpy(float)), self.counter_lon_[np.maximum(codes, 0)], lon)
        hour, weekday = local.dt.hour.to_numpy(), local.dt.weekday.to_numpy()
        how = (weekday * 24 + hour).astype(np.int64)
        level, how_level = self._levels(codes, lat, lon, how)
        # columns gathered as arrays and framed once: a column-by-column frame costs ~10 ms per request
        columns: dict[str, Any] = {
            "counter_code": codes, "latitude": lat, "longitude": lon, "hour": hour, "weekday": weekday,
            "month": local.dt.month.to_numpy(), "day_of_year": local.dt.dayofyear.to_numpy(),
            "is_weekend": (weekday >= 5).astype(np.int8), "hour_of_week": how,
            "counter_level": level, "counter_how_level": how_level}
        calendar = calendar_features(timestamps)
        columns.update({name: calendar[name].to_numpy() for name in calendar.columns})
        given = WEATHER_COLUMNS + (HISTORY_COLUMNS if self.horizon == "day-ahead" else [])
        columns.update({name: _numeric(X, name) for name in given})
        out = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float32) for name in self.feature_names_out_},
                           index=X.index)
        if self.counter_as_category:
            out["counter_code"] = pd.Categorical(codes, categories=range(len(self.counter_ids_)))
        return out

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
