"""Hourly weather from Météo-France SYNOP observations (e.g. Paris-Orly, station 07149).

SYNOP rows come every 3 hours in UTC, with temperature in Kelvin and rain accumulated over the
last 1/3/6/12/24 hours. velocast stores one row per hour (Europe/Paris) with:
``temperature_c``, ``humidity``, ``wind_ms``, ``cloud_cover`` (linearly interpolated, at most 6
hours across a gap) and ``rain_mm`` (rain in the hour starting at the timestamp: ``rr1`` where
reported, else ``rr3`` spread evenly over its three hours).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from velocast.config import Settings, get_settings
from velocast.data.schema import to_paris
from velocast.fileio import atomic_write_parquet, file_lock, read_parquet_cached

log = logging.getLogger(__name__)

WEATHER_COLUMNS = ["temperature_c", "humidity", "wind_ms", "cloud_cover", "rain_mm"]
_REQUIRED = ["date", "t"]
_INTERPOLATE_LIMIT_HOURS = 6


class WeatherError(ValueError):
    """The weather file cannot be used (missing, or not a SYNOP table)."""


def read_synop(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise WeatherError(f"file not found: {path}")
    try:
        raw = pd.read_csv(path, sep=None, engine="python", na_values=["mq", ""])
    except Exception as exc:
        raise WeatherError(f"{path}: cannot be read as CSV: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise WeatherError(f"{path}: not a SYNOP table: expected columns {_REQUIRED} (and u, ff, n, "
                           f"rr1/rr3); missing {missing}; found {list(raw.columns)[:12]}...")
    return raw


def synop_to_hourly(raw: pd.DataFrame) -> pd.DataFrame:
    """Convert SYNOP observations to an hourly frame indexed by UTC hour (pure)."""
    frame = raw.copy()
    frame["date"] = pd.to_datetime(frame["date"], errors="coerce", utc=True)
    frame = frame.dropna(subset=["date"]).drop_duplicates("date").set_index("date").sort_index()
    numeric = {c: pd.to_numeric(frame[c], errors="coerce") if c in frame else pd.Series(np.nan, index=frame.index)
               for c in ("t", "u", "ff", "n", "rr1", "rr3")}
    obs = pd.DataFrame({
        "temperature_c": numeric["t"] - 273.15,
        "humidity": numeric["u"],
        "wind_ms": numeric["ff"],
        "cloud_cover": numeric["n"],
    })
    hours = pd.date_range(obs.index.min().floor("h"), obs.index.max().floor("h"), freq="h", tz="UTC")
    hourly = obs.reindex(obs.index.union(hours)).interpolate(
        method="time", limit=_INTERPOLATE_LIMIT_HOURS, limit_area="inside").reindex(hours)
    # rain: rr1 covers the hour before the observation; rr3 the three hours before it.
    rain = pd.Series(np.nan, index=hours)
    rr3 = numeric["rr3"].clip(lower=0)
    for lag in (1, 2, 3):
        spread = (rr3 / 3.0).copy()
        spread.index = spread.index - pd.Timedelta(hours=lag)
        rain = rain.combine_first(spread.reindex(hours))
    rr1 = numeric["rr1"].clip(lower=0)
    rr1.index = rr1.index - pd.Timedelta(hours=1)
    rain = rr1.reindex(hours).combine_first(rain)
    hourly["rain_mm"] = rain
    hourly.index.name = "timestamp"
    return hourly[WEATHER_COLUMNS]


def ingest_weather(path: Path | str, settings: Settings | None = None) -> dict:
    """Read a SYNOP file, convert it to hourly weather and upsert it beside the counts."""
    settings = settings or get_settings()
    raw = read_synop(path)
    hourly = synop_to_hourly(raw).reset_index()
    hourly["timestamp"] = to_paris(hourly["timestamp"], naive="utc")
    target = settings.weather_path
    with file_lock(settings.locks_dir / "weather.lock"):
        if target.exists():
            old = pd.read_parquet(target)
            old["timestamp"] = to_paris(old["timestamp"], naive="utc")
            old = old[~old["timestamp"].isin(hourly["timestamp"])]
            hourly = pd.concat([old, hourly], ignore_index=True)
        hourly = hourly.sort_values("timestamp").reset_index(drop=True)
        atomic_write_parquet(hourly, target)
    result = {
        "source": str(path), "observations": len(raw), "hours_stored": len(hourly),
        "first": str(hourly["timestamp"].min()), "last": str(hourly["timestamp"].max()),
        "hours_missing_temperature": int(hourly["temperature_c"].isna().sum()),
        "path": str(target),
    }
    log.info("weather: %s", result)
    return result


def load_weather(settings: Settings | None = None) -> pd.DataFrame | None:
    """The stored hourly weather (timestamp in Europe/Paris), or None if none was ingested.

    Kept in memory per file version (path, modification time): servers re-read it only after an
    ingest replaced the file.
    """
    return read_parquet_cached((settings or get_settings()).weather_path, _read_weather)


def _read_weather(path: str) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    frame["timestamp"] = to_paris(frame["timestamp"], naive="utc")
    return frame


def attach_weather(rows: pd.DataFrame, weather: pd.DataFrame | None) -> pd.DataFrame:
    """Add the weather columns to rows by hour; columns the rows already carry are kept."""
    out = rows.copy()
    if weather is None or weather.empty:
        for column in WEATHER_COLUMNS:
            if column not in out:
                out[column] = np.nan
        return out
    lookup = weather.set_index(weather["timestamp"].dt.tz_convert("UTC"))[WEATHER_COLUMNS]
    keys = out["timestamp"].dt.tz_convert("UTC")
    for column in WEATHER_COLUMNS:
        stored = keys.map(lookup[column]).astype(float)
        if column in out:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float).fillna(stored)
        else:
            out[column] = stored.to_numpy()
    return out


__all__ = ["WEATHER_COLUMNS", "WeatherError", "attach_weather", "ingest_weather", "load_weather",
           "read_synop", "synop_to_hourly"]
