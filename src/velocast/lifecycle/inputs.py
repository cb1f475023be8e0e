"""Model inputs from canonical rows, built with what is known at forecast time.

The one rule of the domain, used by training, every evaluation and every prediction path: a
forecast for Paris day D is issued at the end of day D-1 (cut-off 00:00 Europe/Paris of D). It
may read

- the counts before D (``features.add_history``: the history window before D, sensor-outage zeros
  read as unknown) — from the store, plus labelled rows given alongside (the rows being scored,
  the training frame of ``--data``), never a count of D or later;
- the calendar (holidays, school holidays, events);
- weather *forecasts* for D issued at or before the cut-off (``velocast.data.weather_forecast``),
  or weather the caller gives with the row (an API client's or a file's own forecast);

never D's observed weather. Observed weather (SYNOP) is the truth models are trained on and
drift is monitored on.

How the weather columns of a row are filled (``weather=``):

- ``served``: the row's own weather, else the latest stored forecast issued at or before the
  cut-off, else missing (the model then predicts without weather: ``WeatherFallback``). This is
  what ``/predict``, ``velocast predict`` and the daily DAG serve.
- ``with_weather``: as ``served``, but an hour without a stored forecast takes its observed
  weather as a perfect forecast: the "with weather" score of an evaluation.
- ``none``: no weather at all: the "without weather" score.
- ``observed``: the row's own weather, else the observed weather: training rows.

Each row says where its weather came from in ``weather_source`` (``given``, ``forecast``,
``observed`` or ``missing``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data import store
from velocast.data.quality import outage_mask, utc_hours, zero_runs
from velocast.data.schema import paris_midnight
from velocast.data.weather import WEATHER_COLUMNS, attach_weather, load_weather
from velocast.data.weather_forecast import day_ahead_cutoffs as cutoff_of
from velocast.data.weather_forecast import forecast_as_of, load_forecasts
from velocast.features import HISTORY_WINDOW_DAYS, MODEL_INPUT_COLUMNS, add_history, midnight_utc_hours, paris_day_hour
from velocast.models.weather_fallback import REQUIRED_WEATHER, weather_known

log = logging.getLogger(__name__)

WEATHER_MODES = ("served", "with_weather", "none", "observed")
WEATHER_SOURCE = "weather_source"
NO_WEATHER_NOTE = "no weather forecast for this hour: predicted by the model's no-weather sibling"


def incomplete_weather_notes(given: Mapping[str, Any], n: int) -> list[tuple[int, str]]:
    """(row, note) for rows that give some weather but not all of ``REQUIRED_WEATHER``: not used."""
    known = {c: ~np.asarray(pd.isna(given[c]), bool) for c in WEATHER_COLUMNS if c in given}
    some = np.logical_or.reduce([*known.values(), np.zeros(n, bool)])
    out = []
    for position in np.flatnonzero(some & ~weather_known(given, n)):
        lacking = [c for c in REQUIRED_WEATHER if c not in known or not known[c][position]]
        out.append((int(position), f"incomplete weather given (no {' or '.join(lacking)}; "
                                   f"{' and '.join(REQUIRED_WEATHER)} are both needed): not used"))
    return out
_HISTORY_DAYS = HISTORY_WINDOW_DAYS + 1


def history_start(timestamps: pd.Series) -> pd.Timestamp:
    """The earliest hour whose count can be history for a row at one of ``timestamps``."""
    return paris_midnight(timestamps.min(), -_HISTORY_DAYS)


def history_for(rows: pd.DataFrame, settings: Settings, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts that can serve as history for ``rows``: the store's, plus ``extra`` labelled rows."""
    if rows.empty:
        return rows
    start = history_start(rows["timestamp"])
    end = paris_midnight(rows["timestamp"].max(), 1)
    ids = pd.unique(rows["counter_id"].astype(str))
    # a few counters (an API request): read only theirs; many: one scan is cheaper than a long IN list
    stored = store.recent_counts(start, end, counter_ids=list(ids) if len(ids) <= 50 else None, settings=settings)
    parts = [p for p in (extra, stored) if p is not None and not p.empty]
    if not parts:
        return stored
    combined = pd.concat([p[["counter_id", "timestamp", "bike_count"]] for p in parts], ignore_index=True)
    return combined.drop_duplicates(["counter_id", "timestamp"], keep="first")


