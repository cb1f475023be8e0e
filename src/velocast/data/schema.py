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


def paris_midnight(value: pd.Timestamp | str, days: int = 0) -> pd.Timestamp:
    """00:00 Europe/Paris of ``value``'s Paris day, moved by ``days`` calendar days.

    Calendar days, not 24-hour steps: the day after 2021-10-31 00:00 is 2021-11-01 00:00, 25 hours
    later. An aware ``value`` is converted to Paris time first; a naive one is Paris wall-clock time.
    """
    stamp = pd.Timestamp(value)
    local = stamp.tz_convert(PARIS_TZ).tz_localize(None) if stamp.tzinfo is not None else stamp
    return (local.normalize() + pd.Timedelta(days=days)).tz_localize(PARIS_TZ)


def to_paris(values: pd.Series) -> pd.Series:
    """Convert a timezone-aware series to Europe/Paris (naive input is taken as UTC)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):  # fast path: already aware
        return values.dt.tz_convert(PARIS_TZ).astype(pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ))
    values = pd.to_datetime(values)
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    return values.dt.tz_convert(PARIS_TZ).astype(pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ))
