"""Training end to end: MLflow run, registered version, summary.json, failure cleanup, predict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import REAL_COUNTS
from velocast.cli import app
from velocast.config import get_settings
from velocast.lifecycle.training.train import train
from velocast.tracking.registry import Registry
from velocast.tracking.summary import SummaryStore

runner = CliRunner()


def test_model_test_run_is_tracked_registered_and_summarised(real_home: Path) -> None:
    result = train("lgbm", model_test=True)
    assert result.rows["train"] == 1000 and result.model_version == "1"
    assert result.double_evaluation_enabled and result.metrics_current["n"] > 0
    run = mlflow.get_run(result.run_id)
    for key in ("train_rmse", "test_baseline_rmse", "test_baseline_r2", "test_baseline_rmse_log1p", "test_current_rmse"):
        assert key in run.data.metrics
    assert run.data.params["hp_num_leaves"] == "63" and run.data.tags["horizon"] == "day-ahead"
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"train_reference", "test_baseline", "test_current"}  # the default: train_baseline + train_current
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert "plots/feature_importance.png" in artifacts and "plots/test_baseline_predicted_vs_actual.png" in artifacts
    entry = SummaryStore().find(result.run_id)
    assert entry.rmse == pytest.approx(result.metrics_baseline["rmse"])  # test_baseline, not training
    assert entry.train_metrics["rmse"] == pytest.approx(result.metrics_train["rmse"])
    assert entry.metrics_scope == "test_baseline" and not entry.is_champion
    # loadable from summary.json's artifact location, and by registry URI in plain MLflow
    frame = pd.read_parquet(REAL_COUNTS).head(3).rename(columns={"date": "timestamp"})
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC").map(lambda t: t.isoformat())
    code = ("import mlflow, pandas as pd, sys; m = mlflow.pyfunc.load_model(sys.argv[1]); "
            "frame = pd.read_json(sys.argv[2], convert_dates=False, dtype={'counter_id': str, 'site_id': str}); "
            "print(len(m.predict(frame)))")
    for uri in (entry.model_uri, result.registry_uri):
        out = subprocess.run([sys.executable, "-c", code, uri, frame.drop(columns=["bike_count"]).to_json()],
                             capture_output=True, text=True, env={"MLFLOW_TRACKING_URI": get_settings().tracking_uri,
                                                                  "PATH": "/usr/bin:/bin"}, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().endswith("3")


def test_a_registry_reads_its_own_home_whatever_mlflow_points_at(real_home: Path, tmp_path: Path) -> None:
    """Two homes in one process (API test clients, helpers): MLflow's tracking URI is process-wide and
    every Registry sets it, so a Registry must never resolve a model or artifact through it."""
    from velocast.config import Settings

    result = train("baseline", model_test=True)
    mine = Registry()
    ref = mine.get("baseline", result.model_version)
    Registry(Settings(home=tmp_path / "other"))  # points MLflow's process-wide URI at another, empty home
    assert mine.champion("baseline") is None and [v.version for v in mine.versions("baseline")] == ["1"]
    assert mine.load_model(ref).version == "1"  # loaded from this home's store, not through models:/ elsewhere
    assert mine.trained_days(ref)  # the run's data/days.json, read from this home's store


def test_failed_run_leaves_no_registered_version(real_home: Path) -> None:
    summary = Path(get_settings().summary_location)
    summary.mkdir(parents=True)  # a folder where the file should be: appending fails
    with pytest.raises(OSError):
        train("baseline", model_test=True)
    assert Registry().versions("baseline") == []
    assert mlflow.search_runs(experiment_names=["velocast"], filter_string="status = 'FAILED'").shape[0] == 1


def test_train_on_a_file_keeps_test_days_unseen(real_home: Path, real_subset_file: Path) -> None:
    result = train("baseline", data_path=real_subset_file)
    assert any("rows on held-out test days left out of training" in note for note in result.notes)
    assert result.rows["train"] < len(pd.read_parquet(real_subset_file))


def test_hyperopt_logs_each_trial_as_a_nested_run(real_home: Path) -> None:
    result = train("lgbm", model_test=True, hyperopt=True, n_trials=2)
    children = mlflow.search_runs(experiment_names=["velocast"],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == 2 and "metrics.cv_rmse" in children.columns
    # named as the progress counts them (trial 1/2, 2/2); the tag keeps Optuna's own number
    assert sorted(children["tags.mlflow.runName"]) == ["trial-1", "trial-2"]
    assert sorted(children["tags.optuna_trial"]) == ["0", "1"]
    # the search's history, the parameter importances and every trial, on the parent run
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "tuning")}
    assert logged == {"tuning/optimization_history.png", "tuning/param_importances.png", "tuning/trials.csv"}
    parent = mlflow.get_run(result.run_id).data
    assert parent.metrics["optuna_trials_complete"] + parent.metrics.get("optuna_trials_pruned", 0) == 2
    assert 1 <= result.hyperparams["n_estimators"] <= 600  # grown with early stopping on the folds


def test_cli_hyperopt_shows_each_trial_and_the_total_time(real_home: Path) -> None:
    out = runner.invoke(app, ["train", "--model-test", "--timeout", "60"])
    assert out.exit_code == 2 and "--timeout limits the Optuna search: it needs --hyperopt" in out.output
    out = runner.invoke(app, ["train", "--model-type", "rf", "--model-test", "--hyperopt", "--n-trials", "2",
                              "--timeout", "600"])
    assert out.exit_code == 0, out.output
    assert "rf: trial 1/2: rmse " in out.output and "rf: trial 2/2: " in out.output
    assert "rf: tuning done: best cv rmse" in out.output
    assert "velocast train: done in " in out.output  # the closing line with the total time


def test_tuning_workers_need_a_shared_study_storage(home: Path) -> None:
    out = runner.invoke(app, ["train", "--hyperopt", "--n-jobs-workers", "2"])
    assert out.exit_code == 2 and "needs --study-storage" in out.output
    out = runner.invoke(app, ["train", "--n-jobs-workers", "2", "--study-storage", "sqlite:///x.db"])
    assert out.exit_code == 2 and "needs --hyperopt" in out.output
    assert not home.exists() or not (home / "mlflow.db").exists()  # refused before anything was done


def test_cli_train_and_predict_held_out_rows(real_home: Path, tmp_path: Path, real_counts: pd.DataFrame) -> None:
    out = runner.invoke(app, ["train", "--model-type", "lgbm", "--model-test"])
    assert out.exit_code == 0, out.output
    assert "models:/bike-traffic-lgbm/1" in out.output and "test_baseline" in out.output
    held_out = real_counts[real_counts["date"] >= "2021-08-02"]
    held_out = held_out[held_out["counter_id"].isin(held_out["counter_id"].unique()[:5])]
    source = tmp_path / "held_out.parquet"
    held_out.to_parquet(source)
    target = tmp_path / "predicted.csv"
    out = runner.invoke(app, ["predict", "--input", str(source), "--output", str(target)])
    assert out.exit_code == 2 and "version 1 is a test-mode model" in out.output  # never stands in for a champion
    out = runner.invoke(app, ["promote", "--model-type", "lgbm", "--version", "1", "--force", "--reason", "a test"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["predict", "--input", str(source), "--output", str(target)])
    assert out.exit_code == 0, out.output
    predicted = pd.read_csv(target)
    assert len(predicted) == len(held_out) and predicted["prediction"].notna().all()
    assert "rmse=" in out.output  # counts were given, so metrics are printed
    assert "unknown to the model" in out.output  # some of those counters are not in the subset
    # the repeated autumn hour without an offset is read as summer time, and the row says so
    autumn = tmp_path / "autumn.csv"
    from velocast.data import store

    pd.DataFrame({"counter_id": [str(store.counters()["counter_id"].iloc[0])] * 2,
                  "timestamp": ["2021-10-31 02:00", "2021-10-31 03:00"]}).to_csv(autumn, index=False)
    out = runner.invoke(app, ["predict", "--input", str(autumn), "--output", str(target)])
    assert out.exit_code == 0, out.output
    notes = pd.read_csv(target)["notes"].fillna("").tolist()
    assert "occurs twice in Paris (the autumn clock change)" in notes[0] and "autumn" not in notes[1]
    assert "1 row(s): timestamp='2021-10-31 02:00' occurs twice in Paris" in out.output


def test_unknown_type_and_bad_hyperparams_are_clear_errors(real_home: Path) -> None:
    out = runner.invoke(app, ["train", "--model-type", "xgb", "--model-test"])
    assert out.exit_code == 2 and "'xgb' is not one of 'lgbm', 'rf', 'nn', 'rf_class', 'baseline', 'all'" in out.output
    with pytest.raises(ValueError, match="unknown model type 'xgb'"):  # the library says it too
        train("xgb", model_test=True)
    out = runner.invoke(app, ["train", "--model-type", "rf", "--model-test", "--hyperparams", '{"eta": 1}'])
    assert out.exit_code == 2 and "unknown hyperparameters for rf" in out.output


def test_plain_mlflow_day_ahead_needs_history_and_says_so(real_home: Path) -> None:
    """The README's recipe gives /predict's numbers in plain MLflow; without history a warning says why not."""
    import numpy as np
    import warnings

    from velocast.features import NO_HISTORY_WARNING
    from velocast.lifecycle.inputs import enrich, model_inputs
    from velocast.lifecycle.serving.predict import load_model, predict_rows
    from velocast.lifecycle.decisions.promotion import promote

    result = train("lgbm", model_test=True)
    promote("lgbm", version=result.model_version, reason="test", force=True)
    counter = Registry().load(Registry().champion("lgbm")).named_steps["features"].counter_ids_[0]
    rows = pd.DataFrame({"counter_id": [counter, counter], "timestamp": pd.to_datetime(
        ["2021-07-20 08:00", "2021-07-20 17:00"]).tz_localize("Europe/Paris")})
    model = mlflow.pyfunc.load_model("models:/bike-traffic-lgbm@champion")
    # the model's own prediction: served without the recent level bias, which needs the store
    served = predict_rows(rows, load_model("lgbm"), get_settings().model_copy(update={"bias_correction_days": 0}))
    np.testing.assert_allclose(model.predict(model_inputs(enrich(rows, weather="served"))), served.frame["prediction"],
                               rtol=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bare = model.predict(rows.assign(timestamp=rows["timestamp"].map(lambda t: t.isoformat())))
    assert any(NO_HISTORY_WARNING.split("{n}")[0] in str(w.message) for w in caught)
    assert not np.allclose(bare, served.frame["prediction"])


def test_a_store_without_weather_trains_and_serves_intervals(home: Path, real_subset_file: Path) -> None:
    """A new user who ingests counts but no weather: training must not fail on the weather variant of
    the calibration; the run says the weather was missing, and a forecast made later with a weather
    forecast gets the intervals of the same forecast without one (never none, never narrower)."""
    from velocast.data import splits
    from velocast.data.ingest import ingest_file
    from velocast.models import calibration_info

    ingest_file(real_subset_file)
    splits.record_split("2021-06-01")
    result = train("lgbm", model_test=True)
    assert any("no observed weather" in note for note in result.notes)
    assert any("no calibration day had weather" in note for note in result.notes)
    assert 0.6 < result.metrics_baseline["interval_coverage"] <= 1.0
    registry = Registry()
    pipeline = registry.load(registry.get("lgbm", result.model_version))
    assert calibration_info(pipeline)["with_weather_from"] == "without_weather"
    model = pipeline.named_steps["model"]
    prediction = np.array([3.0, 40.0, 250.0, 40.0])
    counter = np.array([0, 1, 2, -1])
    without = model.bounds(prediction, np.zeros(4, np.int64), counter)
    with_weather = model.bounds(prediction, np.ones(4, np.int64), counter)
    assert np.all(without[0] <= prediction) and np.all(prediction <= without[1])
    assert np.array_equal(without[0], with_weather[0]) and np.array_equal(without[1], with_weather[1])
    # a weather forecast given to it is not used, and the answer says so
    from velocast.lifecycle.decisions.promotion import promote

    promote("lgbm", version=result.model_version, force=True, reason="a test-mode model, to predict")
    source, target = home.parent / "future.csv", home.parent / "predicted.csv"
    counter = str(pd.read_parquet(real_subset_file, columns=["counter_id"])["counter_id"].iloc[0])
    pd.DataFrame({"counter_id": [counter] * 3, "date": ["2021-08-10 06:00:00"] * 3,
                  "temperature_c": [30.0, 2.0, None], "rain_mm": [0.0, 20.0, None]}).to_csv(source, index=False)
    out = runner.invoke(app, ["predict", "--input", str(source), "--output", str(target)])
    assert out.exit_code == 0, out.output
    predicted = pd.read_csv(target)
    assert len(predicted) == 3 and predicted["prediction"].nunique() == 1  # every row: the no-weather sibling
    assert list(predicted["weather"]) == ["given", "given", "missing"]
    assert predicted["notes"].str.contains("weather not used: the model was trained without weather").tolist() == \
        [True, True, False]
