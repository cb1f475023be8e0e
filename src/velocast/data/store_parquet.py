"""The embedded counts backend: Parquet files by month under ``VELOCAST_HOME/store/counts``.

Layout::

    counts/month=2021-03/counts.parquet   one file per month (Europe/Paris month)

An upsert rewrites only the months it touches, each atomically (temporary file + rename) and
under a lock file in ``VELOCAST_HOME/locks``: every writer must share that folder (one host, or a
shared filesystem with working locks). For writers on several hosts use the Delta backend.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from velocast.config import Settings
from velocast.data.schema import CANONICAL_COLUMNS, KEY_COLUMNS
from velocast.data.store_common import COMPARED, UpsertResult, month_of, normalise
from velocast.fileio import atomic_write_bytes, atomic_write_parquet, file_lock

log = logging.getLogger(__name__)

# Parquet holds nanosecond timestamps; DuckDB compares microsecond TIMESTAMPTZ values.
_COUNTS = "(SELECT * REPLACE (CAST(timestamp AS TIMESTAMPTZ) AS timestamp) FROM read_parquet(?))"


class ParquetCounts:
    kind = "parquet"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.counts_dir
        self.location = str(self.root)
        self._version_file = str(self._version_path())

    def _month_path(self, month: str) -> Path:
        return self.root / f"month={month}" / "counts.parquet"

    def _files(self) -> list[Path]:
        return sorted(self.root.glob("month=*/*.parquet"))

    def has_counts(self) -> bool:
        return any(self.root.glob("month=*/*.parquet"))

    def months(self) -> list[str]:
        return sorted(p.parent.name.split("=", 1)[1] for p in self._files())

    def version(self) -> int:
        """Changes whenever counts are written, for one ``stat``: ``upsert`` rewrites ``counts/VERSION``
        after every write (in-memory copies of the store, e.g. the API's history, compare it per
        request). A store written before that file existed: the latest modification of a month file."""
        try:
            return os.stat(self._version_file).st_mtime_ns
        except FileNotFoundError:
            return max((p.stat().st_mtime_ns for p in self._files()), default=0)

    def _version_path(self) -> Path:
        return self.root / "VERSION"

    @contextmanager
    def relation(self, con: duckdb.DuckDBPyConnection) -> Iterator[tuple[str, list[Any]]]:
        """A SQL relation of the canonical columns (``timestamp`` as TIMESTAMPTZ) and its parameters."""
        yield _COUNTS, [str(self.root / "month=*" / "*.parquet")]

    def month_key(self, month: str) -> Any:
        """What changes when the month's rows change (None: no such month)."""
        try:
            stat = self._month_path(month).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def read_month(self, month: str, key: Any) -> pd.DataFrame:
        return normalise(pd.read_parquet(self._month_path(month)))

    def upsert(self, frame: pd.DataFrame) -> UpsertResult:
        added = updated = unchanged = 0
        written = False
        with file_lock(self.settings.locks_dir / "store.lock"):
            for month, part in frame.groupby(month_of(frame["timestamp"]), sort=True):
                path = self._month_path(str(month))
                if path.exists():
                    old = normalise(pd.read_parquet(path))
                    merged = part.merge(old, on=KEY_COLUMNS, how="left", suffixes=("", "_old"), indicator=True)
                    is_new = merged["_merge"].eq("left_only").to_numpy()
                    same = pd.Series(True, index=merged.index)
                    for column in COMPARED:
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
                table = table[CANONICAL_COLUMNS].sort_values(["timestamp", "counter_id"]).reset_index(drop=True)
                atomic_write_parquet(table, path)
                written = True
            if written:  # readers holding the store in memory (the API's history) see the change
                atomic_write_bytes(self._version_path(), f"{time.time_ns()} {os.getpid()}\n".encode())
        return UpsertResult(added, updated, unchanged)
