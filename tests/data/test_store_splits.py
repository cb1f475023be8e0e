"""Store queries and time-honest splits on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velocast.config import get_settings
from velocast.data import splits, store
from velocast.data.splits import SplitError


def test_store_layout_and_queries(real_home: Path) -> None:
    settings = get_settings()
    months = sorted(p.parent.name for p in settings.counts_dir.glob("month=*/counts.parquet"))
    assert months[0] == "month=2020-09" and months[-1] == "month=2021-08" and len(months) == 12
    week = store.query_counts("2021-03-01", "2021-03-08")
    assert week["timestamp"].min() >= pd.Timestamp("2021-03-01", tz="Europe/Paris")
    assert week["timestamp"].max() < pd.Timestamp("2021-03-08", tz="Europe/Paris")
    one = store.counters()["counter_id"].iloc[0]
    only = store.query_counts("2021-03-01", "2021-03-08", counter_ids=[one])
    assert set(only["counter_id"]) == {one} and len(only) <= 7 * 24
    last = store.last_days(7)  # whole days: the 2 hours of Paris' 10 August that end the file are not one
    assert store.latest_timestamp() == pd.Timestamp("2021-08-10 01:00", tz="Europe/Paris")
    assert last["timestamp"].max() == pd.Timestamp("2021-08-09 23:00", tz="Europe/Paris")
    assert last["timestamp"].min() == pd.Timestamp("2021-08-03 00:00", tz="Europe/Paris")
    table = store.counters()
    assert len(table) == 8 and (table["first_seen"] < table["last_seen"]).all()


@pytest.mark.parametrize(("start", "end"), [("2021-03-25", "2021-04-02"),  # across a month and the DST change
                                            ("2020-10-20", "2020-10-26"), ("2021-08-08", "2021-08-20"),
                                            ("2021-03-01 05:00", "2021-03-01 09:00"), ("2019-01-01", "2019-01-05")])
def test_recent_counts_are_the_query_served_from_cached_months(real_home: Path, start: str, end: str) -> None:
    ids = list(store.counters()["counter_id"].iloc[:3])
    for counter_ids in (None, ids):
        expected = store.query_counts(start, end, counter_ids=counter_ids)
        got = store.recent_counts(start, end, counter_ids=counter_ids)
        pd.testing.assert_frame_equal(got, expected)


def test_recent_counts_see_a_month_rewritten_after_caching(real_home: Path) -> None:
    one = store.counters()["counter_id"].iloc[0]
    before = store.recent_counts("2021-08-01", "2021-08-02", counter_ids=[one])
    assert len(before) == 24
    changed = before.assign(bike_count=before["bike_count"] + 1000.0)
    store.upsert_counts(changed)
    after = store.recent_counts("2021-08-01", "2021-08-02", counter_ids=[one])
    np.testing.assert_allclose(after["bike_count"], before["bike_count"] + 1000.0)
    # a long span is not cached: it is the DuckDB query itself
    pd.testing.assert_frame_equal(store.recent_counts("2020-09-01", "2021-08-10"),
                                  store.query_counts("2020-09-01", "2021-08-10"))


def test_no_test_day_hour_in_train(real_home: Path) -> None:
    record = splits.active_split()
    train = splits.load_split("train_baseline", record)
    test = splits.load_split("test_baseline", record)
    train_days = set(splits.paris_day(train["timestamp"]))
    test_days = set(splits.paris_day(test["timestamp"]))
    assert train_days.isdisjoint(test_days)
    assert {d.isoformat() for d in test_days} == set(record.test_days)
    # whole days spread over the period: every 10-day chunk of the baseline... at most ~2x the mean gap
    days = sorted(pd.to_datetime(record.test_days))
    gaps = np.diff(days).astype("timedelta64[D]").astype(int)
    assert gaps.max() <= 10
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.03
    assert train["timestamp"].max() < record.cutoff_timestamp


def test_splits_are_reproducible_and_recorded(real_home: Path) -> None:
    first = splits.record_split("2021-06-01", seed=42)
    second = splits.record_split("2021-06-01", seed=42)
    other = splits.record_split("2021-06-01", seed=3)
    assert first.test_days == second.test_days and first.hashes == second.hashes
    assert first.test_days != other.test_days
    assert [r.version for r in splits.list_versions()] == [1, 2, 3, 4]
    assert splits.active_split().version == 4
    # later ingests do not change a recorded baseline: the snapshot is what training reads
    assert splits.load_split("test_baseline", first).shape[0] == first.sizes["test_baseline"]


def test_current_is_split_by_time(real_home: Path) -> None:
    record = splits.active_split()
    train_c = splits.load_split("train_current", record)
    test_c = splits.load_split("test_current", record)
    assert train_c["timestamp"].min() >= record.cutoff_timestamp
    assert train_c["timestamp"].max() < test_c["timestamp"].min()
    days_train = len(set(splits.paris_day(train_c["timestamp"])))
    days_test = len(set(splits.paris_day(test_c["timestamp"])))
    assert days_test == round((days_train + days_test) * 0.2)


def test_altered_snapshot_is_refused(real_home: Path) -> None:
    record = splits.active_split()
    path = get_settings().splits_dir / f"v{record.version}" / "test_baseline.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "bike_count"] += 1
    frame.to_parquet(path)
    with pytest.raises(SplitError, match="altered"):
        splits.load_split("test_baseline", record)


def test_split_rules_pure() -> None:
    days = list(pd.date_range("2021-01-01", periods=100).date)
    chosen = splits.choose_test_days(days, 0.2, seed=1)
    assert len(chosen) == 20 and chosen == sorted(chosen)
    with pytest.raises(SplitError):
        splits.choose_test_days(days, 1.5, seed=1)
    assert splits.default_cutoff(pd.Timestamp("2021-01-01", tz="UTC"), pd.Timestamp("2021-12-31", tz="UTC")).isoformat() == "2021-12-02"


def test_empty_store_split_says_what_to_do(home: Path) -> None:
    with pytest.raises(SplitError, match="ingest or generate data first"):
        splits.record_split()


def test_day_windows_are_calendar_days_across_the_clock_changes(home: Path) -> None:
    """The 25-hour day of the autumn change and the 23-hour day of spring are whole days of every window."""
    from velocast.data.schema import paris_midnight
    from velocast.lifecycle.decisions.monitor import window
    from velocast.lifecycle.inputs import history_for

    assert paris_midnight("2021-10-31 12:00", 1) - paris_midnight("2021-10-31 12:00") == pd.Timedelta(hours=25)
    assert paris_midnight(pd.Timestamp("2021-03-28 03:00", tz="Europe/Paris"), 1) == \
        pd.Timestamp("2021-03-29", tz="Europe/Paris")
    stamps = pd.date_range("2021-10-20", "2021-11-03", freq="h", tz="Europe/Paris", inclusive="left")
    rows = pd.DataFrame({"counter_id": "c", "counter_name": "c", "site_id": "s", "site_name": "s",
                         "timestamp": stamps, "bike_count": 1.0, "latitude": 48.85, "longitude": 2.35,
                         "installation_date": pd.NaT})
    store.upsert_counts(rows)
    day = store.last_days(1)
    assert len(day) == 24 and day["timestamp"].min() == pd.Timestamp("2021-11-02", tz="Europe/Paris")
    store.upsert_counts(rows.iloc[:3].assign(timestamp=pd.date_range("2021-11-03", periods=3, freq="h",
                                                                     tz="Europe/Paris")))
    assert store.last_days(1)["timestamp"].min() == pd.Timestamp("2021-11-02", tz="Europe/Paris")  # 11-03 is counting
    autumn = window(1, pd.Timestamp("2021-10-31 15:00", tz="Europe/Paris"))
    assert len(autumn) == 25  # 00:00 to 23:00 of the 25-hour day, none of the next
    history = history_for(rows[rows["timestamp"].dt.date == pd.Timestamp("2021-11-01").date()], get_settings())
    assert history["timestamp"].min() == pd.Timestamp("2021-10-20", tz="Europe/Paris")  # the first stored hour


def test_a_store_holding_only_the_day_being_counted_gives_that_day(home: Path) -> None:
    stamps = pd.date_range("2021-11-03", periods=5, freq="h", tz="Europe/Paris")
    store.upsert_counts(pd.DataFrame({"counter_id": "c", "counter_name": "c", "site_id": "s", "site_name": "s",
                                      "timestamp": stamps, "bike_count": 1.0, "latitude": 48.85,
                                      "longitude": 2.35, "installation_date": pd.NaT}))
    assert list(store.last_days(7)["timestamp"]) == list(stamps)
