"""Read a counts file in any supported format, validate it, quarantine what is wrong.

Formats:
- ``opendata``: the Paris open-data export (``;``-separated, French headers, ISO timestamps with
  offsets, coordinates as "lat,lon", photo/url columns that are ignored);
- ``tidy``: the English parquet/CSV of ``shared/data/paris`` (``date`` is naive UTC);
- ``api``: the same dataset as served by the portal's Explore API v2.1 exports (``;``-separated
  CSV or Parquet with the API field names ``id_compteur``, ``sum_counts``, ``date``, ...;
  ``coordinates`` as "lat,lon" or a ``{lat, lon}`` object), see ``velocast.data.opendata``;
- ``mapping``: any table, through a YAML file mapping canonical names to its columns.

Nothing the user gave is dropped silently: every rejected row lands in a quarantine Parquet file
with its original values, its row number, a ``reason`` category and a ``detail`` naming the field,
the value and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from velocast import progress
from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data import schema as S
from velocast.fileio import atomic_write_parquet, naming, file_lock

log = logging.getLogger(__name__)

FORMATS = ("auto", "opendata", "tidy", "api")

# source column -> canonical field, per format
OPENDATA_COLUMNS = {
    "Identifiant du compteur": "counter_id",
    "Nom du compteur": "counter_name",
    "Identifiant du site de comptage": "site_id",
    "Nom du site de comptage": "site_name",
    "Comptage horaire": "bike_count",
    "Date et heure de comptage": "timestamp",
    "Date d'installation du site de comptage": "installation_date",
    "Coordonnées géographiques": "coordinates",
}
OPENDATA_REQUIRED = ["Identifiant du compteur", "Date et heure de comptage", "Comptage horaire"]

# the portal's Explore API field names of the same dataset (photo/url fields are ignored, as above)
API_COLUMNS = {
    "id_compteur": "counter_id",
    "nom_compteur": "counter_name",
    "id": "site_id",
    "name": "site_name",
    "sum_counts": "bike_count",
    "date": "timestamp",
    "installation_date": "installation_date",
    "coordinates": "coordinates",
}
API_REQUIRED = ["id_compteur", "date", "sum_counts"]

TIDY_COLUMNS = {
    "counter_id": "counter_id",
    "counter_name": "counter_name",
    "site_id": "site_id",
    "site_name": "site_name",
    "bike_count": "bike_count",
    "date": "timestamp",
    "timestamp": "timestamp",
    "counter_installation_date": "installation_date",
    "installation_date": "installation_date",
    "latitude": "latitude",
    "longitude": "longitude",
}
TIDY_REQUIRED = ["counter_id", "date|timestamp", "bike_count"]

EXPECTED = {
    S.REASON_MISSING_COUNTER: "expected a non-empty counter identifier",
    S.REASON_COUNT_NOT_NUMBER: "expected a number >= 0",
    S.REASON_COUNT_NEGATIVE: "expected a count >= 0",
    S.REASON_BAD_TIMESTAMP: "expected an ISO date-time such as 2021-09-01T08:00:00+02:00",
    S.REASON_NOT_WHOLE_HOUR: "expected a whole hour of Paris time (minutes and seconds = 0 once converted to "
                             "Europe/Paris; an offset such as +05:30 is not on a Paris hour)",
    S.REASON_DST_GAP: "expected a local time that exists in Europe/Paris, or an explicit offset",
    S.REASON_BAD_COORDINATES: "expected 'lat,lon' or numeric latitude/longitude",
    S.REASON_OUTSIDE_IDF: (
        f"expected latitude in [{S.IDF_LATITUDE[0]}, {S.IDF_LATITUDE[1]}] and longitude in "
        f"[{S.IDF_LONGITUDE[0]}, {S.IDF_LONGITUDE[1]}]"
    ),
    S.REASON_CONFLICTING_DUPLICATE: "expected one count per counter and hour",
}


class IngestError(ValueError):
    """The file could not be read at all (missing, unreadable, or not a known format)."""


@dataclass
class ColumnMapping:
    """A user's mapping from canonical field names to the columns of their table."""

    columns: dict[str, str]
    sep: str = ","
    timezone: str = "UTC"  # zone of naive timestamps

    @classmethod
    def from_file(cls, path: Path) -> ColumnMapping:
        try:
            spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise IngestError(f"cannot read mapping file {path}: {exc}") from exc
        columns = spec.get("columns")
        if not isinstance(columns, dict) or not columns:
            raise IngestError(
                f"mapping file {path}: expected a 'columns:' section mapping canonical names "
                f"({', '.join(S.CANONICAL_COLUMNS)} or coordinates) to your column names"
            )
        unknown = set(columns) - set(S.CANONICAL_COLUMNS) - {"coordinates"}
        if unknown:
            raise IngestError(f"mapping file {path}: unknown canonical names {sorted(unknown)}")
        return cls(columns={k: str(v) for k, v in columns.items()}, sep=spec.get("sep", ","),
                   timezone=spec.get("timezone", "UTC"))


