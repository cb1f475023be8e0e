"""The library functions behind the DAGs, without Airflow: the daily jobs and the cycle's audit step."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import OPENDATA_SAMPLE, REAL_WEATHER
from tests.http_server import refused_url


def test_finish_audits_the_first_failed_step_without_airflow(home: Path) -> None:
    """The assembly the DAG's audit task relies on, on an empty home (no champion, no MLflow run)."""
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.operations.cycle_tasks import finish

    result = finish({}, {"new_data": "failed", "drift": "upstream_failed"}, {"new_data": "OSError: disk full"},
                    model_type="lgbm", test_mode=True)
    assert result["status"] == "error" and result["error"] == "new_data step failed: OSError: disk full"
    row = AuditLog().get(result["audit_event_id"])
    assert row.event == "error" and row.error_message == result["error"] and row.from_version is None
    assert [s["status"] for s in row.details["steps"]] == ["failed"] + ["skipped"] * 6
    assert not (home / "cycle_state.json").exists()  # a failed cycle does not claim it saw the data


# --------------------------------------------------------------------------- the daily jobs
def test_predict_tomorrow_stores_one_forecast_per_counter_hour(real_home: Path, tmp_path: Path) -> None:
    from velocast.data import store
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.operations.daily import forecast_day, forecast_path, predict_tomorrow
    from velocast.lifecycle.training.train import train

    version = train("lgbm", model_test=True).model_version
    with pytest.raises(LookupError, match="test-mode model"):  # never stands in for a missing champion
        predict_tomorrow("lgbm")
    promote("lgbm", version=version, force=True, reason="forecasts need a champion")
    day = forecast_day(store.latest_timestamp())
    without = predict_tomorrow("lgbm", weather_fetch={"status": "failed", "error": "weather forecast: GET x: down"})
    assert without["weather_forecast"]["hours_covered"] == 0
    assert without["warnings"][-1] == (f"no weather forecast issued by 00:00 of {day.date()} is stored: forecast "
                                       "without weather (this run's weather fetch failed: weather forecast: GET x: down)")
    _store_forecasts(day, tmp_path)
    result = predict_tomorrow("lgbm")
    assert result["weather_forecast"] == {  # issued by 00:00 of the day; the later issue is not used
        "hours": 24, "hours_covered": 24, "issued_at": "2021-08-09T16:00:00+00:00",
        "note": f"weather forecast issued at 2021-08-09T16:00:00+00:00 covers 24/24 hours of {day.date()}"}
    assert result["date"] == day.date().isoformat() and result["model_version"] == version
    path = Path(result["path"])
    assert path == forecast_path(result["date"]) and path.exists()
    assert path.parent.name == f"date={result['date']}" and path.parent.parent.name == "forecasts"
    frame = pd.read_parquet(path)
    counters = store.counters()["counter_id"].nunique()
    hours = len(pd.date_range(day, day + pd.DateOffset(days=1), freq="h", inclusive="left"))  # 23/25 on DST days
    assert len(frame) == result["rows"] == counters * hours
    assert frame.groupby("counter_id").size().eq(hours).all()
    assert frame["prediction"].notna().all() and (frame["prediction"] >= 0).all()
    assert set(frame["model_version"]) == {version} and frame["generated_at"].notna().all()
    assert frame["timestamp"].dt.tz_convert("Europe/Paris").dt.date.eq(day.date()).all()
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def _store_forecasts(day: pd.Timestamp, folder: Path) -> None:
    """Two real-valued forecasts of ``day``: one issued the evening before, one after 00:00 of the day."""
    import json

    from tests.data.test_weather_forecast import open_meteo
    from velocast.data.weather import read_synop, synop_to_hourly
    from velocast.data.weather_forecast import ingest_weather_forecast

    hourly = synop_to_hourly(read_synop(REAL_WEATHER))
    for issued in (day - pd.Timedelta(hours=6), day + pd.Timedelta(hours=6)):
        path = folder / f"forecast-{issued:%Y%m%dT%H%M}.json"
        path.write_text(json.dumps(open_meteo(hourly, str(day.date()), issued_at=issued.isoformat())),
                        encoding="utf-8")
        ingest_weather_forecast(path)


def test_daily_sources_report_failures_instead_of_raising(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from velocast.lifecycle.operations.daily import fetch_portal_counts, fetch_weather

    monkeypatch.setenv("VELOCAST_HTTP_RETRIES", "0")
    monkeypatch.setenv("VELOCAST_OPENDATA_URL", refused_url())
    monkeypatch.setenv("VELOCAST_WEATHER_FORECAST_URL", refused_url() + "/v1/forecast")
    portal = fetch_portal_counts()
    assert portal["status"] == "failed" and "ConnectError" in portal["error"] and "\n" not in portal["error"]
    assert fetch_portal_counts(synthetic=True)["status"] == "skipped"
    weather = fetch_weather()
    assert weather["status"] == "failed" and weather["error"].startswith("weather forecast: GET http://127.0.0.1:")


def test_ingest_new_files_moves_the_inbox_to_done_and_appends_a_synthetic_day(real_home: Path) -> None:
    from velocast.data import store
    from velocast.lifecycle.operations.daily import ingest_new_files

    inbox = real_home / "inbox"
    inbox.mkdir()
    shutil.copy(OPENDATA_SAMPLE, inbox / OPENDATA_SAMPLE.name)
    (inbox / "broken.csv").write_text("what;is;this\n1;2;3\n", encoding="utf-8")
    (inbox / "arriving.csv.part").write_text("half a file", encoding="utf-8")
    rows_before = store.summary()["rows"]

    result = ingest_new_files()
    assert result["ingested"] == 1 and result["rows_added"] > 0
    assert (inbox / "done" / OPENDATA_SAMPLE.name).exists() and not (inbox / OPENDATA_SAMPLE.name).exists()
    assert [f["file"] for f in result["failed"]] == ["broken.csv"]
    assert (inbox / "failed" / "broken.csv").exists() and (inbox / "failed" / "broken.csv.error.txt").exists()
    assert (inbox / "arriving.csv.part").exists()  # still being written: left alone
    assert store.summary()["rows"] == rows_before + result["rows_added"]
    assert ingest_new_files()["ingested"] == 0  # nothing new the second time

    latest = store.latest_timestamp()
    counters = store.counters()["counter_id"].nunique()
    synthetic = ingest_new_files(synthetic=True)
    assert synthetic["ingested"] == 1 and Path(synthetic["files"][0]["moved_to"]).parent == inbox / "done"
    new_latest = store.latest_timestamp()
    assert new_latest.normalize() == (latest.normalize() + timedelta(days=1)).normalize()
    assert synthetic["rows_added"] == counters * 24 and synthetic["rows_rejected"] == 0
