"""The embedded store: canonical counts as Parquet partitioned by month, queried with DuckDB.

Layout under ``VELOCAST_HOME/store``::

    counts/month=2021-03/counts.parquet   one file per month (Europe/Paris month)
    weather/weather_hourly.parquet        hourly weather (see velocast.data.weather)

An upsert rewrites only the months it touches, each atomically and under a store lock, so that
re-ingesting a file adds nothing and a newer overlapping file updates the counts it carries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data.schema import CANONICAL_COLUMNS, KEY_COLUMNS, empty_counts, paris_midnight, to_paris
from velocast.fileio import atomic_write_bytes, atomic_write_parquet, file_lock

log = logging.getLogger(__name__)

_COMPARED = [c for c in CANONICAL_COLUMNS if c not in KEY_COLUMNS]


@dataclass(frozen=True)
class UpsertResult:
    added: int
    updated: int
    unchanged: int


def _month_path(settings: Settings, month: str) -> Path:
    return settings.counts_dir / f"month={month}" / "counts.parquet"


def _glob(settings: Settings) -> str:
    return str(settings.counts_dir / "month=*" / "*.parquet")


# Parquet holds nanosecond timestamps; DuckDB compares microsecond TIMESTAMPTZ values.
_COUNTS = "(SELECT * REPLACE (CAST(timestamp AS TIMESTAMPTZ) AS timestamp) FROM read_parquet(?))"


def _version_path(settings: Settings) -> Path:
    return settings.counts_dir / "VERSION"


def version(settings: Settings | None = None) -> tuple:
    """A value that changes whenever counts are written: what in-memory copies of the store compare.

    ``upsert_counts`` rewrites ``counts/VERSION`` (atomically, under the store lock) after every
    write, so checking costs one ``stat``. A store written before that file existed is identified by
    its month files (path, inode, modification time, size).
    """
    settings = settings or get_settings()
    try:
        stat = _version_path(settings).stat()
        return ("version", stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        files = []
        for path in sorted(settings.counts_dir.glob("month=*/*.parquet")):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files.append((str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return ("months", tuple(files))


def has_counts(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    return any(settings.counts_dir.glob("month=*/*.parquet"))


def upsert_counts(frame: pd.DataFrame, settings: Settings | None = None) -> UpsertResult:
    """Insert new counter-hours and update changed ones; identical rows are left as they are."""
    settings = settings or get_settings()
    frame = frame[CANONICAL_COLUMNS]
    months = frame["timestamp"].dt.strftime("%Y-%m")
    added = updated = unchanged = 0
    written = False
    with file_lock(settings.locks_dir / "store.lock"):
        for month, part in frame.groupby(months, sort=True):
            path = _month_path(settings, str(month))
            if path.exists():
                old = _normalise(pd.read_parquet(path))
                merged = part.merge(old, on=KEY_COLUMNS, how="left", suffixes=("", "_old"),
                                    indicator=True)
                is_new = merged["_merge"].eq("left_only").to_numpy()
                same = pd.Series(True, index=merged.index)
                for column in _COMPARED:
                    a, b = merged[column], merged[f"{column}_old"]
                    same &= (a == b) | (a.isna() & b.isna())
                changed = ~is_new & ~same.to_numpy()
                added += int(is_new.sum())
                updated += int(changed.sum())
                unchanged += int((~is_new & ~changed).sum())
                if not (is_new.any() or changed.any()):
                    continue
                keys = pd.MultiIndex.from_frame(part[KEY_COLUMNS])
                keep_old = ~pd.MultiIndex.from_frame(old[KEY_COLUMNS]).isin(keys)
                table = pd.concat([old[keep_old], part], ignore_index=True)
            else:
                added += len(part)
                table = part
            table = table.sort_values(["timestamp", "counter_id"]).reset_index(drop=True)
            atomic_write_parquet(table, path)
            written = True
        if written:  # readers holding the store in memory (the API's history) see the change
            atomic_write_bytes(_version_path(settings), f"{time.time_ns()} {os.getpid()}\n".encode())
    log.info("store upsert: %d added, %d updated, %d unchanged", added, updated, unchanged)
    return UpsertResult(added, updated, unchanged)


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Bring a frame read back from Parquet/DuckDB to the canonical dtypes."""
    if frame.empty:
        return empty_counts()
    frame = frame[CANONICAL_COLUMNS].copy()
    frame["timestamp"] = to_paris(frame["timestamp"], naive="utc")
    installed = frame["installation_date"]
    # to_datetime of a column that is already datetime64 still samples it element by element (~40 ms)
    if not pd.api.types.is_datetime64_dtype(installed.dtype):
        installed = pd.to_datetime(installed)
    frame["installation_date"] = installed.astype("datetime64[ns]")
    for column in ("counter_id", "counter_name", "site_id", "site_name"):
        frame[column] = frame[column].astype(object)
    frame["bike_count"] = frame["bike_count"].astype(float)
    return frame


