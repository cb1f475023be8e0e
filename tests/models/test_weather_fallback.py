"""A model and its no-weather sibling; out-of-fold learned levels. Small synthetic cases."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from velocast.data.weather import WEATHER_COLUMNS
from velocast.features import FeatureBuilder
from velocast.models import build_pipeline, predict_frame
from velocast.models.lgbm import ONE_THREAD_FIT_ROWS, LGBMCountRegressor, continue_from
from velocast.models.weather_fallback import WeatherFallback


def _rows(days: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2021-03-01", periods=24 * days, freq="h", tz="Europe/Paris")
    frames = []
    for i, counter in enumerate(("a", "b", "c")):
        rain = rng.gamma(0.3, 2.0, len(stamps)) * (rng.random(len(stamps)) < 0.3)
        temperature = 10 + 8 * np.sin(np.arange(len(stamps)) / 24 / 9) + rng.normal(0, 1, len(stamps))
        level = 20 + 15 * i + 30 * np.isin(stamps.hour, [8, 18])
        counts = rng.poisson(level * np.exp(-0.3 * rain) * (1 + temperature / 100))
        frames.append(pd.DataFrame({"counter_id": counter, "timestamp": stamps, "bike_count": counts.astype(float),
                                    "latitude": 48.85 + i / 100, "longitude": 2.35, "rain_mm": rain,
                                    "temperature_c": temperature, "humidity": 70.0, "wind_ms": 3.0,
                                    "cloud_cover": 50.0}))
    return pd.concat(frames, ignore_index=True)


def test_rows_without_weather_are_predicted_by_a_model_trained_without_weather() -> None:
    rows = _rows()
    y = rows["bike_count"].to_numpy()
    params = {"n_estimators": 40, "num_leaves": 15}
    pipeline = build_pipeline("lgbm", params, "calendar").fit(rows, y)
    fallback = pipeline.named_steps["model"].estimator_  # inside the conformal intervals' wrapper
    assert isinstance(fallback, WeatherFallback)

    # the same estimator, fitted by hand on the same features minus the weather columns
    features = FeatureBuilder(horizon="calendar", counter_as_category=True)
    X = features.fit_transform(rows, y).drop(columns=WEATHER_COLUMNS)
    sibling = LGBMCountRegressor(**{**fallback.estimator.get_params(), **params}).fit(X, y)

    test = _rows(days=7, seed=1)
    test.loc[test.index % 2 == 0, WEATHER_COLUMNS] = np.nan  # half of the hours have no forecast
    predicted = predict_frame(pipeline, test)["prediction"].to_numpy()
    missing = test["rain_mm"].isna().to_numpy()
    by_hand = sibling.predict(features.transform(test).drop(columns=WEATHER_COLUMNS))
    np.testing.assert_allclose(predicted[missing], by_hand[missing], rtol=1e-9)
    # hours with weather use the model that learned it: rain lowers their forecast
    with_weather = predicted[~missing]
    dry = test.loc[~missing, "rain_mm"].to_numpy() == 0
    assert not np.allclose(with_weather, by_hand[~missing])
    assert with_weather[~dry].mean() < by_hand[~missing][~dry].mean()


def test_training_rows_get_their_levels_out_of_fold() -> None:
    rows = _rows(days=70)
    y = rows["bike_count"].to_numpy().copy()
    builder = FeatureBuilder()
    oof = builder.fit_transform(rows, y)
    # each training row's level is learned without its own count: changing that count leaves it as it is
    y[0] = 10_000.0
    again = FeatureBuilder().fit_transform(rows, y)
    assert again["counter_how_level"].iloc[0] == oof["counter_how_level"].iloc[0]
    assert again["counter_level"].iloc[0] == oof["counter_level"].iloc[0]
    # ... while the rows of the other weeks, and any new row, see it
    changed = (again["counter_how_level"] != oof["counter_how_level"]).to_numpy()
    assert changed.sum() > 0 and not changed[0]
    full = FeatureBuilder().fit(rows, y).transform(rows.iloc[[0]])
    assert full["counter_how_level"].iloc[0] != oof["counter_how_level"].iloc[0]


class _Recorded(LGBMCountRegressor):
    """LightGBM that records the thread each fit ran in."""

    threads: ClassVar[list[str]] = []

    def fit(self, X: pd.DataFrame, y: np.ndarray, **kwargs: Any) -> _Recorded:
        type(self).threads.append(threading.current_thread().name)
        return super().fit(X, y, **kwargs)


class _OneAfterTheOther(LGBMCountRegressor):
    fits_concurrently = False


def test_sibling_fits_run_side_by_side_on_one_thread_each_and_match_fits_one_after_the_other() -> None:
    rows = _rows(days=30)
    y = rows["bike_count"].to_numpy()
    X = FeatureBuilder(horizon="calendar", counter_as_category=True).fit_transform(rows, y)
    params = {"n_estimators": 30, "num_leaves": 15, "n_jobs": 2}

    _Recorded.threads = []
    side_by_side = WeatherFallback(_Recorded(**params)).fit(X, y)
    assert sorted(name.startswith("velocast-fit") for name in _Recorded.threads) == [False, True]
    one_after = WeatherFallback(_OneAfterTheOther(**params)).fit(X, y)
    test = X.copy()
    test.loc[test.index % 2 == 0, WEATHER_COLUMNS] = np.nan
    np.testing.assert_array_equal(side_by_side.predict(test), one_after.predict(test))

    # a small fit uses one thread whatever n_jobs says (faster with sleeping OpenMP threads);
    # predictions keep the threads asked for
    booster = side_by_side.with_weather_.booster_model_
    assert len(X) < ONE_THREAD_FIT_ROWS and booster.booster_.params["num_threads"] == 1
    assert booster.n_jobs == 2

    # continued training: the same, side by side
    steps: list[str] = []

    def step(old: LGBMCountRegressor, features: pd.DataFrame) -> LGBMCountRegressor:
        steps.append(threading.current_thread().name)
        return continue_from(old, features, y, {"n_estimators": 5})

    continued = side_by_side.continued(step, X)
    assert sorted(name.startswith("velocast-fit") for name in steps) == [False, True]
    assert continued.with_weather_.booster_model_.booster_.num_trees() == 35
