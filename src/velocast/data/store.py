"""The counts store: one interface, two backends chosen by ``VELOCAST_STORE_URI``.

- unset (default): Parquet files by month under ``VELOCAST_HOME/store/counts``, writers serialised
  by a lock file (:mod:`velocast.data.store_parquet`): one host, or a shared ``VELOCAST_HOME``;
- ``delta:<folder or s3://bucket/prefix>``: a Delta Lake table partitioned by month, upserts as
  one transactional MERGE, readers on a consistent snapshot, no lock files
  (:mod:`velocast.data.store_delta`): writers on several hosts.

Every caller uses the functions of this module (``upsert_counts``, ``query_counts``,
``recent_counts``, ``latest_timestamp``, ``counters``, ``summary``, ``version``…); both backends are
queried with DuckDB (over the Parquet files, or over the Delta table's Arrow dataset). Re-ingesting
a file adds nothing; a newer overlapping file updates the counts it carries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data.schema import CANONICAL_COLUMNS, empty_counts, paris_midnight, to_paris
from velocast.data.store_common import UpsertResult, normalise

log = logging.getLogger(__name__)

__all__ = ["UpsertResult", "backend", "counters", "has_counts", "last_days", "latest_timestamp",
           "paris_timestamp", "query_counts", "recent_counts", "summary", "upsert_counts", "version"]


class CountsBackend(Protocol):
    """What a counts backend provides (see the module docstring)."""

    kind: str
    location: str

    def has_counts(self) -> bool: ...
    def months(self) -> list[str]: ...
    def version(self) -> int: ...
    def relation(self, con: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager[tuple[str, list[Any]]]: ...
    def month_key(self, month: str) -> Any: ...
    def read_month(self, month: str, key: Any) -> pd.DataFrame: ...
    def upsert(self, frame: pd.DataFrame) -> UpsertResult: ...


_delta_backends: dict[tuple[str, float], CountsBackend] = {}
_parquet_backends: dict[int, tuple[Settings, CountsBackend]] = {}
_backends_lock = threading.Lock()


def backend(settings: Settings | None = None) -> CountsBackend:
    """The backend of ``settings.store_uri`` (a Delta table is opened once per process and location)."""
    settings = settings or get_settings()
    uri = (settings.store_uri or "").strip()
    if not uri:  # one per Settings object (the serving path asks for it several times per request)
        found = _parquet_backends.get(id(settings))
        if found is not None and found[0] is settings:
            return found[1]
        from velocast.data.store_parquet import ParquetCounts

        made = ParquetCounts(settings)
        with _backends_lock:
            if len(_parquet_backends) >= 64:
                _parquet_backends.clear()
            _parquet_backends[id(settings)] = (settings, made)  # the settings held: their id is not reused
        return made
    if not uri.startswith("delta:"):
        raise ValueError(f"VELOCAST_STORE_URI={uri!r}: expected nothing (Parquet under VELOCAST_HOME) or "
                         "delta:<folder or s3://bucket/prefix>")
    from velocast.data.store_delta import DeltaCounts, location_of

    key = (location_of(uri), settings.dependency_timeout_seconds)
    with _backends_lock:
        found = _delta_backends.get(key)
        if found is None:
            found = _delta_backends[key] = DeltaCounts(settings, key[0])
        return found


def has_counts(settings: Settings | None = None) -> bool:
    return backend(settings).has_counts()


def version(settings: Settings | None = None) -> int:
    """A number that changes whenever the stored counts change (cheap: no data is read).

    Parquet: the latest modification time (ns) of a month file; Delta: the table version (-1: no
    table). Compare two values for equality only (it tells "changed since", not "how much").
    """
    return backend(settings).version()


def upsert_counts(frame: pd.DataFrame, settings: Settings | None = None) -> UpsertResult:
    """Insert new counter-hours and update changed ones; identical rows are left as they are."""
    result = backend(settings).upsert(frame[CANONICAL_COLUMNS])
    log.info("store upsert: %d added, %d updated, %d unchanged", result.added, result.updated, result.unchanged)
    return result


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
    store = backend(settings)
    with _connect() as con, store.relation(con) as (source, source_params):
        sql = (f"SELECT {', '.join(CANONICAL_COLUMNS)} FROM {source} "  # nosec B608
               f"WHERE {' AND '.join(where)} ORDER BY timestamp, counter_id")
        frame = con.execute(sql, [*source_params, *params]).df()
    return normalise(frame)


# A short span (a served request's history) is read from whole months kept in memory: DuckDB's scan
# of every partition costs ~15 ms per call, a cached month is filtered in about 1 ms. A month is read
# again as soon as its key changes (Parquet: the file's inode, mtime and size, upserts replace files
# atomically; Delta: the month's data files in the current table version).
_CACHED_MONTHS = 4  # at most this many months per query and in memory
_month_cache: OrderedDict[tuple[str, str], tuple[Any, pd.DataFrame, dict[str, np.ndarray]]] = OrderedDict()
_month_cache_lock = threading.Lock()


def _cached_month(store: CountsBackend, month: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]] | None:
    """A month's rows (sorted by time and counter) and the positions of each counter."""
    key = store.month_key(month)
    if key is None:
        return None
    where = (f"{store.kind}:{store.location}", month)
    with _month_cache_lock:
        hit = _month_cache.get(where)
        if hit is not None and hit[0] == key:
            _month_cache.move_to_end(where)
            return hit[1], hit[2]
    frame = store.read_month(month, key)
    positions = {str(k): v for k, v in frame.groupby("counter_id", sort=False).indices.items()}
    with _month_cache_lock:
        _month_cache[where] = (key, frame, positions)
        _month_cache.move_to_end(where)
        while len(_month_cache) > 2 * _CACHED_MONTHS:
            _month_cache.popitem(last=False)
    return frame, positions


