"""Property-based tests of the split rules (pure functions of days, rows and a seed).

- ``choose_test_days``: round(n * fraction) distinct sorted days taken from the input (at least one,
  and one day left for training), exactly one in each of the equal consecutive chunks, the same for
  the same seed; fewer than 2 days is refused with a message that says so;
- ``split_baseline``: every row on exactly one side, no day on both sides, test rows exactly on
  the test days;
- ``split_by_time``: every test day after every training day, max(1, round(n * fraction)) test days.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.hardening.conftest import properties
from velocast.config import PARIS_TZ
from velocast.data.splits import (
    SplitError,
    choose_test_days,
    paris_day,
    split_baseline,
    split_by_time,
)

FIRST = date(2020, 9, 1)
day_sets = st.sets(st.integers(0, 700), min_size=1, max_size=120).map(
    lambda offsets: [FIRST + timedelta(days=o) for o in offsets])
fractions = st.one_of(st.sampled_from([0.1, 0.2, 0.25, 0.5]), st.floats(0.01, 0.99))
seeds = st.integers(0, 2**32 - 1)


@properties(max_examples=200)
@given(day_sets, fractions, seeds, st.randoms(use_true_random=False))
def test_choose_test_days(days: list[date], fraction: float, seed: int, rnd) -> None:
    shuffled = list(days) + list(days[: len(days) // 3])  # order and repeats do not matter
    rnd.shuffle(shuffled)
    unique = sorted(set(days))
    expected = min(len(unique) - 1, max(1, round(len(unique) * fraction)))
    if len(unique) < 2:
        with pytest.raises(SplitError, match=f"need at least 2 days .* found {len(unique)}"):
            choose_test_days(shuffled, fraction, seed)
        return
    chosen = choose_test_days(shuffled, fraction, seed)
    assert len(chosen) == expected
    assert chosen == sorted(chosen) and len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(unique)
    # one per chunk of the sorted days
    chunks = np.array_split(np.arange(len(unique)), expected)
    position = {d: i for i, d in enumerate(unique)}
    assert [int(np.searchsorted([c[-1] for c in chunks], position[d])) for d in chosen] == list(range(expected))
    # reproducible per seed, whatever the input order
    assert choose_test_days(sorted(days, reverse=True), fraction, seed) == chosen


@given(st.floats(allow_nan=True) .filter(lambda f: not 0 < f < 1) | st.sampled_from([0.0, 1.0, float("nan")]))
@properties(max_examples=30)
def test_choose_test_days_refuses_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(SplitError):
        choose_test_days([FIRST, FIRST + timedelta(days=1), FIRST + timedelta(days=2)], fraction, 0)


@st.composite
def hourly_frames(draw: st.DrawFn) -> pd.DataFrame:
    """Counter-hours on a few days (DST days included), Paris time, given in UTC or Paris."""
    days = draw(st.sets(st.sampled_from(
        [date(2020, 10, 24), date(2020, 10, 25), date(2020, 10, 26), date(2021, 3, 27), date(2021, 3, 28),
         date(2021, 3, 29), *[date(2021, 6, 1) + timedelta(days=i) for i in range(30)]]), min_size=1, max_size=15))
    stamps = []
    for day in sorted(days):
        hours = draw(st.sets(st.integers(0, 23), min_size=1, max_size=5))
        local = pd.date_range(pd.Timestamp(day).tz_localize(PARIS_TZ), periods=25, freq="h")
        local = local[local.tz_convert(PARIS_TZ).date == day]
        stamps += [local[h % len(local)] for h in sorted(hours)]
    counters = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=len(stamps), max_size=len(stamps)))
    frame = pd.DataFrame({"counter_id": counters, "timestamp": pd.DatetimeIndex(stamps),
                          "bike_count": np.arange(len(stamps), dtype=float)})
    if draw(st.booleans()):  # the splitter must read days in Paris time even when given UTC
        frame["timestamp"] = frame["timestamp"].dt.tz_convert("UTC")
    return frame.sample(frac=1.0, random_state=draw(st.integers(0, 1000))).reset_index(drop=True)


@properties(max_examples=100)
@given(hourly_frames(), fractions, seeds)
def test_split_baseline_puts_each_row_on_one_side(frame: pd.DataFrame, fraction: float, seed: int) -> None:
    days = list(paris_day(frame["timestamp"]).unique())
    assume(len(days) >= 2 and round(len(days) * fraction) >= 1)
    test_days = choose_test_days(days, fraction, seed)
    train, test = split_baseline(frame, test_days)
    assert len(train) + len(test) == len(frame)
    assert sorted(pd.concat([train, test])["bike_count"]) == sorted(frame["bike_count"])  # each row once
    train_days, held_days = set(paris_day(train["timestamp"])), set(paris_day(test["timestamp"]))
    assert not train_days & held_days
    assert held_days == set(test_days)


@properties(max_examples=100)
@given(hourly_frames(), st.sampled_from([0.2, 0.1, 0.3, 0.5]))
def test_split_by_time_tests_on_the_latest_days(frame: pd.DataFrame, fraction: float) -> None:
    train, test = split_by_time(frame, fraction)
    assert len(train) + len(test) == len(frame)
    assert sorted(pd.concat([train, test])["bike_count"]) == sorted(frame["bike_count"])
    days = sorted(set(paris_day(frame["timestamp"])))
    train_days, test_days = set(paris_day(train["timestamp"])), set(paris_day(test["timestamp"]))
    assert len(test_days) == max(1, round(len(days) * fraction))
    assert not train_days or max(train_days) < min(test_days)
    assert test_days == set(days[len(days) - len(test_days):])


def test_split_by_time_of_nothing_is_nothing() -> None:
    empty = pd.DataFrame({"counter_id": [], "timestamp": pd.DatetimeIndex([], tz=PARIS_TZ), "bike_count": []})
    train, test = split_by_time(empty)
    assert train.empty and test.empty
