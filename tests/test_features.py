"""Features: day-ahead history never reads the predicted day or later; unknown counters work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from velocast.data import splits, store
from velocast.features import HISTORY_COLUMNS, FeatureBuilder, add_history
from velocast.lifecycle.inputs import enrich
from velocast.models import build_pipeline, predict_frame


def test_history_features_values() -> None:
    ts = pd.date_range("2021-03-01", periods=24 * 20, freq="h", tz="Europe/Paris")
    hist = pd.DataFrame({"counter_id": "c", "timestamp": ts, "bike_count": np.arange(len(ts), dtype=float)})
    day = pd.Timestamp("2021-03-16 08:00", tz="Europe/Paris")
    rows = pd.DataFrame({"counter_id": ["c", "new"], "timestamp": [day, day]})
    out = add_history(rows, hist)

    def value(t: str) -> float:
        return float(hist.loc[hist["timestamp"] == pd.Timestamp(t, tz="Europe/Paris"), "bike_count"].item())

    assert out["lag_1d"].iloc[0] == value("2021-03-15 08:00")
    assert out["lag_7d"].iloc[0] == value("2021-03-09 08:00")
    assert out["lag_14d"].iloc[0] == value("2021-03-02 08:00")
    expected_mean = np.mean([value(f"2021-03-{d:02d} 08:00") for d in range(9, 16)])
    assert out["mean_7d_same_hour"].iloc[0] == expected_mean
    yesterday = hist[hist["timestamp"].dt.date == pd.Timestamp("2021-03-15").date()]["bike_count"]
    assert out["yesterday_total"].iloc[0] == yesterday.sum()
    assert out.loc[1, HISTORY_COLUMNS].isna().all()  # no history: NaN, not an error


def test_history_same_wall_clock_hour_across_dst() -> None:
    ts = pd.date_range("2021-03-20", "2021-03-31", freq="h", tz="Europe/Paris", inclusive="left")
    hist = pd.DataFrame({"counter_id": "c", "timestamp": ts, "bike_count": ts.hour.astype(float)})
    rows = pd.DataFrame({"counter_id": ["c"], "timestamp": [pd.Timestamp("2021-03-29 08:00", tz="Europe/Paris")]})
    assert add_history(rows, hist)["lag_1d"].item() == 8.0  # 08:00 the day before the DST change too


def test_no_future_count_changes_a_day_ahead_prediction(real_home: Path) -> None:
    train = splits.load_split("train_baseline")
    pipeline = build_pipeline("lgbm", {"n_estimators": 60}, "day-ahead")
    fitted_rows = enrich(train, weather="observed")
    pipeline.fit(fitted_rows, fitted_rows["bike_count"].to_numpy())
    day = pd.Timestamp("2021-06-15", tz="Europe/Paris")
    history = store.query_counts("2021-05-25", "2021-06-30")
    rows = history[(history["timestamp"] >= day) & (history["timestamp"] < day + pd.Timedelta(days=1))]
    before = predict_frame(pipeline, add_history(rows, history))["prediction"].to_numpy()
    tampered = history.copy()
    future = tampered["timestamp"] >= day
    tampered.loc[future, "bike_count"] = tampered.loc[future, "bike_count"] * 10 + 1000
    after = predict_frame(pipeline, add_history(rows, tampered))["prediction"].to_numpy()
    np.testing.assert_array_equal(before, after)
    # ... while changing the day before does change them (the check can fail)
    tampered.loc[(tampered["timestamp"] >= day - pd.Timedelta(days=1)) & ~future, "bike_count"] += 500
    changed = predict_frame(pipeline, add_history(rows, tampered))["prediction"].to_numpy()
    assert not np.allclose(before, changed)


def test_unknown_counter_is_predicted_from_its_neighbours(real_home: Path) -> None:
    train = splits.load_split("train_baseline")
    builder = FeatureBuilder().fit(train, train["bike_count"])
    known = train.iloc[[0]].copy()
    stranger = known.assign(counter_id="999-unknown", latitude=known["latitude"] + 0.0005)
    features = builder.transform(pd.concat([known, stranger], ignore_index=True))
    assert builder.unknown_counters(stranger) == ["999-unknown"]
    assert features["counter_code"].iloc[1] == -1
    assert np.isfinite(features["counter_how_level"]).all()
    # its nearest known counter dominates its level: close to the known counter's level
    assert abs(features["counter_level"].iloc[1] - features["counter_level"].iloc[0]) < 1.5


def test_string_timestamps_are_accepted() -> None:
    rows = pd.DataFrame({"counter_id": ["a", "a"], "latitude": 48.85, "longitude": 2.35, "bike_count": [1.0, 2.0],
                         "timestamp": ["2021-03-01T08:00:00+01:00", "2021-03-01 09:00"]})
    builder = FeatureBuilder().fit(rows, rows["bike_count"])
    out = builder.transform(rows)
    assert out["hour"].tolist() == [8, 9]  # naive text is Paris wall-clock time


def _hourly(counter: str, start: str, end: str, value: float = 10.0) -> pd.DataFrame:
    stamps = pd.date_range(start, end, freq="h", tz="Europe/Paris", inclusive="left")
    return pd.DataFrame({"counter_id": counter, "timestamp": stamps, "bike_count": value})


def test_outage_zeros_are_unknown_history_seen_only_up_to_the_cutoff() -> None:
    day = pd.Timestamp("2021-03-20", tz="Europe/Paris")
    history = _hourly("c", "2021-02-01", "2021-03-25")
    # a zero run from 10:00 the day before, lasting 3 days: at the cut-off only 14 zero hours are known
    late = (history["timestamp"] >= day - pd.Timedelta(hours=14)) & (history["timestamp"] < day + pd.Timedelta(days=2))
    history.loc[late, "bike_count"] = 0.0
    rows = pd.DataFrame({"counter_id": "c", "timestamp": [day + pd.Timedelta(hours=12)]})
    out = add_history(rows, history, min_zero_hours=24)
    assert out["lag_1d"].item() == 0.0  # 14 hours of zeros are not an outage yet: a real zero
    assert out["lag_2d"].item() == 10.0
    # the same zeros seen from a day later (a 38-hour run by then) are an outage: unknown
    later = add_history(rows.assign(timestamp=rows["timestamp"] + pd.Timedelta(days=1)), history, min_zero_hours=24)
    assert np.isnan(later["lag_1d"].item()) and np.isnan(later["yesterday_total"].item())
    assert later["lag_7d"].item() == 10.0 and later["median_7d_same_hour"].item() == 10.0


def test_history_features_read_only_their_window() -> None:
    """Counts before the 28-day window or on/after the predicted day change no feature, NaN included."""
    rng = np.random.default_rng(0)
    history = pd.concat([_hourly("a", "2021-01-01", "2021-04-01"), _hourly("b", "2021-01-01", "2021-04-01")],
                        ignore_index=True)
    history["bike_count"] = rng.poisson(20, len(history)).astype(float)
    history.loc[rng.random(len(history)) < 0.1, "bike_count"] = 0.0
    history.loc[(history["counter_id"] == "b") & history["timestamp"].between(
        pd.Timestamp("2021-03-01", tz="Europe/Paris"), pd.Timestamp("2021-03-03 05:00", tz="Europe/Paris")),
        "bike_count"] = 0.0  # a 53-hour outage inside the window
    day = pd.Timestamp("2021-03-10", tz="Europe/Paris")
    rows = pd.concat([_hourly("a", "2021-03-10", "2021-03-11"), _hourly("b", "2021-03-10", "2021-03-11")],
                     ignore_index=True)[["counter_id", "timestamp"]]
    window = history[(history["timestamp"] >= day - pd.Timedelta(days=28)) & (history["timestamp"] < day)]
    full = add_history(rows, history)[HISTORY_COLUMNS]
    pd.testing.assert_frame_equal(full, add_history(rows, window)[HISTORY_COLUMNS])
    changed = history.copy()
    outside = (changed["timestamp"] < day - pd.Timedelta(days=28)) | (changed["timestamp"] >= day)
    changed.loc[outside, "bike_count"] = 0.0
    pd.testing.assert_frame_equal(full, add_history(rows, changed)[HISTORY_COLUMNS])
    b_lag = full["lag_7d"][rows["counter_id"] == "b"].to_numpy()
    assert np.isnan(b_lag[:6]).all()  # 2021-03-03 00:00-05:00 ends the outage: unknown, never 0
    assert np.isfinite(full["lag_7d"][rows["counter_id"] == "a"]).all()


def test_the_repeated_autumn_hour_is_resolved_per_counter() -> None:
    """Naive 02:00 on 2021-10-31 occurs twice: for each counter its first row is summer time (+02:00)."""
    from velocast.data.schema import to_paris

    naive = pd.Series(["2021-10-31 01:00", "2021-10-31 01:00", "2021-10-31 02:00", "2021-10-31 02:00",
                       "2021-10-31 02:00", "2021-10-31 02:00", "2021-10-31 03:00", "2021-10-31 03:00"])
    counters = pd.Series(["a", "b", "a", "b", "a", "b", "a", "b"])
    stamps = to_paris(naive, naive="paris", counter_ids=counters)
    offsets = [t.utcoffset().total_seconds() / 3600 for t in stamps]
    assert offsets == [2, 2, 2, 2, 1, 1, 1, 1]
    rows = pd.DataFrame({"counter_id": counters, "timestamp": naive, "latitude": 48.85, "longitude": 2.35,
                         "bike_count": 1.0})
    hours = FeatureBuilder().fit(rows, rows["bike_count"]).transform(rows)["hour"].tolist()
    assert hours == [1, 1, 2, 2, 2, 2, 3, 3]


def test_a_calendar_model_has_no_day_of_year_and_a_builder_fitted_with_one_still_serves() -> None:
    stamps = pd.date_range("2021-03-01", periods=24 * 14, freq="h", tz="Europe/Paris")
    rows = pd.DataFrame({"counter_id": "c", "timestamp": stamps, "latitude": 48.85, "longitude": 2.35,
                         "bike_count": np.arange(len(stamps), dtype=float) % 24})
    calendar = FeatureBuilder(horizon="calendar").fit(rows)
    day_ahead = FeatureBuilder(horizon="day-ahead").fit(rows)
    assert "day_of_year" not in calendar.feature_names_out_ and "month" in calendar.feature_names_out_
    assert "day_of_year" in day_ahead.feature_names_out_
    # a calendar builder fitted before the column was dropped (loaded from MLflow) keeps its columns
    older = FeatureBuilder(horizon="calendar").fit(rows)
    older.feature_names_out_ = [*older.feature_names_out_[:6], "day_of_year", *older.feature_names_out_[6:]]
    out = older.transform(rows.head(30))
    assert list(out.columns) == older.feature_names_out_
    assert out["day_of_year"].tolist() == [60.0] * 24 + [61.0] * 6
    assert np.array_equal(older.plan().matrix_of(rows.head(30)), out.to_numpy(np.float32), equal_nan=True)
    del older.__dict__["day_of_year"]  # as loaded from a model saved before the parameter existed
    assert older.get_params()["day_of_year"] is None and "FeatureBuilder" in repr(older)
