"""The synthetic generator: tidy format, DST, ingest, resemblance to the real file, drift, next day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velocast.config import PARIS_TZ, Settings
from velocast.data import store, synthetic
from velocast.data.ingest import ingest_file

REAL_FILE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "paris"
             / "counts_2020-09-01_2021-08-09.parquet")


# ------------------------------------------------------------------ helpers
def paris(frame: pd.DataFrame) -> pd.Series:
    """The naive-UTC ``date`` column as Europe/Paris timestamps."""
    return frame["date"].dt.tz_localize("UTC").dt.tz_convert(PARIS_TZ)


def weekday_profile_and_ratio(frame: pd.DataFrame) -> tuple[pd.Series, float]:
    """Mean weekday count by Paris hour, and mean weekday count / mean weekend count."""
    local = paris(frame)
    weekday = (local.dt.weekday < 5).to_numpy()
    profile = frame["bike_count"][weekday].groupby(local.dt.hour[weekday]).mean()
    ratio = frame["bike_count"][weekday].mean() / frame["bike_count"][~weekday].mean()
    return profile, float(ratio)


def hourly_mean(frame: pd.DataFrame, mask: np.ndarray) -> pd.Series:
    local = paris(frame)
    return frame["bike_count"][mask].groupby(local.dt.hour[mask]).mean()


def use_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("VELOCAST_HOME", str(tmp_path))
    return Settings()


def rows_per_counter_day(frame: pd.DataFrame) -> pd.Series:
    day = paris(frame).dt.date
    return frame.groupby([frame["counter_id"].astype(str), day]).size()


# ------------------------------------------------------------------ format
def test_deterministic_with_a_seed() -> None:
    a = synthetic.generate(counters=6, days=20, start="2021-02-01", seed=3)
    b = synthetic.generate(counters=6, days=20, start="2021-02-01", seed=3)
    c = synthetic.generate(counters=6, days=20, start="2021-02-01", seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["bike_count"].to_numpy()[:1000], c["bike_count"].to_numpy()[:1000])
    # a counter's profile does not depend on how many counters are generated
    more = synthetic.generate(counters=8, days=20, start="2021-02-01", seed=3)
    one = a["counter_id"].iloc[0]
    ours, theirs = a[a["counter_id"] == one], more[more["counter_id"] == one]
    assert ours["counter_name"].iloc[0] == theirs["counter_name"].iloc[0]
    assert abs(ours["bike_count"].mean() / theirs["bike_count"].mean() - 1) < 0.1


def test_tidy_columns_dtypes_and_values() -> None:
    frame = synthetic.generate(counters=7, days=30, start="2021-01-01", seed=0)
    assert list(frame.columns) == synthetic.TIDY_COLUMNS == [
        "counter_id", "counter_name", "site_id", "site_name", "bike_count", "date",
        "counter_installation_date", "counter_technical_id", "latitude", "longitude", "log_bike_count"]
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes == {
        "counter_id": "category", "counter_name": "category", "site_id": "int64",
        "site_name": "category", "bike_count": "float64", "date": "datetime64[us]",
        "counter_installation_date": "datetime64[us]", "counter_technical_id": "category",
        "latitude": "float64", "longitude": "float64", "log_bike_count": "float64",
    }
    assert frame["counter_id"].nunique() == 7 and frame["site_id"].nunique() == 4
    ids = frame["counter_id"].astype(str)
    assert ids.str.fullmatch(r"\d{9}-\d{9}").all()
    assert (ids.str.split("-").str[0].astype(int) == frame["site_id"]).all()
    assert "100000001-101000001" in set(ids) and "100000001-102000001" in set(ids)
    assert frame["counter_name"].astype(str).str.fullmatch(r"\d+ .+ (N-S|S-N|E-O|O-E|NE-SO|SO-NE|NO-SE|SE-NO)").all()
    assert (frame["counter_name"].astype(str).str.rsplit(" ", n=1).str[0] == frame["site_name"].astype(str)).all()
    assert frame["latitude"].between(48.82, 48.90).all() and frame["longitude"].between(2.25, 2.42).all()
    counts = frame["bike_count"]
    assert (counts >= 0).all() and (counts == counts.round()).all()
    np.testing.assert_allclose(frame["log_bike_count"], np.log1p(counts))
    local_day = paris(frame).dt.tz_localize(None).dt.normalize()
    assert (frame["counter_installation_date"] <= local_day).all()
    assert frame["counter_technical_id"].astype(str).str.fullmatch(r"Y2H\d{8}").all()
    # naive UTC: the first row of a counter starting on 2021-01-01 is 2020-12-31 23:00 UTC
    assert frame["date"].dt.tz is None
    assert frame["date"].min() == pd.Timestamp("2020-12-31 23:00")


def test_same_dtypes_as_the_real_file(real_counts: pd.DataFrame) -> None:
    frame = synthetic.generate(counters=4, days=3)
    assert list(frame.columns) == list(real_counts.columns)
    assert frame.dtypes.astype(str).to_dict() == real_counts.dtypes.astype(str).to_dict()


def test_every_counter_hour_once_across_dst() -> None:
    frame = synthetic.generate(counters=6, days=200, start="2020-10-01", seed=1)
    assert not frame.duplicated(["counter_id", "date"]).any()
    per_day = rows_per_counter_day(frame)
    days = per_day.index.get_level_values(1)
    fall, spring = pd.Timestamp("2020-10-25").date(), pd.Timestamp("2021-03-28").date()
    assert set(per_day[days == fall]) == {25}
    assert set(per_day[days == spring]) == {23}
    assert set(per_day[(days != fall) & (days != spring)]) == {24}
    # consecutive real hours, without a gap or a repeat, from each counter's first hour to the end
    for _, group in frame.groupby("counter_id", observed=True):
        steps = group["date"].diff().dropna()
        assert (steps == pd.Timedelta(hours=1)).all()
        assert group["date"].max() == pd.Timestamp("2021-04-18 21:00")  # 23:00 Paris (CEST)


# ------------------------------------------------------------------ ingest
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_ingest_accepts_every_generated_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            suffix: str) -> None:
    settings = use_home(monkeypatch, tmp_path / "home")
    frame = synthetic.generate(counters=5, days=40, start="2021-03-10", seed=2)  # spans DST
    path = synthetic.write(frame, tmp_path / f"synthetic{suffix}")
    report = ingest_file(path, settings=settings)
    assert report.format == "tidy"
    assert report.rows_read == report.accepted == report.added == len(frame)
    assert report.rejected == 0 and report.rejected_by_reason == {}
    table = store.counters(settings)
    assert sorted(table["counter_id"]) == sorted(frame["counter_id"].astype(str).unique())
    assert store.latest_timestamp(settings) == pd.Timestamp("2021-04-18 23:00", tz=PARIS_TZ)
    stored = store.query_counts(settings=settings)
    assert stored["bike_count"].sum() == pytest.approx(frame["bike_count"].sum())
    # re-ingesting adds nothing
    again = ingest_file(path, settings=settings)
    assert again.added == 0 and again.unchanged == len(frame)


def test_write_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parquet"):
        synthetic.write(synthetic.generate(counters=1, days=1), tmp_path / "out.xlsx")


# ------------------------------------------------------------------ resemblance and effects
def test_profile_resembles_the_real_file(real_counts: pd.DataFrame) -> None:
    assert REAL_FILE.resolve().exists()
    real_profile, real_ratio = weekday_profile_and_ratio(real_counts)
    # the figures stated in velocast.data.synthetic are the ones measured here
    np.testing.assert_allclose(real_profile.to_numpy(), synthetic.REAL_WEEKDAY_PROFILE, atol=0.06)
    assert real_ratio == pytest.approx(synthetic.REAL_WEEKDAY_WEEKEND_RATIO, abs=0.001)
    assert real_profile.idxmax() == 18 and real_profile.loc[5:11].idxmax() == 8

    frame = synthetic.generate(counters=52, days=343, start="2020-09-01", seed=0)
    profile, ratio = weekday_profile_and_ratio(frame)
    assert np.corrcoef(real_profile.to_numpy(), profile.to_numpy())[0, 1] > 0.9
    assert abs(ratio / real_ratio - 1) < 0.25
    assert profile.loc[5:11].idxmax() == 8 and profile.loc[15:22].idxmax() == 18
    local = paris(frame)
    weekend = (local.dt.weekday >= 5).to_numpy()
    assert 13 <= hourly_mean(frame, weekend).idxmax() <= 17
    # overall level in the same range as the real counters (real mean 59.4)
    assert 30 < frame["bike_count"].mean() < 90


def test_levels_vary_some_counters_start_late_and_outages() -> None:
    frame = synthetic.generate(counters=20, days=120, start="2021-01-01", seed=0)
    local = paris(frame)
    peak = frame[(local.dt.hour == 18) & (local.dt.weekday < 5)]
    by_counter = peak.groupby("counter_id", observed=True)["bike_count"].mean()
    assert by_counter.max() > 150 and by_counter.min() < 50  # busy and quiet counters
    first = frame.groupby("counter_id", observed=True)["date"].min()
    late = first[first > pd.Timestamp("2021-01-01")]
    assert len(late) >= 2 and late.max() < pd.Timestamp("2021-04-01")
    first_local_day = paris(frame).groupby(frame["counter_id"].astype(str)).min().dt.tz_localize(None).dt.normalize()
    installed = frame.groupby(frame["counter_id"].astype(str))["counter_installation_date"].first()
    assert (installed[late.index.astype(str)] == first_local_day[late.index.astype(str)]).all()
    assert (installed < pd.Timestamp("2021-01-01")).sum() == 20 - len(late)
    # outages: runs of >= 6 zero hours covering noon (not plausible as noise on a weekday)
    runs = 0
    for _, group in frame.groupby("counter_id", observed=True):
        zero = group["bike_count"].to_numpy() == 0
        run_id = np.cumsum(~zero)
        noon = (paris(group).dt.hour == 12).to_numpy()
        lengths = pd.Series(zero).groupby(run_id).sum()
        with_noon = pd.Series(zero & noon).groupby(run_id).any()
        runs += int(((lengths >= 6) & with_noon).sum())
    assert runs >= 3


def test_public_holidays_look_like_sundays_and_school_holidays_lower_peaks() -> None:
    frame = synthetic.generate(counters=30, days=61, start="2021-04-01", seed=5)
    local = paris(frame)
    day = local.dt.date
    holidays = {pd.Timestamp(d).date() for d in ("2021-04-05", "2021-05-13", "2021-05-24")}
    is_holiday = day.isin(holidays).to_numpy()
    weekday = (local.dt.weekday < 5).to_numpy()
    sunday = (local.dt.weekday == 6).to_numpy()
    on_holidays = hourly_mean(frame, is_holiday)
    on_sundays = hourly_mean(frame, sunday)
    regular = hourly_mean(frame, weekday & ~is_holiday)
    assert on_holidays[8] < 0.4 * regular[8]
    assert np.corrcoef(on_holidays, on_sundays)[0, 1] > 0.95
    assert 0.75 < on_holidays.sum() / on_sundays.sum() < 1.3
    # spring school holidays 2021-04-10 .. 2021-04-26: commute peaks lower than on term weekdays
    school = day.between(pd.Timestamp("2021-04-12").date(), pd.Timestamp("2021-04-23").date()).to_numpy()
    term = day.between(pd.Timestamp("2021-04-26").date(), pd.Timestamp("2021-05-07").date()).to_numpy()

    def peakiness(mask: np.ndarray) -> float:
        profile = hourly_mean(frame, mask & weekday & ~is_holiday)
        return float((profile[8] + profile[18]) / (profile[12] + profile[14]))

    assert peakiness(school) < 0.95 * peakiness(term)


def test_rain_lowers_counts() -> None:
    frame = synthetic.generate(counters=20, days=180, start="2021-03-01", seed=0)
    weather = synthetic.weather("2021-03-01", 180, seed=0)
    assert len(weather) == 180 * 24 - 1 and 0.04 < (weather["rain_mm"] > 0).mean() < 0.15
    joined = frame.merge(weather, on="date")
    local = paris(joined)
    day = ((local.dt.weekday < 5) & local.dt.hour.between(7, 20)).to_numpy()
    joined = joined[day].assign(hour=local.dt.hour[day])
    wet = joined["rain_mm"] >= 1.0
    dry = joined["rain_mm"] == 0.0
    by_hour = pd.DataFrame({"wet": joined[wet].groupby("hour")["bike_count"].mean(),
                            "dry": joined[dry].groupby("hour")["bike_count"].mean()}).dropna()
    assert (by_hour["wet"] / by_hour["dry"]).median() < 0.8


def test_a_year_of_fifty_counters() -> None:
    frame = synthetic.generate(counters=50, days=365, seed=0)
    assert frame["counter_id"].nunique() == 50
    assert len(frame) <= 50 * 365 * 24 and frame.groupby("counter_id").size().max() == 365 * 24


# ------------------------------------------------------------------ drift scenarios
def _split_means(frame: pd.DataFrame, start: str, ids: set[str]) -> tuple[float, float]:
    frame = frame[frame["counter_id"].astype(str).isin(ids)]
    after = (paris(frame) >= pd.Timestamp(start, tz=PARIS_TZ)).to_numpy()
    return frame["bike_count"][~after].mean(), frame["bike_count"][after].mean()


def test_unknown_drift_scenario_names_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        synthetic.generate(drift="earthquake")
    for name in ("level_shift", "new_counters", "strike", "seasonal"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="outside"):
        synthetic.generate(days=10, start="2021-01-01", drift="strike", drift_start="2021-03-01")


def test_level_shift_multiplies_counts_from_drift_start() -> None:
    kwargs = {"counters": 10, "days": 60, "start": "2021-05-01", "seed": 0}
    base = synthetic.generate(**kwargs)
    shifted = synthetic.generate(**kwargs, drift="level_shift")  # default: mid-period, 2021-05-31
    ids = set(base["counter_id"].astype(str))
    before_base, after_base = _split_means(base, "2021-05-31", ids)
    before_shift, after_shift = _split_means(shifted, "2021-05-31", ids)
    assert before_shift == before_base  # nothing changes before the drift
    assert (after_shift / before_shift) / (after_base / before_base) > 1.4
    assert 1.45 < after_shift / after_base < 1.75


def test_new_counters_appear_from_drift_start() -> None:
    kwargs = {"counters": 10, "days": 60, "start": "2021-05-01", "seed": 0}
    base = synthetic.generate(**kwargs)
    drifted = synthetic.generate(**kwargs, drift="new_counters", drift_start="2021-06-10")
    new = set(drifted["counter_id"].astype(str)) - set(base["counter_id"].astype(str))
    assert len(new) == synthetic.NEW_COUNTERS == 5
    rows = drifted[drifted["counter_id"].astype(str).isin(new)]
    assert (paris(rows).groupby(rows["counter_id"].astype(str)).min()
            == pd.Timestamp("2021-06-10", tz=PARIS_TZ)).all()
    assert (rows["counter_installation_date"] == pd.Timestamp("2021-06-10")).all()
    assert rows["bike_count"].sum() > 0
    old = drifted[~drifted["counter_id"].astype(str).isin(new)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, base, check_categorical=False)


def test_strike_raises_commute_hours_for_two_weeks() -> None:
    kwargs = {"counters": 20, "days": 60, "start": "2021-09-06", "seed": 0}
    base = synthetic.generate(**kwargs)
    strike = synthetic.generate(**kwargs, drift="strike", drift_start="2021-09-20")
    local = paris(base)
    assert (paris(strike) == local).all()
    in_window = ((local >= pd.Timestamp("2021-09-20", tz=PARIS_TZ))
                 & (local < pd.Timestamp("2021-10-04", tz=PARIS_TZ))).to_numpy()
    after = (local >= pd.Timestamp("2021-10-04", tz=PARIS_TZ)).to_numpy()
    commute = (local.dt.hour.isin(synthetic.COMMUTE_HOURS) & (local.dt.weekday < 5)).to_numpy()

    def ratio(mask: np.ndarray) -> float:
        return strike["bike_count"][mask].sum() / base["bike_count"][mask].sum()

    assert 1.6 < ratio(in_window & commute) < 2.0
    assert 0.9 < ratio(in_window & ~commute) < 1.1
    assert 0.9 < ratio(after) < 1.1
    assert ratio(~in_window & ~after) == 1.0


def test_seasonal_moves_the_peaks() -> None:
    frame = synthetic.generate(counters=20, days=56, start="2021-05-03", seed=0, drift="seasonal",
                               drift_start="2021-05-31")
    local = paris(frame)
    workday = (local.dt.weekday < 5).to_numpy()
    after = (local >= pd.Timestamp("2021-05-31", tz=PARIS_TZ)).to_numpy()
    holiday = local.dt.date.isin({pd.Timestamp(d).date() for d in ("2021-05-13", "2021-05-24")}).to_numpy()
    before_profile = hourly_mean(frame, workday & ~after & ~holiday)
    after_profile = hourly_mean(frame, workday & after & ~holiday)
    assert before_profile.loc[5:11].idxmax() == 8 and before_profile.loc[15:22].idxmax() == 18
    assert after_profile.loc[5:11].idxmax() == 7 and after_profile.loc[15:22].idxmax() == 19


# ------------------------------------------------------------------ next day
def test_next_day_on_an_empty_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = use_home(monkeypatch, tmp_path)
    day = synthetic.next_day(settings=settings, seed=0, counters=6)
    assert list(day.columns) == synthetic.TIDY_COLUMNS
    assert day["counter_id"].nunique() == 6
    assert set(rows_per_counter_day(day)) == {24}
    assert set(paris(day).dt.date) == {pd.Timestamp("2021-01-01").date()}
    # the same counters as generate() makes for the same seed
    generated = synthetic.generate(counters=6, days=1, start="2021-01-01", seed=0)
    assert set(day["counter_id"].astype(str)) == set(generated["counter_id"].astype(str))


def test_next_day_continues_from_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = use_home(monkeypatch, tmp_path / "home")
    frame = synthetic.generate(counters=6, days=10, start="2021-03-18", seed=0)  # last day 2021-03-27
    ingest_file(synthetic.write(frame, tmp_path / "history.parquet"), settings=settings)
    ids = set(frame["counter_id"].astype(str))

    hours_before = store.counters(settings).set_index("counter_id")["hours"]
    first = synthetic.next_day(settings=settings, seed=0)
    pd.testing.assert_frame_equal(first, synthetic.next_day(settings=settings, seed=0))
    assert set(first["counter_id"].astype(str)) == ids
    assert set(paris(first).dt.date) == {pd.Timestamp("2021-03-28").date()}
    assert set(rows_per_counter_day(first)) == {23}  # spring DST day
    assert not first.duplicated(["counter_id", "date"]).any()
    report = ingest_file(synthetic.write(first, tmp_path / "day1.csv"), settings=settings)
    assert report.rejected == 0 and report.added == len(first) == 6 * 23
    assert store.latest_timestamp(settings) == pd.Timestamp("2021-03-28 23:00", tz=PARIS_TZ)

    second = synthetic.next_day(settings=settings, seed=0)
    assert set(paris(second).dt.date) == {pd.Timestamp("2021-03-29").date()}
    assert set(rows_per_counter_day(second)) == {24}
    ingest_file(synthetic.write(second, tmp_path / "day2.parquet"), settings=settings)
    hours_after = store.counters(settings).set_index("counter_id")["hours"]
    assert (hours_after == hours_before + 23 + 24).all()


def test_next_day_keeps_each_counter_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = use_home(monkeypatch, tmp_path / "home")
    frame = synthetic.generate(counters=16, days=36, start="2021-05-03", seed=0)
    last_day = pd.Timestamp("2021-06-07", tz=PARIS_TZ)
    history = frame[(paris(frame) < last_day).to_numpy()]
    ingest_file(synthetic.write(history, tmp_path / "history.parquet"), settings=settings)
    arrived = synthetic.next_day(settings=settings, seed=0)
    assert set(paris(arrived).dt.date) == {last_day.date()}
    # same counters, same profiles: day totals rank the counters alike
    expected = frame[(paris(frame) >= last_day).to_numpy()]
    totals = pd.DataFrame({
        "generated": expected.groupby("counter_id", observed=True)["bike_count"].sum(),
        "arrived": arrived.groupby("counter_id", observed=True)["bike_count"].sum(),
    })
    assert totals.corr(method="spearman").iloc[0, 1] > 0.8
    assert 0.7 < (totals["arrived"] / totals["generated"]).median() < 1.4
    hourly = hourly_mean(arrived, np.ones(len(arrived), dtype=bool))
    assert hourly.loc[5:11].idxmax() == 8 and hourly.loc[15:22].idxmax() == 18  # a Monday


def test_next_day_follows_the_current_level(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = use_home(monkeypatch, tmp_path / "home")
    kwargs = {"counters": 12, "days": 40, "start": "2021-05-03", "seed": 0}
    shifted = synthetic.generate(**kwargs, drift="level_shift", drift_start="2021-05-05")
    ingest_file(synthetic.write(shifted, tmp_path / "shifted.parquet"), settings=settings)
    arrived = synthetic.next_day(settings=settings, seed=0)
    assert set(paris(arrived).dt.date) == {pd.Timestamp("2021-06-12").date()}  # a Saturday
    base = synthetic.generate(counters=12, days=41, start="2021-05-03", seed=0)
    base_day = base[(paris(base) >= pd.Timestamp("2021-06-12", tz=PARIS_TZ)).to_numpy()]
    assert arrived["bike_count"].sum() / base_day["bike_count"].sum() > 1.3
