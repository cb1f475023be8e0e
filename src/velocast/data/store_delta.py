"""The counts as a Delta Lake table (``VELOCAST_STORE_URI=delta:<path or s3://bucket/prefix>``).

Made for writers on several hosts and for object storage: no lock file anywhere.

- **Layout.** One Delta table partitioned by ``month`` (the Europe/Paris month, ``YYYY-MM``);
  ``timestamp`` is stored in UTC (microseconds), ``installation_date`` without a zone.
- **Writes.** An upsert is one MERGE on (month, counter_id, timestamp): new counter-hours are
  inserted and stored hours whose values differ are updated, in one transaction (one new table
  version); identical rows are not touched. Two writers that overlap conflict at commit time:
  the loser's commit is refused (Delta's optimistic concurrency; on S3 the log entry is written
  with a conditional put, see :func:`velocast.objectstore.delta_storage_options`), it re-reads the
  table and merges again, so its report (added / updated / unchanged) is relative to the table it
  actually changed and no row is ever stored twice.
- **Reads.** A query loads one table version and reads its files through Arrow (DuckDB over the
  table's Arrow dataset): a consistent snapshot, whatever commits meanwhile. A writer killed
  mid-commit leaves only unreferenced data files: readers keep seeing the previous version.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from velocast.config import Settings, redact
from velocast.data.schema import CANONICAL_COLUMNS
from velocast.data.store_common import COMPARED, UpsertResult, month_of, normalise
from velocast.errors import DependencyUnavailable
from velocast.objectstore import delta_storage_options, is_s3

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("counter_id", pa.string()), ("counter_name", pa.string()), ("site_id", pa.string()),
    ("site_name", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")), ("bike_count", pa.float64()),
    ("latitude", pa.float64()), ("longitude", pa.float64()), ("installation_date", pa.timestamp("us")),
    ("month", pa.string()),
])
PARTITION = "month"
MERGE_ATTEMPTS = 30  # conflicting commits of other writers before an upsert gives up
_ON = "t.month = s.month AND t.counter_id = s.counter_id AND t.timestamp = s.timestamp"
_CHANGED = " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in COMPARED)


def location_of(store_uri: str) -> str:
    """The table location of ``delta:<location>`` (a local path is made absolute)."""
    location = store_uri.split(":", 1)[1].strip()
    if not location:
        raise ValueError("VELOCAST_STORE_URI=delta:<location>: the location is empty "
                         "(expected a folder or s3://bucket/prefix)")
    return location if "://" in location else str(Path(location).expanduser().resolve())


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Canonical rows as the table's Arrow schema (UTC microseconds, the month partition)."""
    out = frame[CANONICAL_COLUMNS].copy()
    out["month"] = month_of(out["timestamp"])
    out["timestamp"] = out["timestamp"].dt.tz_convert("UTC")
    for column in ("counter_id", "counter_name", "site_id", "site_name"):
        out[column] = out[column].astype(str)
    return pa.Table.from_pandas(out, schema=SCHEMA, preserve_index=False)


