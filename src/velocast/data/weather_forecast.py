"""Weather forecasts (Open-Meteo format) stored with their issue time, and the as-of lookup.

velocast forecasts the hourly counts of Paris day D on day D-1, so a forecast for D may use the
weather *forecast* for D that existed then, never D's observed weather (the SYNOP observations of
``velocast.data.weather`` stay the truth for training and monitoring). Each stored forecast row
therefore carries ``issued_at``: the moment the forecast was known.

Stored in ``VELOCAST_HOME/store/weather/forecasts.parquet``: one row per (``timestamp``,
``issued_at``) with ``timestamp`` (the hour, Europe/Paris), ``issued_at`` (UTC), ``source`` and the
``WEATHER_COLUMNS`` of the observed weather, in the same units and meaning: ``temperature_c`` (°C),
``humidity`` (%), ``wind_ms`` (m/s), ``cloud_cover`` (%), ``rain_mm`` (rain in the hour STARTING at
the timestamp).

Open-Meteo specifics handled by ``parse_open_meteo``:
- ``precipitation`` at time T is the sum over the hour *preceding* T, so velocast's ``rain_mm`` at
  T is Open-Meteo's ``precipitation`` at T+1h (the last hour of a forecast has no rain value);
- with ``timezone=...`` the ``time`` strings are local times *without offset*, computed with ONE
  offset for the whole answer (``utc_offset_seconds``, the one valid when the request was made),
  so a forecast crossing a daylight-saving change has neither a gap nor a repeated hour: UTC =
  local string - ``utc_offset_seconds``. With ``timeformat=unixtime`` times are UTC epoch seconds.
- units come from ``hourly_units``: wind km/h (default), m/s, mph or knots; temperature °C or °F;
  precipitation mm or inch.

``forecast_as_of`` is THE lookup the rest of velocast calls: for each hour, the values of the latest
forecast issued at or before that row's cutoff. ``day_ahead_cutoffs`` gives the cutoff of a
day-ahead forecast: 00:00 Europe/Paris of the forecast day (the end of D-1).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings, redact
from velocast.data.schema import to_paris
from velocast.data.weather import WEATHER_COLUMNS
from velocast.fileio import atomic_write_parquet, file_lock, read_parquet_cached

log = logging.getLogger(__name__)

FORECAST_COLUMNS = ["timestamp", "issued_at", "source", *WEATHER_COLUMNS]
# Open-Meteo hourly variable -> velocast weather column
OPEN_METEO_VARIABLES = {
    "temperature_2m": "temperature_c",
    "relative_humidity_2m": "humidity",
    "wind_speed_10m": "wind_ms",
    "cloud_cover": "cloud_cover",
    "precipitation": "rain_mm",
}
_DEFAULT_UNITS = {"temperature_2m": "°C", "relative_humidity_2m": "%", "wind_speed_10m": "km/h",
                  "cloud_cover": "%", "precipitation": "mm"}
# unit (lower case, as Open-Meteo spells it and common variants) -> conversion to velocast's unit
_CONVERSIONS: dict[str, dict[str, Any]] = {
    "temperature_2m": {"°c": None, "c": None, "celsius": None,
                       "°f": lambda v: (v - 32.0) * 5.0 / 9.0, "f": lambda v: (v - 32.0) * 5.0 / 9.0,
                       "fahrenheit": lambda v: (v - 32.0) * 5.0 / 9.0},
    "wind_speed_10m": {"km/h": 1 / 3.6, "kmh": 1 / 3.6, "m/s": None, "ms": None, "mp/h": 0.44704,
                       "mph": 0.44704, "kn": 1852 / 3600, "kt": 1852 / 3600, "knots": 1852 / 3600},
    "precipitation": {"mm": None, "inch": 25.4, "in": 25.4},
    "relative_humidity_2m": {"%": None},
    "cloud_cover": {"%": None},
}
ISSUE_EXPLICIT = "given (--issued-at)"
ISSUE_PAYLOAD = "the file's issued_at"
ISSUE_DAY_START = "00:00 Europe/Paris of the first forecast day"
ISSUE_FETCH = "fetch time"


class WeatherForecastError(ValueError):
    """A forecast that cannot be used (malformed payload, unreadable file, failed fetch): one line."""


# --------------------------------------------------------------------------- parsing
def parse_open_meteo(payload: dict) -> pd.DataFrame:
    """An Open-Meteo forecast answer as hourly rows: ``timestamp`` (Europe/Paris) + ``WEATHER_COLUMNS``.

    Missing variables become NaN columns; a malformed payload raises ``WeatherForecastError``
    naming what is missing or what was expected. Rows are sorted by time, one per hour.
    """
    if not isinstance(payload, dict):
        raise WeatherForecastError(f"expected an Open-Meteo answer (a JSON object), got {type(payload).__name__}")
    if payload.get("error"):
        raise WeatherForecastError(f"the answer is an Open-Meteo error: {payload.get('reason', payload)}")
    hourly = payload.get("hourly")
    if not isinstance(hourly, dict):
        raise WeatherForecastError(
            "not an Open-Meteo forecast: expected an 'hourly' object with 'time' and "
            f"{', '.join(OPEN_METEO_VARIABLES)}; found keys {sorted(payload)[:12]}")
    units = payload.get("hourly_units") or {}
    if not isinstance(units, dict):
        raise WeatherForecastError(f"'hourly_units': expected an object of units, got {units!r:.80}")
    stamps = _utc_times(payload, hourly, units)
    n = len(stamps)
    columns: dict[str, np.ndarray] = {}
    for variable, column in OPEN_METEO_VARIABLES.items():
        values = hourly.get(variable)
        if values is None:
            log.info("weather forecast: no hourly.%s: %s left empty", variable, column)
            columns[column] = np.full(n, np.nan)
            continue
        columns[column] = _convert(variable, _numbers(variable, values, n), units.get(variable))
    frame = pd.DataFrame(columns, index=stamps)
    # precipitation at T covers the hour before T; rain_mm at T is the hour starting at T
    frame["rain_mm"] = frame["rain_mm"].reindex(stamps + pd.Timedelta(hours=1)).to_numpy()
    frame = frame.sort_index()
    frame.index = frame.index.tz_convert(PARIS_TZ).astype(pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ))
    frame.index.name = "timestamp"
    return frame.reset_index()[["timestamp", *WEATHER_COLUMNS]]


def _utc_times(payload: dict, hourly: dict, units: dict) -> pd.DatetimeIndex:
    raw = hourly.get("time")
    if not isinstance(raw, list) or not raw:
        raise WeatherForecastError("'hourly.time': expected a non-empty list of ISO times or unix seconds, "
                                   f"got {raw!r:.80}")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
    if str(units.get("time", "")).lower() == "unixtime" or numeric:
        if not numeric:
            bad = next(v for v in raw if not isinstance(v, (int, float)) or isinstance(v, bool))
            raise WeatherForecastError(f"'hourly.time' is unixtime: expected unix seconds, found {bad!r:.40}")
        stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(raw, dtype="int64"), unit="s", utc=True))
    else:
        bad = next((v for v in raw if not isinstance(v, str)), None)
        if bad is not None:
            raise WeatherForecastError(f"'hourly.time': expected ISO times such as 2021-09-01T08:00, found {bad!r:.40}")
        with_offset = any(_OFFSET.search(v) for v in raw)
        try:
            parsed = pd.DatetimeIndex(pd.to_datetime(raw, format="ISO8601", utc=with_offset))
        except (ValueError, TypeError) as exc:
            raise WeatherForecastError(f"'hourly.time': expected ISO times such as 2021-09-01T08:00: {exc}") from exc
        stamps = parsed.tz_convert("UTC") if parsed.tz is not None else _local_to_utc(payload, parsed)
    if stamps.hasnans:
        raise WeatherForecastError("'hourly.time': a time is missing (null)")
    if not (stamps == stamps.floor("h")).all():
        first = stamps[stamps != stamps.floor("h")][0]
        raise WeatherForecastError(f"'hourly.time': expected whole hours, found {first}")
    if stamps.has_duplicates:
        raise WeatherForecastError(f"'hourly.time': the hour {stamps[stamps.duplicated()][0]} appears twice")
    return stamps.astype(pd.DatetimeTZDtype(unit="ns", tz="UTC"))


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def _local_to_utc(payload: dict, naive: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Open-Meteo's offset-less local times to UTC: minus ``utc_offset_seconds``, else by ``timezone``."""
    offset = payload.get("utc_offset_seconds")
    zone = payload.get("timezone")
    if offset is not None:
        if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not math.isfinite(offset):
            raise WeatherForecastError(f"'utc_offset_seconds': expected a number of seconds, got {offset!r:.40}")
        return (naive - pd.Timedelta(seconds=float(offset))).tz_localize("UTC")
    if zone in (None, "GMT", "UTC", "Etc/UTC", "Etc/GMT"):
        if zone is None:
            log.warning("weather forecast: neither utc_offset_seconds nor timezone given: times read as UTC")
        return naive.tz_localize("UTC")
    try:
        return naive.tz_localize(str(zone), ambiguous="infer", nonexistent="raise").tz_convert("UTC")
    except Exception as exc:  # unknown zone, or local times that do not exist / cannot be ordered
        raise WeatherForecastError(f"'hourly.time' in timezone {zone!r} (no utc_offset_seconds): {exc}") from exc


