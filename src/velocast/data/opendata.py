"""Incremental fetch of the hourly counts from the Paris open-data portal (Opendatasoft Explore API v2.1).

One request to the dataset's ``exports`` endpoint, which has no row limit (the ``records``
endpoint serves 100 rows a page and 10,000 at most)::

    GET {VELOCAST_OPENDATA_URL}/catalog/datasets/{dataset}/exports/{csv|parquet}
        ?where=date >= date'<since>' [AND date < date'<until>']
        &select=id_compteur,nom_compteur,id,name,sum_counts,date,installation_date,coordinates
        &timezone=Europe/Paris&limit=-1[&delimiter=;&with_bom=false]

``since`` defaults to the store's last count per counter — the earliest last count among the
counters heard from in the week before the store's latest one (a counter silent for longer is
taken as removed; ``--since`` back-fills it) — minus ``VELOCAST_OPENDATA_OVERLAP_HOURS`` (48 h), so
late corrections of recent hours are picked up. An empty store fetches everything the portal holds.

Nothing partial is ever stored: the body is downloaded to a temporary file (retried on 429 with
its Retry-After, 5xx, timeouts and cut connections, see ``velocast.data.http``), checked to parse
completely (every CSV row complete, the Parquet footer present), and only then goes through the
same validation, quarantine and store upsert as ``velocast data ingest`` (format ``api``).
Re-fetching adds nothing; a corrected count of a stored hour is reported as ``updated``.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from velocast.config import Settings, get_settings, redact
from velocast.data.http import FetchError, Progress, RetryPolicy, fetch
from velocast.data.ingest import (
    API_COLUMNS,
    API_REQUIRED,
    IngestError,
    IngestReport,
    ingest_table,
    read_table,
)

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("csv", "parquet")
SELECT = list(API_COLUMNS)  # the fields velocast maps; photo and url fields are not downloaded
SILENT_COUNTER_DAYS = 7  # a counter not heard from for longer before the latest count no longer sets `since`


class OpenDataError(RuntimeError):
    """The portal could not be read, or sent an incomplete or unexpected export: one line."""


@dataclass
class FetchReport(IngestReport):
    """An ``IngestReport`` of the fetched rows, plus what was asked and how it went."""

    url: str = ""
    where: str = ""
    since: str | None = None
    until: str | None = None
    bytes_downloaded: int = 0
    attempts: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        attempts = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        head = [f"portal: {self.url}", f"where: {self.where}",
                f"downloaded {self.bytes_downloaded:,} bytes in {self.seconds:.1f} s ({attempts})"]
        return head + super().lines()[1:]


def export_url(settings: Settings, fmt: str = "csv") -> str:
    """``{opendata_url}/catalog/datasets/{dataset}/exports/{fmt}`` (a query in the base URL is kept)."""
    parts = urlsplit(settings.opendata_url)
    path = f"{parts.path.rstrip('/')}/catalog/datasets/{settings.opendata_dataset}/exports/{fmt}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _odsql_time(stamp: pd.Timestamp) -> str:
    return f"date'{stamp.tz_convert('UTC').strftime('%Y-%m-%dT%H:%M:%SZ')}'"


def where_clause(since: pd.Timestamp | None, until: pd.Timestamp | None) -> str:
    """The ODSQL filter on ``date``: ``since`` included, ``until`` excluded."""
    parts = []
    if since is not None:
        parts.append(f"date >= {_odsql_time(since)}")
    if until is not None:
        parts.append(f"date < {_odsql_time(until)}")
    return " AND ".join(parts)


def incremental_since(settings: Settings | None = None) -> pd.Timestamp | None:
    """Where an incremental fetch starts: the store's last count per counter minus the overlap."""
    from velocast.data import store

    settings = settings or get_settings()
    table = store.counters(settings)
    if table.empty:
        return None
    last = table["last_seen"]
    active = last[last >= last.max() - pd.Timedelta(days=SILENT_COUNTER_DAYS)]
    return active.min() - pd.Timedelta(hours=settings.opendata_overlap_hours)