_local = threading.local()


@contextlib.contextmanager
def _connect() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection, reused by each thread (connecting costs ~10 ms)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        _local.con = con
    yield con


def query_counts(start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None,
                 counter_ids: list[str] | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """Counts with ``start <= timestamp < end`` (dates are read as Europe/Paris), sorted by time."""
    settings = settings or get_settings()
    if not has_counts(settings):
        return empty_counts()
    where, params = ["1=1"], []
    if start is not None:
        where.append("timestamp >= ?")
        params.append(paris_timestamp(start).tz_convert("UTC").to_pydatetime())
    if end is not None:
        where.append("timestamp < ?")
        params.append(paris_timestamp(end).tz_convert("UTC").to_pydatetime())
    if counter_ids:
        where.append(f"counter_id IN ({', '.join('?' for _ in counter_ids)})")
        params.extend(counter_ids)
    # only constant column names and "?" placeholders are formatted in; every value is a bound parameter
    sql = (f"SELECT {', '.join(CANONICAL_COLUMNS)} FROM {_COUNTS} "  # nosec B608
           f"WHERE {' AND '.join(where)} ORDER BY timestamp, counter_id")
    with _connect() as con:
        frame = con.execute(sql, [_glob(settings), *params]).df()
    return _normalise(frame)


# A short span (a served request's history) is read from whole month files kept in memory: DuckDB's
# scan of every partition costs ~15 ms per call, a cached month is filtered in about 1 ms. A month is
# re-read as soon as its file changes (upserts replace files atomically: new inode and mtime).
_CACHED_MONTHS = 4  # at most this many months per query and in memory
_month_cache: OrderedDict[Path, tuple[tuple[int, int, int], pd.DataFrame, dict[str, np.ndarray]]] = OrderedDict()
_month_cache_lock = threading.Lock()


def _cached_month(path: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]] | None:
    """A month file's rows (sorted by time and counter, as written) and the positions of each counter."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _month_cache_lock:
        hit = _month_cache.get(path)
        if hit is not None and hit[0] == key:
            _month_cache.move_to_end(path)
            return hit[1], hit[2]
    frame = _normalise(pd.read_parquet(path))
    positions = {str(k): v for k, v in frame.groupby("counter_id", sort=False).indices.items()}
    with _month_cache_lock:
        _month_cache[path] = (key, frame, positions)
        _month_cache.move_to_end(path)
        while len(_month_cache) > 2 * _CACHED_MONTHS:
            _month_cache.popitem(last=False)
    return frame, positions


def recent_counts(start: pd.Timestamp | str, end: pd.Timestamp | str, counter_ids: list[str] | None = None,
                  settings: Settings | None = None) -> pd.DataFrame:
    """``query_counts`` for a span of a few months, served from month files cached in memory."""
    settings = settings or get_settings()
    first, last = paris_timestamp(start), paris_timestamp(end)
    months = pd.period_range(first.tz_localize(None), (last - pd.Timedelta(1, "ns")).tz_localize(None), freq="M")
    if last <= first or len(months) > _CACHED_MONTHS:
        return query_counts(start, end, counter_ids, settings)
    picked = []
    for month in months:
        cached = _cached_month(_month_path(settings, str(month)))
        if cached is None:
            continue
        frame, positions = cached
        if counter_ids:
            rows = [positions[c] for c in dict.fromkeys(map(str, counter_ids)) if c in positions]
            frame = frame.iloc[np.sort(np.concatenate(rows))] if rows else frame.iloc[:0]
        stamps = frame["timestamp"]
        picked.append(frame[((stamps >= first) & (stamps < last)).to_numpy()])
    if not picked:
        return empty_counts()
    out = pd.concat(picked, ignore_index=True) if len(picked) > 1 else picked[0].reset_index(drop=True)
    if not out["timestamp"].is_monotonic_increasing:  # month files are written sorted; older ones may not be
        out = out.sort_values(["timestamp", "counter_id"], kind="stable", ignore_index=True)
    return out


def history_counts(start: pd.Timestamp | str | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """``counter_id``, ``timestamp`` (Europe/Paris) and ``bike_count`` of every count from ``start`` on.

    The three columns a day-ahead history needs, read in one scan (no normalisation of the others).
    """
    settings = settings or get_settings()
    if not has_counts(settings):
        return empty_counts()[["counter_id", "timestamp", "bike_count"]]
    where, params = "", []
    if start is not None:
        where = "WHERE timestamp >= ?"
        params.append(paris_timestamp(start).tz_convert("UTC").to_pydatetime())
    # _COUNTS is a constant; the glob and the start are bound parameters
    sql = f"SELECT counter_id, timestamp, bike_count FROM {_COUNTS} {where}"  # nosec B608
    with _connect() as con:
        frame = con.execute(sql, [_glob(settings), *params]).df()
    frame["counter_id"] = frame["counter_id"].astype(str)
    frame["timestamp"] = to_paris(frame["timestamp"], naive="utc")
    frame["bike_count"] = frame["bike_count"].astype(float)
    return frame


def paris_timestamp(value: pd.Timestamp | str) -> pd.Timestamp:
    """``value`` in Europe/Paris; a date or time without offset is read as Paris time."""
    return to_paris(value, naive="paris")


def latest_timestamp(settings: Settings | None = None) -> pd.Timestamp | None:
    settings = settings or get_settings()
    if not has_counts(settings):
        return None
    with _connect() as con:
        # _COUNTS is a constant; the Parquet glob is a bound parameter
        value = con.execute(f"SELECT max(timestamp) FROM {_COUNTS}", [_glob(settings)]).fetchone()[0]  # nosec B608
    return None if value is None else pd.Timestamp(value).tz_convert(PARIS_TZ)


def last_days(days: int, settings: Settings | None = None) -> pd.DataFrame:
    """The last ``days`` whole days of counts, ending with the latest day in the store."""
    settings = settings or get_settings()
    latest = latest_timestamp(settings)
    if latest is None:
        return empty_counts()
    return query_counts(paris_midnight(latest, 1 - days), paris_midnight(latest, 1), settings=settings)


def counters(settings: Settings | None = None) -> pd.DataFrame:
    """One row per counter: names, site, location, first/last seen and number of hours stored."""
    settings = settings or get_settings()
    columns = ["counter_id", "counter_name", "site_id", "site_name", "latitude", "longitude",
               "installation_date", "first_seen", "last_seen", "hours"]
    if not has_counts(settings):
        return pd.DataFrame(columns=columns)
    # _COUNTS is a constant; the Parquet glob is a bound parameter
    sql = (
        "SELECT counter_id, arg_max(counter_name, timestamp) AS counter_name, "  # nosec B608
        "arg_max(site_id, timestamp) AS site_id, arg_max(site_name, timestamp) AS site_name, "
        "arg_max(latitude, timestamp) AS latitude, arg_max(longitude, timestamp) AS longitude, "
        "max(installation_date) AS installation_date, "
        "min(timestamp) AS first_seen, max(timestamp) AS last_seen, count(*) AS hours "
        f"FROM {_COUNTS} GROUP BY counter_id ORDER BY counter_id"
    )
    with _connect() as con:
        frame = con.execute(sql, [_glob(settings)]).df()
    for column in ("first_seen", "last_seen"):
        frame[column] = to_paris(frame[column], naive="utc")
    return frame[columns]


def summary(settings: Settings | None = None) -> dict:
    """Counters, period and rows of the store (for the CLI, the demo and the UI)."""
    settings = settings or get_settings()
    table = counters(settings)
    if table.empty:
        return {"rows": 0, "counters": 0, "first": None, "last": None, "months": 0}
    months = sorted(p.parent.name.split("=", 1)[1] for p in settings.counts_dir.glob("month=*/*.parquet"))
    return {
        "rows": int(table["hours"].sum()),
        "counters": len(table),
        "first": str(table["first_seen"].min()),
        "last": str(table["last_seen"].max()),
        "months": len(months),
    }