@dataclass
class RawTable:
    """A file as read: original columns and values, plus how to map them."""

    frame: pd.DataFrame
    format: str
    path: Path
    rename: dict[str, str]
    naive_timezone: str = "UTC"


@dataclass
class Validated:
    """Canonical accepted rows, the rejected rows with reasons, and merged identical duplicates."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    rows_read: int
    identical_duplicates: int = 0
    accepted_positions: np.ndarray | None = None  # row positions in the raw table of ``accepted``

    def rejected_by_reason(self) -> dict[str, int]:
        if self.rejected.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().items()}


@dataclass
class IngestReport:
    source: str
    format: str
    rows_read: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    identical_duplicates_merged: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    counters: int = 0
    period_start: str | None = None
    period_end: str | None = None
    quarantine_path: str | None = None
    already_quarantined: bool = False  # the same rejected rows were kept by an earlier ingest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"source: {self.source} (format: {self.format})",
            f"rows read: {self.rows_read:,}",
            f"accepted: {self.accepted:,}  (added {self.added:,}, updated {self.updated:,}, "
            f"unchanged {self.unchanged:,})",
            f"rejected: {self.rejected:,}",
        ]
        out += [f"  - {reason}: {n:,}" for reason, n in sorted(self.rejected_by_reason.items())]
        if self.identical_duplicates_merged:
            out.append(f"identical duplicate rows merged: {self.identical_duplicates_merged:,}")
        if self.period_start:
            out.append(f"period (Europe/Paris): {self.period_start} .. {self.period_end}, "
                       f"{self.counters} counters")
        if self.quarantine_path:
            out.append(f"quarantine: {self.quarantine_path}" + (" (the same rows were already quarantined by an "
                                                                 "earlier ingest: kept once)"
                                                                 if self.already_quarantined else ""))
        return out


# --------------------------------------------------------------------------- reading
def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", str(name)).strip().lstrip("\ufeff").strip()


def read_table(path: Path | str, fmt: str = "auto", mapping: ColumnMapping | None = None,
               require_count: bool = True) -> RawTable:
    """Read a counts file and decide its format; raise IngestError with a clear message if not.

    ``require_count=False`` reads rows to predict: the count column (``bike_count``,
    ``Comptage horaire``) may be absent.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not path.exists():
        raise IngestError(f"file not found: {path}")
    if path.is_dir():
        raise IngestError(f"{path} is a folder, expected a .csv or .parquet file")
    frame = _read_any(path, sep=mapping.sep if mapping else None)
    frame.columns = [_norm(c) for c in frame.columns]
    if mapping is not None:
        missing = [src for src in mapping.columns.values() if src not in frame.columns]
        if missing:
            raise IngestError(
                f"{path}: the mapping names columns that are not in the file: {missing}; "
                f"found columns: {list(frame.columns)}"
            )
        rename = {src: canon for canon, src in mapping.columns.items()}
        return RawTable(frame, "mapping", path, rename, mapping.timezone)
    detected, rename = _detect(frame, path, fmt, require_count)
    # the tidy file's `date` is naive UTC; a canonical `timestamp` without offset is Paris time
    naive_tz = PARIS_TZ if detected == "tidy" and rename.get("timestamp") == "timestamp" else "UTC"
    return RawTable(frame, detected, path, rename, naive_timezone=naive_tz)


