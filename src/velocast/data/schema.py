"""The canonical row of velocast (one counter-hour) and its validation schema."""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd

from velocast.config import PARIS_TZ

CANONICAL_COLUMNS: list[str] = [
    "counter_id",
    "counter_name",
    "site_id",
    "site_name",
    "timestamp",
    "bike_count",
    "latitude",
    "longitude",
    "installation_date",
]
KEY_COLUMNS: list[str] = ["counter_id", "timestamp"]
TARGET = "bike_count"

# Île-de-France bounding box (WGS84), generous by a few kilometres.
IDF_LATITUDE = (48.10, 49.25)
IDF_LONGITUDE = (1.40, 3.60)

# Reason categories used in quarantine files and ingest summaries.
REASON_MISSING_COUNTER = "missing counter_id"
REASON_COUNT_NOT_NUMBER = "bike_count is not a number"
REASON_COUNT_NEGATIVE = "negative bike_count"
REASON_BAD_TIMESTAMP = "unparseable timestamp"
REASON_NOT_WHOLE_HOUR = "timestamp not on a whole hour"
REASON_DST_GAP = "local time does not exist (DST gap)"
REASON_BAD_COORDINATES = "unparseable or missing coordinates"
REASON_OUTSIDE_IDF = "coordinates outside Île-de-France"
REASON_CONFLICTING_DUPLICATE = "duplicate counter+hour with different counts"


@functools.lru_cache(maxsize=1)
def canonical_schema() -> Any:
    """The pandera schema of a canonical row (built on first use: importing pandera costs ~1 s)."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "counter_id": pa.Column(str, pa.Check.str_length(min_value=1, error=REASON_MISSING_COUNTER)),
            "counter_name": pa.Column(str),
            "site_id": pa.Column(str),
            "site_name": pa.Column(str),
            "timestamp": pa.Column(pd.DatetimeTZDtype(tz=PARIS_TZ)),
            "bike_count": pa.Column(float, pa.Check.ge(0, error=REASON_COUNT_NEGATIVE)),
            "latitude": pa.Column(float, pa.Check.in_range(*IDF_LATITUDE, error=REASON_OUTSIDE_IDF)),
            "longitude": pa.Column(float, pa.Check.in_range(*IDF_LONGITUDE, error=REASON_OUTSIDE_IDF)),
            "installation_date": pa.Column("datetime64[ns]", nullable=True),
        },
        strict=True,
        ordered=False,
    )


def __getattr__(name: str) -> Any:
    if name == "CANONICAL_SCHEMA":  # the schema as a module constant, imported lazily
        return canonical_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def empty_counts() -> pd.DataFrame:
    """An empty frame with the canonical columns and dtypes."""
    return pd.DataFrame(
        {
            "counter_id": pd.Series(dtype=str),
            "counter_name": pd.Series(dtype=str),
            "site_id": pd.Series(dtype=str),
            "site_name": pd.Series(dtype=str),
            "timestamp": pd.Series(dtype=pd.DatetimeTZDtype(tz=PARIS_TZ)),
            "bike_count": pd.Series(dtype=float),
            "latitude": pd.Series(dtype=float),
            "longitude": pd.Series(dtype=float),
            "installation_date": pd.Series(dtype="datetime64[ns]"),
        }
    )


NAIVE_AS = ("utc", "paris")  # what a timestamp without an offset means: UTC, or Paris wall-clock time


def to_paris(values: Any, *, naive: str, counter_ids: pd.Series | None = None) -> Any:
    """Timestamps in Europe/Paris: the one time-zone rule of velocast.

    ``values``: a Series (of datetimes or strings) or one timestamp (``pd.Timestamp``, ``datetime``,
    ISO string). Aware values are converted; ``naive`` says what a value without an offset means:

    - ``"utc"``: UTC (the tidy file's ``date`` column, the store's Parquet);
    - ``"paris"``: Paris wall-clock time (dates typed by a user, uploaded rows without offsets). In
      the autumn fold a naive hour occurs twice: in a Series, the first occurrence of each
      counter's hour (``counter_ids``; without them the whole Series is one counter) is summer
      time; a naive hour that does not exist (the spring gap) or a Series value that cannot be
      read raises ``ValueError`` naming the row. A single ambiguous hour raises too.

    A Series comes back as ``datetime64[ns, Europe/Paris]``; one value as a ``pd.Timestamp``.
    """
    if naive not in NAIVE_AS:
        raise ValueError(f"naive={naive!r}: expected one of {', '.join(NAIVE_AS)}")
    if not isinstance(values, pd.Series):
        stamp = pd.Timestamp(values)
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC" if naive == "utc" else PARIS_TZ)
        return stamp.tz_convert(PARIS_TZ)
    paris_ns = pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ)
    if isinstance(values.dtype, pd.DatetimeTZDtype):  # fast path: already aware
        return values.dt.tz_convert(PARIS_TZ).astype(paris_ns)
    if naive == "utc":
        values = pd.to_datetime(values)
        if values.dt.tz is None:
            values = values.dt.tz_localize("UTC")
        return values.dt.tz_convert(PARIS_TZ).astype(paris_ns)
    from velocast.data.ingest import parse_timestamps  # ingest imports this module

    parsed, reason = parse_timestamps(values, counter_ids)
    bad = reason.notna() & (reason != REASON_NOT_WHOLE_HOUR)
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"row {first}: timestamp={values.iloc[first]!r}: {reason.iloc[first]}")
    return parsed.astype(paris_ns)


def paris_midnight(value: pd.Timestamp | str, days: int = 0) -> pd.Timestamp:
    """00:00 Europe/Paris of ``value``'s Paris day, moved by ``days`` calendar days.

    Calendar days, not 24-hour steps: the day after 2021-10-31 00:00 is 2021-11-01 00:00, 25 hours
    later. An aware ``value`` is converted to Paris time first; a naive one is Paris wall-clock time.
    """
    stamp = pd.Timestamp(value)  # naive: already the wall-clock time wanted (even in the autumn fold)
    local = to_paris(stamp, naive="utc").tz_localize(None) if stamp.tzinfo is not None else stamp
    return (local.normalize() + pd.Timedelta(days=days)).tz_localize(PARIS_TZ)
