"""Serve what you score: an evaluation builds each test day's features exactly as serving does on D-1.

For sampled test days D, the features the evaluation scores (``ServedRows``, used by training,
``evaluate``, the cycle, health, ``simulate`` and the benchmark) are compared, value for value, with
those the serving path builds in a home whose store holds only what was known at the end of D-1
(counts before D; the observed weather of every day, D included, which serving must not read).
The predictions of ``/predict`` and ``velocast predict`` there must equal the evaluation's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import REAL_WEATHER
from tests.data.test_weather_forecast import open_meteo
from velocast.api import create_app
from velocast.api.config import ApiConfig
from velocast.cli import app as cli
from velocast.config import PARIS_TZ, Settings
from velocast.data import splits, store
from velocast.data.weather import read_synop, synop_to_hourly
from velocast.data.weather_forecast import ingest_observed_as_forecast, ingest_weather_forecast
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.inputs import build_inputs, outage_flags
from velocast.lifecycle.serving.predict import load_model, predict_rows
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.train import train
from velocast.models import predict_frame

runner = CliRunner()


def _days(split: splits.SplitRecord, test_current: pd.DataFrame) -> list[pd.Timestamp]:
    """Two test_baseline days (the ones nearest the DST changes) and two days of test_current."""
    baseline = pd.to_datetime(pd.Series([str(d) for d in split.test_days]))
    chosen = [baseline.iloc[(baseline - pd.Timestamp(change)).abs().argmin()] for change in ("2020-10-25", "2021-03-28")]
    current = sorted(splits.paris_day(test_current["timestamp"]).unique())
    chosen += [pd.Timestamp(current[0]), pd.Timestamp(current[-1])]
    return [pd.Timestamp(d).tz_localize(PARIS_TZ) for d in chosen]


def _home_known_on(day: pd.Timestamp, home: Path, target: Path) -> Settings:
    """A copy of ``home`` whose store holds only the counts before ``day`` (weather and registry kept)."""
    shutil.copytree(home, target)
    shutil.rmtree(target / "store" / "counts")
    settings = Settings(home=target)
    store.upsert_counts(store.query_counts(end=day, settings=Settings(home=home)), settings)
    return settings


def test_evaluation_features_equal_served_features(real_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=real_home)
    result = train("lgbm", model_test=True, settings=settings)
    promote("lgbm", version=result.model_version, reason="test", force=True, settings=settings)
    model = load_model("lgbm", settings=settings)
    features = model.pipeline.named_steps["features"]
    split = splits.active_split(settings)
    test_current = splits.load_split("test_current", split, settings)
    days = _days(split, test_current)
    labelled = pd.concat([splits.load_split("test_baseline", split, settings), test_current], ignore_index=True)
    on_days = labelled[splits.paris_day(labelled["timestamp"]).isin([d.date() for d in days])]
    evaluated = ServedRows.build(on_days, settings)  # what train/evaluate/cycle/health/simulate score
    assert evaluated.weather == "without" and len(evaluated) > 0
    scored = evaluated.decision_rows
    scored_predictions = evaluated.score(model.pipeline).predictions
    assert (scored["weather_source"] == "missing").all()  # the observed weather of D is never read

    for day in days:
        on_day = (splits.paris_day(scored["timestamp"]) == day.date()).to_numpy()
        mine = scored[on_day].reset_index(drop=True)
        assert len(mine), day
        known = _home_known_on(day, real_home, tmp_path / f"home-{day.date()}")
        assert store.latest_timestamp(known) < day
        to_serve = mine.drop(columns=["bike_count", "weather_source", *[c for c in mine if c.startswith(("lag_", "mean_",
                                      "median_", "max_", "yesterday_"))]])
        to_serve = to_serve[["counter_id", "counter_name", "site_id", "site_name", "timestamp", "latitude",
                             "longitude", "installation_date"]]
        served = build_inputs(to_serve, known).frame("served")
        pd.testing.assert_frame_equal(features.transform(served), features.transform(mine), check_exact=True)
        expected = scored_predictions[on_day]  # with the level bias of the days before, as served

        # POST /predict in that home
        client = TestClient(create_app(known, config=ApiConfig(model_refresh_seconds=0)))
        records = [{"counter_id": c, "timestamp": t.isoformat()} for c, t in zip(mine["counter_id"], mine["timestamp"])]
        body = client.post("/predict", json={"records": records, "model_type": "lgbm"}).json()
        np.testing.assert_allclose([p["prediction"] for p in body["predictions"]], expected, rtol=1e-12)
        assert {p["weather"] for p in body["predictions"]} == {"missing"}

        # velocast predict in that home, from a file of future hours (tidy: counter_id + naive UTC date)
        rows_file = tmp_path / f"rows-{day.date()}.csv"
        pd.DataFrame({"counter_id": mine["counter_id"], "date": mine["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None),
                      "my_column": np.arange(len(mine))}).to_csv(rows_file, index=False)
        out_file = tmp_path / f"predicted-{day.date()}.csv"
        monkeypatch.setenv("VELOCAST_HOME", str(known.home))
        done = runner.invoke(cli, ["predict", str(rows_file), "--output", str(out_file)])  # the file as an argument
        assert done.exit_code == 0, done.output
        written = pd.read_csv(out_file)
        assert written["my_column"].tolist() == list(range(len(mine)))  # extra columns are carried
        np.testing.assert_allclose(written["prediction"], expected, rtol=1e-9)


def test_a_forecast_issued_by_the_cutoff_is_used_the_same_way_by_evaluation_and_serving(
        real_home: Path, tmp_path: Path) -> None:
    """With forecasts stored, the decision is judged with weather; D uses the forecast issued by the end
    of D-1 (never a later one, never D's observations), in the evaluation and in /predict alike."""
    settings = Settings(home=real_home)
    result = train("lgbm", model_test=True, settings=settings)
    promote("lgbm", version=result.model_version, reason="test", force=True, settings=settings)
    model = load_model("lgbm", settings=settings)
    split = splits.active_split(settings)
    test_current = splits.load_split("test_current", split, settings)
    day = pd.Timestamp(sorted(splits.paris_day(test_current["timestamp"]).unique())[2]).tz_localize(PARIS_TZ)
    hourly = synop_to_hourly(read_synop(REAL_WEATHER))
    # a "forecast" of D issued at 18:00 on D-1: the observed weather shifted by +3 °C (so its use is visible)
    early = open_meteo(hourly.assign(temperature_c=hourly["temperature_c"] + 3), str((day - pd.Timedelta(days=1)).date()))
    early["issued_at"] = (day - pd.Timedelta(hours=6)).isoformat()
    # a later forecast (06:00 on D) must not be read for D
    late = open_meteo(hourly.assign(temperature_c=hourly["temperature_c"] - 10), str(day.date()))
    late["issued_at"] = (day + pd.Timedelta(hours=6)).isoformat()
    for name, payload in (("early.json", early), ("late.json", late)):
        (tmp_path / name).write_text(json.dumps(payload))
        ingest_weather_forecast(tmp_path / name, settings=settings)

    rows = test_current[splits.paris_day(test_current["timestamp"]) == day.date()].reset_index(drop=True)
    evaluated = ServedRows.build(rows, settings)
    assert evaluated.weather == "with"  # forecasts are stored: judged as they will be served
    mine = evaluated.decision_rows
    assert (mine["weather_source"] == "forecast").all()
    expected_temperature = hourly["temperature_c"].reindex(mine["timestamp"].dt.tz_convert("UTC")).to_numpy() + 3
    np.testing.assert_allclose(mine["temperature_c"], expected_temperature, atol=0.01)

    known = _home_known_on(day, real_home, tmp_path / "known")
    client = TestClient(create_app(known, config=ApiConfig(model_refresh_seconds=0)))
    records = [{"counter_id": c, "timestamp": t.isoformat()} for c, t in zip(mine["counter_id"], mine["timestamp"])]
    body = client.post("/predict", json={"records": records}).json()
    assert {p["weather"] for p in body["predictions"]} == {"forecast"}
    np.testing.assert_allclose([p["prediction"] for p in body["predictions"]],
                               evaluated.score(model.pipeline).predictions, rtol=1e-12)


def test_served_forecasts_follow_the_days_before_as_the_evaluation_scores_them(
        real_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation makes each test_current day follow the model's errors on the store's days before
    it, after the calibration (intervals adapted, day-ahead level bias corrected); /predict and
    `velocast predict`, in a home whose store holds only the counts before the last test day, follow
    the same days: the same predictions and bounds, value for value."""
    settings = Settings(home=real_home)
    result = train("lgbm", model_test=True, settings=settings)
    promote("lgbm", version=result.model_version, reason="test", force=True, settings=settings)
    model = load_model("lgbm", settings=settings)
    assert model.has_intervals and (settings.interval_adapt_days, settings.bias_correction_days) == (14, 3)
    split = splits.active_split(settings)
    test_current = splits.load_split("test_current", split, settings)
    evaluated = ServedRows.build(test_current, settings)
    scored = evaluated.score(model.pipeline).scored
    days = splits.paris_day(evaluated.decision_rows["timestamp"])
    last = max(days.unique())
    on_last = (days == last).to_numpy()
    mine = evaluated.decision_rows[on_last].reset_index(drop=True)
    lower, upper = scored.lower[on_last], scored.upper[on_last]
    prediction = scored.predictions[on_last]
    static = predict_frame(model.pipeline, mine)  # the model's own prediction, the calibration's bounds
    assert not np.allclose(static["upper"], upper), "the adaptation must change the last day's intervals"
    assert not np.allclose(static["prediction"], prediction), "the level bias must change the last day's forecasts"

    known = _home_known_on(pd.Timestamp(last).tz_localize(PARIS_TZ), real_home, tmp_path / "known")
    client = TestClient(create_app(known, config=ApiConfig(model_refresh_seconds=0)))
    records = [{"counter_id": c, "timestamp": t.isoformat()} for c, t in zip(mine["counter_id"], mine["timestamp"])]
    body = client.post("/predict", json={"records": records}).json()
    np.testing.assert_allclose([p["prediction"] for p in body["predictions"]], prediction, rtol=1e-9)
    np.testing.assert_allclose([p["lower"] for p in body["predictions"]], lower, rtol=1e-9)
    np.testing.assert_allclose([p["upper"] for p in body["predictions"]], upper, rtol=1e-9)

    rows_file, out_file = tmp_path / "rows.csv", tmp_path / "predicted.csv"
    pd.DataFrame({"counter_id": mine["counter_id"],
                  "date": mine["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)}).to_csv(rows_file, index=False)
    monkeypatch.setenv("VELOCAST_HOME", str(known.home))
    done = runner.invoke(cli, ["predict", "--input", str(rows_file), "--output", str(out_file)])
    assert done.exit_code == 0, done.output
    written = pd.read_csv(out_file)
    np.testing.assert_allclose(written["prediction"], prediction, rtol=1e-9)
    np.testing.assert_allclose(written["lower"], lower, rtol=1e-9)
    np.testing.assert_allclose(written["upper"], upper, rtol=1e-9)

    # forecasts of the last days asked one by one share one window of recent errors for this store
    # version (computed once, whatever the day), and D's forecasts stay the evaluation's
    fresh = load_model("lgbm", settings=known)
    for day in sorted(days.unique())[-3:]:
        asked = evaluated.decision_rows[(days == day).to_numpy()][["counter_id", "timestamp"]].reset_index(drop=True)
        served = predict_rows(asked, fresh, known).frame["prediction"].to_numpy()
    np.testing.assert_allclose(served, prediction, rtol=1e-9)
    assert len(fresh.adaptation.windows) == 1

    # labelled rows of the last three days, in a home whose store lacks them: each day follows the errors
    # of the days before it, the file's own included, as the evaluation scores them; the metrics are
    # those of the predictions written
    last_days = sorted(days.unique())[-3:]
    early = _home_known_on(pd.Timestamp(last_days[0]).tz_localize(PARIS_TZ), real_home, tmp_path / "early")
    span = days.isin(last_days).to_numpy()
    labelled = evaluated.decision_rows[span][["counter_id", "timestamp", "bike_count"]].reset_index(drop=True)
    result = predict_rows(labelled, load_model("lgbm", settings=early), early)
    written = result.frame
    np.testing.assert_allclose(written["prediction"], scored.predictions[span], rtol=1e-9)
    np.testing.assert_allclose(written["upper"], scored.upper[span], rtol=1e-9)
    y = labelled["bike_count"].to_numpy(float)
    assert result.metrics["n"] == len(labelled)
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((written["prediction"].to_numpy() - y) ** 2)))
    # a counter reporting zeros for the three days: a sensor outage, left out of the metrics as in every score
    counter = labelled["counter_id"].iloc[0]
    broken = labelled["counter_id"] == counter
    zeroed = predict_rows(labelled.assign(bike_count=labelled["bike_count"].mask(broken, 0.0)),
                          load_model("lgbm", settings=early), early)
    assert zeroed.metrics["n"] == len(labelled) - int(broken.sum())
    assert any(f"{int(broken.sum())} labelled row(s) in sensor outages" in w for w in zeroed.warnings), zeroed.warnings

    # a counter's last hours of D-1 were zero; then the counts of D arrive, all zero: in hindsight the
    # night of D-1 is a sensor outage, yet nothing of D's forecasts changes (no count of D is read)
    day_start = pd.Timestamp(last).tz_localize(PARIS_TZ)
    counter = mine["counter_id"].iloc[0]
    night = store.query_counts(day_start - pd.Timedelta(hours=3), day_start, [counter], settings=known)
    store.upsert_counts(night.assign(bike_count=0.0), known)
    before = client.post("/predict", json={"records": records}).json()["predictions"]
    hours = pd.date_range(day_start, periods=24, freq="h")
    arriving = pd.concat([night.iloc[[0]]] * 24, ignore_index=True).assign(timestamp=hours, bike_count=0.0)
    store.upsert_counts(arriving, known)
    assert outage_flags(night.assign(bike_count=0.0), known).all(), "the night of D-1 now reads as an outage"
    after = client.post("/predict", json={"records": records}).json()["predictions"]
    for field in ("prediction", "lower", "upper"):  # equal up to rounding: D's counts join the errors' batch
        np.testing.assert_allclose([p[field] for p in after], [p[field] for p in before], rtol=1e-12, err_msg=field)

    # weather forecasts stored while the API runs: its answers follow the errors of forecasts as now
    # served (with weather), as a model loaded afresh (`velocast predict`) computes them
    ingest_observed_as_forecast(REAL_WEATHER, settings=known)
    served = client.post("/predict", json={"records": records}).json()["predictions"]
    assert {p["weather"] for p in served} == {"forecast"}
    anew = predict_rows(mine[["counter_id", "timestamp"]], load_model("lgbm", settings=known), known).frame
    for field in ("prediction", "lower", "upper"):
        np.testing.assert_allclose([p[field] for p in served], anew[field], rtol=1e-9, err_msg=field)
