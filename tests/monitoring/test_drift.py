"""Tests of the drift checks (velocast.monitoring.drift) on the real Paris counts.

Features are built from the real data: Paris-time calendar columns, the real Orly temperature
(nearest 3-hourly SYNOP observation) and ``lag_1d``, the same counter's count 24 hours before.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velocast.monitoring.drift import (
    DriftPolicy,
    DriftReport,
    FeatureDrift,
    detect_drift,
    seasonal_reference,
    write_reports,
)

DATA = Path("/work/shared/data/paris")
COUNTS = DATA / "counts_2020-09-01_2021-08-09.parquet"
WEATHER = DATA / "weather_orly_synop.csv"
PARIS = "Europe/Paris"

NUMERICAL = ["hour", "temperature", "lag_1d"]
CATEGORICAL = ["weekday", "month", "counter_id"]
TARGET = "bike_count"
ROWS_PER_WEEK = 52 * 7 * 24  # 52 counters, all present in the summer weeks used below

pytestmark = pytest.mark.skipif(not COUNTS.exists(), reason="real Paris data not available")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    raw = pd.read_parquet(COUNTS, columns=["counter_id", "bike_count", "date"])
    utc = raw["date"].dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    out = pd.DataFrame({
        "utc": utc,
        "timestamp": utc.dt.tz_convert(PARIS),
        "counter_id": raw["counter_id"].astype(str),
        "bike_count": raw["bike_count"].astype(float),
    })
    out["hour"] = out["timestamp"].dt.hour
    out["weekday"] = out["timestamp"].dt.weekday
    out["month"] = out["timestamp"].dt.month
    counts = out.set_index(["counter_id", "utc"])["bike_count"]
    day_before = pd.MultiIndex.from_arrays([out["counter_id"], out["utc"] - pd.Timedelta(hours=24)])
    out["lag_1d"] = counts.reindex(day_before).to_numpy()

    weather = pd.read_csv(WEATHER, usecols=["date", "t"]).dropna()
    weather["utc"] = pd.to_datetime(weather["date"]).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    weather["temperature"] = weather["t"] - 273.15
    out = pd.merge_asof(out.sort_values("utc"), weather[["utc", "temperature"]].sort_values("utc"),
                        on="utc", direction="nearest", tolerance=pd.Timedelta(hours=3))
    return out.drop(columns="utc").sort_values(["counter_id", "timestamp"]).reset_index(drop=True)


def split_week(frame: pd.DataFrame, monday: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(everything else, the Paris-time week starting ``monday``)."""
    start = pd.Timestamp(monday, tz=PARIS)
    in_week = (frame["timestamp"] >= start) & (frame["timestamp"] < start + pd.Timedelta(days=7))
    return frame[~in_week], frame[in_week]


def check(reference: pd.DataFrame, current: pd.DataFrame, **kwargs) -> DriftReport:
    return detect_drift(reference, current, NUMERICAL, CATEGORICAL, target=TARGET, **kwargs)


def by_name(report: DriftReport) -> dict[str, FeatureDrift]:
    return {f.name: f for f in report.features}


# --------------------------------------------------------------------------- verdicts on real data
def test_ordinary_week_is_not_flagged(frame):
    """2021-06-28 .. 07-04 against its season (ISO weeks 24-28 of the rest of the data)."""
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current)

    assert report.status == "ok"
    assert report.drift_detected is False and report.feature_share_drift is False
    assert report.error is None
    assert report.seasonal_matching is True
    assert report.current_rows == ROWS_PER_WEEK
    assert report.compared_reference_rows == 4 * ROWS_PER_WEEK  # 4 other weeks, same mix
    assert report.n_features == 6
    # one real week is warmer or colder than its five-week window: temperature moves, nothing else
    assert report.drifted_features == ["temperature"]
    assert report.drift_share == pytest.approx(1 / 6)
    target = report.target_drift
    assert target is not None and target.drifted is False
    assert target.effect == pytest.approx(0.0336, abs=1e-3)
    assert target.reference_mean == pytest.approx(68.95, abs=0.01)
    assert target.current_mean == pytest.approx(71.91, abs=0.01)
    # counts differ significantly with 35k vs 9k rows, yet the effect is small: not drift
    assert target.p_value < target.alpha
    # seasonal matching makes the calendar mix identical
    features = by_name(report)
    assert features["hour"].effect == 0.0 and features["weekday"].effect == 0.0
    assert features["counter_id"].effect == 0.0
    # Bonferroni over the 7 tested columns (6 features and the target)
    assert target.alpha == pytest.approx(0.05 / 7)


