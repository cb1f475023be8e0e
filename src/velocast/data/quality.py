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

Runs are made of rows one hour apart in time (a missing hour ends a run).

A sensor can also fail without reading 0: ``20 Avenue de Clichy`` counted 0-5 bikes an hour for
most of April 2021 (80 before and after), and a closed lane (the riverside road under the
February 2021 flood) counts a trickle. Such *degraded days* teach a model the wrong level of the
counter for months. A counter-day is degraded when its total is below
``Settings.degraded_day_share`` (default 0.2) of what the counter usually counts *given the city
that day*: its median daily total times that day's city factor (the median, over counters, of each
counter's total over its own median). A city-wide drop (a lockdown, Christmas) moves the factor,
not the flag. Judged after the fact on whole days (at least 20 counted hours, at least 5
counters), it is a training filter only: degraded days are left out of training, never out of a
score. Pure functions of counts, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_MIN_ZERO_HOURS = 24
DEFAULT_DEGRADED_SHARE = 0.2
_HOUR_NS = 3_600_000_000_000
_WHOLE_DAY_HOURS = 20  # a counter-day is judged when at least this many hours are counted
_MIN_COUNTERS = 5  # a day's city factor needs this many counters


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


def degraded_days(rows: pd.DataFrame, share: float = DEFAULT_DEGRADED_SHARE) -> pd.DataFrame:
    """One line per degraded counter-day of labelled ``rows`` (module docstring): counter, Paris day,
    its total, the total expected given the city that day, and their ratio. Empty when ``share`` <= 0."""
    return _degraded(rows, share)[0]


def _degraded(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray] | None]:
    """``degraded_days`` and the counter-days of ``rows`` it read (None when it read none)."""
    columns = ["counter_id", "day", "total", "expected", "ratio"]
    if share <= 0 or rows.empty or "bike_count" not in rows:
        return pd.DataFrame(columns=columns), None
    counts = rows["bike_count"].to_numpy(float)
    known = ~np.isnan(counts)
    ids = rows["counter_id"].astype(str).to_numpy()
    row_days = rows["timestamp"].dt.tz_convert("Europe/Paris").dt.date.to_numpy()
    frame = pd.DataFrame({"counter_id": ids[known], "day": row_days[known], "count": counts[known]})
    days = frame.groupby(["day", "counter_id"], sort=True)["count"].agg(["sum", "size"])
    totals = days["sum"][days["size"] >= _WHOLE_DAY_HOURS].unstack()  # Paris day x counter
    if totals.empty:
        return pd.DataFrame(columns=columns), (ids, row_days)
    typical = totals.where(totals > 0).median()
    relative = totals / typical
    factor = relative.median(axis=1).where(relative.notna().sum(axis=1) >= _MIN_COUNTERS)
    expected = pd.DataFrame(np.outer(factor.to_numpy(), typical.to_numpy()), index=totals.index,
                            columns=totals.columns)
    flagged = (totals < share * expected).stack()
    flagged = flagged[flagged]
    if flagged.empty:
        return pd.DataFrame(columns=columns), (ids, row_days)
    index = flagged.index
    found = pd.DataFrame({"counter_id": index.get_level_values(1).astype(str),
                          "day": index.get_level_values(0),
                          "total": totals.stack().reindex(index).to_numpy(),
                          "expected": expected.stack().reindex(index).to_numpy()})
    found["ratio"] = found["total"] / found["expected"]
    return found.sort_values(["counter_id", "day"]).reset_index(drop=True)[columns], (ids, row_days)


def degraded_mask(rows: pd.DataFrame, share: float = DEFAULT_DEGRADED_SHARE) -> np.ndarray:
    """True for the rows of ``rows`` on one of their degraded counter-days (``degraded_days``)."""
    found, read = _degraded(rows, share)
    if found.empty or read is None:
        return np.zeros(len(rows), bool)
    keys = pd.MultiIndex.from_arrays([found["counter_id"], found["day"]])
    return np.asarray(pd.MultiIndex.from_arrays(list(read)).isin(keys), bool)


def degraded_spans(found: pd.DataFrame) -> pd.DataFrame:
    """``degraded_days`` rows that still counted something, merged into spans of consecutive days
    per counter: counter, first and last Paris day, days, median ratio to the expected total.
    (Days at 0 all day are sensor outages: ``outages`` lists them.)"""
    columns = ["counter_id", "first_day", "last_day", "days", "median_ratio"]
    counted = found[found["total"] > 0].sort_values(["counter_id", "day"])
    if counted.empty:
        return pd.DataFrame(columns=columns)
    day = pd.to_datetime(counted["day"]).to_numpy("datetime64[D]").astype(np.int64)
    ids = counted["counter_id"].to_numpy()
    new_span = np.ones(len(counted), bool)
    new_span[1:] = (ids[1:] != ids[:-1]) | (day[1:] - day[:-1] > 1)
    spans = counted.assign(span=np.cumsum(new_span)).groupby("span")
    return pd.DataFrame({"counter_id": spans["counter_id"].first(), "first_day": spans["day"].min(),
                         "last_day": spans["day"].max(), "days": spans.size(),
                         "median_ratio": spans["ratio"].median().round(3)}).reset_index(drop=True)[columns]


__all__ = ["DEFAULT_DEGRADED_SHARE", "DEFAULT_MIN_ZERO_HOURS", "ZeroRuns", "degraded_days", "degraded_mask", "degraded_spans",
           "outage_mask", "outages", "utc_hours", "zero_runs"]
