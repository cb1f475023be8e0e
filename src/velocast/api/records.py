"""Posted records -> canonical rows, with exactly the validation of ``velocast.data.ingest``.

Each record is renamed to the canonical fields with the ingest's own maps (``TIDY_COLUMNS``,
``OPENDATA_COLUMNS``), then the records are validated by ``ingest.validate`` in groups that share
how a naive timestamp is read (``timestamp``: Europe/Paris; ``date`` and the open-data
``Date et heure de comptage``: UTC, as the ingest reads those files) and how coordinates are
written. Every rejected record comes back with its index in the request and the field under the
name the client used.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast.api.schemas import PredictRecord
from velocast.config import PARIS_TZ, Settings
from velocast.data import store
from velocast.data.ingest import (
    OFFSET_RE,
    OPENDATA_COLUMNS,
    TIDY_COLUMNS,
    RawTable,
    ambiguous_local_times,
    parse_timestamps,
    validate,
)
from velocast.data.schema import (
    IDF_LATITUDE,
    IDF_LONGITUDE,
    REASON_BAD_COORDINATES,
    REASON_COUNT_NOT_NUMBER,
)
from velocast.data.weather import WEATHER_COLUMNS
from velocast.lifecycle.serving.fast_path import ServedRows

# timestamps a counter-hour may plausibly have (the Paris counters started in 2009)
EARLIEST = pd.Timestamp("2000-01-01", tz=PARIS_TZ)
LATEST = pd.Timestamp("2100-01-01", tz=PARIS_TZ)
OUT_OF_RANGE = "timestamp out of range"
_EARLIEST_S, _LATEST_S = EARLIEST.timestamp(), LATEST.timestamp()

_CANONICAL_OF = {**TIDY_COLUMNS, **OPENDATA_COLUMNS}
_NUMERIC = {"bike_count", "latitude", "longitude", *WEATHER_COLUMNS}
_FIELD_IN_DETAIL = re.compile(r"^([A-Za-z_]+)")
_HAS_OFFSET = re.compile(OFFSET_RE)  # how the ingest tells an aware timestamp from a naive one


class RecordsRejected(Exception):
    """Some records (or the request) cannot be used; ``errors`` are ``ErrorItem`` dicts."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} problem(s) in the request")
        self.errors = errors


def error(message: str, field: str | None = None, index: int | None = None, reason: str | None = None,
          loc: list[str | int] | None = None) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message, "reason": reason,
            "loc": loc if loc is not None else [x for x in (index, field) if x is not None]}


@dataclass
class RecordRows:
    """Accepted rows and, for each posted record, the row that carries it.

    ``served``: what ``predict_rows`` takes; arrays (``ServedRows``) for plain serving records, else
    the canonical rows of the full validation. ``rows``: the canonical rows either way.
    """

    served: ServedRows | pd.DataFrame
    row_of: np.ndarray  # row position in ``served`` for each record
    duplicate_of: dict[int, int]  # record index -> earlier record with the same counter-hour
    warnings: dict[int, list[str]] = field(default_factory=dict)  # record index -> warnings about it

    @property
    def rows(self) -> pd.DataFrame:
        return self.served if isinstance(self.served, pd.DataFrame) else self.served.frame()


class KnownCounters:
    """``store.counters`` (names and coordinates of known counters), re-read at most every ``ttl`` s."""

    def __init__(self, settings: Settings, ttl: float = 30.0):
        self.settings, self.ttl = settings, ttl
        self._value: pd.DataFrame | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def get(self) -> pd.DataFrame:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl:
                self._value = store.counters(self.settings)
                self._at = time.monotonic()
            return self._value


def _canonical(record: PredictRecord) -> tuple[dict[str, Any], dict[str, str]]:
    """Values under canonical names, and canonical name -> the client's name."""
    values, names = {}, {}
    for name, value in record.given().items():
        canonical = _CANONICAL_OF.get(name, name)
        values[canonical] = value
        names[canonical] = name
    return values, names


