"""Sensor outages: long runs of zero counts that are a broken counter, not traffic.

A Paris bike counter that reports 0 for a whole day and more (``20 Avenue de Clichy`` from
2021-05-05 for 76 days, ``152 boulevard du Montparnasse`` for 30 days in January 2021) is
broken or its lane is closed: its zeros say nothing about cycling. Normal counters never stay at
zero for long (the longest normal run in the real file is 21 hours, a closed riverside road at
night). velocast therefore flags every run of at least ``Settings.outage_min_zero_hours``
consecutive zero hours of one counter (default 24) as a *sensor outage*, and

- leaves those rows out of training (a model must not learn that traffic vanished),
- leaves them out of every score (train, test sets, champion health, simulation, benchmarks),
  reporting how many rows were left out,
- reads them as unknown, not as 0, when they are the history of a day-ahead forecast (see
  ``velocast.features.add_history``, which sees a run only up to the forecast's cut-off),
- warns when a forecast is made for a counter whose latest counts are such a run.

Runs are made of rows one hour apart in time (a missing hour ends a run). Pure functions of
counts, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_MIN_ZERO_HOURS = 24
_HOUR_NS = 3_600_000_000_000


def utc_hours(timestamps: pd.Series) -> np.ndarray:
    """Whole hours since the epoch (UTC) of tz-aware timestamps."""
    values = timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    return values.astype(np.int64) // _HOUR_NS


@dataclass(frozen=True)
class ZeroRuns:
    """For rows sorted by counter then time: the run of zero hours each zero row belongs to.

    ``start``/``end`` are UTC hour numbers (inclusive) of the row's run; -1 where the count is not 0.
    """

    order: np.ndarray  # positions of the input rows in sorted order
    start: np.ndarray  # per input row (original order)
    end: np.ndarray

    def length(self) -> np.ndarray:
        return np.where(self.start >= 0, self.end - self.start + 1, 0)


def zero_runs(counter_ids: pd.Series, timestamps: pd.Series, counts: pd.Series | np.ndarray) -> ZeroRuns:
    """The zero run of every row (see ``ZeroRuns``); counters and times in any order."""
    n = len(counter_ids)
    codes = pd.factorize(counter_ids.astype(str).to_numpy())[0] if n else np.zeros(0, np.int64)
    hours = utc_hours(timestamps) if n else np.zeros(0, np.int64)
    order = np.lexsort((hours, codes))
    c, h = codes[order], hours[order]
    zero = np.asarray(counts, float)[order] == 0
    start = np.full(n, -1, np.int64)
    end = np.full(n, -1, np.int64)
    if n and zero.any():
        # a new run begins at a zero row whose previous row is not a zero of the same counter one hour before
        continues = np.zeros(n, bool)
        continues[1:] = zero[1:] & zero[:-1] & (c[1:] == c[:-1]) & (h[1:] - h[:-1] == 1)
        begins = zero & ~continues
        run_id = np.cumsum(begins) - 1
        first = h[begins]
        last = np.zeros(len(first), np.int64)
        np.maximum.at(last, run_id[zero], h[zero])
        sorted_start = np.where(zero, first[np.maximum(run_id, 0)], -1)
        sorted_end = np.where(zero, last[np.maximum(run_id, 0)], -1)
        start[order], end[order] = sorted_start, sorted_end
    return ZeroRuns(order, start, end)


def outage_mask(rows: pd.DataFrame, min_hours: int = DEFAULT_MIN_ZERO_HOURS) -> np.ndarray:
    """True for the rows of ``rows`` (labelled) that lie in a run of >= ``min_hours`` zero hours."""
    if rows.empty or "bike_count" not in rows:
        return np.zeros(len(rows), bool)
    runs = zero_runs(rows["counter_id"], rows["timestamp"], rows["bike_count"].to_numpy(float))
    return runs.length() >= min_hours


def outages(rows: pd.DataFrame, min_hours: int = DEFAULT_MIN_ZERO_HOURS) -> pd.DataFrame:
    """One line per sensor outage: counter, first and last hour (Europe/Paris), hours."""
    columns = ["counter_id", "counter_name", "first_hour", "last_hour", "hours"]
    if rows.empty or "bike_count" not in rows:
        return pd.DataFrame(columns=columns)
    runs = zero_runs(rows["counter_id"], rows["timestamp"], rows["bike_count"].to_numpy(float))
    flagged = runs.length() >= min_hours
    if not flagged.any():
        return pd.DataFrame(columns=columns)
    names = rows["counter_name"].astype(str) if "counter_name" in rows else rows["counter_id"].astype(str)
    found = pd.DataFrame({"counter_id": rows["counter_id"].astype(str).to_numpy()[flagged],
                          "counter_name": names.to_numpy()[flagged],
                          "start": runs.start[flagged], "end": runs.end[flagged]})
    found = found.drop_duplicates(["counter_id", "start"]).sort_values(["counter_id", "start"])

    def paris(hours: pd.Series) -> pd.Series:
        return pd.to_datetime(hours.to_numpy() * _HOUR_NS, utc=True).tz_convert("Europe/Paris")

    return pd.DataFrame({"counter_id": found["counter_id"].to_numpy(), "counter_name": found["counter_name"].to_numpy(),
                         "first_hour": paris(found["start"]), "last_hour": paris(found["end"]),
                         "hours": (found["end"] - found["start"] + 1).to_numpy()})


__all__ = ["DEFAULT_MIN_ZERO_HOURS", "ZeroRuns", "outage_mask", "outages", "utc_hours", "zero_runs"]
