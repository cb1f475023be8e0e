"""The store's recent counts in memory, for the serving path: day-ahead history without frames.

``build_inputs`` reads each request's history from the store and builds a grid of it; the serving
path (``velocast.lifecycle.serving.fast_path``) instead keeps one grid of the store's latest
``KEEP_DAYS`` days per process (``features.HourlyHistory``: counter x Paris day x hour, with the
zero runs of sensor outages) and the same counts sorted for the notes. It is rebuilt when the
store changes (``store.version``: one ``stat`` per request), by the first request that sees the
change; every other reader waits for it, so an ingest is seen by the next request.

The history columns and notes come from the same functions as ``build_inputs``'
(``features.history_features``, ``inputs.history_notes``), which depend only on the counts of each
row's window: ``tests/lifecycle/test_fast_path.py`` proves them equal to the frames' path.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from velocast.config import Settings
from velocast.data import store
from velocast.data.quality import utc_hours, zero_runs
from velocast.data.schema import paris_midnight
from velocast.features import (
    HISTORY_COLUMNS,
    HISTORY_WINDOW_DAYS,
    HourlyHistory,
    history_features,
    midnight_utc_hours,
    paris_day_hour,
)
from velocast.lifecycle.inputs import SortedCounts, history_notes

log = logging.getLogger(__name__)

KEEP_DAYS = 400  # days of counts kept in memory: forecasts reaching further back use build_inputs
READ_DAYS = HISTORY_WINDOW_DAYS + 1  # build_inputs reads from 00:00 of D-29 (history_for)
# (counter, Paris day) pairs whose history features (all 24 hours) one HistoryIndex keeps: requests
# forecast the same few days of each counter again and again (tomorrow, mostly). 1.7 KB a pair.
PAIR_CACHE = 8192
_PAIR_KEY = 1 << 24  # a pair's key: (counter code + 1) * _PAIR_KEY + Paris day number


@dataclass(frozen=True)
class HistoryIndex:
    """One version of the store's recent counts (see the module docstring)."""

    version: tuple
    code_of: dict[str, int]
    grid: HourlyHistory
    counts: SortedCounts
    since_day: int | None  # Paris day number of the first day held (None: the whole store)
    min_zero_hours: int
    pairs: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)  # PAIR_CACHE

    def codes(self, counter_ids: np.ndarray) -> np.ndarray:
        get = self.code_of.get
        return np.fromiter((get(c, -1) for c in counter_ids), np.int64, len(counter_ids))

    def covers(self, days: np.ndarray) -> bool:
        """Whether every count ``build_inputs`` would read for rows of these Paris days is held."""
        return self.since_day is None or int(days.min()) - READ_DAYS >= self.since_day

    def features(self, codes: np.ndarray, days: np.ndarray, hours: np.ndarray) -> dict[str, np.ndarray]:
        """The ``HISTORY_COLUMNS`` of rows (counter code, Paris day number, Paris hour).

        Each (counter, day) pair's features are computed once for its 24 hours (``history_features``:
        they depend only on the pair's window of counts, which this version of the store fixes) and
        kept in ``pairs``; a request of more than half ``PAIR_CACHE`` pairs is computed directly."""
        if self.grid.value.size == 0:  # an empty store
            return {column: np.full(len(codes), np.nan) for column in HISTORY_COLUMNS}
        keys = (np.asarray(codes, np.int64) + 1) * _PAIR_KEY + np.asarray(days, np.int64)
        unique, where = np.unique(keys, return_inverse=True)
        if len(unique) > PAIR_CACHE // 2:
            return history_features(self.grid, codes, days, hours)
        cached = self.pairs
        found = {key: cached.get(key) for key in unique.tolist()}
        missing = [key for key, table in found.items() if table is None]
        if missing:
            pair = np.asarray(missing, np.int64)
            computed = history_features(self.grid, np.repeat(pair // _PAIR_KEY - 1, 24),
                                        np.repeat(pair % _PAIR_KEY, 24), np.tile(np.arange(24), len(pair)))
            tables = np.stack([computed[column].reshape(len(pair), 24) for column in HISTORY_COLUMNS], axis=1)
            if len(cached) + len(missing) > PAIR_CACHE:
                cached.clear()  # a new set of days: start again rather than track which pair is oldest
            for key, table in zip(missing, tables):
                found[key] = cached[key] = table
        stacked = np.stack([found[key] for key in unique.tolist()])  # pairs x columns x 24 hours
        rows = stacked[where.ravel(), :, np.asarray(hours, np.int64)]  # rows x columns
        return {column: rows[:, i] for i, column in enumerate(HISTORY_COLUMNS)}

    def notes(self, counters: np.ndarray, codes: np.ndarray, days: np.ndarray) -> list[tuple[int, str]]:
        """``Inputs.notes``' history notes: the counts from 00:00 of the earliest day - 29, as its read."""
        since = int(midnight_of(int(days.min()) - READ_DAYS)) if len(days) else None
        return history_notes(counters, codes, days, self.counts, self.min_zero_hours, since_hour=since)


def midnight_of(day: int) -> int:
    """UTC hour number of 00:00 Paris of a Paris day number."""
    return int(midnight_utc_hours(np.asarray([day]))[0])


def _build(settings: Settings, version: tuple) -> HistoryIndex:
    started = time.perf_counter()
    latest = store.latest_timestamp(settings)
    start = paris_midnight(latest, -KEEP_DAYS) if latest is not None else None
    frame = store.history_counts(start, settings)
    frame = frame[frame["bike_count"].notna()]
    ids = pd.Index(pd.unique(frame["counter_id"]))
    code = ids.get_indexer(frame["counter_id"])
    day, hour = paris_day_hour(frame["timestamp"], frame["counter_id"])
    counts = frame["bike_count"].to_numpy(float)
    runs = zero_runs(frame["counter_id"], frame["timestamp"], counts)
    grid = HourlyHistory(code, day, hour, counts, runs.start, runs.end, len(ids), settings.outage_min_zero_hours)
    sorted_counts = SortedCounts.of(code, utc_hours(frame["timestamp"]), runs.start)
    since_day = None
    if start is not None:
        since_day = int((start.tz_localize(None).to_datetime64() - np.datetime64("1970-01-01")) // np.timedelta64(1, "D"))
    log.info("serving history: %d counts of %d counters in memory (%.2f s)", len(frame), len(ids),
             time.perf_counter() - started)
    return HistoryIndex(version, {c: i for i, c in enumerate(ids)}, grid, sorted_counts, since_day,
                        settings.outage_min_zero_hours)


class StoreHistory:
    """The current ``HistoryIndex`` of one store, rebuilt when ``store.version`` changes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._index: HistoryIndex | None = None
        self._lock = threading.Lock()

    def ready(self, version: int) -> bool:
        """Is the history of store ``version`` built (``current`` answers without reading the store)?"""
        index = self._index
        return index is not None and index.version == version

    def current(self) -> HistoryIndex:
        version = store.version(self.settings)
        if not self.ready(version):
            with self._lock:
                if not self.ready(version):
                    self._index = _build(self.settings, version)
        return self._index


_histories: dict[tuple[Path, int], StoreHistory] = {}
_histories_lock = threading.Lock()


def store_history(settings: Settings) -> StoreHistory:
    """The process' in-memory history of the store of ``settings`` (one per store and outage rule)."""
    key = (Path(settings.counts_dir), settings.outage_min_zero_hours)
    with _histories_lock:
        found = _histories.get(key)
        if found is None:
            found = _histories[key] = StoreHistory(settings)
        return found


__all__ = ["KEEP_DAYS", "PAIR_CACHE", "HistoryIndex", "StoreHistory", "store_history"]