def recent_counts(start: pd.Timestamp | str, end: pd.Timestamp | str, counter_ids: list[str] | None = None,
                  settings: Settings | None = None) -> pd.DataFrame:
    """``query_counts`` for a span of a few months, served from months cached in memory."""
    settings = settings or get_settings()
    first, last = paris_timestamp(start), paris_timestamp(end)
    months = pd.period_range(first.tz_localize(None), (last - pd.Timedelta(1, "ns")).tz_localize(None), freq="M")
    if last <= first or len(months) > _CACHED_MONTHS:
        return query_counts(start, end, counter_ids, settings)
    store = backend(settings)
    picked = []
    for month in months:
        cached = _cached_month(store, str(month))
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
    # the relation is a constant of the backend; the start is a bound parameter
    sql = f"SELECT counter_id, timestamp, bike_count FROM {{counts}} {where}"  # nosec B608
    store = backend(settings)
    with _connect() as con, store.relation(con) as (source, relation_params):
        frame = con.execute(sql.format(counts=source), [*relation_params, *params]).df()
    frame["counter_id"] = frame["counter_id"].astype(str)
    frame["timestamp"] = to_paris(frame["timestamp"], naive="utc")
    frame["bike_count"] = frame["bike_count"].astype(float)
    return frame


def paris_timestamp(value: pd.Timestamp | str) -> pd.Timestamp:
    """``value`` in Europe/Paris; a date or time without offset is read as Paris time."""
    return to_paris(value, naive="paris")


def _one_query(sql: str, settings: Settings | None) -> pd.DataFrame:
    """``sql`` with ``{counts}`` standing for the store's relation, on one snapshot of the store."""
    store = backend(settings)
    with _connect() as con, store.relation(con) as (source, params):
        return con.execute(sql.format(counts=source), params).df()


def latest_timestamp(settings: Settings | None = None) -> pd.Timestamp | None:
    if not has_counts(settings):
        return None
    value = _one_query("SELECT max(timestamp) AS latest FROM {counts}", settings)["latest"].iloc[0]
    return None if pd.isna(value) else pd.Timestamp(value).tz_convert(PARIS_TZ)


def last_days(days: int, settings: Settings | None = None) -> pd.DataFrame:
    """The last ``days`` whole Paris days of counts: ending with the latest day in the store when its
    23:00 is stored, else with the day before (a day still being counted, such as the 2 hours of
    Paris' 10 August that end the real file's UTC month, is not a day of the window), unless the store
    holds nothing earlier."""
    settings = settings or get_settings()
    latest = latest_timestamp(settings)
    if latest is None:
        return empty_counts()
    end = 1 if latest.hour == 23 else 0
    rows = query_counts(paris_midnight(latest, end - days), paris_midnight(latest, end), settings=settings)
    if rows.empty and end == 0:  # nothing but the day being counted
        rows = query_counts(paris_midnight(latest, 1 - days), paris_midnight(latest, 1), settings=settings)
    return rows


def counters(settings: Settings | None = None) -> pd.DataFrame:
    """One row per counter: names, site, location, first/last seen and number of hours stored."""
    columns = ["counter_id", "counter_name", "site_id", "site_name", "latitude", "longitude",
               "installation_date", "first_seen", "last_seen", "hours"]
    if not has_counts(settings):
        return pd.DataFrame(columns=columns)
    # the relation is a constant of the backend; there is no value in this query
    frame = _one_query(
        "SELECT counter_id, arg_max(counter_name, timestamp) AS counter_name, "  # nosec B608
        "arg_max(site_id, timestamp) AS site_id, arg_max(site_name, timestamp) AS site_name, "
        "arg_max(latitude, timestamp) AS latitude, arg_max(longitude, timestamp) AS longitude, "
        "max(installation_date) AS installation_date, "
        "min(timestamp) AS first_seen, max(timestamp) AS last_seen, count(*) AS hours "
        "FROM {counts} GROUP BY counter_id ORDER BY counter_id", settings)
    for column in ("first_seen", "last_seen"):
        frame[column] = to_paris(frame[column], naive="utc")
    frame["installation_date"] = frame["installation_date"].astype("datetime64[ns]")
    return frame[columns]


def summary(settings: Settings | None = None) -> dict:
    """Counters, period and rows of the store (for the CLI, the demo and the UI)."""
    store = backend(settings)
    table = counters(settings)
    if table.empty:
        return {"rows": 0, "counters": 0, "first": None, "last": None, "months": 0, "backend": store.kind}
    return {
        "rows": int(table["hours"].sum()),
        "counters": len(table),
        "first": str(table["first_seen"].min()),
        "last": str(table["last_seen"].max()),
        "months": len(store.months()),
        "backend": store.kind,
    }
