"""Calendars (holidays, school holidays, events) and SYNOP weather conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REAL_WEATHER
from velocast.data.calendar import calendar_features, load_events, school_holidays
from velocast.data.weather import attach_weather, ingest_weather, load_weather, read_synop, synop_to_hourly


def _ts(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values)).tz_localize("Europe/Paris"))


def test_public_school_and_bridge_days() -> None:
    flags = calendar_features(_ts("2021-05-13 10:00", "2021-05-14 10:00", "2021-05-17 10:00",
                                  "2021-02-15 08:00", "2024-07-30 12:00"))
    assert flags["is_public_holiday"].tolist() == [1, 0, 0, 0, 0]   # Ascension 2021
    assert flags["is_bridge_day"].tolist() == [0, 1, 0, 0, 0]       # the Friday after it
    assert flags["is_school_holiday"].tolist() == [0, 0, 0, 1, 1]   # zone C winter 2021, summer 2024
    assert flags["event_event"].tolist() == [0, 0, 0, 0, 1]         # Olympic Games


def test_curfew_applies_to_its_hours_only() -> None:
    flags = calendar_features(_ts("2021-02-01 17:00", "2021-02-01 18:00", "2021-02-02 05:00", "2021-02-02 06:00"))
    assert flags["event_curfew"].tolist() == [0, 1, 1, 0]


def test_school_table_covers_2019_2026() -> None:
    table = school_holidays()
    assert table["start"].min().year <= 2019 and table["end"].max().year >= 2026
    assert (table["end"] > table["start"]).all()


def test_user_events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "events.yaml"
    custom.write_text("events:\n  - {name: Marathon, kind: event, start: 2025-04-13, end: 2025-04-14}\n")
    monkeypatch.setenv("VELOCAST_EVENTS_FILE", str(custom))
    flags = calendar_features(_ts("2025-04-13 09:00", "2025-04-14 09:00"))
    assert flags["event_event"].tolist() == [1, 0]
    custom.write_text("events:\n  - {name: Bad, kind: party, start: 2025-04-13, end: 2025-04-14}\n")
    with pytest.raises(ValueError, match="event #1"):
        load_events(custom)
    custom.write_text("events:\n  - name: x\n   kind: [\n")  # not YAML: said in one line, not a parser traceback
    with pytest.raises(ValueError, match="is not valid YAML: .*line 3"):
        load_events(custom)
    custom.write_text("evnts:\n  - {name: Marathon, kind: event, start: 2025-04-13, end: 2025-04-14}\n")
    with pytest.raises(ValueError, match="expected a mapping with an 'events' list"):  # not silently "no events"
        load_events(custom)
    custom.write_text("")
    assert load_events(custom) == []


def test_synop_to_hourly_units_and_rain() -> None:
    raw = pd.DataFrame({"date": ["2021-01-01 00:00:00", "2021-01-01 03:00:00"], "t": [272.75, 275.75],
                        "u": [96, 90], "ff": [1.8, 2.4], "n": [10, 40], "rr3": [np.nan, 1.5], "rr1": [np.nan, np.nan]})
    hourly = synop_to_hourly(raw)
    assert len(hourly) == 4
    assert hourly["temperature_c"].tolist() == pytest.approx([-0.4, 0.6, 1.6, 2.6])
    # 1.5 mm in the 3 hours before 03:00 UTC: 0.5 mm in each of 00:00, 01:00 and 02:00
    assert hourly["rain_mm"].iloc[:3].tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_real_weather_ingest_and_attach(home: Path) -> None:
    result = ingest_weather(REAL_WEATHER)
    assert result["observations"] == len(read_synop(REAL_WEATHER))
    weather = load_weather()
    assert weather["timestamp"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert -15 < weather["temperature_c"].min() < 0 and 30 < weather["temperature_c"].max() < 45
    rows = pd.DataFrame({"timestamp": _ts("2021-01-15 08:00", "2021-06-15 08:00"), "temperature_c": [np.nan, 99.0]})
    attached = attach_weather(rows, weather)
    assert attached["temperature_c"].iloc[1] == 99.0  # values given by the user are kept
    assert np.isfinite(attached["temperature_c"].iloc[0]) and attached["rain_mm"].notna().all()
