"""Champion health states follow the original decision table (pure)."""

from velocast.monitoring.health import HealthPolicy, health_state


def test_states() -> None:
    assert health_state(30.0, 0.8, 29.0, 0.8, 100).state == "ok"
    degraded = health_state(33.0, 0.7, 29.0, 0.8, 100)
    assert degraded.state == "degraded" and "14%" in degraded.reasons[0]
    assert health_state(36.0, 0.6, 29.0, 0.8, 100).state == "critical"
    absolute = health_state(51.0, 0.6, 49.0, 0.8, 100)
    assert absolute.state == "critical" and "absolute threshold 50" in absolute.reasons[0]
    assert health_state(51.0, 0.6, 49.0, 0.8, 100, HealthPolicy(rmse_threshold=60)).state == "ok"
    assert health_state(None, None, 29.0, 0.8, 0).state == "unknown"
