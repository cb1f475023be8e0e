"""The serving path without pandas equals the frames' path, value for value.

``predict_rows`` builds a request's inputs from arrays (``velocast.lifecycle.serving.fast_path``: calendar
table, the store's counts in memory, ``FeaturePlan``, ``CompiledModel``). The reference is the
frames' path it replaces: ``build_inputs(rows).frame("served")`` (history read from the store),
``FeatureBuilder.transform`` and ``predict_frame``, with ``Inputs.notes``. On real rows of the
real subset — the two DST days, an unknown counter, days without history, beyond the horizon and
with incomplete history, sensor-outage zeros, given and partly given weather — both paths must give
the same features, predictions, weather sources, notes and unknown counters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velocast.config import PARIS_TZ, Settings
from velocast.data import store
from velocast.features import HISTORY_COLUMNS, paris_day_hour
from velocast.lifecycle.inputs import WEATHER_SOURCE, build_inputs, enrich
from velocast.lifecycle.serving.adaptation import online_rule, served_window
from velocast.lifecycle.serving.fast_path import fast_inputs
from velocast.lifecycle.serving.predict import LoadedModel, predict_rows
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.serving.served_history import store_history
from velocast.models import build_pipeline, calibrate, predict_frame
from velocast.models.compiled import lleaves_available

UNKNOWN = "999999999-999999999"
DAYS = ["2020-09-01", "2020-09-02", "2020-10-25", "2020-12-15", "2021-03-28", "2021-04-22", "2021-05-03",
        "2021-08-10", "2021-08-12"]


def _fit(settings: Settings, model_type: str, **params: object) -> LoadedModel:
    """A small real pipeline fitted on observed-weather rows of the store (no MLflow needed)."""
    rows = store.query_counts("2021-01-01", "2021-05-01", settings=settings).sample(3000, random_state=3)
    enriched = enrich(rows.reset_index(drop=True), settings, weather="observed")
    pipeline = build_pipeline(model_type, params or None)
    if model_type == "lgbm":  # one OpenMP thread: a busy machine makes two spin for minutes
        pipeline.set_params(model__estimator__estimator__n_jobs=1)
    pipeline.fit(enriched, enriched["bike_count"].to_numpy(float))
    # prediction intervals calibrated on later days, as served (with and without weather)
    later = store.query_counts("2021-05-10", "2021-05-24", settings=settings).sample(2000, random_state=4)
    pipeline = calibrate(pipeline, ServedRows.build(later.reset_index(drop=True), settings).calibration_rows)
    return LoadedModel(model_type, pipeline, None, f"test:{model_type}")


def _outages(settings: Settings, counters: list[str]) -> None:
    """Zero runs in the store: one ending at a cut-off (outage suspected), one inside a history window."""
    zeros = []
    for counter, start, hours in ((counters[0], "2021-04-20 00:00", 48), (counters[1], "2021-04-30 20:00", 30)):
        stamps = pd.date_range(start, periods=hours, freq="h", tz=PARIS_TZ)
        known = store.query_counts(stamps[0], stamps[-1] + pd.Timedelta(hours=1), [counter], settings=settings)
        zeros.append(known.assign(bike_count=0.0))
    store.upsert_counts(pd.concat(zeros, ignore_index=True), settings)


def _rows(settings: Settings) -> pd.DataFrame:
    """Every hour of ``DAYS`` for every counter, an unknown counter, both autumn 02:00s, some weather."""
    known = store.counters(settings)
    frames = []
    for day in DAYS:
        stamps = pd.date_range(pd.Timestamp(day).tz_localize(PARIS_TZ), periods=25, freq="h")
        stamps = stamps[stamps.tz_convert(PARIS_TZ).normalize() == pd.Timestamp(day).tz_localize(PARIS_TZ)]
        for counter in [*known["counter_id"].astype(str), UNKNOWN]:
            frames.append(pd.DataFrame({"counter_id": counter, "timestamp": stamps}))
    rows = pd.concat(frames, ignore_index=True)
    info = known.set_index("counter_id")
    located = rows["counter_id"].map(info["latitude"]).fillna(48.8566)
    rows["latitude"] = located.to_numpy(float)
    rows["longitude"] = rows["counter_id"].map(info["longitude"]).fillna(2.3522).to_numpy(float)
    rows.loc[rows.index % 3 == 0, "latitude"] = np.nan  # a known counter's own location is then used
    rows.loc[rows.index % 3 == 0, "longitude"] = np.nan
    rng = np.random.default_rng(5)
    rows["temperature_c"] = np.where(rng.random(len(rows)) < 0.4, rng.normal(15, 6, len(rows)), np.nan)
    rows["rain_mm"] = np.where(rng.random(len(rows)) < 0.7, rng.exponential(0.3, len(rows)), np.nan)
    rows["bike_count"] = np.nan
    return rows


def _reference(rows: pd.DataFrame, model: LoadedModel, settings: Settings) -> dict[str, object]:
    """The frames' path: build_inputs, FeatureBuilder.transform, predict_frame, Inputs.notes."""
    inputs = build_inputs(rows, settings)
    enriched = inputs.frame("served")
    features = model.pipeline.named_steps["features"]
    matrix = features.transform(enriched)
    if "counter_code" in matrix and isinstance(matrix["counter_code"].dtype, pd.CategoricalDtype):
        matrix["counter_code"] = matrix["counter_code"].cat.codes.astype(np.float32)
    day = paris_day_hour(rows["timestamp"])[0]
    recent, _ = served_window(model, day, settings)  # the intervals adapt on the same recent errors
    predicted = predict_frame(model.pipeline, enriched, rule=online_rule(settings), recent=recent)
    return {"matrix": matrix.to_numpy(np.float32), "prediction": predicted["prediction"],
            "lower": predicted.get("lower"), "upper": predicted.get("upper"),
            "weather": enriched[WEATHER_SOURCE].to_numpy(),
            "notes": inputs.notes(model.horizon == "day-ahead", enriched[WEATHER_SOURCE].to_numpy()),
            "unknown": features.unknown_counters(enriched)}


