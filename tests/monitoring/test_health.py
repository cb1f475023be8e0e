"""Champion health states follow the original decision table (pure)."""

from velocast.monitoring.health import HealthPolicy, health_state


def test_states() -> None:
    assert health_state(30.0, 0.8, 29.0, 0.8, 1000).state == "ok"
    degraded = health_state(33.0, 0.7, 29.0, 0.8, 1000)
    assert degraded.state == "degraded" and "14%" in degraded.reasons[0]
    assert health_state(36.0, 0.6, 29.0, 0.8, 1000).state == "critical"
    absolute = health_state(51.0, 0.6, 49.0, 0.8, 1000)
    assert absolute.state == "critical" and "absolute threshold 50" in absolute.reasons[0]
    assert health_state(51.0, 0.6, 49.0, 0.8, 1000, HealthPolicy(rmse_threshold=60)).state == "ok"
    assert health_state(None, None, 29.0, 0.8, 0).state == "unknown"


def test_a_few_recent_rows_judge_nothing() -> None:
    """21 rows of one new counter (a file ingested weeks after the rest) must not call the champion critical."""
    few = health_state(46.55, 0.2, 27.23, 0.9, 21, period="2021-09-01 .. 2021-09-01", coverage=0.476,
                       nominal_coverage=0.8)
    assert few.state == "unknown" and few.drop is None
    assert "only 21 recent labelled rows (2021-09-01 .. 2021-09-01), fewer than 200" in few.reasons[0]
    assert health_state(46.55, 0.2, 27.23, 0.9, 200).state == "critical"


def test_intervals_out_of_their_coverage_band_degrade_an_otherwise_healthy_champion() -> None:
    inside = health_state(30.0, 0.8, 29.0, 0.8, 1000, coverage=0.78, nominal_coverage=0.8, interval_width=30.0)
    assert inside.state == "ok" and inside.coverage == 0.78 and "cover 78.0%" in inside.reasons[-1]
    for coverage, side in ((0.62, "fewer"), (0.95, "more")):
        report = health_state(30.0, 0.8, 29.0, 0.8, 1000, coverage=coverage, nominal_coverage=0.8)
        assert report.state == "degraded" and side in report.reasons[0] and "70%-90%" in report.reasons[0]
    # a tighter tolerance, and a state already worse keeps its state and adds the reason
    assert health_state(30.0, 0.8, 29.0, 0.8, 1000, HealthPolicy(coverage_tolerance=0.01), coverage=0.78,
                        nominal_coverage=0.8).state == "degraded"
    critical = health_state(36.0, 0.6, 29.0, 0.8, 1000, coverage=0.5, nominal_coverage=0.8)
    assert critical.state == "critical" and "fewer" in critical.reasons[-1]
    # no intervals (an old model): nothing judged
    assert health_state(30.0, 0.8, 29.0, 0.8, 1000, coverage=None, nominal_coverage=None).state == "ok"