def _group_key(names: dict[str, str]) -> tuple[str, bool]:
    naive_tz = PARIS_TZ if names["timestamp"] == "timestamp" else "UTC"
    return naive_tz, "coordinates" in names


def _frame(values: list[dict[str, Any]]) -> pd.DataFrame:
    columns = sorted({c for v in values for c in v})
    data = {}
    for column in columns:
        column_values = [v.get(column) for v in values]
        data[column] = pd.Series(column_values, dtype=float) if column in _NUMERIC else \
            pd.Series(column_values, dtype=object)
    return pd.DataFrame(data)


def _rejection(index: int, reason: str, detail: str, record: tuple[dict[str, Any], dict[str, str]],
               loc: str) -> dict[str, Any]:
    """An ingest rejection, under the field name the client used."""
    values, names = record
    found = _FIELD_IN_DETAIL.match(detail)
    column = found.group(1) if found else None
    field = names.get(column, column) if column else None
    if column and field != column:
        detail = field + detail[len(column):]
    if reason == REASON_COUNT_NOT_NUMBER and "bike_count" not in names:
        detail = "bike_count is required here (labelled rows): give bike_count or 'Comptage horaire'"
    if reason == REASON_BAD_COORDINATES and not {"latitude", "longitude", "coordinates"} & set(names):
        field = "latitude"
        detail = (f"counter {values.get('counter_id')!r} is not in the store, so its location is needed: give "
                  "latitude and longitude (or 'Coordonnées géographiques')")
    return error(f"{reason}: {detail}", field, index, reason, [loc, index, field] if field else [loc, index])


_FAST_FIELDS = frozenset({"counter_id", "timestamp", "latitude", "longitude", *WEATHER_COLUMNS})


def _fast_rows(canonical: list[tuple[dict[str, Any], dict[str, str]]],
               known_counters: pd.DataFrame | None) -> RecordRows | None:
    """The rows ``to_rows`` would make, as ``ServedRows`` built without pandas; None unless every record is plain.

    Plain: a counter the store knows, an ISO ``timestamp`` with its UTC offset on a whole hour in
    range, coordinates (if given) inside Île-de-France, optional weather, no count. That is what a
    serving client sends, and validating it the ingest's way costs ~25 ms per request; anything else
    takes the full validation, which names every problem. A counter-hour given again is carried by
    the row of its first record, as the full validation does.
    """
    if known_counters is None or known_counters.empty:
        return None
    known = _indexed(known_counters)
    located = known.located
    hours: list[int] = []
    first: dict[tuple[str, int], int] = {}  # (counter, UTC hour) -> its first record
    row_of = np.empty(len(canonical), np.int64)
    duplicate_of: dict[int, int] = {}
    for index, (values, names) in enumerate(canonical):
        if not names.keys() <= _FAST_FIELDS or names.get("timestamp") != "timestamp":
            return None
        counter, text = values.get("counter_id"), values.get("timestamp")
        if not isinstance(counter, str) or counter not in located or not isinstance(text, str) \
                or not _HAS_OFFSET.search(text):
            return None
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            return None
        if stamp.tzinfo is None or stamp.minute or stamp.second or stamp.microsecond:
            return None
        lat, lon = values.get("latitude"), values.get("longitude")
        if (lat is None) != (lon is None) or (lat is not None and not (
                IDF_LATITUDE[0] <= lat <= IDF_LATITUDE[1] and IDF_LONGITUDE[0] <= lon <= IDF_LONGITUDE[1])):
            return None
        epoch = stamp.timestamp()
        # Paris is a whole number of hours from UTC (2000-2100): a whole Paris hour is a whole UTC hour
        if epoch % 3600 or not _EARLIEST_S <= epoch < _LATEST_S:
            return None  # not a whole Paris hour (an offset such as +05:30), or out of range
        hour = int(epoch) // 3600
        earlier = first.get((counter, hour))
        if earlier is not None:
            if canonical[earlier][0] != values:
                return None  # the same counter-hour with other values: the full validation's choice
            row_of[index], duplicate_of[index] = row_of[earlier], earlier
            continue
        first[(counter, hour)] = index
        row_of[index] = len(hours)
        hours.append(hour)
    kept = [canonical[i] for i in first.values()]
    ids = [values["counter_id"] for values, _ in kept]
    at = np.fromiter((known.position[i] for i in ids), np.int64, len(ids))
    given_lat, given_lon = _floats(kept, "latitude"), _floats(kept, "longitude")
    name = known.column["counter_name"][at]
    name = np.where(pd.isna(name), np.asarray(ids, object), name)
    site_id = known.column["site_id"][at]
    site_id = np.where(pd.isna(site_id), np.asarray([i.split("-")[0] for i in ids], object), site_id)
    site_name = known.column["site_name"][at]
    site_name = np.where(pd.isna(site_name), name, site_name)
    weather = {column: _floats(kept, column) for column in WEATHER_COLUMNS
               if any(column in names for _, names in canonical)}
    served = ServedRows(np.asarray(ids, object), np.asarray(hours, np.int64),
                        np.where(np.isnan(given_lat), known.column["latitude"][at], given_lat),
                        np.where(np.isnan(given_lon), known.column["longitude"][at], given_lon), weather,
                        {"counter_name": name, "site_id": site_id, "site_name": site_name})
    return RecordRows(served, row_of, duplicate_of)