def test_same_week_against_the_whole_year_is_flagged(frame):
    """Without seasonal matching the summer week looks drifted against the winter-heavy year."""
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current, seasonal=False)

    assert report.status == "drift" and report.seasonal_matching is False
    assert report.compared_reference_rows == len(reference)
    assert report.drifted_features == ["temperature", "lag_1d", "month"]
    assert report.drift_share == pytest.approx(0.5)
    assert report.target_drift.effect == pytest.approx(0.147, abs=2e-3)
    assert by_name(report)["temperature"].effect == pytest.approx(1.019, abs=2e-3)


def test_week_after_the_curfew_moved_to_23h_is_flagged(frame):
    """2021-06-07 is not an ordinary week: the curfew moved from 21h to 23h on 9 June and counts
    were the highest of the year (+21 % over the four surrounding weeks), a real target drift."""
    reference, current = split_week(frame, "2021-06-07")
    report = check(reference, current)

    assert report.status == "drift" and report.seasonal_matching is True
    assert report.target_drift.drifted is True
    assert report.target_drift.effect == pytest.approx(0.150, abs=2e-3)
    assert report.target_drift.reference_mean == pytest.approx(74.40, abs=0.01)
    assert report.target_drift.current_mean == pytest.approx(89.80, abs=0.01)


def test_level_shift_is_flagged(frame):
    reference, current = split_week(frame, "2021-06-28")
    shifted = current.copy()
    shifted[["bike_count", "lag_1d"]] *= 1.6
    report = check(reference, shifted)

    assert report.status == "drift"
    assert report.drift_detected is True
    assert report.target_drift.drifted is True
    assert report.target_drift.effect == pytest.approx(0.487, abs=2e-3)
    assert report.target_drift.current_mean == pytest.approx(1.6 * 71.91, abs=0.02)
    assert report.drifted_features == ["temperature", "lag_1d"]
    assert by_name(report)["lag_1d"].effect > 0.4
    # two of six features: the dataset itself is not drifted, the target is
    assert report.feature_share_drift is False and report.drift_share == pytest.approx(2 / 6)
    # one verdict everywhere: the JSON leads with it and says why, the feature share is one reason
    out = report.to_dict()
    assert out["drift_detected"] is True and out["verdict_by"] == "velocast" and "dataset_drift" not in out
    assert out["verdict"].startswith("drift: the target (bike_count) drifted")
    assert "2 of 6 input features drifted: temperature, lag_1d (share 0.33 < 0.5 for feature drift)" in out["reasons"]


def test_prediction_drift(frame):
    reference, current = split_week(frame, "2021-06-28")
    reference = reference.assign(prediction=reference["lag_1d"])
    good = current.assign(prediction=current["lag_1d"])
    bad = current.assign(prediction=current["lag_1d"] * 0.5)
    ok = check(reference, good, prediction="prediction")
    drifted = check(reference, bad, prediction="prediction")

    assert ok.status == "ok" and ok.prediction_drift.drifted is False
    assert drifted.status == "drift" and drifted.prediction_drift.drifted is True
    assert drifted.target_drift.drifted is False and drifted.feature_share_drift is False


# --------------------------------------------------------------------------- sample-size awareness
def test_huge_sample_tiny_difference_is_not_drift(frame):
    current = frame.sample(200_000, random_state=1).copy()
    current["temperature"] += 0.3  # 0.3 degree on a 7-degree spread
    report = detect_drift(frame, current, ["temperature"], [], seasonal=False)

    feature = report.features[0]
    assert feature.p_value < 1e-50  # KS alone would shout
    assert feature.effect == pytest.approx(0.043, abs=2e-3)
    assert feature.drifted is False and report.status == "ok"


def test_tiny_sample_noise_is_not_drift(frame):
    current = frame.sample(300, random_state=2)
    report = check(frame, current, seasonal=False)

    assert report.status == "ok" and report.drifted_features == []
    counters = by_name(report)["counter_id"]
    # 300 rows over 52 counters: a large JS distance that is only noise (chi2 p ~ 0.7)
    assert counters.effect > 0.1
    assert counters.p_value > 0.5 and counters.drifted is False


# --------------------------------------------------------------------------- edge cases
def test_tiny_current_is_insufficient_data(frame):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current.sample(50, random_state=0))

    assert report.status == "insufficient_data"
    assert report.drift_detected is None and report.drift_share is None
    assert report.current_rows == 50
    assert "minimum 200" in report.note and report.error is None


def test_empty_frames_are_insufficient_data(frame):
    reference, current = split_week(frame, "2021-06-28")
    assert check(reference, current.iloc[:0]).status == "insufficient_data"
    assert check(reference.iloc[:0], current).status == "insufficient_data"


