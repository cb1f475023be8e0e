"""Interval metrics are pure functions: coverage, width, interval score, per-counter coverage, naive baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from velocast.evaluation.intervals import (
    check_coverage,
    counter_coverage,
    counter_summary,
    coverage,
    coverage_band,
    hourly_residual_intervals,
    interval_metrics,
    interval_score,
    mean_width,
    pinball_loss,
)


def test_coverage_width_and_interval_score_by_hand() -> None:
    y = np.array([5.0, 10.0, 20.0, 0.0])
    lower = np.array([4.0, 11.0, 10.0, 0.0])
    upper = np.array([6.0, 12.0, 15.0, 1.0])
    assert coverage(y, lower, upper) == 0.5  # 5 in [4, 6], 0 in [0, 1]; 10 below, 20 above
    assert mean_width(lower, upper) == pytest.approx((2 + 1 + 5 + 1) / 4)
    # alpha = 0.2: misses cost 2/alpha = 10 times the distance
    expected = ((2) + (1 + 10 * 1) + (5 + 10 * 5) + 1) / 4
    assert interval_score(y, lower, upper, 0.8) == pytest.approx(expected)


def test_interval_score_is_the_scaled_sum_of_the_two_pinball_losses() -> None:
    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 20.0, 500)
    centre = y * rng.lognormal(0, 0.3, 500)
    lower, upper = centre * 0.7, centre * 1.4
    for level in (0.5, 0.8, 0.95):
        alpha = 1 - level
        pinball = pinball_loss(y, lower, alpha / 2) + pinball_loss(y, upper, 1 - alpha / 2)
        assert interval_score(y, lower, upper, level) == pytest.approx(2 / alpha * pinball)
        metrics = interval_metrics(y, lower, upper, level)
        assert metrics.pinball == pytest.approx(pinball / 2) and metrics.nominal == level and metrics.n == 500
        assert set(metrics.to_dict()) == {"interval_coverage", "interval_nominal", "interval_width", "interval_score",
                                          "interval_pinball", "interval_n"}


def test_bad_intervals_and_coverages_are_refused_with_the_row() -> None:
    with pytest.raises(ValueError, match="row 1: lower bound 3.0 above upper bound 2.0"):
        coverage([1, 2], [0, 3], [1, 2])
    with pytest.raises(ValueError, match="2 true values but 1 lower"):
        coverage([1, 2], [0], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        interval_metrics([], [], [], 0.8)
    for bad in (0.49, 1.0, "much", None):
        with pytest.raises(ValueError, match="between 0.5 and 0.99"):
            check_coverage(bad)
    assert check_coverage("0.9") == 0.9 and check_coverage(0.5) == 0.5


def test_counter_coverage_keeps_counters_with_enough_days_and_summarises_the_band() -> None:
    days = np.repeat([f"2021-07-{d:02d}" for d in range(1, 16)], 2)  # 15 days, 2 rows a day
    counters = np.array(["a", "b"] * 15)
    lower = np.where(counters == "a", 0.0, 2.0)  # a always covered, b never
    upper = np.where(counters == "a", 2.0, 3.0)
    extra = pd.DataFrame({"c": ["c"] * 3, "d": ["2021-07-01", "2021-07-02", "2021-07-03"]})
    table = counter_coverage(np.concatenate([counters, extra["c"]]), np.concatenate([days, extra["d"]]),
                             np.ones(33), np.concatenate([lower, np.zeros(3)]), np.concatenate([upper, np.ones(3)]))
    assert list(table["counter_id"]) == ["b", "a"]  # c has 3 days < 14: not judged; worst first
    assert list(table["coverage"]) == [0.0, 1.0] and list(table["days"]) == [15, 15]
    summary = counter_summary(table, coverage_band(0.8, 0.1))
    assert summary == {"interval_counters": 2, "interval_worst_counter_coverage": 0.0, "interval_counters_in_band": 0.0}
    assert counter_summary(table.iloc[:0], (0.7, 0.9))["interval_counters"] == 0
    assert coverage_band(0.95, 0.1) == (pytest.approx(0.85), 1.0)


def test_naive_hourly_intervals_use_the_residual_quantiles_of_each_hour() -> None:
    hours = np.repeat(np.arange(24), 101)
    residuals = np.tile(np.linspace(-50, 50, 101), 24) * np.repeat(np.where(np.arange(24) == 8, 2.0, 1.0), 101)
    lower, upper = hourly_residual_intervals(hours, residuals, np.array([8, 3, 3]), np.array([100.0, 100.0, 10.0]), 0.8)
    assert upper[0] - lower[0] == pytest.approx(2 * (upper[1] - lower[1]))  # 08:00 residuals are twice as wide
    assert lower[1] == pytest.approx(100 - 40) and upper[1] == pytest.approx(100 + 40)
    assert lower[2] == 0.0  # never negative