def _stored_forecasts(timestamps: pd.Series, settings: Settings) -> pd.DataFrame | None:
    """Stored weather forecasts of each hour as known at its cut-off; None when none are stored."""
    forecasts = load_forecasts(settings)
    if forecasts is None or forecasts.empty:
        return None
    return forecast_as_of(timestamps, cutoff_of(timestamps), forecasts=forecasts)


def weather_columns(rows: pd.DataFrame, mode: str, settings: Settings,
                    observed: pd.DataFrame | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The weather of each row under ``mode`` (see the module docstring) and where it came from."""
    if mode not in WEATHER_MODES:
        raise ValueError(f"unknown weather mode {mode!r}: expected one of {', '.join(WEATHER_MODES)}")
    n = len(rows)
    values = pd.DataFrame({c: np.full(n, np.nan) for c in WEATHER_COLUMNS}, index=rows.index)
    source = np.full(n, "missing", dtype=object)
    if mode == "none" or n == 0:
        return values, source
    given = {c: pd.to_numeric(rows[c], errors="coerce").to_numpy(float) if c in rows else np.full(n, np.nan)
             for c in WEATHER_COLUMNS}
    filled = np.zeros(n, bool)
    for column in WEATHER_COLUMNS:
        values[column] = given[column]
    has_given = weather_known(given, n)  # weather given in part is not used (incomplete_weather_notes)
    source[has_given] = "given"
    filled |= has_given
    if mode in ("served", "with_weather") and not filled.all():
        forecast = _stored_forecasts(rows["timestamp"], settings)
        if forecast is not None:
            found = weather_known(forecast, n) & ~filled
            for column in WEATHER_COLUMNS:
                values.loc[found, column] = forecast[column].to_numpy(float)[found]
            source[found] = "forecast"
            filled |= found
    if mode in ("with_weather", "observed") and not filled.all():
        weather = observed if observed is not None else load_weather(settings)
        truth = attach_weather(rows[["timestamp"]], weather)
        found = truth[list(WEATHER_COLUMNS)].notna().any(axis=1).to_numpy() & ~filled
        for column in WEATHER_COLUMNS:
            values.loc[found, column] = truth[column].to_numpy(float)[found]
        source[found] = "observed"
    return values, source


@dataclass
class Inputs:
    """Rows with their day-ahead history, ready to take the weather of any mode."""

    rows: pd.DataFrame  # the given rows + history columns (weather columns of the rows dropped)
    given_weather: pd.DataFrame  # the weather columns the caller gave (NaN where not)
    settings: Settings
    history: pd.DataFrame | None = None  # the counts the history columns were computed from

    def notes(self, day_ahead: bool, weather_source: np.ndarray | None = None) -> list[list[str]]:
        """Per row: what the forecast could not know (history of D-1, outage, weather); [] when complete."""
        out: list[list[str]] = [[] for _ in range(len(self.rows))]
        if day_ahead and len(self.rows):
            for position, note in _history_notes(self.rows, self.history, self.settings.outage_min_zero_hours):
                out[position].append(note)
        if weather_source is not None:
            for position, note in incomplete_weather_notes(self.given_weather, len(self.rows)):
                out[position].append(note)
            for position in np.flatnonzero(np.asarray(weather_source) == "missing"):
                out[position].append(NO_WEATHER_NOTE)
        return out

    def frame(self, weather: str = "served", observed: pd.DataFrame | None = None) -> pd.DataFrame:
        base = self.rows.copy()
        with_given = pd.concat([base, self.given_weather], axis=1) if len(self.given_weather.columns) else base
        values, source = weather_columns(with_given, weather, self.settings, observed)
        for column in WEATHER_COLUMNS:
            base[column] = values[column].to_numpy(float)
        base[WEATHER_SOURCE] = source
        return base


def build_inputs(rows: pd.DataFrame, settings: Settings | None = None,
                 extra_history: pd.DataFrame | None = None) -> Inputs:
    """History for ``rows`` from the store and the labelled rows given (see ``history_for``)."""
    settings = settings or get_settings()
    labelled = rows[rows["bike_count"].notna()] if "bike_count" in rows else None
    extra = pd.concat([p for p in (extra_history, labelled) if p is not None], ignore_index=True) \
        if (extra_history is not None or labelled is not None) else None
    given = rows[[c for c in WEATHER_COLUMNS if c in rows]]
    bare = rows.drop(columns=[c for c in (*WEATHER_COLUMNS, WEATHER_SOURCE) if c in rows])
    history = history_for(rows, settings, extra)
    with_history = add_history(bare, history, settings.outage_min_zero_hours)
    return Inputs(with_history, given, settings, history)


def enrich(rows: pd.DataFrame, settings: Settings | None = None, extra_history: pd.DataFrame | None = None, *,
           weather: str, observed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows with weather (per ``weather``, see the module docstring) and day-ahead history columns."""
    settings = settings or get_settings()
    return build_inputs(rows, settings, extra_history).frame(weather, observed)


def model_inputs(enriched: pd.DataFrame) -> pd.DataFrame:
    """Enriched rows as a logged velocast model takes them in plain MLflow (``mlflow.pyfunc``).

    The columns of its signature (identity, location, weather, history), timestamps as ISO strings
    with their offset. ``model_inputs(enrich(rows, weather="served"))`` gives ``/predict``'s numbers.
    """
    out = enriched[[c for c in MODEL_INPUT_COLUMNS if c in enriched]].copy()
    out["timestamp"] = [t.isoformat() for t in pd.to_datetime(out["timestamp"])]
    return out


def _history_notes(rows: pd.DataFrame, history: pd.DataFrame | None, min_zero_hours: int) -> list[tuple[int, str]]:
    """(row position, note) for rows whose history at their cut-off is incomplete or a sensor outage."""
    counters = rows["counter_id"].astype(str).to_numpy()
    days, _ = paris_day_hour(rows["timestamp"], rows["counter_id"])
    hist = history[history["bike_count"].notna()] if history is not None and len(history) else None
    if hist is None or hist.empty:
        return history_notes(counters, np.full(len(rows), -1), days, SortedCounts.empty(), min_zero_hours)
    ids = pd.Index(pd.unique(np.concatenate([hist["counter_id"].astype(str).to_numpy(), counters])))
    runs = zero_runs(hist["counter_id"], hist["timestamp"], hist["bike_count"].to_numpy(float))
    known = SortedCounts.of(ids.get_indexer(hist["counter_id"].astype(str)), utc_hours(hist["timestamp"]), runs.start)
    return history_notes(counters, ids.get_indexer(counters), days, known, min_zero_hours)


@dataclass(frozen=True)
class SortedCounts:
    """Known counts sorted by (counter code, UTC hour), with the start of each one's zero run (-1: not 0)."""

    key: np.ndarray  # code * 2**32 + hour, sorted
    hour: np.ndarray
    code: np.ndarray
    run_start: np.ndarray

    @classmethod
    def of(cls, code: np.ndarray, hour: np.ndarray, run_start: np.ndarray) -> SortedCounts:
        order = np.lexsort((hour, code))
        code, hour = np.asarray(code, np.int64)[order], np.asarray(hour, np.int64)[order]
        return cls(code * (1 << 32) + hour, hour, code, np.asarray(run_start, np.int64)[order])

    @classmethod
    def empty(cls) -> SortedCounts:
        nothing = np.zeros(0, np.int64)
        return cls(nothing, nothing, nothing, nothing)


def history_notes(counters: np.ndarray, codes: np.ndarray, days: np.ndarray, known: SortedCounts,
                  min_zero_hours: int, since_hour: int | None = None) -> list[tuple[int, str]]:
    """(row position, note) of rows (counter id, its code in ``known``, Paris day number D) whose history
    at their cut-off (00:00 of D) is missing, older than D-1, incomplete, or a sensor outage.

    The one computation of these notes: ``Inputs.notes`` gives it the counts read for a request,
    the serving path (``velocast.lifecycle.serving.served_history``) its in-memory counts of the store with
    ``since_hour``, the first UTC hour the request's read would have held (earlier counts are ignored
    and a zero run is seen from there on, exactly as in that read).
    """
    cut = midnight_utc_hours(days)
    previous = midnight_utc_hours(days - 1)  # 00:00 of D-1, DST-safe
    if len(known.key) == 0:
        has_any = np.zeros(len(days), bool)
        latest_hour = known_hours = trailing = np.full(len(days), -1, np.int64)
    else:
        upto = np.searchsorted(known.key, codes * (1 << 32) + cut)  # first record at or after the cut-off
        since = np.searchsorted(known.key, codes * (1 << 32) + previous)
        latest = np.maximum(upto - 1, 0)
        latest_hour = known.hour[latest]
        has_any = (upto > 0) & (known.code[latest] == codes) & (codes >= 0)
        # a count older than the row's own look-back is never read for it, whatever else the request asks
        has_any &= latest_hour >= midnight_utc_hours(days - HISTORY_WINDOW_DAYS)
        if since_hour is not None:
            has_any &= latest_hour >= since_hour
        latest_hour = np.where(has_any, latest_hour, -1)
        known_hours = upto - since
        run_start = known.run_start[latest]
        if since_hour is not None:
            run_start = np.where(run_start >= 0, np.maximum(run_start, since_hour), -1)
        trailing = np.where(has_any & (run_start >= 0), latest_hour - run_start + 1, 0)
    expected = cut - previous
    out = []
    flagged = ~has_any | (latest_hour < previous) | (trailing >= min_zero_hours) | (known_hours < expected)
    for i in np.flatnonzero(flagged):
        day = date(1970, 1, 1) + timedelta(days=int(days[i]))
        if not has_any[i]:
            out.append((i, f"no history: no count of counter {counters[i]} in the {HISTORY_WINDOW_DAYS} days before "
                           f"{day} is known; predicted from the calendar and its usual level"))
        elif latest_hour[i] < previous[i]:
            stamp = pd.Timestamp(int(latest_hour[i]) * 3600, unit="s", tz="UTC").tz_convert(PARIS_TZ)
            out.append((i, f"beyond the day-ahead horizon: the latest known count of counter {counters[i]} is "
                           f"{stamp:%Y-%m-%d %H:%M} (Paris time); predicted from older history"))
        elif trailing[i] >= min_zero_hours:
            out.append((i, f"sensor outage suspected: counter {counters[i]} reported 0 for its last {trailing[i]} "
                           "known hours; forecast of its traffic once it works again"))
        elif known_hours[i] < expected[i]:
            out.append((i, f"history incomplete: {known_hours[i]} of {expected[i]} hours of {day - timedelta(days=1)} "
                           f"known for counter {counters[i]}"))
    return out


def outage_flags(rows: pd.DataFrame, settings: Settings | None = None) -> np.ndarray:
    """True for labelled rows inside a sensor outage, judged with the store's counts around them.

    A run of zeros may begin before or end after the rows (a test day inside a month-long outage):
    the counts of the store up to ``outage_min_zero_hours`` around them are read too.
    """
    settings = settings or get_settings()
    if rows.empty or "bike_count" not in rows:
        return np.zeros(len(rows), bool)
    margin = timedelta(days=math.ceil(settings.outage_min_zero_hours / 24) + 1)
    ids = pd.unique(rows["counter_id"].astype(str))
    context = store.query_counts(rows["timestamp"].min() - margin, rows["timestamp"].max() + margin,
                                 counter_ids=list(ids) if len(ids) <= 50 else None, settings=settings)
    own = rows[["counter_id", "timestamp", "bike_count"]].assign(_row=np.arange(len(rows)))
    own["counter_id"] = own["counter_id"].astype(str)
    if not context.empty:
        context = context[["counter_id", "timestamp", "bike_count"]].assign(_row=-1)
        context["counter_id"] = context["counter_id"].astype(str)
        both = pd.concat([own, context], ignore_index=True).drop_duplicates(["counter_id", "timestamp"], keep="first")
    else:
        both = own
    both = both[both["bike_count"].notna()]
    flagged = outage_mask(both, settings.outage_min_zero_hours)
    out = np.zeros(len(rows), bool)
    mine = both["_row"].to_numpy() >= 0
    out[both["_row"].to_numpy()[mine]] = flagged[mine]
    return out


def decision_weather(settings: Settings | None = None) -> str:
    """``with`` or ``without``: the weather a champion decision is judged with.

    ``VELOCAST_DECISION_WEATHER=auto`` (default) follows how forecasts will be served: ``with``
    when weather forecasts are stored (a forecast source is in use), else ``without``.
    """
    settings = settings or get_settings()
    chosen = settings.decision_weather
    if chosen != "auto":
        return chosen
    forecasts = load_forecasts(settings)
    return "with" if forecasts is not None and not forecasts.empty else "without"


__all__ = ["Inputs", "WEATHER_MODES", "WEATHER_SOURCE", "build_inputs", "cutoff_of", "decision_weather", "enrich",
           "history_for", "history_start", "model_inputs", "outage_flags", "weather_columns"]