def _numbers(variable: str, values: Any, n: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
        raise WeatherForecastError(f"'hourly.{variable}': expected a list of {n} numbers (one per time), got {got}")
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise WeatherForecastError(f"'hourly.{variable}'[{i}] = {v!r:.40}: expected a number or null")
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _convert(variable: str, values: np.ndarray, unit: Any) -> np.ndarray:
    unit_text = str(unit if unit is not None else _DEFAULT_UNITS[variable]).strip()
    table = _CONVERSIONS[variable]
    key = unit_text.lower()
    if key not in table:
        raise WeatherForecastError(f"'hourly_units.{variable}' = {unit_text!r}: expected one of "
                                   f"{', '.join(sorted(table))}")
    how = table[key]
    if how is None:
        return values
    return how(values) if callable(how) else values * how


# --------------------------------------------------------------------------- issue time
def _parse_issued_at(value: Any, where: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise WeatherForecastError(f"{where} {value!r:.60}: expected an ISO date-time with its offset, such as "
                                   "2021-08-09T18:00:00+02:00 or 2021-08-09T16:00:00Z") from exc
    if pd.isna(stamp):
        raise WeatherForecastError(f"{where} is empty: expected an ISO date-time with its offset")
    if stamp.tzinfo is None:
        raise WeatherForecastError(f"{where} {value!r:.60} has no offset: expected e.g. 2021-08-09T18:00:00+02:00 "
                                   "or 2021-08-09T16:00:00Z (a forecast's issue time must be unambiguous)")
    return stamp.tz_convert("UTC")


def issue_time(payload: dict, frame: pd.DataFrame, issued_at: Any = None) -> tuple[pd.Timestamp, str]:
    """The issue time of one forecast and the rule that gave it.

    ``issued_at`` given, else the payload's top-level ``"issued_at"``, else 00:00 Europe/Paris of the
    first forecast day (the forecast is taken as issued at the end of the previous day).
    """
    if issued_at is not None:
        return _parse_issued_at(issued_at, "--issued-at"), ISSUE_EXPLICIT
    if isinstance(payload, dict) and payload.get("issued_at") is not None:
        return _parse_issued_at(payload["issued_at"], "'issued_at'"), ISSUE_PAYLOAD
    first_day = frame["timestamp"].min().tz_convert(PARIS_TZ).normalize()
    return first_day.tz_convert("UTC"), ISSUE_DAY_START


def day_ahead_cutoffs(timestamps: pd.Series) -> pd.Series:
    """The cutoff of a day-ahead forecast of each hour: 00:00 Europe/Paris of its day (the end of D-1)."""
    stamps = _aware(timestamps, "timestamps")
    return stamps.dt.tz_convert(PARIS_TZ).dt.normalize()


# --------------------------------------------------------------------------- storage
def store_forecasts(frame: pd.DataFrame, settings: Settings | None = None) -> dict[str, int]:
    """Upsert forecast rows (``FORECAST_COLUMNS``) by (timestamp, issued_at), atomically under a lock.

    Returns ``added``, ``updated``, ``unchanged`` and ``rows`` (rows in the store after the write).
    """
    settings = settings or get_settings()
    new = _normalise(frame).drop_duplicates(["timestamp", "issued_at"], keep="last")
    target = settings.weather_forecasts_path
    with file_lock(settings.locks_dir / "weather_forecasts.lock"):
        old = _normalise(pd.read_parquet(target)) if target.exists() else _normalise(pd.DataFrame())
        merged = new.merge(old, on=["timestamp", "issued_at"], how="left", suffixes=("", "_old"), indicator=True)
        is_new = merged["_merge"].eq("left_only").to_numpy()
        same = np.ones(len(merged), dtype=bool)
        for column in ["source", *WEATHER_COLUMNS]:
            a, b = merged[column], merged[f"{column}_old"]
            same &= ((a == b) | (a.isna() & b.isna())).to_numpy()
        changed = ~is_new & ~same
        counts = {"added": int(is_new.sum()), "updated": int(changed.sum()),
                  "unchanged": int((~is_new & ~changed).sum()), "rows": len(old)}
        if is_new.any() or changed.any():
            keys = pd.MultiIndex.from_frame(new[["timestamp", "issued_at"]])
            keep = ~pd.MultiIndex.from_frame(old[["timestamp", "issued_at"]]).isin(keys)
            table = pd.concat([old[keep], new], ignore_index=True)
            table = table.sort_values(["issued_at", "timestamp"], kind="stable").reset_index(drop=True)
            atomic_write_parquet(table, target)
            counts["rows"] = len(table)
    return counts


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "timestamp": _as_tz(frame["timestamp"], PARIS_TZ) if "timestamp" in frame
        else pd.Series(dtype=pd.DatetimeTZDtype(unit="ns", tz=PARIS_TZ)),
        "issued_at": _as_tz(frame["issued_at"], "UTC") if "issued_at" in frame
        else pd.Series(dtype=pd.DatetimeTZDtype(unit="ns", tz="UTC")),
        "source": frame["source"].astype(object) if "source" in frame else pd.Series(dtype=object),
    })
    for column in WEATHER_COLUMNS:
        out[column] = frame[column].astype(float).to_numpy() if column in frame else np.nan
    return out.reset_index(drop=True)


