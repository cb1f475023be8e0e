"""What both counts backends share: the upsert report, the compared columns, canonical dtypes."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from velocast.data.schema import CANONICAL_COLUMNS, KEY_COLUMNS, empty_counts, to_paris

# a stored counter-hour whose other columns differ from an incoming one is "updated"
COMPARED = [c for c in CANONICAL_COLUMNS if c not in KEY_COLUMNS]


@dataclass(frozen=True)
class UpsertResult:
    added: int
    updated: int
    unchanged: int


def month_of(timestamps: pd.Series) -> pd.Series:
    """The Europe/Paris month (``YYYY-MM``) of each timestamp: the partition a row lives in."""
    return timestamps.dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m")


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Bring a frame read back from Parquet/DuckDB/Arrow to the canonical dtypes."""
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