class DeltaCounts:
    kind = "delta"

    def __init__(self, settings: Settings, location: str):
        self.settings = settings
        self.location = location
        self.options = delta_storage_options(location, settings.dependency_timeout_seconds)
        self._lock = threading.Lock()
        self._table: Any = None
        self._months: tuple[int, dict[str, tuple[str, ...]]] | None = None

    # ------------------------------------------------------------------ the table
    @contextmanager
    def _calls(self) -> Iterator[None]:
        """Failures of the object store as ``DependencyUnavailable``; a missing table stays "absent"."""
        from deltalake.exceptions import CommitFailedError, TableNotFoundError

        try:
            yield
        except (TableNotFoundError, CommitFailedError, DependencyUnavailable):
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            remote = is_s3(self.location) and any(
                word in text for word in ("S3", "s3", "request", "connect", "timed out", "Timeout", "HTTP", "dns"))
            if isinstance(exc, OSError) or remote:
                raise DependencyUnavailable("object store", f"{redact(self.location)}: {text}") from exc
            raise

    def snapshot(self) -> Any | None:
        """The table at its latest version (None: no table yet); kept and brought up to date per call."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        with self._lock, self._calls():
            try:
                if self._table is None:
                    self._table = DeltaTable(self.location, storage_options=self.options or None)
                else:
                    self._table.update_incremental()
            except TableNotFoundError:
                self._table = None
            return self._table

    def _create(self) -> None:
        from deltalake import DeltaTable

        with self._calls():
            try:
                DeltaTable.create(self.location, SCHEMA, mode="ignore", partition_by=[PARTITION],
                                  name="velocast_counts", description="hourly bike counts (velocast)",
                                  storage_options=self.options or None)
            except Exception as exc:  # another writer created it at the same moment
                if self.snapshot() is None:
                    raise
                log.info("the counts table was created by another writer meanwhile (%s)", type(exc).__name__)

    # ------------------------------------------------------------------ reading
    def has_counts(self) -> bool:
        table = self.snapshot()
        return table is not None and bool(self._month_files(table))

    def version(self) -> int:
        table = self.snapshot()
        return -1 if table is None else int(table.version())

    def _month_files(self, table: Any) -> dict[str, tuple[str, ...]]:
        """The data files of each month in ``table``'s version (computed once per version)."""
        version = table.version()
        cached = self._months
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._calls():
            actions = table.get_add_actions(flatten=True)
        actions = pa.table(actions) if not isinstance(actions, pa.Table) else actions
        paths = actions.column("path").to_pylist()
        months = actions.column(f"partition.{PARTITION}").to_pylist()
        files: dict[str, list[str]] = {}
        for path, month in zip(paths, months):
            files.setdefault(str(month), []).append(path)
        out = {m: tuple(sorted(p)) for m, p in files.items()}
        self._months = (version, out)
        return out

    def months(self) -> list[str]:
        table = self.snapshot()
        return [] if table is None else sorted(self._month_files(table))

    @contextmanager
    def relation(self, con: duckdb.DuckDBPyConnection) -> Iterator[tuple[str, list[Any]]]:
        """The canonical columns of one table version, as a DuckDB relation over its Arrow dataset."""
        table = self.snapshot()
        if table is None:
            raise LookupError(f"no counts table at {redact(self.location)}")
        with self._calls():
            dataset = table.to_pyarrow_dataset()
        name = f"counts_{uuid.uuid4().hex}"
        con.register(name, dataset)
        try:
            # constant columns and a relation name made here (a uuid): no outside value in the SQL
            yield f"(SELECT {', '.join(CANONICAL_COLUMNS)} FROM {name})", []  # nosec B608
        finally:
            con.unregister(name)

    def month_key(self, month: str) -> Any:
        table = self.snapshot()
        if table is None:
            return None
        return self._month_files(table).get(month)

    def read_month(self, month: str, key: Any) -> pd.DataFrame:
        table = self.snapshot()
        with self._calls():
            rows = table.to_pyarrow_dataset(partitions=[(PARTITION, "=", month)]).to_table(columns=CANONICAL_COLUMNS)
        frame = normalise(rows.to_pandas())
        return frame.sort_values(["timestamp", "counter_id"], kind="stable", ignore_index=True)

    # ------------------------------------------------------------------ writing
    def upsert(self, frame: pd.DataFrame) -> UpsertResult:
        from deltalake.exceptions import CommitFailedError

        source = to_arrow(frame)
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            table = self.snapshot()
            if table is None:
                self._create()
                table = self.snapshot()
            try:
                with self._calls():
                    metrics = (table.merge(source, _ON, source_alias="s", target_alias="t", streamed_exec=False)
                               .when_matched_update({c: f"s.{c}" for c in COMPARED}, predicate=_CHANGED)
                               .when_not_matched_insert_all()
                               .execute())
            except CommitFailedError as exc:
                if attempt == MERGE_ATTEMPTS:
                    raise RuntimeError(f"{redact(self.location)}: the upsert conflicted with other writers "
                                       f"{attempt} times in a row; try again") from exc
                wait = min(5.0, 0.05 * 2 ** min(attempt, 7)) * (0.5 + random.random())  # nosec B311 (jitter)
                log.info("counts table: commit conflict with another writer (attempt %d), merging again in %.2f s",
                         attempt, wait)
                time.sleep(wait)
                continue
            added = int(metrics.get("num_target_rows_inserted", 0))
            updated = int(metrics.get("num_target_rows_updated", 0))
            return UpsertResult(added, updated, len(frame) - added - updated)
        raise AssertionError("unreachable")
