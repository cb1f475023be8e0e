"""Synthetic Paris-like hourly bike counts, in the tidy format of ``shared/data/paris``.

The generator lets the whole system run without downloaded data and simulates new data arriving
day by day. It is pure numpy/pandas and deterministic for a given ``seed``.

Model of one counter-hour (Europe/Paris local time)::

    mean = level * season(day) * weather(hour) * day_factor(weekday)
           * (weekday shape: background + am * morning peak + pm * evening peak
              | weekend/public-holiday shape: weekend * afternoon hump)
    count = Poisson(mean * Gamma(k, 1/k))           (gamma-Poisson = negative binomial)

then zero-count outages (runs of hours at 0) and counters installed mid-way. Each counter's
profile (level, peak weights, weekend liking, rain sensitivity, seasonal amplitude, dispersion)
is drawn from a generator seeded by ``seed`` and a hash of its ``counter_id``, so the same counter
keeps the same profile across calls (``generate`` and ``next_day`` agree). The weather (rain and
temperature) is a deterministic function of ``seed`` and the hour, so it is also the same in
every call.

The profile constants were fitted to the real file ``counts_2020-09-01_2021-08-09.parquet``
(52 counters, ``date`` naive UTC converted to Europe/Paris before taking hours). Measured there:

- mean weekday (Mon-Fri) count by Paris hour 0..23:
  11.0 5.1 2.7 1.6 1.5 4.4 13.9 53.8 158.8 142.4 66.1 59.8 78.2 78.6 73.5 74.4 90.0 131.5
  171.6 151.5 82.9 43.2 27.6 22.2  (peaks at 08:00 and 18:00);
- mean weekend count by Paris hour: 16.1 11.1 8.4 4.8 3.4 3.6 5.5 10.2 21.9 37.8 55.6 72.7
  88.4 80.1 88.1 107.7 115.9 114.6 95.9 70.2 46.3 30.4 19.8 14.5  (afternoon hump);
- mean weekday count / mean weekend count = 64.44 / 46.81 = 1.377;
- mean by weekday Mon..Sun: 59.8 66.6 67.3 67.6 60.9 49.0 44.7;
- mean by month Jan..Dec: 43 46 60 57 57 79 65 46 97 68 45 41 (lockdowns in Nov and Apr);
- per-counter mean count: median 49, from 2 to 220.

With ``generate(counters=52, days=343, start="2020-09-01", seed=0)`` the synthetic weekday
profile correlates at 0.999 with the real one (peaks at 08:00 and 18:00 too) and the
weekday/weekend ratio is 1.382 (real: 1.377); see ``tests/data/test_synthetic.py``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings
from velocast.data.calendar import public_holidays, school_holidays
from velocast.data.schema import paris_midnight, to_paris
from velocast.fileio import atomic_write_parquet

log = logging.getLogger(__name__)

TIDY_COLUMNS: list[str] = [
    "counter_id", "counter_name", "site_id", "site_name", "bike_count", "date",
    "counter_installation_date", "counter_technical_id", "latitude", "longitude", "log_bike_count",
]
DRIFT_SCENARIOS: tuple[str, ...] = ("level_shift", "new_counters", "strike", "seasonal")

# ------------------------------------------------------------------ figures of the real file
REAL_WEEKDAY_PROFILE: tuple[float, ...] = (
    11.0, 5.1, 2.7, 1.6, 1.5, 4.4, 13.9, 53.8, 158.8, 142.4, 66.1, 59.8,
    78.2, 78.6, 73.5, 74.4, 90.0, 131.5, 171.6, 151.5, 82.9, 43.2, 27.6, 22.2,
)
REAL_WEEKEND_PROFILE: tuple[float, ...] = (
    16.1, 11.1, 8.4, 4.8, 3.4, 3.6, 5.5, 10.2, 21.9, 37.8, 55.6, 72.7,
    88.4, 80.1, 88.1, 107.7, 115.9, 114.6, 95.9, 70.2, 46.3, 30.4, 19.8, 14.5,
)
REAL_WEEKDAY_WEEKEND_RATIO = 1.377

# ------------------------------------------------------------------ profile constants
# The real weekday profile split into a background (errands, leisure, deliveries) and two commute
# peaks, in counts of an average real counter; divided by the weekday mean below so that a
# counter's ``level`` is its mean weekday hourly count (at season factor 1).
_BACKGROUND = np.array([
    11.0, 5.1, 2.7, 1.6, 1.5, 4.4, 12.0, 30.0, 50.0, 55.0, 58.0, 60.0,
    76.0, 77.0, 72.0, 72.0, 78.0, 85.0, 88.0, 78.0, 62.0, 43.0, 27.6, 22.2,
])
_MORNING_PEAK = np.zeros(24)
_MORNING_PEAK[[6, 7, 8, 9, 10]] = [2.0, 24.0, 109.0, 87.0, 8.0]
_EVENING_PEAK = np.zeros(24)
_EVENING_PEAK[[15, 16, 17, 18, 19, 20]] = [2.0, 12.0, 46.0, 84.0, 73.0, 21.0]
# weekend and public holidays: one broad afternoon hump (the real weekend profile, smoothed)
_WEEKEND = np.array([
    16.0, 11.0, 8.0, 5.0, 3.5, 3.5, 5.5, 10.0, 22.0, 38.0, 56.0, 72.0,
    84.0, 86.0, 92.0, 106.0, 114.0, 113.0, 96.0, 71.0, 47.0, 31.0, 20.0, 14.5,
])
# Weekday holidays, school holidays and the hashed weekend liking lower the synthetic
# weekday/weekend ratio; 0.9 on the weekend shape brings it back to the real 1.38.
_WEEKEND_LEVEL = 0.9
_SCALE = float(np.mean(_BACKGROUND + _MORNING_PEAK + _EVENING_PEAK))
_BACKGROUND, _MORNING_PEAK, _EVENING_PEAK = (a / _SCALE for a in (_BACKGROUND, _MORNING_PEAK, _EVENING_PEAK))
_WEEKEND = _WEEKEND * _WEEKEND_LEVEL / _SCALE
COMMUTE_HOURS: tuple[int, ...] = (7, 8, 9, 17, 18, 19)

# Mon..Sun, from the real means by weekday (weekend days relative to the weekend shape)
_DAY_FACTOR = np.array([0.93, 1.03, 1.04, 1.05, 0.95, 1.05, 0.95])
_SUNDAY = 6
# season by month (anchored mid-month, interpolated over the year): low in winter, high in late
# spring, summer and September, a dip in August (the real means without their lockdowns)
_MONTH_FACTOR = np.array([0.72, 0.78, 0.92, 1.00, 1.06, 1.18, 1.05, 0.76, 1.25, 1.08, 0.90, 0.76])
_MONTH_MID_DOY = np.array([15, 46, 74, 105, 135, 166, 196, 227, 258, 288, 319, 349], dtype=float)
_SCHOOL_HOLIDAY_PEAKS = 0.8  # commute peaks during school holidays

# weather effects
_RAIN_EFFECT = 0.30       # count factor exp(-0.30 * sensitivity * rain_mm)
_RAIN_THRESHOLD = 1.35    # share of rainy hours ~ P(N(0,1) > 1.35) ~ 9%
_COLD_BELOW_C, _COLD_EFFECT = 8.0, 0.025
_HOT_ABOVE_C, _HOT_EFFECT = 28.0, 0.02

# outages: about one per counter every 120 days, half short (hours), half long (days)
_OUTAGE_EVERY_DAYS = 120.0
_LATE_SITE_SHARE = 0.15

# drift scenarios
LEVEL_SHIFT_FACTOR = 1.6
NEW_COUNTERS = 5
STRIKE_DAYS = 14
STRIKE_FACTOR = 1.8

# site metadata
_FIRST_SITE_ID = 100000001
_STREETS = (
    "rue Example", "boulevard Exemple", "quai des Tilleuls", "avenue des Peupliers",
    "rue du Moulin", "boulevard de la Gare", "quai de la Loire", "rue des Lilas",
    "avenue du Parc", "rue de la Fontaine", "boulevard des Marronniers", "rue du Canal",
    "quai des Bateliers", "avenue de l'Observatoire", "rue des Vignes", "rue de la Poste",
    "boulevard du Levant", "rue des Acacias", "avenue des Tanneurs", "rue du Pont",
    "quai de Seine", "rue des Jardins", "boulevard du Couchant", "rue de l'Horloge",
)
_DIRECTIONS = (("N-S", "S-N"), ("E-O", "O-E"), ("NE-SO", "SO-NE"), ("NO-SE", "SE-NO"))
_LATITUDE = (48.83, 48.89)
_LONGITUDE = (2.27, 2.40)

# stream tags of the seeded generators (one independent stream per purpose)
_TAG_META, _TAG_LATE, _TAG_PROFILE, _TAG_WEATHER = 11, 12, 13, 14
_TAG_GAMMA, _TAG_POISSON, _TAG_OUTAGE, _TAG_NEXT_DAY = 21, 22, 23, 24


# ------------------------------------------------------------------ data classes
@dataclass(frozen=True)
class CounterMeta:
    """Identity and location of one counter (one direction of a site)."""

    counter_id: str
    counter_name: str
    site_id: int | str
    site_name: str
    latitude: float
    longitude: float
    installation_date: pd.Timestamp
    technical_id: str
    first_day: date  # first local day with counts


@dataclass(frozen=True)
class Profiles:
    """Per-counter profile parameters, one array entry per counter."""

    level: np.ndarray           # mean weekday hourly count at season factor 1
    am: np.ndarray              # weight of the morning commute peak
    pm: np.ndarray              # weight of the evening commute peak
    weekend: np.ndarray         # weekend/holiday level relative to the shared weekend shape
    rain: np.ndarray            # rain sensitivity
    season: np.ndarray          # seasonal amplitude
    dispersion: np.ndarray      # gamma shape k (smaller = noisier)

    def scaled(self, factor: np.ndarray) -> Profiles:
        """The same profiles with levels multiplied by ``factor`` (one value per counter)."""
        return Profiles(self.level * factor, self.am, self.pm, self.weekend, self.rain,
                        self.season, self.dispersion)


@dataclass(frozen=True)
class _Hours:
    """Every real hour of a run of local days, with what the model needs to know about it."""

    utc: pd.DatetimeIndex       # tz-aware UTC, one entry per real hour (DST-safe)
    hour: np.ndarray            # Paris hour of day
    weekday: np.ndarray         # Paris weekday (0 = Monday)
    day_code: np.ndarray        # index of the Paris day, 0..n_days-1
    doy: np.ndarray             # Paris day of year
    weekend_like: np.ndarray    # Saturday, Sunday or public holiday
    school_holiday: np.ndarray
    rain_mm: np.ndarray
    temperature_c: np.ndarray


@dataclass(frozen=True)
class _Drift:
    scenario: str
    start: pd.Timestamp  # tz-aware UTC
    end: pd.Timestamp    # tz-aware UTC (strike only; otherwise the end of the period)


# ------------------------------------------------------------------ public API
def generate(counters: int = 20, days: int = 120, start: str | date = "2021-01-01", seed: int = 0,
             drift: str | None = None, drift_start: str | date | None = None) -> pd.DataFrame:
    """Synthetic hourly counts of ``counters`` counters over ``days`` Paris days, tidy format.

    ``date`` is naive UTC like the real file; every real hour (23 or 25 on DST days) appears once
    per active counter. ``drift`` applies one of :data:`DRIFT_SCENARIOS` from ``drift_start``
    (default: the middle of the period). Raises ValueError on bad arguments.
    """
    _check_args(counters, days, seed, drift)
    first = _as_date(start)
    hours = _hours(first, days, seed)
    plan = _drift_plan(drift, drift_start, first, days)

    metas = _late_starts(_site_metas(counters, seed, first), seed, first, days)
    counts, active = _simulate(metas, hours, seed, plan, block=0)
    if plan is not None and plan.scenario == "new_counters":
        new_day = plan.start.tz_convert(PARIS_TZ).date()
        extra = [_with_first_day(m, new_day)
                 for m in _site_metas(NEW_COUNTERS, seed, first, first_site=(counters + 1) // 2)]
        more_counts, more_active = _simulate(extra, hours, seed, plan, block=1)
        metas = metas + extra
        counts, active = np.hstack([counts, more_counts]), np.hstack([active, more_active])
    frame = _tidy(metas, hours, counts, active)
    log.info("generated %d rows: %d counters, %d days from %s (seed %d, drift %s)",
             len(frame), len(metas), days, first, seed, drift or "none")
    return frame


def next_day(settings: Settings | None = None, seed: int = 0, counters: int = 20) -> pd.DataFrame:
    """The rows of the Paris day after the store's latest timestamp, for the store's counters.

    Each counter keeps its hashed profile (the one ``generate`` gives it for the same ``seed``);
    its level is calibrated on its last 28 days in the store, so counters of another origin (real
    data, a drifted run) continue at their current level. With an empty store, ``counters`` new
    counters start on 2021-01-01. Used by ``velocast data generate --arrive-daily``.
    """
    _check_args(counters, 1, seed, None)
    day, metas, scale = _arriving_counters(settings or get_settings(), seed, counters)
    hours = _hours(day, 1, seed)
    profiles = _profiles([m.counter_id for m in metas], seed).scaled(scale)
    rng = np.random.default_rng([seed, _TAG_NEXT_DAY, day.toordinal()])
    mean = _expected(profiles, hours, None)
    counts = _sample(mean, profiles.dispersion, rng, rng)
    counts[_outages(rng, np.zeros(len(metas), dtype=int), len(hours.utc))] = 0.0
    active = np.ones_like(counts, dtype=bool)
    frame = _tidy(metas, hours, counts, active)
    log.info("next day %s: %d rows for %d counters", day, len(frame), len(metas))
    return frame


def _arriving_counters(settings: Settings, seed: int,
                       counters: int) -> tuple[date, list[CounterMeta], np.ndarray]:
    """The day that arrives next, its counters and their level factors."""
    from velocast.data import store

    latest = store.latest_timestamp(settings)
    if latest is None:
        day = date(2021, 1, 1)
        metas = _site_metas(counters, seed, day)
        return day, metas, np.ones(len(metas))
    day = latest.tz_convert(PARIS_TZ).date() + timedelta(days=1)
    metas = _store_metas(store.counters(settings), seed, day)
    return day, metas, _calibration(metas, day, seed, settings)


def write(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write a tidy frame as Parquet (``.parquet``/``.pq``) or CSV (``.csv``), chosen by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        atomic_write_parquet(frame, path)
    elif suffix == ".csv":
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"cannot write {path}: expected a .parquet, .pq or .csv file name")
    log.info("wrote %d rows to %s", len(frame), path)
    return path


def weather(start: str | date = "2021-01-01", days: int = 1, seed: int = 0) -> pd.DataFrame:
    """The synthetic hourly weather the generator uses: ``date`` (naive UTC), temperature, rain."""
    hours = _hours(_as_date(start), days, seed)
    return pd.DataFrame({"date": hours.utc.tz_localize(None).as_unit("us"),
                         "temperature_c": hours.temperature_c, "rain_mm": hours.rain_mm})


# ------------------------------------------------------------------ arguments
def _check_args(counters: int, days: int, seed: int, drift: str | None) -> None:
    if counters < 1:
        raise ValueError(f"counters must be >= 1, got {counters}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if drift is not None and drift not in DRIFT_SCENARIOS:
        raise ValueError(f"unknown drift scenario {drift!r}: expected one of {', '.join(DRIFT_SCENARIOS)}")


def _as_date(value: str | date | pd.Timestamp) -> date:
    return to_paris(value, naive="paris").date()


def _local_midnight(day: date) -> pd.Timestamp:
    return paris_midnight(day)


def _drift_plan(drift: str | None, drift_start: str | date | None, first: date,
                days: int) -> _Drift | None:
    if drift is None:
        return None
    begin = _as_date(drift_start) if drift_start is not None else first + timedelta(days=days // 2)
    last = first + timedelta(days=days - 1)
    if not first <= begin <= last:
        raise ValueError(f"drift_start {begin} is outside the generated period {first} .. {last}")
    span = STRIKE_DAYS if drift == "strike" else days
    end = min(begin + timedelta(days=span), first + timedelta(days=days))
    return _Drift(drift, _local_midnight(begin).tz_convert("UTC"), _local_midnight(end).tz_convert("UTC"))


# ------------------------------------------------------------------ counters
def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def _site_metas(n_counters: int, seed: int, first: date, first_site: int = 0) -> list[CounterMeta]:
    """``n_counters`` counters on sites ``first_site``, ``first_site + 1``...: two directions per
    site (one on the last site when ``n_counters`` is odd). A site's metadata depends only on
    ``seed`` and its number, so site 3 is the same whatever the number of counters."""
    out: list[CounterMeta] = []
    for k in range((n_counters + 1) // 2):
        number = first_site + k
        rng = np.random.default_rng([seed, _TAG_META, number])
        site_id = _FIRST_SITE_ID + number
        street = _STREETS[int(rng.integers(len(_STREETS)))]
        site_name = f"{int(rng.integers(1, 200))} {street}"
        directions = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
        lat, lon = rng.uniform(*_LATITUDE), rng.uniform(*_LONGITUDE)
        installed = pd.Timestamp(first) - pd.Timedelta(days=int(rng.integers(100, 3000)))
        for d in range(min(2, n_counters - 2 * k)):
            out.append(CounterMeta(
                counter_id=f"{site_id}-{site_id + (d + 1) * 1_000_000}",
                counter_name=f"{site_name} {directions[d]}", site_id=site_id, site_name=site_name,
                latitude=round(float(lat), 6), longitude=round(float(lon), 6),
                installation_date=installed, technical_id=_technical_id(str(site_id), installed.year),
                first_day=first,
            ))
    return out


def _technical_id(site_id: str, year: int) -> str:
    return f"Y2H{year % 100:02d}{_stable_hash(site_id) % 1_000_000:06d}"


def _with_first_day(meta: CounterMeta, day: date) -> CounterMeta:
    """The counter installed on ``day`` (its first day with counts)."""
    installed = pd.Timestamp(day)
    return CounterMeta(meta.counter_id, meta.counter_name, meta.site_id, meta.site_name,
                       meta.latitude, meta.longitude, installed,
                       _technical_id(str(meta.site_id), installed.year), day)


def _late_starts(metas: list[CounterMeta], seed: int, first: date, days: int) -> list[CounterMeta]:
    """Some sites (both directions) are installed between 20% and 60% into the period."""
    sites = sorted({m.site_id for m in metas})
    if len(sites) < 3 or days < 10:
        return metas
    rng = np.random.default_rng([seed, _TAG_LATE])
    n_late = max(1, round(_LATE_SITE_SHARE * len(sites)))
    late = rng.choice(len(sites), size=n_late, replace=False)
    offsets = rng.integers(int(days * 0.2), int(days * 0.6) + 1, size=n_late)
    first_day = {sites[s]: first + timedelta(days=int(o)) for s, o in zip(late, offsets)}
    return [_with_first_day(m, first_day[m.site_id]) if m.site_id in first_day else m for m in metas]


def _store_metas(table: pd.DataFrame, seed: int, day: date) -> list[CounterMeta]:
    """Counters of the store (``store.counters``), as metadata for the next day."""
    out = []
    for row in table.itertuples(index=False):
        site = str(row.site_id)
        installed = pd.Timestamp(row.installation_date) if pd.notna(row.installation_date) else pd.NaT
        out.append(CounterMeta(
            counter_id=str(row.counter_id), counter_name=str(row.counter_name),
            site_id=int(site) if site.isdigit() else site, site_name=str(row.site_name),
            latitude=float(row.latitude), longitude=float(row.longitude),
            installation_date=installed,
            technical_id=_technical_id(site, installed.year if pd.notna(installed) else day.year),
            first_day=day,
        ))
    return out


def _profiles(counter_ids: list[str], seed: int) -> Profiles:
    """Profile parameters of each counter, from ``seed`` and a stable hash of its id."""
    rows = []
    for counter_id in counter_ids:
        rng = np.random.default_rng([seed, _TAG_PROFILE, _stable_hash(counter_id)])
        level = float(np.clip(np.exp(rng.normal(np.log(52.0), 0.7)), 2.0, 400.0))
        am = rng.uniform(0.5, 1.5)
        pm = float(np.clip(2.0 - am + rng.normal(0.0, 0.2), 0.4, 1.6))
        weekend = float(np.exp(rng.normal(0.0, 0.2)))
        rain = rng.uniform(0.6, 1.4)
        season = rng.uniform(0.7, 1.3)
        dispersion = rng.uniform(5.0, 15.0)
        rows.append((level, am, pm, weekend, rain, season, dispersion))
    table = np.array(rows, dtype=float).reshape(len(counter_ids), 7)
    return Profiles(*(table[:, j].copy() for j in range(7)))


# ------------------------------------------------------------------ calendar and weather
def _hours(first: date, days: int, seed: int) -> _Hours:
    """Every real hour of ``days`` Paris days from ``first``: 23 or 25 on DST days, none twice."""
    begin = _local_midnight(first).tz_convert("UTC")
    end = _local_midnight(first + timedelta(days=days)).tz_convert("UTC")
    utc = pd.date_range(begin, end, freq="h", inclusive="left")
    local = utc.tz_convert(PARIS_TZ)
    local_day = local.tz_localize(None).normalize()
    day_code = ((local_day - pd.Timestamp(first)) // pd.Timedelta(days=1)).to_numpy()
    all_days = [first + timedelta(days=i) for i in range(days)]
    holidays = public_holidays(first.year - 1, all_days[-1].year + 1)
    is_public = np.array([d in holidays for d in all_days])
    is_school = _school_days(all_days)
    weekday = local.weekday.to_numpy()
    rain, temperature = _weather(utc, local, seed)
    return _Hours(
        utc=utc, hour=local.hour.to_numpy(), weekday=weekday, day_code=day_code,
        doy=local.dayofyear.to_numpy(), weekend_like=(weekday >= 5) | is_public[day_code],
        school_holiday=is_school[day_code], rain_mm=rain, temperature_c=temperature,
    )


def _school_days(days: list[date]) -> np.ndarray:
    table = school_holidays()
    values = np.array(days, dtype="datetime64[D]")
    out = np.zeros(len(days), dtype=bool)
    for start, end in zip(table["start"], table["end"]):
        out |= (values >= np.datetime64(start)) & (values < np.datetime64(end))
    return out


def _weather(utc: pd.DatetimeIndex, local: pd.DatetimeIndex, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rain (mm/h) and temperature (°C): deterministic functions of ``seed`` and the hour.

    Both are sums of seeded sinusoids with incommensurate periods (a smooth, quasi-random
    process that needs no state, so any period can be computed on its own): rain falls when a
    unit-variance field exceeds a threshold (about 9% of hours), temperature follows the season,
    the time of day and a few days-long anomalies.
    """
    rng = np.random.default_rng([seed, _TAG_WEATHER])
    t = ((utc - pd.Timestamp("2000-01-01", tz="UTC")) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    rain_periods = np.exp(rng.uniform(np.log(6.0), np.log(240.0), size=12))
    rain_phases = rng.uniform(0.0, 2 * np.pi, size=12)
    field = np.cos(2 * np.pi * t[:, None] / rain_periods + rain_phases).sum(axis=1) * np.sqrt(2 / 12)
    rain = np.round(np.clip(field - _RAIN_THRESHOLD, 0.0, None) * 2.5, 1)

    temp_periods = np.exp(rng.uniform(np.log(48.0), np.log(500.0), size=5))
    temp_phases = rng.uniform(0.0, 2 * np.pi, size=5)
    anomaly = np.cos(2 * np.pi * t[:, None] / temp_periods + temp_phases).sum(axis=1) * 1.6
    doy = local.dayofyear.to_numpy()
    hour = local.hour.to_numpy()
    temperature = (12.5 - 8.0 * np.cos(2 * np.pi * (doy - 20) / 365.25)
                   - 4.0 * np.cos(2 * np.pi * (hour - 3) / 24) + anomaly - 1.5 * (rain > 0))
    return rain, np.round(temperature, 1)


# ------------------------------------------------------------------ the model
def _season(doy: np.ndarray) -> np.ndarray:
    return np.interp(doy.astype(float), _MONTH_MID_DOY, _MONTH_FACTOR, period=365.0)


def _expected(profiles: Profiles, hours: _Hours, plan: _Drift | None) -> np.ndarray:
    """Mean count of every hour (rows) and counter (columns), before noise and outages."""
    shape_hour = hours.hour.copy()
    if plan is not None and plan.scenario == "seasonal":
        # morning peak one hour earlier, evening peak one hour later
        on = np.asarray(hours.utc >= plan.start)
        morning, evening = on & (shape_hour >= 5) & (shape_hour <= 10), on & (shape_hour >= 17) & (shape_hour <= 22)
        shape_hour = np.where(morning, shape_hour + 1, np.where(evening, shape_hour - 1, shape_hour))
    peaks = np.where(hours.school_holiday, _SCHOOL_HOLIDAY_PEAKS, 1.0)
    workday = (_BACKGROUND[shape_hour][:, None]
               + profiles.am[None, :] * (_MORNING_PEAK[shape_hour] * peaks)[:, None]
               + profiles.pm[None, :] * (_EVENING_PEAK[shape_hour] * peaks)[:, None])
    weekend = _WEEKEND[hours.hour][:, None] * profiles.weekend[None, :]
    shape = np.where(hours.weekend_like[:, None], weekend, workday)

    day_factor = np.where(hours.weekend_like & (hours.weekday < 5), _DAY_FACTOR[_SUNDAY],
                          _DAY_FACTOR[hours.weekday])
    season = 1.0 + profiles.season[None, :] * (_season(hours.doy) - 1.0)[:, None]
    rain = np.exp(-_RAIN_EFFECT * hours.rain_mm[:, None] * profiles.rain[None, :])
    temp = hours.temperature_c
    thermal = np.clip(1.0 - _COLD_EFFECT * np.clip(_COLD_BELOW_C - temp, 0.0, None)
                      - _HOT_EFFECT * np.clip(temp - _HOT_ABOVE_C, 0.0, None), 0.5, 1.0)
    mean = profiles.level[None, :] * shape * season * rain * (day_factor * thermal)[:, None]
    return _apply_drift(mean, hours, plan)


def _apply_drift(mean: np.ndarray, hours: _Hours, plan: _Drift | None) -> np.ndarray:
    if plan is None:
        return mean
    on = np.asarray((hours.utc >= plan.start) & (hours.utc < plan.end))
    if plan.scenario == "level_shift":
        mean[on] *= LEVEL_SHIFT_FACTOR
    elif plan.scenario == "strike":
        commute = on & ~hours.weekend_like & np.isin(hours.hour, COMMUTE_HOURS)
        mean[commute] *= STRIKE_FACTOR
    return mean


def _sample(mean: np.ndarray, dispersion: np.ndarray, gamma_rng: np.random.Generator,
            poisson_rng: np.random.Generator) -> np.ndarray:
    """Gamma-Poisson counts; drawn hour by hour so that a drift changes nothing before it starts."""
    shape = np.broadcast_to(dispersion[None, :], mean.shape)
    multiplier = gamma_rng.gamma(shape, 1.0 / shape)
    return poisson_rng.poisson(mean * multiplier).astype(float)


def _outages(rng: np.random.Generator, first_hour: np.ndarray, n_hours: int) -> np.ndarray:
    """Boolean mask (hours x counters) of zero-count outages: short (3-12 h) or long (1-5 days)."""
    mask = np.zeros((n_hours, len(first_hour)), dtype=bool)
    for c, begin in enumerate(first_hour):
        span = n_hours - int(begin)
        n_out = rng.poisson(span / 24.0 / _OUTAGE_EVERY_DAYS) if span > 0 else 0
        for _ in range(n_out):
            length = int(rng.integers(3, 13)) if rng.random() < 0.5 else int(rng.integers(24, 121))
            at = int(begin) + int(rng.integers(0, span))
            mask[at:at + length, c] = True
    return mask


def _simulate(metas: list[CounterMeta], hours: _Hours, seed: int, plan: _Drift | None,
              block: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and the active mask (hours x counters) of one block of counters."""
    profiles = _profiles([m.counter_id for m in metas], seed)
    first_local = pd.DatetimeIndex([_local_midnight(m.first_day) for m in metas])
    first_hour = np.searchsorted(hours.utc.asi8, first_local.tz_convert("UTC").as_unit(hours.utc.unit).asi8)
    active = np.arange(len(hours.utc))[:, None] >= first_hour[None, :]
    mean = _expected(profiles, hours, plan)
    counts = _sample(mean, profiles.dispersion,
                     np.random.default_rng([seed, _TAG_GAMMA, block]),
                     np.random.default_rng([seed, _TAG_POISSON, block]))
    counts[_outages(np.random.default_rng([seed, _TAG_OUTAGE, block]), first_hour, len(hours.utc))] = 0.0
    return counts, active


def _calibration(metas: list[CounterMeta], day: date, seed: int, settings: Settings) -> np.ndarray:
    """Level factor per counter: observed / expected counts over its last 28 days in the store.

    Days whose observed total is 0 (outages) are left out; counters with fewer than 3 usable days
    keep their hashed level (factor 1).
    """
    from velocast.data import store

    window = 28
    first = day - timedelta(days=window)
    ids = [m.counter_id for m in metas]
    history = store.query_counts(first.isoformat(), day.isoformat(), settings=settings)
    scale = np.ones(len(metas))
    if history.empty:
        return scale
    hours = _hours(first, window, seed)
    expected = _expected(_profiles(ids, seed), hours, None)
    observed = np.full(expected.shape, np.nan)
    column = pd.Index(ids).get_indexer(history["counter_id"])
    row = hours.utc.get_indexer(history["timestamp"].dt.tz_convert("UTC"))
    ok = (column >= 0) & (row >= 0)
    observed[row[ok], column[ok]] = history["bike_count"].to_numpy(dtype=float)[ok]
    present = ~np.isnan(observed)
    starts = np.flatnonzero(np.r_[True, np.diff(hours.day_code) != 0])
    day_observed = np.add.reduceat(np.where(present, observed, 0.0), starts, axis=0)
    day_expected = np.add.reduceat(np.where(present, expected, 0.0), starts, axis=0)
    usable = day_observed > 0
    numerator = (day_observed * usable).sum(axis=0)
    denominator = (day_expected * usable).sum(axis=0)
    good = (usable.sum(axis=0) >= 3) & (denominator > 0)
    scale[good] = np.clip(numerator[good] / denominator[good], 0.05, 20.0)
    log.info("next day: levels calibrated on %d of %d counters (median factor %.2f)",
             int(good.sum()), len(metas), float(np.median(scale)))
    return scale


# ------------------------------------------------------------------ output
def _tidy(metas: list[CounterMeta], hours: _Hours, counts: np.ndarray, active: np.ndarray) -> pd.DataFrame:
    """Rows of the active counter-hours, counter by counter, in the tidy format of the real file."""
    counter, hour = np.nonzero(active.T)
    bike = counts.T[counter, hour]

    def categorical(values: list[str]) -> pd.Categorical:
        per_counter = pd.Categorical(values)
        return pd.Categorical.from_codes(per_counter.codes[counter], per_counter.categories)

    site_ids = [m.site_id for m in metas]
    site_dtype = "int64" if all(isinstance(s, int) for s in site_ids) else object
    installed = pd.DatetimeIndex([m.installation_date for m in metas]).as_unit("us").to_numpy()
    frame = pd.DataFrame({
        "counter_id": categorical([m.counter_id for m in metas]),
        "counter_name": categorical([m.counter_name for m in metas]),
        "site_id": np.array(site_ids, dtype=site_dtype)[counter],
        "site_name": categorical([m.site_name for m in metas]),
        "bike_count": bike,
        "date": hours.utc.tz_localize(None).as_unit("us").to_numpy()[hour],
        "counter_installation_date": installed[counter],
        "counter_technical_id": categorical([m.technical_id for m in metas]),
        "latitude": np.array([m.latitude for m in metas], dtype=float)[counter],
        "longitude": np.array([m.longitude for m in metas], dtype=float)[counter],
        "log_bike_count": np.log1p(bike),
    })
    return frame[TIDY_COLUMNS]


__all__ = [
    "COMMUTE_HOURS",
    "DRIFT_SCENARIOS",
    "LEVEL_SHIFT_FACTOR",
    "NEW_COUNTERS",
    "REAL_WEEKDAY_PROFILE",
    "REAL_WEEKDAY_WEEKEND_RATIO",
    "REAL_WEEKEND_PROFILE",
    "STRIKE_DAYS",
    "STRIKE_FACTOR",
    "TIDY_COLUMNS",
    "CounterMeta",
    "Profiles",
    "generate",
    "next_day",
    "weather",
    "write",
]