@dataclass(frozen=True)
class _CounterTable:
    """Known counters as arrays: ``position`` of each id, its ``column`` values, the ids with a location."""

    position: dict[str, int]
    column: dict[str, np.ndarray]
    located: frozenset[str]


_indexed_cache: list[tuple[pd.DataFrame, _CounterTable]] = []


def _indexed(known_counters: pd.DataFrame) -> _CounterTable:
    """``known_counters`` as a ``_CounterTable``; kept while ``KnownCounters`` serves the same frame."""
    for frame, table in _indexed_cache:
        if frame is known_counters:
            return table
    known = known_counters.drop_duplicates("counter_id")
    ids = known["counter_id"].astype(str).tolist()
    column = {name: known[name].to_numpy(object) for name in ("counter_name", "site_id", "site_name")}
    column.update({name: pd.to_numeric(known[name], errors="coerce").to_numpy(float) for name in ("latitude", "longitude")})
    located = frozenset(i for i, lat, lon in zip(ids, column["latitude"], column["longitude"])
                        if not (np.isnan(lat) or np.isnan(lon)))
    table = _CounterTable({i: k for k, i in enumerate(ids)}, column, located)
    _indexed_cache[:] = [(known_counters, table)]
    return table


def _floats(canonical: list[tuple[dict[str, Any], dict[str, str]]], name: str) -> np.ndarray:
    """The ``name`` value of each record as a float (NaN where it was not given)."""
    return np.array([np.nan if values.get(name) is None else values[name] for values, _ in canonical], float)


def to_rows(records: list[PredictRecord], settings: Settings, known_counters: pd.DataFrame | None,
            require_count: bool = False, loc: str = "records") -> RecordRows:
    """Validate posted records like an ingested file; raise ``RecordsRejected`` listing every bad one."""
    if not records:
        raise RecordsRejected([error(f"{loc} is empty: give at least one record", loc, loc=[loc])])
    canonical = [_canonical(r) for r in records]
    if not require_count:
        fast = _fast_rows(canonical, known_counters)
        if fast is not None:
            return fast
    return _validated_rows(records, canonical, known_counters, require_count, loc)