def test_new_counter_is_listed(frame):
    reference, current = split_week(frame, "2021-06-28")
    current = current.copy()
    one = current["counter_id"] == current["counter_id"].iloc[0]
    current.loc[one, "counter_id"] = "999999999-999999999"
    known = set(reference["counter_id"].unique())

    report = check(reference, current, known_counters=known)
    assert report.new_counters == ["999999999-999999999"]
    # by default the known counters are those of the reference
    assert check(reference, current).new_counters == ["999999999-999999999"]
    assert check(reference, split_week(frame, "2021-06-28")[1], known_counters=known).new_counters == []


def test_missing_column_is_an_error_not_ok(frame):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current.drop(columns="temperature"))

    assert report.status == "error"
    assert report.drift_detected is None
    assert report.error == "KeyError: columns missing from current: ['temperature']"
    assert report.to_dict()["status"] == "error"


def test_missing_timestamp_is_an_error_with_a_hint(frame):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current.drop(columns="timestamp"))
    assert report.status == "error" and "seasonal=False" in report.error
    plain = check(reference, current.drop(columns="timestamp"), seasonal=False)
    assert plain.status == "drift"  # the whole year, as in test_same_week_against_the_whole_year
    assert plain.seasonal_matching is False and plain.current_period is None


def test_failure_inside_is_an_error(frame):
    reference, current = split_week(frame, "2021-06-28")
    current = current.assign(hour=current["hour"].astype(str))  # a numerical column that is not
    report = check(reference, current)
    assert report.status == "error" and "hour" in report.error


def test_nan_and_constant_columns(frame):
    reference, current = split_week(frame, "2021-06-28")
    reference = reference.assign(const=1.0, const_cat="a", sparse=reference["temperature"])
    current = current.assign(const=1.0, const_cat="a", sparse=np.nan)
    current.loc[current.index[:100], "sparse"] = 20.0  # 100 values < min_rows
    current.loc[current.index[:1000], "temperature"] = np.nan
    report = detect_drift(reference, current, ["temperature", "const", "sparse"], ["const_cat"])

    features = by_name(report)
    assert report.status == "ok"
    assert features["temperature"].current_rows == ROWS_PER_WEEK - 1000
    assert features["temperature"].current_missing == pytest.approx(1000 / ROWS_PER_WEEK)
    assert features["const"].effect == 0.0 and features["const"].drifted is False
    assert features["const_cat"].p_value == 1.0 and features["const_cat"].drifted is False
    assert features["sparse"].tested is False and features["sparse"].test == "none"
    assert "not tested" in features["sparse"].note
    assert report.n_features == 3  # the untested column does not count

    shifted = current.assign(const=2.0)  # constant, but not the reference's constant
    assert by_name(detect_drift(reference, shifted, ["const"], []))["const"].drifted is True

    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["features"][2]["effect"] is None

    all_nan = current.assign(temperature=np.nan)
    lone = detect_drift(reference, all_nan, ["temperature"], [])
    assert lone.status == "insufficient_data" and lone.drift_detected is None
    assert "non-missing" in lone.note


def test_policy_validation():
    with pytest.raises(ValueError):
        DriftPolicy(alpha=0)
    with pytest.raises(ValueError):
        DriftPolicy(share_threshold=1.5)
    with pytest.raises(ValueError):
        DriftReport(status="maybe", drift_detected=None, feature_share_drift=None, drift_share=None,
                    n_features=0, n_drifted=0)


# --------------------------------------------------------------------------- serialisation and files
def test_to_dict_round_trips_through_json(frame):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current, known_counters={"x"})
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    assert data["status"] == "ok" and data["drifted_features"] == ["temperature"]
    assert type(data["drift_share"]) is float
    assert type(data["features"][1]["p_value"]) is float
    assert data["features"][3]["reference_top"]["0"] == pytest.approx(1 / 7, abs=0.01)
    back = DriftReport.from_dict(data)
    assert back.to_dict() == report.to_dict()
    assert back.target_drift == FeatureDrift.from_dict(report.target_drift.to_dict())
    assert back.policy == report.policy
    assert back.current_period == report.current_period
    assert isinstance(back.current_period, tuple)

    error = DriftReport.from_dict(json.loads(json.dumps(check(reference, current[["hour"]]).to_dict())))
    assert error.status == "error" and error.drift_detected is None