def fetch_counts(since: Any = None, until: Any = None, settings: Settings | None = None, fmt: str = "csv",
                 progress: Progress | None = None) -> FetchReport:
    """Fetch the portal's counts with ``since <= date < until`` and ingest them like a file.

    ``since``/``until``: dates or date-times (without offset: Europe/Paris); ``since`` defaults to
    ``incremental_since``. ``progress(bytes, total)`` is called while downloading. Raises
    ``OpenDataError`` (one line) when the portal is unreachable, refuses, or sends an incomplete
    export; nothing is stored then.
    """
    from velocast.data.store import paris_timestamp

    settings = settings or get_settings()
    if fmt not in EXPORT_FORMATS:
        raise OpenDataError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    start = paris_timestamp(since) if since is not None else incremental_since(settings)
    end = paris_timestamp(until) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise OpenDataError(f"--until {end} is not after --since {start}")
    where = where_clause(start, end)
    params: dict[str, Any] = {"select": ",".join(SELECT), "timezone": "Europe/Paris", "limit": -1}
    if where:
        params["where"] = where
    if fmt == "csv":
        params.update(delimiter=";", with_bom="false")
    url = export_url(settings, fmt)
    shown = redact(url) or url
    policy = RetryPolicy.from_settings(settings, settings.opendata_timeout_seconds)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = Path(tempfile.mkdtemp(prefix="fetch-", dir=_downloads(settings)))
    target = folder / f"{settings.opendata_dataset}-{stamp}.{fmt}"
    try:
        try:
            fetched = fetch(url, params, policy=policy, what="open-data export", dest=target, progress=progress,
                            settings=settings)
        except FetchError as exc:
            raise OpenDataError(str(exc)) from exc
        rows = _check_complete(target, fmt, shown)
        report = FetchReport(source=shown, format="api", rows_read=rows, accepted=0, rejected=0, url=fetched.url,
                             where=where or "(none: everything)", since=str(start) if start is not None else None,
                             until=str(end) if end is not None else None, bytes_downloaded=fetched.bytes,
                             attempts=fetched.attempts, seconds=fetched.seconds)
        if rows:
            try:
                raw = read_table(target, "api")
            except IngestError as exc:
                raise OpenDataError(f"open-data export from {shown}: {exc}") from exc
            ingested = ingest_table(raw, settings, source=shown)
            for name, value in ingested.to_dict().items():
                setattr(report, name, value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log.info("open-data fetch: %s", report.to_dict())
    return report


def _downloads(settings: Settings) -> Path:
    folder = settings.home / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_complete(path: Path, fmt: str, shown: str) -> int:
    """The number of data rows of a downloaded export; OpenDataError if it is cut or not the export."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path)
        except Exception as exc:  # a cut file has no footer: pyarrow says so in its own words
            raise OpenDataError(f"open-data export from {shown}: not a complete Parquet file ({exc})") from exc
        missing = [c for c in API_REQUIRED if c not in meta.schema_arrow.names]
        if missing:
            raise OpenDataError(f"open-data export from {shown}: fields {missing} missing; "
                                f"found {meta.schema_arrow.names[:12]}")
        return meta.metadata.num_rows
    size = path.stat().st_size
    if size == 0:
        raise OpenDataError(f"open-data export from {shown}: empty answer, expected at least the CSV header")
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        if handle.read(1) != b"\n":
            raise OpenDataError(f"open-data export from {shown}: the CSV ends in the middle of a line "
                                f"(download cut after {size:,} bytes); nothing stored")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, [])
        missing = [c for c in API_REQUIRED if c not in header]
        if missing:
            raise OpenDataError(f"open-data export from {shown}: fields {missing} missing from the CSV header; "
                                f"found {header[:12]}")
        rows = 0
        for row in reader:
            if not row:  # a blank line
                continue
            rows += 1
            if len(row) != len(header):
                raise OpenDataError(f"open-data export from {shown}: row {rows} has {len(row)} fields, expected "
                                    f"{len(header)} (cut or malformed download); nothing stored")
    return rows


__all__ = ["EXPORT_FORMATS", "FetchReport", "OpenDataError", "export_url", "fetch_counts", "incremental_since",
           "where_clause"]