def _validated_rows(records: list[PredictRecord], canonical: list[tuple[dict[str, Any], dict[str, str]]],
                    known_counters: pd.DataFrame | None, require_count: bool, loc: str) -> RecordRows:
    """``to_rows`` through ``ingest.validate``: every record checked and every problem named."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, (_, names) in enumerate(canonical):
        groups.setdefault(_group_key(names), []).append(i)

    errors: list[dict[str, Any]] = []
    parts: list[pd.DataFrame] = []
    keys: dict[int, tuple[str, pd.Timestamp]] = {}
    warnings: dict[int, list[str]] = {}
    for (naive_tz, _), members in groups.items():
        frame = _frame([canonical[i][0] for i in members])
        if require_count and "bike_count" not in frame:
            frame["bike_count"] = np.nan  # each record is then rejected for its missing count
        raw = RawTable(frame, "api", Path("<request body>"), {c: c for c in frame.columns}, naive_timezone=naive_tz)
        # labelled rows are stored (one count per counter-hour); rows to predict are each answered
        checked = validate(raw, require_count=require_count, known_counters=known_counters,
                           deduplicate=require_count)
        rejected = set()
        for row in checked.rejected.itertuples(index=False):
            index = members[int(row.source_row) - 1]
            rejected.add(index)
            errors.append(_rejection(index, str(row.reason), str(row.detail), canonical[index], loc))
        accepted = checked.accepted
        positions = np.asarray(checked.accepted_positions, dtype=int)
        for column in WEATHER_COLUMNS:
            if column in frame:
                accepted[column] = frame[column].to_numpy(float)[positions]
        accepted["_record"] = np.asarray(members)[positions]
        outside = ((accepted["timestamp"] < EARLIEST) | (accepted["timestamp"] >= LATEST)).to_numpy()
        for position in positions[outside]:
            index = members[position]
            field = canonical[index][1]["timestamp"]
            rejected.add(index)
            errors.append(error(f"{OUT_OF_RANGE}: {field}={frame['timestamp'].iloc[position]!r}: expected an hour "
                                f"between {EARLIEST.date()} and {(LATEST - pd.Timedelta(days=1)).date()}",
                                field, index, OUT_OF_RANGE, [loc, index, field]))
        parts.append(accepted[~outside])
        # the counter-hour of every record, to find the row of identical duplicates
        counter_ids = frame["counter_id"].astype("string").str.strip()
        stamps, _ = parse_timestamps(frame["timestamp"], counter_ids, naive_tz)
        ambiguous = ambiguous_local_times(frame["timestamp"], naive_tz)
        for position, index in enumerate(members):
            if index not in rejected:
                keys[index] = (str(counter_ids.iloc[position]), stamps.iloc[position])
                if ambiguous[position]:
                    field_name = canonical[index][1]["timestamp"]
                    warnings.setdefault(index, []).append(
                        f"{field_name}={frame['timestamp'].iloc[position]!r} occurs twice in Paris (the autumn clock "
                        f"change) and has no offset: read as {stamps.iloc[position].isoformat()} (summer time); "
                        "give the offset (+02:00 or +01:00) to choose")
    if errors:
        raise RecordsRejected(sorted(errors, key=lambda e: (e["index"], str(e["field"]))))

    rows = pd.concat(parts, ignore_index=True).sort_values("_record", kind="stable").reset_index(drop=True)
    row_by_key: dict[tuple[str, pd.Timestamp], int] = {}
    for position, (counter, stamp) in enumerate(zip(rows["counter_id"].astype(str), rows["timestamp"])):
        row_by_key.setdefault((counter, stamp), position)
    first_record = rows["_record"].to_numpy()
    own_row = {int(record): position for position, record in enumerate(first_record)}
    row_of = np.empty(len(records), dtype=int)
    duplicate_of: dict[int, int] = {}
    for index in range(len(records)):
        position = row_by_key[keys[index]]
        row_of[index] = own_row.get(index, position)  # a repeated counter-hour has its own row unless deduplicated
        if first_record[position] != index:
            duplicate_of[index] = int(first_record[position])
    return RecordRows(rows.drop(columns="_record"), row_of, duplicate_of, warnings)