def test_write_reports(frame, tmp_path):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current)
    matched, _ = seasonal_reference(reference, current)
    columns = [*NUMERICAL, *CATEGORICAL, TARGET]
    paths = write_reports(report, matched, current, columns, tmp_path / "drift")

    assert set(paths) == {"json", "html"}
    assert json.loads(paths["json"].read_text())["status"] == "ok"
    html = paths["html"].read_text(encoding="utf-8")
    assert len(html) > 10_000
    assert "Drift" in html
    assert not list((tmp_path / "drift").glob("*.tmp"))
    # the report opens with velocast's verdict, and evidently draws no dataset-level verdict of its own
    banner = html[html.index("<body>"):html.index("</div>", html.index("velocast-verdict"))]
    assert "velocast drift verdict: NO DRIFT" in banner and "This verdict is velocast's" in banner
    assert all(escape(reason) in html for reason in report.reasons)
    assert "DriftedColumnsCount" not in html and "Share of Drifted Columns" not in html

    drifted = check(reference, current.assign(bike_count=current["bike_count"] * 1.6))
    html = write_reports(drifted, matched, current, columns, tmp_path / "drifted")["html"].read_text(encoding="utf-8")
    assert "velocast drift verdict: DRIFT" in html and "the target (bike_count) drifted" in html


def test_a_column_without_values_is_left_out_of_the_html_not_the_whole_report(frame, tmp_path):
    """A store without weather: the weather columns are all missing; evidently refuses an empty
    column, so it is left out of the panels (the verdict says it was not tested) and the HTML is written."""
    reference, current = split_week(frame, "2021-06-28")
    reference, current = reference.assign(temperature_c=np.nan), current.assign(temperature_c=np.nan)
    report = detect_drift(reference, current, [*NUMERICAL, "temperature_c"], CATEGORICAL, target=TARGET)
    untested = next(f for f in report.features if f.name == "temperature_c")
    assert not untested.tested and not untested.drifted
    matched, _ = seasonal_reference(reference, current)
    paths = write_reports(report, matched, current, [*NUMERICAL, "temperature_c", *CATEGORICAL, TARGET], tmp_path)
    assert set(paths) == {"json", "html"}
    assert "not tested" in paths["html"].read_text(encoding="utf-8")


def test_write_reports_without_html_still_writes_json(frame, tmp_path):
    reference, current = split_week(frame, "2021-06-28")
    report = check(reference, current)
    paths = write_reports(report, reference, current, ["no_such_column"], tmp_path)  # evidently cannot run

    assert set(paths) == {"json"}
    assert DriftReport.from_dict(json.loads(paths["json"].read_text())).status == "ok"
    assert not (tmp_path / "drift.html").exists()


# --------------------------------------------------------------------------- seasonal reference
def _iso_week(ts: pd.Series) -> np.ndarray:
    return ts.dt.isocalendar().week.to_numpy(dtype=int)


def test_seasonal_reference_window_and_mix(frame):
    # a skewed window: 10 days Mon 28 June .. Wed 7 July (8 weekdays, 2 weekend days), 7h-20h
    start = pd.Timestamp("2021-06-28", tz=PARIS)
    days = (frame["timestamp"] >= start) & (frame["timestamp"] < start + pd.Timedelta(days=10))
    current = frame[days & frame["hour"].between(7, 20)]
    reference = frame[~days]
    matched, seasonal = seasonal_reference(reference, current)

    assert seasonal is True
    weeks = set(_iso_week(matched["timestamp"]))
    assert weeks <= set(range(24, 30)) and len(weeks) >= 4  # current weeks 26-27, +-2
    assert matched.index.isin(reference.index).all() and not matched.index.duplicated().any()
    for column in ("weekday", "hour"):
        want = current[column].value_counts(normalize=True)
        got = matched[column].value_counts(normalize=True).reindex(want.index, fill_value=0)
        assert np.abs(got - want).max() < 0.05, column
    weekend = (matched["weekday"] >= 5).mean()
    assert weekend == pytest.approx(0.2, abs=0.01)
    assert matched["hour"].between(7, 20).all()

    again, _ = seasonal_reference(reference, current)  # seeded: the same rows
    assert again.index.equals(matched.index)


def test_seasonal_reference_wraps_around_the_year(frame):
    start = pd.Timestamp("2021-01-04", tz=PARIS)  # ISO week 1 of 2021
    week = (frame["timestamp"] >= start) & (frame["timestamp"] < start + pd.Timedelta(days=7))
    matched, seasonal = seasonal_reference(frame[~week], frame[week])

    assert seasonal is True
    assert set(_iso_week(matched["timestamp"])) == {51, 52, 53, 2, 3}


def test_seasonal_reference_falls_back_to_whole_reference(frame):
    """A June window against an autumn-only reference: no same-season rows."""
    reference = frame[frame["timestamp"] < pd.Timestamp("2020-12-01", tz=PARIS)]
    _, current = split_week(frame, "2021-06-28")
    current = current[current["weekday"] < 5]  # weekdays only
    matched, seasonal = seasonal_reference(reference, current)

    assert seasonal is False
    assert len(matched) > 50_000
    assert (matched["weekday"] < 5).all()
    report = check(reference, current)
    assert report.seasonal_matching is False and report.status in {"ok", "drift"}