def _read_any(path: Path, sep: str | None) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        with open(path, encoding="utf-8-sig", errors="strict") as handle:
            first = handle.readline()
        if sep is None:
            sep = ";" if first.count(";") > first.count(",") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                           encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except Exception as exc:  # pyarrow/pandas parser errors: report them, not their stack
        raise IngestError(f"{path}: cannot be read as {suffix or 'CSV'}: {exc}") from exc


def _detect(frame: pd.DataFrame, path: Path, fmt: str, require_count: bool = True) -> tuple[str, dict[str, str]]:
    cols = set(frame.columns)
    opendata_required = OPENDATA_REQUIRED if require_count else [c for c in OPENDATA_REQUIRED if c != "Comptage horaire"]
    tidy_required = TIDY_REQUIRED if require_count else [c for c in TIDY_REQUIRED if c != "bike_count"]
    api_required = API_REQUIRED if require_count else [c for c in API_REQUIRED if c != "sum_counts"]
    is_opendata = all(c in cols for c in opendata_required)
    is_tidy = ("counter_id" in cols and bool({"date", "timestamp"} & cols)
               and (not require_count or "bike_count" in cols))
    is_api = all(c in cols for c in api_required)
    if fmt == "api" or (fmt == "auto" and is_api and not is_opendata):
        if not is_api:
            _raise_format(path, "api", api_required, frame.columns)
        return "api", {c: API_COLUMNS[c] for c in API_COLUMNS if c in cols}
    if fmt == "opendata" or (fmt == "auto" and is_opendata):
        if not is_opendata:
            _raise_format(path, "opendata", opendata_required, frame.columns)
        return "opendata", {c: OPENDATA_COLUMNS[c] for c in OPENDATA_COLUMNS if c in cols}
    if fmt == "tidy" or (fmt == "auto" and is_tidy):
        if not is_tidy:
            _raise_format(path, "tidy", tidy_required, frame.columns)
        rename = {c: TIDY_COLUMNS[c] for c in TIDY_COLUMNS if c in cols}
        if "date" in cols and "timestamp" in cols:
            rename.pop("date")
        if "timestamp" in rename:
            rename["timestamp"] = "timestamp"
        return "tidy", rename
    raise IngestError(
        f"{path}: unknown format. Expected the open-data export (columns "
        f"{opendata_required}), the portal API's export (columns {api_required}) or the tidy format "
        f"(columns {tidy_required}); "
        f"found columns: {list(frame.columns)}. Use --mapping FILE for other tables."
    )


def _raise_format(path: Path, fmt: str, expected: list[str], found: Any) -> None:
    raise IngestError(f"{path}: not in the {fmt} format: expected columns {expected}; "
                      f"found columns: {list(found)}")