def _as_tz(values: pd.Series, tz: str) -> pd.Series:
    return _aware(values, "stored times").dt.tz_convert(tz).astype(pd.DatetimeTZDtype(unit="ns", tz=tz))


def _aware(values: Any, name: str) -> pd.Series:
    """``values`` as a timezone-aware datetime Series; naive or unparseable values raise ValueError."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        try:
            series = pd.to_datetime(series)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name}: expected timezone-aware date-times: {exc}") from exc
        if not isinstance(series.dtype, pd.DatetimeTZDtype):
            raise ValueError(f"{name}: expected timezone-aware date-times (e.g. Europe/Paris), got naive ones")  # noqa: TRY004
    return series


def _report(frame: pd.DataFrame, counts: dict[str, int], source: str, issues: list[tuple[pd.Timestamp, str]],
            settings: Settings) -> dict[str, Any]:
    rules = sorted({rule for _, rule in issues})
    stamps = sorted({when for when, _ in issues})
    return {
        "source": source, "forecasts": len(issues),
        "issued_at": stamps[0].isoformat() if len(stamps) == 1 else [s.isoformat() for s in stamps],
        "issued_at_rule": rules[0] if len(rules) == 1 else rules,
        "hours": len(frame), "first": str(frame["timestamp"].min()), "last": str(frame["timestamp"].max()),
        "added": counts["added"], "updated": counts["updated"], "unchanged": counts["unchanged"],
        "rows_stored": counts["rows"], "path": str(settings.weather_forecasts_path),
    }


OBSERVED_AS_FORECAST = "observed weather as a perfect forecast"


def ingest_observed_as_forecast(path: Path | str, settings: Settings | None = None) -> dict:
    """Store SYNOP observations as *perfect forecasts*, each issued at the cut-off of its day.

    A backtest tool: forecasts for day D then carry D's observed weather, as if the forecast issued
    by 00:00 of D had been exact — what "with weather" scores assume. Never the observation store
    itself (observations stay the training truth, in ``weather_path``); the forecasts are stored with
    ``source`` = "observed weather as a perfect forecast" and the usual issue-time rule applies.
    """
    from velocast.data.weather import read_synop, synop_to_hourly

    settings = settings or get_settings()
    hourly = synop_to_hourly(read_synop(path)).reset_index()
    stamps = to_paris(hourly["timestamp"], naive="utc")
    frame = hourly.assign(timestamp=stamps, issued_at=day_ahead_cutoffs(stamps).dt.tz_convert("UTC"),
                          source=OBSERVED_AS_FORECAST)
    frame = frame.dropna(subset=["temperature_c", "rain_mm"], how="all")
    counts = store_forecasts(frame[FORECAST_COLUMNS], settings)
    report = {"source": str(path), "hours": len(frame), "first": str(frame["timestamp"].min()),
              "last": str(frame["timestamp"].max()), "issued_at": "00:00 Europe/Paris of each hour's day",
              "issued_at_rule": OBSERVED_AS_FORECAST, **{k: counts[k] for k in ("added", "updated", "unchanged")},
              "rows_stored": counts["rows"], "path": str(settings.weather_forecasts_path)}
    log.info("weather forecast: %s", report)
    return report


def ingest_weather_forecast(path: Path | str, issued_at: Any = None, settings: Settings | None = None) -> dict:
    """Store the forecast(s) of a JSON file (one Open-Meteo answer, or a list of them).

    Issue time: ``issued_at`` if given (ISO with offset), else each answer's top-level
    ``"issued_at"``, else 00:00 Europe/Paris of its first forecast day; the report says which rule
    was used. Re-ingesting the same forecast adds nothing.
    """
    settings = settings or get_settings()
    path = Path(path)
    if not path.is_file():
        raise WeatherForecastError(f"file not found: {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeatherForecastError(f"{path}: not a JSON file: {exc}") from exc
    payloads = content if isinstance(content, list) else [content]
    if not payloads:
        raise WeatherForecastError(f"{path}: an empty list: expected Open-Meteo answers")
    frames, issues = [], []
    for i, payload in enumerate(payloads):
        where = f"{path}" + (f" (answer {i + 1} of {len(payloads)})" if len(payloads) > 1 else "")
        try:
            frame = parse_open_meteo(payload)
            when, rule = issue_time(payload, frame, issued_at)
        except WeatherForecastError as exc:
            raise WeatherForecastError(f"{where}: {exc}") from exc
        log.info("weather forecast %s: %d hours from %s, issued at %s (%s)", where, len(frame),
                 frame["timestamp"].min(), when, rule)
        frames.append(frame.assign(issued_at=when, source=str(path)))
        issues.append((when, rule))
    frame = pd.concat(frames, ignore_index=True)
    result = _report(frame, store_forecasts(frame, settings), str(path), issues, settings)
    log.info("weather forecast: %s", result)
    return result


def fetch_weather_forecast(settings: Settings | None = None, now: Any = None) -> dict:
    """GET ``VELOCAST_WEATHER_FORECAST_URL`` and store the answer, issued at the fetch time (UTC).

    ``now`` (tz-aware) replaces the fetch time, for tests and replays. Timeouts and retries follow
    the settings; any failure raises ``WeatherForecastError`` with one line and stores nothing.
    """
    from velocast.data.http import FetchError, RetryPolicy, fetch

    settings = settings or get_settings()
    url = settings.weather_forecast_url
    shown = redact(url) or url
    try:
        fetched = fetch(url, policy=RetryPolicy.from_settings(settings, settings.weather_forecast_timeout_seconds),
                        what="weather forecast", settings=settings)
    except FetchError as exc:
        raise WeatherForecastError(str(exc)) from exc
    issued = _parse_issued_at(now, "now") if now is not None else pd.Timestamp.now(tz="UTC")
    try:
        payload = fetched.json()
    except ValueError as exc:
        raise WeatherForecastError(f"weather forecast: GET {shown}: the answer is not JSON ({exc})") from exc
    try:
        frame = parse_open_meteo(payload)
    except WeatherForecastError as exc:
        raise WeatherForecastError(f"weather forecast: GET {shown}: {exc}") from exc
    frame = frame.assign(issued_at=issued, source=shown)
    result = _report(frame, store_forecasts(frame, settings), shown, [(issued, ISSUE_FETCH)], settings)
    result.update(attempts=fetched.attempts, seconds=fetched.seconds)
    log.info("weather forecast fetched: %s", result)
    return result


# --------------------------------------------------------------------------- reading
def load_forecasts(settings: Settings | None = None) -> pd.DataFrame | None:
    """Every stored forecast row (``FORECAST_COLUMNS``), or None when none was stored.

    Kept in memory per file version (modification time): re-read only after a new forecast.
    """
    return read_parquet_cached((settings or get_settings()).weather_forecasts_path, _read_forecasts)


def forecasts_version(settings: Settings | None = None) -> int:
    """The stored forecasts' version (the file's modification time; 0 when none was stored): what a
    result computed from them depends on, like ``store.version`` for the counts."""
    try:
        return (settings or get_settings()).weather_forecasts_path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _read_forecasts(path: str) -> pd.DataFrame:
    return _normalise(pd.read_parquet(path))[FORECAST_COLUMNS]


def forecast_as_of(timestamps: pd.Series, cutoffs: pd.Series | pd.Timestamp, forecasts: pd.DataFrame | None = None,
                   settings: Settings | None = None) -> pd.DataFrame:
    """The weather forecast of each hour as it was known at each row's cutoff.

    For row i: the values of the LATEST stored forecast whose ``issued_at <= cutoffs[i]`` and that
    has a row for the hour ``timestamps[i]``; NaN (and NaT ``forecast_issued_at``) where no
    forecast issued by then covers that hour — a forecast issued after the cutoff is never used.
    ``timestamps`` and ``cutoffs`` are timezone-aware (``cutoffs`` may be one Timestamp for all
    rows); ``forecasts`` defaults to ``load_forecasts(settings)``. Returns ``WEATHER_COLUMNS`` +
    ``forecast_issued_at`` (UTC), indexed like ``timestamps``. Vectorised (``merge_asof``).
    """
    stamps = _aware(timestamps, "timestamps")
    index = timestamps.index if isinstance(timestamps, pd.Series) else stamps.index
    if not isinstance(cutoffs, pd.Series):
        cutoffs = pd.Series([cutoffs] * len(stamps), index=stamps.index, dtype=object)
    cuts = _aware(cutoffs, "cutoffs")
    if len(cuts) != len(stamps):
        raise ValueError(f"cutoffs: expected one per timestamp ({len(stamps)}), got {len(cuts)}")
    out = pd.DataFrame(np.nan, index=index, columns=WEATHER_COLUMNS)
    out["forecast_issued_at"] = pd.Series(pd.NaT, index=index, dtype=pd.DatetimeTZDtype(unit="ns", tz="UTC"))
    if forecasts is None:
        forecasts = load_forecasts(settings)
    if forecasts is None or forecasts.empty or not len(stamps):
        return out
    hours = _utc_ns(stamps)
    limits = _utc_ns(cuts)
    valid = (hours != _NAT) & (limits != _NAT)
    positions = np.flatnonzero(valid)
    left = pd.DataFrame({"hour": hours[valid], "cutoff": limits[valid], "position": positions})
    left = left.sort_values("cutoff", kind="stable")
    stored = _normalise(forecasts)
    right = pd.DataFrame({"hour": _utc_ns(stored["timestamp"]), "issued": _utc_ns(stored["issued_at"]),
                          "forecast_issued_at": stored["issued_at"].to_numpy(dtype="datetime64[ns]")})
    for column in WEATHER_COLUMNS:
        right[column] = stored[column].to_numpy()
    right = right.drop_duplicates(["hour", "issued"], keep="last").sort_values("issued", kind="stable")
    found = pd.merge_asof(left, right, left_on="cutoff", right_on="issued", by="hour", direction="backward",
                          allow_exact_matches=True)
    rows = found["position"].to_numpy()
    for column in WEATHER_COLUMNS:
        values = out[column].to_numpy(copy=True)
        values[rows] = found[column].to_numpy(dtype=float)
        out[column] = values
    issued = np.full(len(index), np.datetime64("NaT"), dtype="datetime64[ns]")
    issued[rows] = found["forecast_issued_at"].to_numpy(dtype="datetime64[ns]")
    out["forecast_issued_at"] = pd.DatetimeIndex(issued).tz_localize("UTC")
    return out


_NAT = np.iinfo("int64").min  # NaT as int64 nanoseconds


def _utc_ns(values: pd.Series) -> np.ndarray:
    return values.dt.tz_convert("UTC").astype(pd.DatetimeTZDtype(unit="ns", tz="UTC")).to_numpy(
        dtype="datetime64[ns]").view("int64")


__all__ = ["FORECAST_COLUMNS", "OPEN_METEO_VARIABLES", "WeatherForecastError", "day_ahead_cutoffs",
           "fetch_weather_forecast", "forecast_as_of", "ingest_weather_forecast", "issue_time", "load_forecasts",
           "parse_open_meteo", "store_forecasts"]
