"""Calendars and context for a timestamp in Paris: public holidays, school holidays, events.

- French public holidays come from the ``holidays`` package (any year).
- Paris school holidays (zone C) are a small table shipped with velocast (2018-2027).
- Events (lockdowns, curfews, strikes, the 2024 Olympics...) come from a YAML file the user can
  edit: the shipped ``resources/events.yaml`` unless ``VELOCAST_EVENTS_FILE`` names another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import holidays
import numpy as np
import pandas as pd
import yaml

from velocast.config import PARIS_TZ, Settings, get_settings

EVENT_KINDS = ("lockdown", "curfew", "strike", "event")
CALENDAR_COLUMNS = ["is_public_holiday", "is_school_holiday", "is_bridge_day",
                    *(f"event_{kind}" for kind in EVENT_KINDS)]


@dataclass(frozen=True)
class Event:
    name: str
    kind: str
    start: date
    end: date  # exclusive
    from_hour: int | None = None
    to_hour: int | None = None


@functools.lru_cache(maxsize=8)
def _resource(name: str) -> Path:
    return Path(str(resources.files("velocast") / "resources" / name))


@functools.lru_cache(maxsize=8)
def public_holidays(first_year: int, last_year: int) -> frozenset[date]:
    return frozenset(holidays.France(years=range(first_year, last_year + 1)).keys())


@functools.lru_cache(maxsize=1)
def school_holidays() -> pd.DataFrame:
    table = pd.read_csv(_resource("school_holidays_zone_c.csv"), comment="#")
    table["start"] = pd.to_datetime(table["start"]).dt.date
    table["end"] = pd.to_datetime(table["end"]).dt.date
    return table


def load_events(path: Path | None = None) -> list[Event]:
    """Read an events calendar; raise ValueError naming the entry and field if one is wrong."""
    path = Path(path) if path else _resource("events.yaml")
    return list(_load_events_cached(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _load_events_cached(path: str, _mtime: int) -> tuple[Event, ...]:
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {"events": []}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("events", None), list):
        raise ValueError(f"{path}: expected a mapping with an 'events' list (events: [{{name, kind, start, end}}, ...])")
    out = []
    for i, item in enumerate(spec["events"], start=1):
        try:
            kind = item["kind"]
            if kind not in EVENT_KINDS:
                raise ValueError(f"kind {kind!r} is not one of {EVENT_KINDS}")
            event = Event(name=str(item["name"]), kind=kind,
                          start=pd.Timestamp(item["start"]).date(), end=pd.Timestamp(item["end"]).date(),
                          from_hour=item.get("from_hour"), to_hour=item.get("to_hour"))
            if event.end <= event.start:
                raise ValueError("end must be after start")
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: event #{i} ({item!r}) is invalid: {exc}") from exc
        out.append(event)
    return tuple(out)


def calendar_features(timestamps: pd.Series, settings: Settings | None = None) -> pd.DataFrame:
    """Calendar flags (0/1) for Europe/Paris timestamps, one row per input row."""
    settings = settings or get_settings()
    return _calendar_features(timestamps, settings.events_file)


def _events_path(events_file: Path | str | None) -> Path:
    return Path(events_file) if events_file else _resource("events.yaml")


def _calendar_features(timestamps: pd.Series, events_file: Path | str | None) -> pd.DataFrame:
    ts = timestamps.dt.tz_convert(PARIS_TZ) if timestamps.dt.tz is not None else timestamps
    days = ts.dt.normalize().dt.tz_localize(None) if ts.dt.tz is not None else ts.dt.normalize()
    unique_days = pd.DatetimeIndex(days.unique())
    events_path = _events_path(events_file)
    day_frame = _day_flags_cached(tuple(unique_days.asi8), str(events_path), events_path.stat().st_mtime_ns) \
        if len(unique_days) <= 64 else _day_flags(unique_days, events_file)
    out = day_frame.reindex(days.to_numpy()).reset_index(drop=True)
    out.index = timestamps.index
    hour = ts.dt.hour.to_numpy()
    day_values = days.to_numpy("datetime64[ns]")
    # curfews apply to their hours only
    curfew = np.zeros(len(ts), dtype=np.int8)
    for event in load_events(events_file):
        if event.kind != "curfew":
            continue
        in_period = (day_values >= np.datetime64(event.start, "ns")) & (day_values < np.datetime64(event.end, "ns"))
        if event.from_hour is None or event.to_hour is None:
            in_hours = np.ones(len(ts), dtype=bool)
        elif event.from_hour > event.to_hour:
            in_hours = (hour >= event.from_hour) | (hour < event.to_hour)
        else:
            in_hours = (hour >= event.from_hour) & (hour < event.to_hour)
        curfew |= (in_period & in_hours).astype(np.int8)
    out["event_curfew"] = curfew
    return out[CALENDAR_COLUMNS]


@functools.lru_cache(maxsize=4096)
def _day_flags_cached(days: tuple[int, ...], events_file: str, _mtime: int) -> pd.DataFrame:
    """Flags of a few days (an API request), memoised per events-file version."""
    return _day_flags(pd.DatetimeIndex(np.asarray(days, dtype="datetime64[ns]")), Path(events_file))


def _day_flags(days: pd.DatetimeIndex, events_file: Path | None) -> pd.DataFrame:
    if len(days) == 0:
        return pd.DataFrame(columns=CALENDAR_COLUMNS, dtype=np.int8)
    public = public_holidays(days.min().year - 1, days.max().year + 1)
    as_dates = days.date
    is_public = np.array([d in public for d in as_dates])
    school = school_holidays()
    is_school = np.zeros(len(days), dtype=bool)
    for start, end in zip(school["start"], school["end"]):
        is_school |= (as_dates >= start) & (as_dates < end)
    weekday = days.weekday
    prev_public = np.array([(pd.Timestamp(d) - pd.Timedelta(days=1)).date() in public for d in as_dates])
    next_public = np.array([(pd.Timestamp(d) + pd.Timedelta(days=1)).date() in public for d in as_dates])
    # a "pont": Monday before a Tuesday holiday, Friday after a Thursday holiday
    is_bridge = ((weekday == 0) & next_public) | ((weekday == 4) & prev_public)
    frame = pd.DataFrame({"is_public_holiday": is_public, "is_school_holiday": is_school,
                          "is_bridge_day": is_bridge}, index=days)
    for kind in EVENT_KINDS:
        frame[f"event_{kind}"] = False
    for event in load_events(events_file):
        if event.kind == "curfew":
            continue
        frame.loc[(as_dates >= event.start) & (as_dates < event.end), f"event_{event.kind}"] = True
    return frame.astype(np.int8)


# ---------------------------------------------------------------------------------------- hour table
# Every calendar field of an hour, looked up by its UTC hour number (hours since 1970-01-01 UTC):
# the serving path's calendar, without a pandas call per request. Each block of 2**12 hours (~171
# days) is computed once with the same functions as ``calendar_features`` and kept per events-file
# version, so the table says exactly what ``calendar_features`` and pandas' datetime fields say.
HOUR_FIELDS = ("paris_day", "hour", "weekday", "month", "day_of_year", *CALENDAR_COLUMNS)
_BLOCK_BITS = 12
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


@functools.lru_cache(maxsize=64)
def _hour_block(block: int, events_file: str, _mtime: int) -> np.ndarray:
    """``HOUR_FIELDS`` x hours of one block (int32)."""
    hours = np.arange(block << _BLOCK_BITS, (block + 1) << _BLOCK_BITS, dtype=np.int64)
    stamps = pd.Series(pd.DatetimeIndex(hours.astype("datetime64[h]")).tz_localize("UTC").tz_convert(PARIS_TZ))
    local = stamps.dt.tz_localize(None)
    day = (local.dt.normalize().to_numpy().astype("datetime64[D]") - _EPOCH_DAY).astype(np.int64)
    flags = _calendar_features(stamps, events_file)
    fields = [day, local.dt.hour.to_numpy(), local.dt.weekday.to_numpy(), local.dt.month.to_numpy(),
              local.dt.dayofyear.to_numpy(), *(flags[name].to_numpy() for name in CALENDAR_COLUMNS)]
    table = np.stack([np.asarray(f, np.int32) for f in fields])
    table.flags.writeable = False
    return table


def hour_fields(utc_hours: np.ndarray, settings: Settings | None = None) -> dict[str, np.ndarray]:
    """``HOUR_FIELDS`` of each UTC hour number: its Paris day number (days since 1970-01-01), Paris
    hour, weekday, month and day of year, and the ``CALENDAR_COLUMNS`` of ``calendar_features``."""
    settings = settings or get_settings()
    path = _events_path(settings.events_file)
    mtime = path.stat().st_mtime_ns
    utc_hours = np.asarray(utc_hours, np.int64)
    blocks = utc_hours >> _BLOCK_BITS
    offset = utc_hours & ((1 << _BLOCK_BITS) - 1)
    unique = np.unique(blocks)
    if len(unique) == 1:
        picked = _hour_block(int(unique[0]), str(path), mtime)[:, offset]
    else:
        picked = np.empty((len(HOUR_FIELDS), len(utc_hours)), np.int32)
        for block in unique:
            mine = blocks == block
            picked[:, mine] = _hour_block(int(block), str(path), mtime)[:, offset[mine]]
    return dict(zip(HOUR_FIELDS, picked))