# --------------------------------------------------------------------------- validation
def _text(values: pd.Series) -> pd.Series:
    """Values as stripped strings, with <NA> for missing ones (numbers keep no trailing .0)."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    out = values.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"


def parse_timestamps(values: pd.Series, counter_ids: pd.Series | None = None,
                     naive_tz: str = PARIS_TZ) -> tuple[pd.Series, pd.Series]:
    """Parse to Europe/Paris; return (timestamps, reason) with NaT and a reason where it failed.

    Values with an offset keep it; naive values are read in ``naive_tz`` (in the autumn DST fold,
    the first occurrence of the repeated hour per counter is taken as summer time).
    """
    if counter_ids is None:
        counter_ids = pd.Series("", index=values.index)
    reason = pd.Series(None, index=values.index, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(values):
        aware = values if values.dt.tz is not None else None
        naive = values if values.dt.tz is None else None
        has_offset = pd.Series(aware is not None, index=values.index)
    else:
        text = _text(values)
        has_offset = text.str.contains(OFFSET_RE, regex=True, na=False)
        aware = _to_datetime(text.where(has_offset), utc=True)
        naive = _to_datetime(text.where(~has_offset), utc=False)
    out = pd.Series(pd.NaT, index=values.index, dtype=pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ))
    if aware is not None:
        converted = aware.dt.tz_convert(PARIS_TZ)
        out = out.where(~has_offset, converted)
    if naive is not None:
        parsed_naive = naive.notna() & ~has_offset
        if naive_tz == "UTC":
            local = naive.dt.tz_localize("UTC").dt.tz_convert(PARIS_TZ)
        else:
            # In the autumn fold an hour occurs twice: its first occurrence per counter is summer time.
            first_seen = naive.groupby([counter_ids.fillna(""), naive]).cumcount() == 0
            local = naive.dt.tz_localize(naive_tz, ambiguous=first_seen.to_numpy(), nonexistent="NaT")
            local = local.dt.tz_convert(PARIS_TZ)
            reason = reason.mask(parsed_naive & local.isna(), S.REASON_DST_GAP)
        out = out.where(~parsed_naive, local)
    reason = reason.mask(out.isna() & reason.isna(), S.REASON_BAD_TIMESTAMP)
    whole = out.dt.minute.eq(0) & out.dt.second.eq(0)
    reason = reason.mask(out.notna() & ~whole, S.REASON_NOT_WHOLE_HOUR)
    return out.astype(pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ)), reason


def ambiguous_local_times(values: pd.Series, naive_tz: str = PARIS_TZ) -> np.ndarray:
    """True for naive values read in ``naive_tz`` that fall in its autumn fold (the hour that occurs twice)."""
    if naive_tz == "UTC" or pd.api.types.is_datetime64_any_dtype(values) and values.dt.tz is not None:
        return np.zeros(len(values), bool)
    if pd.api.types.is_datetime64_any_dtype(values):
        naive = values
    else:
        text = _text(values)
        naive = _to_datetime(text.where(~text.str.contains(OFFSET_RE, regex=True, na=False)), utc=False)
    parsed = naive.notna().to_numpy()
    strict = naive.dt.tz_localize(naive_tz, ambiguous="NaT", nonexistent="NaT").notna().to_numpy()
    summer = naive.dt.tz_localize(naive_tz, ambiguous=np.ones(len(naive), bool), nonexistent="NaT").notna().to_numpy()
    return parsed & ~strict & summer


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    parsed = pd.to_datetime(text, errors="coerce", utc=utc, format="ISO8601")
    retry = parsed.isna() & text.notna()
    if retry.any():
        again = pd.to_datetime(text[retry], errors="coerce", utc=utc, format="mixed", dayfirst=True)
        parsed = parsed.copy()
        parsed[retry] = again
    return parsed


def _parse_dates(values: pd.Series) -> pd.Series:
    """Calendar dates (naive, midnight); unparseable ones become NaT (the field is optional)."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = _to_datetime(_text(values), utc=False)
    if values.dt.tz is not None:
        values = values.dt.tz_localize(None)
    return values.dt.normalize()


def _parse_counts(values: pd.Series, required: bool) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_numeric_dtype(values):
        counts = values.astype(float)
        bad = ~np.isfinite(counts) if required else np.isinf(counts)
    else:
        text = _text(values).str.replace(",", ".", regex=False)
        counts = pd.to_numeric(text, errors="coerce").astype(float)
        bad = (counts.isna() & (text.notna() | required)) | np.isinf(counts)
    reason = pd.Series(np.where(bad, S.REASON_COUNT_NOT_NUMBER, None), index=values.index, dtype=object)
    return counts.where(~bad), reason


