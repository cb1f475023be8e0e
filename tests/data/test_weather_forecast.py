"""Weather forecasts (Open-Meteo format): parsing, units, the precipitation shift, DST, storage with
issue times, the as-of lookup, and the fetch against a real HTTP server on 127.0.0.1.

Payloads are built from the real Orly SYNOP observations (the numbers are real), written the way
Open-Meteo writes them: local times without offset at ONE ``utc_offset_seconds`` for the whole
answer, precipitation summed over the hour BEFORE each time, wind in km/h unless asked otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import REAL_WEATHER
from tests.http_server import Reply, ScriptedServer, refused_url
from velocast.cli import app as cli_app
from velocast.config import get_settings
from velocast.data.weather import WEATHER_COLUMNS, read_synop, synop_to_hourly
from velocast.data.weather_forecast import (
    ISSUE_DAY_START,
    ISSUE_EXPLICIT,
    ISSUE_FETCH,
    ISSUE_PAYLOAD,
    WeatherForecastError,
    day_ahead_cutoffs,
    fetch_weather_forecast,
    forecast_as_of,
    ingest_weather_forecast,
    load_forecasts,
    parse_open_meteo,
)

PARIS = "Europe/Paris"
WIND = {"km/h": 3.6, "m/s": 1.0, "mp/h": 1 / 0.44704, "kn": 3600 / 1852}


@pytest.fixture(scope="module")
def real_weather_hourly() -> pd.DataFrame:
    """The real SYNOP observations of Orly as velocast's hourly weather, indexed by UTC hour."""
    return synop_to_hourly(read_synop(REAL_WEATHER))


