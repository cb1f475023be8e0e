"""Each model family on real data: fits, beats what it should, persists with skops, validates params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from velocast.data import splits
from velocast.evaluation.metrics import regression_metrics
from velocast.lifecycle.inputs import enrich
from velocast.models import (
    MODEL_TYPES,
    build_pipeline,
    classification_labels,
    continue_training,
    predict_frame,
    validate_hyperparams,
)
from velocast.tracking.mlflow_runs import trusted_types

SMALL = {"lgbm": {"n_estimators": 80}, "rf": {"n_estimators": 10, "max_depth": 12},
         "nn": {"epochs": 6, "hidden": 32}, "rf_class": {"n_estimators": 20, "max_depth": 10}, "baseline": {}}


@pytest.fixture
def data(real_home: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    record = splits.active_split()
    train = enrich(splits.load_split("train_baseline", record), weather="observed").sample(40_000, random_state=0)
    train = train.sort_values("timestamp").reset_index(drop=True)
    test = enrich(splits.load_split("test_baseline", record), extra_history=train, weather="observed")
    return train, test


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_model_fits_predicts_and_round_trips(model_type: str, data) -> None:
    train, test = data
    pipeline = build_pipeline(model_type, SMALL[model_type]).fit(train, train["bike_count"].to_numpy())
    out = predict_frame(pipeline, test)
    assert out["prediction"].notna().all() and len(out) == len(test)
    restored = sio.loads(sio.dumps(pipeline), trusted=trusted_types(pipeline))
    np.testing.assert_allclose(predict_frame(restored, test.head(200))["prediction"],
                               out["prediction"].head(200), rtol=1e-6)
    if model_type == "rf_class":
        proba = out["probability"]
        assert proba.between(0, 1).all()
        labels = classification_labels(pipeline, test, test["bike_count"].to_numpy())
        assert 0.2 < labels.mean() < 0.8
    else:
        assert (out["prediction"] >= 0).all()


def test_day_ahead_lgbm_beats_the_seasonal_naive_floor(data) -> None:
    train, test = data
    y = test["bike_count"].to_numpy()
    floor = build_pipeline("baseline").fit(train, train["bike_count"])
    lgbm = build_pipeline("lgbm", {"n_estimators": 200}, "day-ahead").fit(train, train["bike_count"])
    base = regression_metrics(y, predict_frame(floor, test)["prediction"])
    best = regression_metrics(y, predict_frame(lgbm, test)["prediction"])
    assert best.rmse < 0.85 * base.rmse, (best, base)
    assert best.r2 > 0.85


def test_nn_is_deterministic_for_a_seed(data) -> None:
    train, test = data
    a = build_pipeline("nn", SMALL["nn"], seed=3).fit(train, train["bike_count"])
    b = build_pipeline("nn", SMALL["nn"], seed=3).fit(train, train["bike_count"])
    np.testing.assert_array_equal(predict_frame(a, test.head(500)), predict_frame(b, test.head(500)))


@pytest.mark.parametrize("model_type", ["lgbm", "rf", "nn"])
def test_continue_training_keeps_the_champion_intact(model_type: str, data) -> None:
    train, test = data
    champion = build_pipeline(model_type, SMALL[model_type]).fit(train, train["bike_count"])
    before = predict_frame(champion, test.head(300))["prediction"].to_numpy()
    recent = test.sort_values("timestamp").tail(5000)
    challenger = continue_training(champion, model_type, recent, recent["bike_count"].to_numpy())
    np.testing.assert_allclose(before, predict_frame(champion, test.head(300))["prediction"], rtol=1e-12)
    assert not np.allclose(before, predict_frame(challenger, test.head(300))["prediction"])


def test_hyperparams_are_validated() -> None:
    assert validate_hyperparams("lgbm", {"num_leaves": "31"}) == {"num_leaves": 31}
    with pytest.raises(ValueError, match="unknown hyperparameters for rf: \\['learning_rate'\\]"):
        validate_hyperparams("rf", {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="expected between"):
        validate_hyperparams("lgbm", {"subsample": 3})
    with pytest.raises(ValueError, match="expected an integer"):
        validate_hyperparams("rf", {"n_estimators": 2.5})
    with pytest.raises(ValueError, match="unknown model type"):
        build_pipeline("xgb")