def _parse_coordinates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    if "coordinates" in frame and frame["coordinates"].map(lambda v: isinstance(v, dict)).any():
        # a geo point read from Parquet/JSON: {"lat": .., "lon": ..}
        points = frame["coordinates"]
        lat = points.map(lambda v: v.get("lat") if isinstance(v, dict) else None)
        lon = points.map(lambda v: v.get("lon") if isinstance(v, dict) else None)
    elif "coordinates" in frame:
        parts = _text(frame["coordinates"]).str.split(",", n=1, expand=True)
        if parts.shape[1] < 2:
            parts[1] = pd.NA
        lat, lon = parts[0], parts[1]
    else:
        lat = frame["latitude"] if "latitude" in frame else pd.Series(pd.NA, index=frame.index)
        lon = frame["longitude"] if "longitude" in frame else pd.Series(pd.NA, index=frame.index)
    lat = pd.to_numeric(lat if pd.api.types.is_numeric_dtype(lat) else _text(lat), errors="coerce")
    lon = pd.to_numeric(lon if pd.api.types.is_numeric_dtype(lon) else _text(lon), errors="coerce")
    return lat.astype(float), lon.astype(float)


def validate(raw: RawTable, *, require_count: bool = True,
             known_counters: pd.DataFrame | None = None, deduplicate: bool = True) -> Validated:
    """Turn a raw table into canonical rows; every row that fails goes to ``rejected`` with reasons.

    ``known_counters`` (the store's counter list) fills in missing names and coordinates of
    counters that velocast already knows. Rows repeating a counter-hour with different counts are
    all rejected; with the same count (or none), ``deduplicate`` (counts to store) keeps them once,
    False (rows to predict) keeps every one, each answered on its own (weather scenarios of an hour).
    """
    src = raw.frame.rename(columns=raw.rename)
    src = src.loc[:, ~src.columns.duplicated()]
    n = len(src)
    index = pd.RangeIndex(n)
    src = src.reset_index(drop=True)
    reason = pd.Series(None, index=index, dtype=object)
    detail = pd.Series(None, index=index, dtype=object)

    named = {canonical: given for given, canonical in raw.rename.items()}  # details name the file's own columns

    def expected(why: str, column: str) -> str:
        if why == S.REASON_BAD_TIMESTAMP and named.get(column) == "date":  # the tidy file's naive UTC date
            return "expected a date-time such as 2021-09-01 06:00:00 (naive: UTC, as the tidy file's date)"
        return EXPECTED.get(why, "see the canonical schema")

    def flag(new_reason: pd.Series, column: str) -> None:
        hit = new_reason.notna() & reason.isna()
        reason[hit] = new_reason[hit]
        shown = raw_values[column] if column in raw_values else pd.Series("", index=index)
        detail[hit] = [f"{named.get(column, column)}={v!r}: {expected(r, column)}"
                       for v, r in zip(shown[hit], new_reason[hit])]

    raw_values = {c: src[c] for c in src.columns}
    counter_id = _text(src["counter_id"]) if "counter_id" in src else pd.Series(pd.NA, index=index, dtype="string")
    flag(pd.Series(np.where(counter_id.isna(), S.REASON_MISSING_COUNTER, None), index=index), "counter_id")

    if "bike_count" in src:
        counts, why = _parse_counts(src["bike_count"], require_count)
        flag(why, "bike_count")
    elif require_count:
        raise IngestError(f"{raw.path}: no bike_count column; found columns: {list(raw.frame.columns)}")
    else:
        counts = pd.Series(np.nan, index=index)

    if "timestamp" not in src:
        raise IngestError(f"{raw.path}: no timestamp column; found columns: {list(raw.frame.columns)}")
    timestamps, why = parse_timestamps(src["timestamp"], counter_id, raw.naive_timezone)
    flag(why, "timestamp")

    lat, lon = _parse_coordinates(src)
    canon = pd.DataFrame({
        "counter_id": counter_id.astype(object),
        "counter_name": _text(src["counter_name"]).astype(object) if "counter_name" in src else None,
        "site_id": _text(src["site_id"]).astype(object) if "site_id" in src else None,
        "site_name": _text(src["site_name"]).astype(object) if "site_name" in src else None,
        "timestamp": timestamps,
        "bike_count": counts,
        "latitude": lat,
        "longitude": lon,
        "installation_date": _parse_dates(src["installation_date"]) if "installation_date" in src else pd.NaT,
    }, index=index)
    canon["installation_date"] = canon["installation_date"].astype("datetime64[ns]")
    canon = _fill_from_known(canon, known_counters)
    coord_column = "coordinates" if "coordinates" in src else "latitude"
    no_location = canon["latitude"].isna() | canon["longitude"].isna()
    flag(pd.Series(np.where(no_location, S.REASON_BAD_COORDINATES, None), index=index), coord_column)
    if coord_column not in src and "longitude" not in src:  # a file without locations: say whose is needed
        unknown = no_location & (reason == S.REASON_BAD_COORDINATES)
        detail[unknown] = [f"counter {c!r} is not in the store, so its location is needed: give latitude and "
                           "longitude (or coordinates) columns" for c in counter_id[unknown]]
    canon["counter_name"] = canon["counter_name"].fillna(canon["counter_id"])
    canon["site_id"] = canon["site_id"].fillna(canon["counter_id"].str.split("-").str[0])
    canon["site_name"] = canon["site_name"].fillna(canon["counter_name"])

    ok = reason.isna()
    checked = canon[ok]
    if not require_count:
        checked = checked.assign(bike_count=checked["bike_count"].fillna(0.0))
    schema = S.canonical_schema()  # imports pandera
    import pandera.errors

    try:
        schema.validate(checked, lazy=True)
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases.dropna(subset=["index"])
        for idx, group in cases.groupby("index"):
            first = group.iloc[0]
            idx = int(idx)
            if pd.isna(reason[idx]):
                reason[idx] = str(first["check"])
                column = str(first["column"])
                if column in ("latitude", "longitude") and "coordinates" in src:
                    column = "coordinates"
                value = src[column][idx] if column in src else first["failure_case"]
                detail[idx] = f"{named.get(column, column)}={str(value)!r}: {expected(str(first['check']), column)}"

    # conflicting duplicates (same counter and hour, different counts) are all rejected
    ok = reason.isna()
    keyed = canon[ok]
    groups = keyed.groupby(["counter_id", "timestamp"], sort=False)["bike_count"]
    n_distinct = groups.transform("nunique", dropna=False)
    conflict_idx = keyed.index[n_distinct > 1]
    if len(conflict_idx):
        values = groups.transform(lambda s: "/".join(str(v) for v in s))
        reason[conflict_idx] = S.REASON_CONFLICTING_DUPLICATE
        detail[conflict_idx] = [f"bike_count in {v}: {EXPECTED[S.REASON_CONFLICTING_DUPLICATE]}"
                                for v in values[conflict_idx]]
    ok = reason.isna()
    accepted = canon[ok]
    if not deduplicate:
        return _validated(raw, accepted, ok, reason, detail, n, 0, accepted.index.to_numpy())
    identical = accepted.duplicated(["counter_id", "timestamp"], keep="first")
    positions = accepted.index.to_numpy()[~identical.to_numpy()]
    return _validated(raw, accepted[~identical], ok, reason, detail, n, int(identical.sum()), positions)