@pytest.fixture
def fitted(real_home: Path) -> tuple[Settings, LoadedModel]:
    settings = Settings(home=real_home)
    counters = store.counters(settings)["counter_id"].astype(str).tolist()
    _outages(settings, counters)
    return settings, _fit(settings, "lgbm", n_estimators=40, num_leaves=63)


def test_fast_path_equals_frames_path(fitted: tuple[Settings, LoadedModel]) -> None:
    settings, model = fitted
    rows = _rows(settings)
    reference = _reference(rows, model, settings)
    fast = fast_inputs(rows, model.serving, settings)
    assert fast is not None, "these rows must take the serving path"
    np.testing.assert_array_equal(fast.matrix, reference["matrix"])  # NaN where NaN, every value equal
    served = predict_rows(rows, model, settings)
    np.testing.assert_array_equal(served.frame["prediction"].to_numpy(), reference["prediction"].to_numpy())
    for bound in ("lower", "upper"):  # the conformal interval, from the arrays as from the frames
        np.testing.assert_allclose(served.frame[bound].to_numpy(), reference[bound].to_numpy(), rtol=1e-12)
    assert np.isfinite(served.frame["lower"]).all() and (served.frame["upper"] > served.frame["lower"]).mean() > 0.9
    assert served.coverage == settings.interval_coverage
    np.testing.assert_array_equal(served.frame[WEATHER_SOURCE].to_numpy(), reference["weather"])
    assert served.row_notes == reference["notes"]
    assert served.unknown_counters == reference["unknown"] == [UNKNOWN]
    # the cases this test is about are really there
    notes = " ".join(n for row in served.row_notes for n in row)
    for kind in ("no history", "beyond the day-ahead horizon", "history incomplete", "sensor outage suspected",
                 "no weather forecast", "incomplete weather given (no rain_mm", "incomplete weather given (no temperature_c"):
        assert kind in notes, kind
    assert set(served.frame[WEATHER_SOURCE]) == {"given", "missing"}
    history = fast.matrix[:, [model.serving.plan.names.index(c) for c in HISTORY_COLUMNS]]
    assert np.isnan(history).any() and np.isfinite(history).any()
    # requests of one row each (the API's) read each (counter, day)'s history features from the pairs
    # the store's in-memory history keeps: the same values, unknown counters and DST days included
    index = store_history(settings).current()
    assert index.pairs, "the rows above fill the pairs"
    sample = np.random.default_rng(5).choice(len(rows), 40, replace=False)
    for i in [*sample, *np.flatnonzero(rows["counter_id"].eq(UNKNOWN).to_numpy())[:3]]:
        alone = fast_inputs(rows.iloc[[i]].reset_index(drop=True), model.serving, settings)
        np.testing.assert_array_equal(alone.matrix[0], reference["matrix"][i])
    assert len(rows[rows["timestamp"].dt.tz_convert(PARIS_TZ).dt.date.astype(str) == "2020-10-25"]) == 25 * 9
    # one row alone (an API request) too
    one = rows.iloc[[len(rows) // 2]].reset_index(drop=True)
    assert predict_rows(one, model, settings).frame["prediction"].item() == \
        predict_frame(model.pipeline, build_inputs(one, settings).frame("served"))["prediction"].item()


def test_other_model_families_take_the_same_path(real_home: Path) -> None:
    settings = Settings(home=real_home)
    model = _fit(settings, "baseline")
    rows = _rows(settings).drop(columns=["temperature_c", "rain_mm"])
    reference = _reference(rows, model, settings)
    served = predict_rows(rows, model, settings)
    np.testing.assert_array_equal(served.frame["prediction"].to_numpy(), reference["prediction"].to_numpy())
    for bound in ("lower", "upper"):
        np.testing.assert_allclose(served.frame[bound].to_numpy(), reference[bound].to_numpy(), rtol=1e-12)
    assert served.row_notes == reference["notes"]


def test_an_ingest_while_serving_is_seen(fitted: tuple[Settings, LoadedModel]) -> None:
    settings, model = fitted
    counter = store.counters(settings)["counter_id"].astype(str).iloc[2]
    day = pd.Timestamp("2021-08-12").tz_localize(PARIS_TZ)
    rows = pd.DataFrame({"counter_id": counter, "timestamp": pd.date_range(day, periods=24, freq="h")})
    before = predict_rows(rows, model, settings)
    assert "beyond the day-ahead horizon" in before.frame["notes"].iloc[0]
    index = store_history(settings).current()
    # counts of 2021-08-11 arrive (the same hours a week earlier, moved on)
    week_before = store.query_counts(day - pd.Timedelta(days=8), day - pd.Timedelta(days=7), [counter],
                                     settings=settings)
    store.upsert_counts(week_before.assign(timestamp=week_before["timestamp"] + pd.Timedelta(days=7)), settings)
    after = predict_rows(rows, model, settings)
    assert store_history(settings).current() is not index
    assert not any(n.startswith(("beyond", "history", "no history")) for n in after.row_notes[0])
    assert not np.array_equal(after.frame["prediction"].to_numpy(), before.frame["prediction"].to_numpy())
    reference = _reference(rows, model, settings)
    np.testing.assert_array_equal(after.frame["prediction"].to_numpy(), reference["prediction"].to_numpy())


def test_rows_the_serving_path_does_not_take(fitted: tuple[Settings, LoadedModel]) -> None:
    settings, model = fitted
    rows = _rows(settings).head(30)
    labelled = rows.assign(bike_count=5.0)
    assert fast_inputs(labelled, model.serving, settings) is None  # counts are history and get metrics
    naive = rows.assign(timestamp=rows["timestamp"].dt.tz_localize(None))
    assert fast_inputs(naive, model.serving, settings) is None
    old = rows.assign(timestamp=rows["timestamp"] - pd.Timedelta(days=5 * 365))  # before the days held
    assert fast_inputs(old, model.serving, settings) is None
    result = predict_rows(labelled, model, settings)
    assert result.metrics is not None and result.metrics["n"] == 30


@pytest.mark.skipif(not lleaves_available(), reason="lleaves is not installed (pip install lleaves)")
def test_lleaves_predicts_as_lightgbm(fitted: tuple[Settings, LoadedModel], tmp_path: Path) -> None:
    settings, model = fitted
    rows = _rows(settings)
    fast = fast_inputs(rows, model.serving, settings)
    compiled = model.serving.model
    lightgbm = compiled.predict(fast.matrix)["prediction"]
    assert compiled.compile_lleaves(tmp_path / "cache") and compiled.compiled
    again = compiled.predict(fast.matrix)["prediction"]
    np.testing.assert_allclose(np.log1p(again), np.log1p(lightgbm), rtol=0, atol=1e-6)
    np.testing.assert_allclose(again, lightgbm, rtol=1e-6, atol=1e-6)
    # a second compile of the same model loads the cached object
    from velocast.models.compiled import CompiledModel

    other = CompiledModel(model.pipeline, model.serving.plan)
    assert other.compile_lleaves(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.so"))) == 2  # with- and without-weather boosters
    assert not list((tmp_path / "cache").glob("*.partial"))  # compiled in a child process, written atomically
    np.testing.assert_array_equal(other.predict(fast.matrix)["prediction"], again)


@pytest.mark.skipif(not lleaves_available(), reason="lleaves is not installed (pip install lleaves)")
def test_a_failed_lleaves_build_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from velocast.models import lleaves_build

    bad = tmp_path / "bad.txt"
    bad.write_text("not a LightGBM model\n")
    with pytest.raises(RuntimeError, match="compiling bad.txt with lleaves failed: "):
        lleaves_build.build(bad, tmp_path / "bad.so", lleaves_build.options(""))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]


def test_lleaves_inlines_the_trees_of_models_it_compiles_in_reasonable_time() -> None:
    from velocast.models import lleaves_build

    def text(trees: int, leaves: int) -> str:
        return "tree\n" + "".join(f"Tree={i}\nnum_leaves={leaves}\nnum_cat=0\n" for i in range(trees))

    default = lleaves_build.options(text(300, 63))  # the default lgbm: 18,900 leaves
    assert default["finline"] and lleaves_build.options_tag(default) == "inline-b16-small"
    big = lleaves_build.options(text(150, 255))  # 38,250 leaves: minutes to inline, so one function per tree
    assert not big["finline"] and lleaves_build.options_tag(big) == "noinline-b16-small"


@pytest.mark.skipif(not lleaves_available(), reason="lleaves is not installed (pip install lleaves)")
def test_a_compile_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A server stopped mid-compile leaves no orphan compiler running on (nor a partial file)."""
    import json
    import subprocess
    import sys
    import time

    import lightgbm

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 10))
    booster = lightgbm.train({"num_leaves": 63, "verbose": -1, "min_data_in_leaf": 5}, lightgbm.Dataset(X, X[:, 0]),
                             num_boost_round=300)
    model_file, target = tmp_path / "model.txt", tmp_path / "model.so"
    booster.save_model(str(model_file))
    starter = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-m', "
               f"'velocast.models.lleaves_build', {str(model_file)!r}, {str(target)!r}, "
               f"{json.dumps(json.dumps({'finline': True, 'fblocksize': 16, 'fcodemodel': 'small'}))}]); "
               "print(child.pid, flush=True); time.sleep(1.0)")  # then dies, its child still compiling
    parent = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=60)
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z" \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    assert not target.exists() and not list(tmp_path.glob("*.partial"))
