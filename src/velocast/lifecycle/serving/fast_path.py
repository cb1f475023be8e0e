"""The serving path without per-request pandas: rows to predictions through arrays.

``predict_rows`` (``velocast.lifecycle.serving.predict``) is the one serving function; for rows it can take
(unlabelled, timezone-aware, of a model with the ``full`` features, and for day-ahead models within
the days held in memory) it builds the model inputs here instead of through frames:

- Paris-time and calendar fields from ``velocast.data.calendar.hour_fields`` (a table made by
  ``calendar_features`` itself),
- day-ahead history and its notes from the store's counts held in memory
  (``velocast.lifecycle.serving.served_history``, refreshed when the store changes),
- the weather the row gives, else the stored forecast as of its cut-off (``inputs.weather_columns``,
  called only when forecasts are stored), else missing,
- features from ``FeatureBuilder.plan()`` and predictions from ``CompiledModel``, both compiled once
  per loaded model (``ServingModel``, in ``velocast.models.compiled``).

Everything else (labelled rows, which also get metrics; naive timestamps; old days) goes through
``build_inputs`` and the pipeline. ``tests/lifecycle/test_fast_path.py`` proves the two paths give
the same features, predictions, weather sources and notes, value for value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings
from velocast.data.calendar import hour_fields
from velocast.data.schema import CANONICAL_COLUMNS
from velocast.data.weather import WEATHER_COLUMNS
from velocast.data.weather_forecast import load_forecasts
from velocast.features import HOUR_NS, numeric_column
from velocast.lifecycle.inputs import NO_WEATHER_NOTE, incomplete_weather_notes, weather_columns
from velocast.lifecycle.serving.served_history import store_history
from velocast.models.compiled import ServingModel
from velocast.models.weather_fallback import weather_known

log = logging.getLogger(__name__)


@dataclass
class ServedRows:
    """Unlabelled rows to forecast, as the serving path reads them: arrays, no frame.

    The API makes them straight from the posted records (``velocast.api.records``); ``of`` takes
    them from a frame. ``frame`` rebuilds the canonical rows when the frames' path needs them.
    """

    counter_id: np.ndarray  # str objects
    utc_hour: np.ndarray  # int64: hours since 1970-01-01 00:00 UTC
    latitude: np.ndarray  # float, NaN where not given
    longitude: np.ndarray
    weather: dict[str, np.ndarray]  # the WEATHER_COLUMNS given (float, NaN where missing)
    other: dict[str, np.ndarray] = field(default_factory=dict)  # more canonical columns (names of the counters)

    def __len__(self) -> int:
        return len(self.utc_hour)

    @classmethod
    def of(cls, rows: pd.DataFrame) -> ServedRows | None:
        """The arrays of ``rows``, or None when they take ``build_inputs``: labelled rows (their counts
        are history too, and they get metrics), timestamps that are naive, missing or not on a whole hour."""
        if rows.empty or "counter_id" not in rows or "timestamp" not in rows:
            return None
        if "bike_count" in rows and rows["bike_count"].notna().any():
            return None
        stamps = rows["timestamp"]
        if not isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.dtype.unit != "ns" or stamps.isna().any():
            return None
        ns = stamps.array.asi8
        if (ns % HOUR_NS).any():
            return None
        return cls(rows["counter_id"].astype(str).to_numpy(object), ns // HOUR_NS, numeric_column(rows, "latitude"),
                   numeric_column(rows, "longitude"), {c: numeric_column(rows, c) for c in WEATHER_COLUMNS if c in rows})

    def timestamps(self) -> pd.Series:
        """Each row's hour in Paris time (nanoseconds, as the store's)."""
        return pd.Series(pd.DatetimeIndex(self.utc_hour * HOUR_NS, tz="UTC").tz_convert(PARIS_TZ))

    def frame(self) -> pd.DataFrame:
        """The canonical rows (unlabelled), then the weather given."""
        n = len(self)
        columns = {"counter_id": pd.Series(self.counter_id, dtype=object),
                   **{name: pd.Series(values, dtype=object) for name, values in self.other.items()},
                   "timestamp": self.timestamps(), "bike_count": np.full(n, np.nan), "latitude": self.latitude,
                   "longitude": self.longitude,
                   "installation_date": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")}
        return pd.DataFrame({**{c: columns[c] for c in CANONICAL_COLUMNS if c in columns}, **self.weather})


@dataclass
class FastInputs:
    """The model inputs of rows built from arrays, and what ``predict_rows`` reports beside predictions."""

    matrix: np.ndarray
    day: np.ndarray  # each row's Paris day number (days since 1970-01-01)
    hour: np.ndarray  # and its Paris hour (0-23)
    weather_source: np.ndarray
    notes: list[list[str]]
    unknown_counters: list[str]


def fast_inputs(rows: ServedRows | pd.DataFrame, serving: ServingModel, settings: Settings) -> FastInputs | None:
    """The inputs of ``rows`` built without frames, or None when these rows take ``build_inputs``."""
    if isinstance(rows, pd.DataFrame):
        rows = ServedRows.of(rows)
    if rows is None or not len(rows):
        return None
    counters = rows.counter_id
    time = hour_fields(rows.utc_hour)  # FeatureBuilder.transform's calendar reads the environment's settings too
    plan = serving.plan
    history: dict[str, np.ndarray] = {}
    history_notes: list[tuple[int, str]] = []
    if plan.day_ahead:
        index = store_history(settings).current()
        days = time["paris_day"].astype(np.int64)
        if not index.covers(days):
            return None
        codes = index.codes(counters)
        hours = time["hour"].astype(np.int64)
        history = index.features(codes, days, hours)
        history_notes = index.notes(counters, codes, days)
    weather, source = _served_weather(rows, settings)
    codes = plan.codes(counters)
    matrix = plan.matrix(codes, time, rows.latitude, rows.longitude, {**weather, **history})
    notes: list[list[str]] = [[] for _ in range(len(rows))]
    for position, note in history_notes:
        notes[position].append(note)
    if serving.uses_weather:
        for position, note in incomplete_weather_notes(rows.weather, len(rows)):
            notes[position].append(note)
        for position in np.flatnonzero(source == "missing"):
            notes[position].append(NO_WEATHER_NOTE)
    unknown = sorted(set(counters[codes < 0].tolist()))
    return FastInputs(matrix, time["paris_day"].astype(np.int64), time["hour"].astype(np.int64), source, notes,
                      unknown)


def _served_weather(rows: ServedRows, settings: Settings) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``weather_columns(rows, "served")``: the row's weather, else the stored forecast, else missing."""
    missing = np.full(len(rows), np.nan)
    given = {column: rows.weather.get(column, missing) for column in WEATHER_COLUMNS}
    has_given = weather_known(given, len(rows))
    if not has_given.all():
        forecasts = load_forecasts(settings)
        if forecasts is not None and not forecasts.empty:  # the stored forecast as of each cut-off
            values, source = weather_columns(pd.DataFrame({"timestamp": rows.timestamps(), **rows.weather}),
                                             "served", settings)
            return {c: values[c].to_numpy(float) for c in WEATHER_COLUMNS}, source
    return given, np.where(has_given, "given", "missing").astype(object)


__all__ = ["FastInputs", "ServedRows", "ServingModel", "fast_inputs"]