def _validated(raw: RawTable, accepted: pd.DataFrame, ok: pd.Series, reason: pd.Series, detail: pd.Series, n: int,
               duplicates: int, positions: np.ndarray) -> Validated:
    """The accepted rows and the rejected ones (the file's own columns, its row number, reason, detail)."""
    rejected = raw.frame.reset_index(drop=True)[~ok.to_numpy()].copy()
    rejected = rejected.astype("string")
    rejected.insert(0, "source_row", (np.flatnonzero(~ok.to_numpy()) + 1).astype(int))
    rejected["reason"] = reason[~ok].to_numpy()
    rejected["detail"] = detail[~ok].to_numpy()
    return Validated(accepted.reset_index(drop=True), rejected.reset_index(drop=True), n, duplicates, positions)


def _fill_from_known(canon: pd.DataFrame, known: pd.DataFrame | None) -> pd.DataFrame:
    if known is None or known.empty:
        return canon
    ref = known.set_index("counter_id")
    for column in ("counter_name", "site_id", "site_name", "latitude", "longitude"):
        if column in ref:
            fill = canon["counter_id"].map(ref[column])
            canon[column] = canon[column].where(canon[column].notna(), fill)
    return canon


# --------------------------------------------------------------------------- the whole step
def ingest_file(path: Path | str, fmt: str = "auto", mapping_file: Path | None = None,
                settings: Settings | None = None) -> IngestReport:
    """Read, validate, quarantine and upsert one counts file into the store."""
    settings = settings or get_settings()
    mapping = ColumnMapping.from_file(mapping_file) if mapping_file else None
    progress.step(f"reading {path}")
    raw = read_table(path, fmt, mapping)
    if raw.frame.empty:
        raise IngestError(f"{path}: the file holds a header but no rows")
    return ingest_table(raw, settings)