def open_meteo(hourly: pd.DataFrame, first_day: str, days: int = 3, offset_hours: int | None = None,
               wind: str = "km/h", fahrenheit: bool = False, inch: bool = False, unixtime: bool = False,
               **extra: object) -> dict:
    """An Open-Meteo answer for Paris from ``first_day`` 00:00 local, as the API writes it."""
    start = pd.Timestamp(first_day).tz_localize(PARIS)
    offset = int(start.utcoffset().total_seconds()) if offset_hours is None else offset_hours * 3600
    # ONE offset for the whole answer: times run hourly from 00:00 local of the first day
    utc = pd.date_range(pd.Timestamp(first_day) - pd.Timedelta(seconds=offset), periods=24 * days, freq="h",
                        tz="UTC")
    obs = hourly.reindex(utc)
    rain_before = hourly["rain_mm"].reindex(utc - pd.Timedelta(hours=1)).to_numpy()  # the hour BEFORE each time

    def values(array: np.ndarray, digits: int = 2) -> list:
        return [None if np.isnan(v) else round(float(v), digits) for v in array]

    temperature = obs["temperature_c"].to_numpy()
    times = ([int(t.timestamp()) for t in utc] if unixtime
             else [(t.tz_localize(None) + pd.Timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M") for t in utc])
    return {
        "latitude": 48.86, "longitude": 2.3399997, "generationtime_ms": 0.07, "utc_offset_seconds": offset,
        "timezone": PARIS, "timezone_abbreviation": "CEST" if offset == 7200 else "CET", "elevation": 43.0,
        "hourly_units": {"time": "unixtime" if unixtime else "iso8601", "temperature_2m": "°F" if fahrenheit else "°C",
                         "precipitation": "inch" if inch else "mm", "wind_speed_10m": wind, "cloud_cover": "%",
                         "relative_humidity_2m": "%"},
        "hourly": {
            "time": times,
            "temperature_2m": values(temperature * 9 / 5 + 32 if fahrenheit else temperature),
            "precipitation": values(rain_before / 25.4 if inch else rain_before, 4),
            "wind_speed_10m": values(obs["wind_ms"].to_numpy() * WIND[wind], 3),
            "cloud_cover": values(obs["cloud_cover"].to_numpy(), 0),
            "relative_humidity_2m": values(obs["humidity"].to_numpy(), 0),
        },
        **extra,
    }


def _expected(hourly: pd.DataFrame, stamps: pd.Series) -> pd.DataFrame:
    return hourly.reindex(pd.DatetimeIndex(stamps).tz_convert("UTC"))[WEATHER_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------- parsing
def test_parse_maps_the_real_values_and_shifts_precipitation_to_the_hour_it_starts(
        real_weather_hourly: pd.DataFrame) -> None:
    payload = open_meteo(real_weather_hourly, "2020-10-01")  # three rainy days
    frame = parse_open_meteo(payload)
    assert list(frame.columns) == ["timestamp", *WEATHER_COLUMNS] and len(frame) == 72
    assert str(frame["timestamp"].dt.tz) == PARIS
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2020-10-01 00:00", tz=PARIS)
    assert frame["timestamp"].diff().dropna().eq(pd.Timedelta(hours=1)).all()
    expected = _expected(real_weather_hourly, frame["timestamp"])
    got = frame[WEATHER_COLUMNS]
    for column, tolerance in (("temperature_c", 0.01), ("wind_ms", 0.01), ("humidity", 0.5), ("cloud_cover", 0.5)):
        np.testing.assert_allclose(got[column], expected[column], atol=tolerance, err_msg=column)  # Open-Meteo rounds %
    # rain_mm at T = precipitation at T+1h; the last hour has no following value
    np.testing.assert_allclose(got["rain_mm"].iloc[:-1], expected["rain_mm"].iloc[:-1], atol=1e-4)
    assert np.isnan(got["rain_mm"].iloc[-1])
    assert expected["rain_mm"].iloc[:-1].gt(0).any()  # the shift is tested on hours with real rain


@pytest.mark.parametrize("units", [{"wind": "m/s"}, {"wind": "mp/h"}, {"wind": "kn"}, {"fahrenheit": True},
                                   {"inch": True}])
def test_units_are_converted_from_hourly_units(real_weather_hourly: pd.DataFrame, units: dict) -> None:
    reference = parse_open_meteo(open_meteo(real_weather_hourly, "2021-02-01"))
    frame = parse_open_meteo(open_meteo(real_weather_hourly, "2021-02-01", **units))
    for column in WEATHER_COLUMNS:
        np.testing.assert_allclose(frame[column], reference[column], atol=0.02, err_msg=column)
    assert reference["wind_ms"].gt(1).any()


def test_precipitation_of_the_hour_before_becomes_rain_of_the_hour_starting() -> None:
    payload = {"utc_offset_seconds": 7200, "timezone": PARIS,
               "hourly": {"time": ["2021-06-14T07:00", "2021-06-14T08:00", "2021-06-14T09:00"],
                          "precipitation": [0.0, 2.5, 0.0]}}  # 2.5 mm fell between 07:00 and 08:00
    assert parse_open_meteo(payload)["rain_mm"].tolist()[:2] == [2.5, 0.0]


def test_wind_in_km_h_is_read_as_km_h() -> None:
    payload = {"utc_offset_seconds": 0, "timezone": "GMT",
               "hourly": {"time": ["2021-01-01T00:00", "2021-01-01T01:00"], "wind_speed_10m": [36.0, 7.2]}}
    assert parse_open_meteo(payload)["wind_ms"].tolist() == pytest.approx([10.0, 2.0])  # km/h by default


@pytest.mark.parametrize("first_day, paris_day, hours", [("2021-03-27", "2021-03-28", 23),
                                                         ("2020-10-24", "2020-10-25", 25)])
def test_a_forecast_crossing_a_dst_change_keeps_every_hour_in_place(real_weather_hourly: pd.DataFrame,
                                                                    first_day: str, paris_day: str,
                                                                    hours: int) -> None:
    payload = open_meteo(real_weather_hourly, first_day)  # one offset, that of the first day, for 72 hours
    times = payload["hourly"]["time"]
    assert len(set(times)) == 72  # no repeated or missing local hour in Open-Meteo's strings
    frame = parse_open_meteo(payload)
    utc = frame["timestamp"].dt.tz_convert("UTC")
    assert utc.diff().dropna().eq(pd.Timedelta(hours=1)).all()
    day = frame[frame["timestamp"].dt.date == pd.Timestamp(paris_day).date()]
    assert len(day) == hours
    expected = _expected(real_weather_hourly, frame["timestamp"])
    np.testing.assert_allclose(frame["temperature_c"], expected["temperature_c"], atol=0.01)
    # 08:00 Paris after the change is the real 08:00 Paris observation
    eight = frame.index[frame["timestamp"] == pd.Timestamp(f"{paris_day} 08:00", tz=PARIS)][0]
    assert frame.loc[eight, "temperature_c"] == pytest.approx(
        real_weather_hourly.loc[pd.Timestamp(f"{paris_day} 08:00", tz=PARIS).tz_convert("UTC"), "temperature_c"],
        abs=0.01)


def test_unixtime_and_gmt_answers_give_the_same_rows(real_weather_hourly: pd.DataFrame) -> None:
    local = parse_open_meteo(open_meteo(real_weather_hourly, "2021-03-27"))
    unix = parse_open_meteo(open_meteo(real_weather_hourly, "2021-03-27", unixtime=True))
    gmt = parse_open_meteo(open_meteo(real_weather_hourly, "2021-03-27", offset_hours=0, timezone="GMT"))
    pd.testing.assert_frame_equal(local, unix)
    assert set(gmt["timestamp"]) < set(local["timestamp"]) | set(gmt["timestamp"])
    common = local.merge(gmt, on="timestamp", suffixes=("", "_gmt"))
    assert len(common) == 71  # the GMT answer starts one hour later (00:00 UTC)
    np.testing.assert_allclose(common["temperature_c"], common["temperature_c_gmt"])


def test_missing_variables_become_empty_columns() -> None:
    payload = {"utc_offset_seconds": 7200, "timezone": PARIS, "hourly_units": {"temperature_2m": "°C"},
               "hourly": {"time": ["2021-06-14T00:00", "2021-06-14T01:00"], "temperature_2m": [15.2, None]}}
    frame = parse_open_meteo(payload)
    assert frame["temperature_c"].iloc[0] == 15.2 and np.isnan(frame["temperature_c"].iloc[1])
    assert frame[["humidity", "wind_ms", "cloud_cover", "rain_mm"]].isna().all().all()


@pytest.mark.parametrize("payload, message", [
    ([1, 2], "expected an Open-Meteo answer"),
    ({"latitude": 48.8}, "expected an 'hourly' object"),
    ({"error": True, "reason": "Parameter 'hourly' is invalid"}, "Parameter 'hourly' is invalid"),
    ({"hourly": {"temperature_2m": [1.0]}}, "'hourly.time': expected a non-empty list"),
    ({"hourly": {"time": ["2021-06-14T00:00", "2021-06-14T01:00"], "temperature_2m": [1.0]}},
     "'hourly.temperature_2m': expected a list of 2 numbers"),
    ({"hourly": {"time": ["2021-06-14T00:00"], "precipitation": ["wet"]}}, "'hourly.precipitation'\\[0\\]"),
    ({"hourly": {"time": ["yesterday"]}}, "'hourly.time': expected ISO times"),
    ({"hourly": {"time": ["2021-06-14T00:30"]}, "utc_offset_seconds": 0}, "expected whole hours"),
    ({"hourly_units": {"wind_speed_10m": "furlongs/fortnight"},
      "hourly": {"time": ["2021-06-14T00:00"], "wind_speed_10m": [3.0]}},
     "'hourly_units.wind_speed_10m' = 'furlongs/fortnight': expected one of"),
])
def test_malformed_payloads_are_refused_with_what_was_expected(payload: object, message: str) -> None:
    with pytest.raises(WeatherForecastError, match=message):
        parse_open_meteo(payload)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- storage and issue time
def test_ingest_stores_with_the_issue_time_rule_and_adds_nothing_twice(real_weather_hourly: pd.DataFrame,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(open_meteo(real_weather_hourly, "2021-06-14")), encoding="utf-8")
    first = ingest_weather_forecast(path)
    assert first["issued_at_rule"] == ISSUE_DAY_START
    assert pd.Timestamp(first["issued_at"]) == pd.Timestamp("2021-06-14 00:00", tz=PARIS)
    assert first["hours"] == first["added"] == 72 and first["updated"] == 0
    again = ingest_weather_forecast(path)
    assert again["added"] == 0 and again["unchanged"] == 72 and again["rows_stored"] == 72
    stored = load_forecasts()
    assert list(stored.columns) == ["timestamp", "issued_at", "source", *WEATHER_COLUMNS] and len(stored) == 72
    assert str(stored["timestamp"].dt.tz) == PARIS and str(stored["issued_at"].dt.tz) == "UTC"
    assert Path(first["path"]) == get_settings().weather_forecasts_path == get_settings().home / "store" / \
        "weather" / "forecasts.parquet"

    explicit = ingest_weather_forecast(path, issued_at="2021-06-13T18:00:00+02:00")
    assert explicit["issued_at_rule"] == ISSUE_EXPLICIT and explicit["added"] == 72
    assert pd.Timestamp(explicit["issued_at"]) == pd.Timestamp("2021-06-13T16:00Z")
    assert len(load_forecasts()) == 144  # a second issue of the same hours, kept beside the first

    two = [open_meteo(real_weather_hourly, "2021-06-15", issued_at="2021-06-14T21:00:00Z"),
           open_meteo(real_weather_hourly, "2021-06-16", issued_at="2021-06-15T21:00:00Z")]
    listed = tmp_path / "two.json"
    listed.write_text(json.dumps(two), encoding="utf-8")
    result = ingest_weather_forecast(listed)
    assert result["forecasts"] == 2 and result["issued_at_rule"] == ISSUE_PAYLOAD and result["added"] == 144


def test_ingest_refuses_an_issue_time_without_offset_and_a_broken_file(real_weather_hourly: pd.DataFrame,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(open_meteo(real_weather_hourly, "2021-06-14")), encoding="utf-8")
    with pytest.raises(WeatherForecastError, match="has no offset"):
        ingest_weather_forecast(path, issued_at="2021-06-13T18:00")
    broken = tmp_path / "broken.json"
    broken.write_text('{"hourly": {"time": [', encoding="utf-8")
    with pytest.raises(WeatherForecastError, match="broken.json: not a JSON file"):
        ingest_weather_forecast(broken)
    assert load_forecasts() is None  # nothing stored by either


# --------------------------------------------------------------------------- as-of lookup
def _forecast(first_hour: str, hours: int, issued_at: str, temperature: float) -> pd.DataFrame:
    stamps = pd.date_range(pd.Timestamp(first_hour, tz=PARIS), periods=hours, freq="h")
    frame = pd.DataFrame({"timestamp": stamps, "issued_at": pd.Timestamp(issued_at).tz_convert("UTC"),
                          "source": issued_at})
    for column in WEATHER_COLUMNS:
        frame[column] = temperature if column == "temperature_c" else 1.0
    return frame


def test_as_of_takes_the_latest_issue_at_or_before_each_cutoff() -> None:
    forecasts = pd.concat([
        _forecast("2021-06-14 00:00", 72, "2021-06-13T00:00+02:00", 10.0),  # A
        _forecast("2021-06-15 00:00", 72, "2021-06-14T00:00+02:00", 20.0),  # B: covers from the 15th only
        _forecast("2021-06-16 00:00", 48, "2021-06-15T12:00+02:00", 30.0),  # C
    ], ignore_index=True)
    rows = pd.DataFrame({
        "timestamp": pd.to_datetime(["2021-06-14 08:00", "2021-06-15 08:00", "2021-06-15 08:00",
                                     "2021-06-16 08:00", "2021-06-16 08:00", "2021-06-16 08:00",
                                     "2021-06-17 23:00", "2021-06-14 08:00"]).tz_localize(PARIS),
        "cutoff": pd.to_datetime(["2021-06-14 00:00", "2021-06-14 00:00", "2021-06-13 23:59",
                                  "2021-06-16 00:00", "2021-06-15 11:59", "2021-06-15 12:00",
                                  "2021-06-16 00:00", "2021-06-12 00:00"]).tz_localize(PARIS),
    }, index=[10, 11, 12, 13, 14, 15, 16, 17])  # any index: the answer is aligned with it
    got = forecast_as_of(rows["timestamp"], rows["cutoff"], forecasts)
    assert list(got.index) == list(rows.index)
    assert list(got.columns) == [*WEATHER_COLUMNS, "forecast_issued_at"]
    # a tie (issued_at == cutoff) counts; a later issue never does; an hour no issue covered yet is NaN
    assert got["temperature_c"].tolist()[:7] == [10.0, 20.0, 10.0, 30.0, 20.0, 30.0, 30.0]
    assert np.isnan(got.loc[17, "temperature_c"]) and pd.isna(got.loc[17, "forecast_issued_at"])
    assert got.loc[12, "forecast_issued_at"] == pd.Timestamp("2021-06-12T22:00Z")
    assert str(got["forecast_issued_at"].dt.tz) == "UTC"


def test_an_hour_covered_only_by_a_later_issue_is_nan() -> None:
    forecasts = pd.concat([_forecast("2021-06-14 00:00", 24, "2021-06-13T00:00+02:00", 10.0),
                           _forecast("2021-06-15 00:00", 24, "2021-06-15T06:00+02:00", 20.0)], ignore_index=True)
    hours = pd.Series(pd.date_range(pd.Timestamp("2021-06-15", tz=PARIS), periods=24, freq="h"))
    got = forecast_as_of(hours, day_ahead_cutoffs(hours), forecasts)
    assert got["temperature_c"].isna().all() and got["forecast_issued_at"].isna().all()
    later = forecast_as_of(hours, pd.Timestamp("2021-06-15T06:00+02:00"), forecasts)  # one cutoff for all rows
    assert later["temperature_c"].eq(20.0).all()


def test_as_of_on_dst_days_and_day_ahead_cutoffs(real_weather_hourly: pd.DataFrame, tmp_path: Path) -> None:
    for first_day, issued in (("2021-03-27", "2021-03-26T18:00+01:00"), ("2020-10-24", "2020-10-23T18:00+02:00")):
        path = tmp_path / f"{first_day}.json"
        path.write_text(json.dumps(open_meteo(real_weather_hourly, first_day, issued_at=issued)), encoding="utf-8")
        ingest_weather_forecast(path)
    for day, hours in (("2021-03-28", 23), ("2020-10-25", 25)):
        stamps = pd.Series(pd.date_range(pd.Timestamp(day, tz=PARIS), pd.Timestamp(day, tz=PARIS)
                                         + pd.DateOffset(days=1), freq="h", inclusive="left"))
        assert len(stamps) == hours
        cutoffs = day_ahead_cutoffs(stamps)
        assert cutoffs.eq(pd.Timestamp(day, tz=PARIS)).all()
        got = forecast_as_of(stamps, cutoffs)
        expected = _expected(real_weather_hourly, stamps)
        np.testing.assert_allclose(got["temperature_c"], expected["temperature_c"], atol=0.01)
        assert got["forecast_issued_at"].notna().all()


def test_as_of_is_vectorised_for_40k_rows_and_refuses_naive_times() -> None:
    forecasts = pd.concat([_forecast(f"2021-{m:02d}-01 00:00", 24 * 31, f"2021-{m:02d}-01T00:00Z", float(m))
                           for m in range(1, 7)], ignore_index=True)
    rng = np.random.default_rng(3)
    hours = pd.Series(pd.Timestamp("2021-01-01", tz=PARIS) + pd.to_timedelta(rng.integers(0, 24 * 180, 40_000),
                                                                              unit="h"))
    started = time.perf_counter()
    got = forecast_as_of(hours, day_ahead_cutoffs(hours), forecasts)
    assert time.perf_counter() - started < 2.0
    issue_month = got["forecast_issued_at"].dt.month
    assert (got["temperature_c"].dropna() == issue_month.dropna().astype(float)).all()
    assert (got["forecast_issued_at"].dropna() <= day_ahead_cutoffs(hours)[got["forecast_issued_at"].notna()]).all()
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast_as_of(pd.Series(pd.to_datetime(["2021-01-02 08:00"])), pd.Timestamp("2021-01-02", tz=PARIS),
                       forecasts)


# --------------------------------------------------------------------------- fetch over HTTP
@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_HTTP_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("VELOCAST_HTTP_RETRIES", "3")
    monkeypatch.setenv("VELOCAST_WEATHER_FORECAST_TIMEOUT_SECONDS", "2")


def _serve_forecast(payload: dict) -> ScriptedServer:
    body = json.dumps(payload).encode()
    return ScriptedServer(lambda request: Reply(200, body, {"Content-Type": "application/json"}))


def _point_at(monkeypatch: pytest.MonkeyPatch, base: str) -> str:
    url = (f"{base}/v1/forecast?latitude=48.8566&longitude=2.3522&hourly=temperature_2m,precipitation,"
           "wind_speed_10m,cloud_cover,relative_humidity_2m&timezone=Europe%2FParis&forecast_days=3")
    monkeypatch.setenv("VELOCAST_WEATHER_FORECAST_URL", url)
    return url


def test_fetch_honours_retry_after_on_429_then_stores_issued_at_the_fetch_time(
        real_weather_hourly: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    payload = open_meteo(real_weather_hourly, "2021-06-14")
    with _serve_forecast(payload) as server:
        server.script = [Reply(429, b'{"error": true, "reason": "Too many requests"}', {"Retry-After": "1"})]
        _point_at(monkeypatch, server.url)
        result = fetch_weather_forecast(now=pd.Timestamp("2021-06-13T19:05:00+02:00"))
    first, second = server.requests
    assert second.at - first.at >= 0.95  # waited what Retry-After asked, not the 0.01 s back-off
    assert first.path == "/v1/forecast" and first.query["timezone"] == PARIS and first.query["forecast_days"] == "3"
    assert result["attempts"] == 2 and result["issued_at_rule"] == ISSUE_FETCH and result["added"] == 72
    assert pd.Timestamp(result["issued_at"]) == pd.Timestamp("2021-06-13T17:05Z")
    stored = load_forecasts()
    assert stored["issued_at"].eq(pd.Timestamp("2021-06-13T17:05Z")).all()
    assert stored["source"].iloc[0].startswith(server.url + "/v1/forecast")


def test_fetch_retries_a_500_once_then_succeeds(real_weather_hourly: pd.DataFrame, monkeypatch: pytest.MonkeyPatch,
                                                fast_retries: None) -> None:
    with _serve_forecast(open_meteo(real_weather_hourly, "2021-06-14")) as server:
        server.script = [Reply(500, b"Internal Server Error")]
        _point_at(monkeypatch, server.url)
        result = fetch_weather_forecast()
    assert len(server.requests) == 2 and result["attempts"] == 2 and result["hours"] == 72
    assert pd.Timestamp.now(tz="UTC") - pd.Timestamp(result["issued_at"]) < pd.Timedelta(minutes=1)


def test_a_500_storm_fails_with_one_line_and_stores_nothing(monkeypatch: pytest.MonkeyPatch,
                                                            fast_retries: None) -> None:
    with ScriptedServer(lambda request: Reply(500, b"Internal Server Error")) as server:
        url = _point_at(monkeypatch, server.url.replace("http://", "http://velocast:s3cret@"))
        with pytest.raises(WeatherForecastError) as caught:
            fetch_weather_forecast()
    message = str(caught.value)
    assert len(server.requests) == 4  # the first attempt and 3 retries
    assert "\n" not in message and "failed after 4 attempts: HTTP 500" in message
    assert "s3cret" not in message and "velocast:***@127.0.0.1" in message and "/v1/forecast" in message
    assert url.startswith("http://velocast:s3cret@")
    assert load_forecasts() is None and not get_settings().weather_forecasts_path.exists()


def test_unreachable_forecast_service_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    _point_at(monkeypatch, refused_url())
    with pytest.raises(WeatherForecastError, match=r"weather forecast: GET http://127\.0\.0\.1:\d+/v1/forecast\?.* "
                                                   r"failed after 4 attempts: ConnectError"):
        fetch_weather_forecast()
    assert load_forecasts() is None


def test_a_non_forecast_answer_is_refused_and_nothing_stored(monkeypatch: pytest.MonkeyPatch,
                                                             fast_retries: None) -> None:
    with ScriptedServer(lambda request: Reply(200, b"<html>maintenance</html>")) as server:
        _point_at(monkeypatch, server.url)
        with pytest.raises(WeatherForecastError, match="the answer is not JSON"):
            fetch_weather_forecast()
    assert load_forecasts() is None


# --------------------------------------------------------------------------- the CLI
def test_cli_commands_report_and_fail_in_one_line(real_weather_hourly: pd.DataFrame, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, fast_retries: None) -> None:
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(open_meteo(real_weather_hourly, "2021-06-14")), encoding="utf-8")
    out = CliRunner().invoke(cli_app, ["data", "ingest-weather-forecast", str(path),
                                       "--issued-at", "2021-06-13T18:00:00+02:00"])
    assert out.exit_code == 0, out.output
    assert "72 hours" in out.output and "2021-06-13T16:00:00+00:00" in out.output and "72 added" in out.output

    _point_at(monkeypatch, refused_url())
    failed = CliRunner().invoke(cli_app, ["data", "fetch-weather-forecast"])
    assert failed.exit_code == 1
    lines = failed.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: weather forecast: GET http://127.0.0.1:")
    assert "Traceback" not in failed.output

    with _serve_forecast(open_meteo(real_weather_hourly, "2021-06-15")) as server:
        _point_at(monkeypatch, server.url)
        fetched = CliRunner().invoke(cli_app, ["data", "fetch-weather-forecast"])
    assert fetched.exit_code == 0, fetched.output
    assert "fetch time" in fetched.output and "1 attempt(s)" in fetched.output
    summary = CliRunner().invoke(cli_app, ["data", "summary"])
    assert "weather forecasts: 144 hours from 2 issue(s)" in summary.output


def test_observations_as_perfect_forecasts_serve_each_day_its_own_weather(home: Path) -> None:
    """`ingest-weather --as-forecast`: a backtest's perfect forecast, issued at each day's cut-off."""
    runner = CliRunner()
    done = runner.invoke(cli_app, ["data", "ingest-weather", str(REAL_WEATHER), "--as-forecast"])
    assert done.exit_code == 0, done.output
    stored = load_forecasts()
    assert (stored["issued_at"] == day_ahead_cutoffs(stored["timestamp"]).dt.tz_convert("UTC")).all()
    hours = pd.Series(pd.date_range("2021-08-10", periods=24, freq="h", tz=PARIS))
    got = forecast_as_of(hours, day_ahead_cutoffs(hours), forecasts=stored)
    observed = synop_to_hourly(read_synop(REAL_WEATHER)).reindex(hours.dt.tz_convert("UTC"))
    np.testing.assert_allclose(got["temperature_c"], observed["temperature_c"], atol=1e-9)
    # never usable before its day's cut-off: a forecast issued the day before does not see it
    early = forecast_as_of(hours, day_ahead_cutoffs(hours) - pd.Timedelta(days=1), forecasts=stored)
    assert early["temperature_c"].isna().all()
