"""Prediction intervals on the real data, as served: calibrated at training by a twin on the latest
training days, scored on the test sets, written by `velocast predict`, recalibrated on newer days."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from velocast.cli import app
from velocast.config import get_settings
from velocast.data import store
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.promotion import promote, rollback
from velocast.lifecycle.decisions.recalibrate import recalibrate
from velocast.lifecycle.serving.predict import load_model, predict_rows
from velocast.lifecycle.training.train import train
from velocast.models import calibration_info
from velocast.tracking.registry import Registry


@pytest.fixture(scope="module")
def trained_template(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real subset with a full lgbm (not a test-mode sample) trained and promoted: copied per test."""
    home = tmp_path_factory.mktemp("intervals") / "home"
    shutil.copytree(real_store_template, home)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("VELOCAST_HOME", str(home))
        # on the baseline alone: the month after the cutoff stays unseen, for the recalibration to use
        result = train("lgbm", data_source="baseline", seed=3, hyperparams={"n_estimators": 60, "num_leaves": 31})
        promote("lgbm", version=result.model_version, reason="first champion")
        calibration = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/intervals/calibration.json")
        held_out = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/data/days.json")
    return {"home": home, "result": result, "calibration": calibration, "days": held_out}


@pytest.fixture
def trained(trained_template: dict[str, Any], home: Path) -> dict[str, Any]:
    shutil.copytree(trained_template["home"], home)
    return trained_template


def test_training_calibrates_on_its_latest_days_and_scores_coverage_as_served(trained: dict[str, Any]) -> None:
    result, calibration, days = trained["result"], trained["calibration"], trained["days"]
    train_days = sorted(days["train_days"])
    # the latest 28 training days, none of them a test day, the point model's twin fitted before them
    assert calibration["days"] == train_days[-28:] and not set(calibration["days"]) & set(days["held_out_days"])
    assert calibration["rows"] > 0 and "twin" in calibration
    for scores in (result.metrics_baseline, result.metrics_current):
        assert scores["interval_nominal"] == 0.8
        assert 0.7 <= scores["interval_coverage"] <= 0.92, scores
        assert scores["interval_width"] > 0 and scores["interval_counters"] >= 1
    run = mlflow.get_run(result.run_id)
    assert {"test_baseline_interval_coverage", "test_current_interval_width", "test_current_interval_score",
            "test_baseline_without_weather_interval_coverage"} <= set(run.data.metrics)
    assert run.data.tags["intervals"] == "conformal"


def test_velocast_predict_writes_the_interval_columns(trained: dict[str, Any], tmp_path: Path) -> None:
    rows = pd.DataFrame({"counter_id": "100057445-104057445",
                         "date": pd.date_range("2021-08-09 00:00", periods=24, freq="h").astype(str)})
    model = load_model("lgbm")
    counters = Registry().load(Registry().champion("lgbm")).named_steps["features"].counter_ids_
    rows["counter_id"] = counters[0]
    rows.to_csv(tmp_path / "in.csv", index=False)
    out = {}
    for coverage in ("0.8", "0.95"):
        done = CliRunner().invoke(app, ["predict", "--input", str(tmp_path / "in.csv"), "--output",
                                        str(tmp_path / f"out{coverage}.csv"), "--coverage", coverage])
        logging.getLogger().handlers.clear()
        assert done.exit_code == 0, done.output
        assert f"hold {float(coverage):.0%} of the counts" in done.output
        out[coverage] = pd.read_csv(tmp_path / f"out{coverage}.csv")
        frame = out[coverage]
        assert list(frame.columns[-7:]) == ["timestamp_paris", "prediction", "lower", "upper", "coverage", "weather",
                                            "notes"]
        assert (frame["lower"] >= 0).all() and (frame["lower"] <= frame["upper"]).all()
        assert (frame["coverage"] == float(coverage)).all()
    assert ((out["0.95"]["upper"] - out["0.95"]["lower"]) >= (out["0.8"]["upper"] - out["0.8"]["lower"])).all()
    assert np.allclose(out["0.95"]["prediction"], out["0.8"]["prediction"])
    refused = CliRunner().invoke(app, ["predict", "--input", str(tmp_path / "in.csv"), "--output",
                                       str(tmp_path / "bad.csv"), "--coverage", "0.3"])
    assert refused.exit_code != 0 and "greater than or equal to 0.5" in " ".join(refused.output.split())
    assert model.has_intervals


def test_recalibration_is_a_new_champion_version_of_the_same_model_audited_and_undone_by_rollback(
        trained: dict[str, Any]) -> None:
    registry = Registry()
    before = registry.champion("lgbm")
    old = load_model("lgbm")
    rows = pd.DataFrame({"counter_id": old.pipeline.named_steps["features"].counter_ids_[:2] * 12,
                         "timestamp": pd.date_range("2021-08-09 00:00", periods=24, freq="h", tz="Europe/Paris")})
    served_before = predict_rows(rows, old).frame
    # a caller that meant another champion (a cycle that left v999; a rollback since) recalibrates nothing
    skipped = recalibrate("lgbm", expected_champion="999")
    assert skipped.status == "skipped" and skipped.to_version is None
    assert skipped.summary == f"the champion changed meanwhile (now v{before.version}, expected v999): not recalibrated"
    assert registry.champion("lgbm").version == before.version
    done = recalibrate("lgbm")
    assert done.status == "done" and done.from_version == before.version, done.summary
    # the newest labelled days the champion never trained on (it trained on the baseline, before June)
    assert store.latest_timestamp() == pd.Timestamp("2021-08-10 01:00", tz="Europe/Paris")
    latest = "2021-08-09"  # the last whole day: the store's 2 hours of 10 August are a day still being counted
    assert done.days[-1] == latest and len(done.days) == get_settings().interval_calibration_days
    assert 0 < done.before["interval_coverage"] < 1
    champion = registry.champion("lgbm")
    assert champion.version == done.to_version != before.version
    assert champion.tags["recalibrated_from"] == before.version and champion.tags["horizon"] == "day-ahead"
    assert registry.by_alias("lgbm", "previous-champion").version == before.version
    new = load_model("lgbm")
    info = calibration_info(new.pipeline)
    assert info["last_day"] == latest and info["days"] == len(done.days)
    served_after = predict_rows(rows, new).frame
    assert np.allclose(served_after["prediction"], served_before["prediction"])  # the same point model
    assert not np.allclose(served_after["upper"], served_before["upper"])  # new intervals
    event = AuditLog().list(event="recalibration")[0]
    assert event.from_version == before.version and event.to_version == champion.version
    moved = AuditLog().list(event="promotion")[0]  # the alias move: no deployment of another model
    assert moved.to_version == champion.version and moved.deployment_decision == "recalibrate"
    assert event.details["days"] == done.days and event.details["before"]["interval_coverage"] is not None
    assert registry.trained_days(champion) == registry.trained_days(before)  # same training days on record
    # a second recalibration right away finds the same days: still a clean new version; rollback undoes one
    rollback("lgbm", reason="back to the former intervals")
    assert registry.champion("lgbm").version == before.version
    summary = json.loads(Path(get_settings().summary_location).read_text())
    entry = next(e for e in summary if e["model_version"] == done.to_version)
    assert entry["rmse"] == pytest.approx(trained["result"].metrics_baseline["rmse"])
    assert not any("interval_" in k for k in entry["extra_metrics"])  # the former calibration's figures are not its own