def ingest_table(raw: RawTable, settings: Settings | None = None, source: str | None = None) -> IngestReport:
    """Validate, quarantine and upsert a table already read (``source`` names it in the report)."""
    from velocast.data import store

    settings = settings or get_settings()
    source = source or str(raw.path)
    progress.step(f"validating {len(raw.frame):,} rows ({raw.format} format)")
    result = validate(raw, known_counters=store.counters(settings))
    report = IngestReport(
        source=source, format=raw.format, rows_read=result.rows_read,
        accepted=len(result.accepted), rejected=len(result.rejected),
        rejected_by_reason=result.rejected_by_reason(),
        identical_duplicates_merged=result.identical_duplicates,
    )
    if not result.rejected.empty:
        qpath, known = quarantine(result.rejected, raw.path.stem, source, settings)
        report.quarantine_path = str(qpath)
        report.already_quarantined = known
        if known:
            log.info("the %d rejected rows were already quarantined in %s", len(result.rejected), qpath)
        else:
            log.warning("%d rows quarantined in %s", len(result.rejected), qpath)
    if not result.accepted.empty:
        progress.step(f"writing {len(result.accepted):,} rows to the store")
        upsert = store.upsert_counts(result.accepted, settings)
        report.added, report.updated, report.unchanged = upsert.added, upsert.updated, upsert.unchanged
        report.counters = int(result.accepted["counter_id"].nunique())
        report.period_start = str(result.accepted["timestamp"].min())
        report.period_end = str(result.accepted["timestamp"].max())
    _append_ingest_log(report, settings)
    return report


def quarantine(rejected: pd.DataFrame, stem: str, source: str, settings: Settings) -> tuple[Path, bool]:
    """Keep rejected rows in ``quarantine/<file stem>-<content hash>.parquet``; ``(path, already there)``.

    The name comes from the rows' content (original values, row numbers, reasons), so ingesting the
    same bad file again finds its rows already kept and counts them once.
    """
    digest = hashlib.sha256(pd.util.hash_pandas_object(rejected.astype(str), index=False).to_numpy().tobytes())
    path = settings.quarantine_dir / f"{stem}-{digest.hexdigest()[:16]}.parquet"
    with file_lock(settings.locks_dir / "quarantine.lock"):
        if path.exists():
            return path, True
        atomic_write_parquet(rejected.assign(source_file=source), path)
    return path, False


def _append_ingest_log(report: IngestReport, settings: Settings) -> None:
    entry = {"ingested_at": datetime.now(timezone.utc).isoformat(), **report.to_dict()}
    path = settings.store_dir / "ingest_log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    # one write() of a whole line on an O_APPEND descriptor: concurrent writers never interleave or
    # overwrite lines (no lock file, so a Delta store's writers need none at all)
    with naming(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))
        finally:
            os.close(fd)


def read_ingest_log(settings: Settings | None = None) -> list[dict[str, Any]]:
    path = (settings or get_settings()).store_dir / "ingest_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = [
    "ColumnMapping", "IngestError", "IngestReport", "RawTable", "Validated",
    "ingest_file", "ingest_table", "parse_timestamps", "read_ingest_log", "read_table", "validate",
]
