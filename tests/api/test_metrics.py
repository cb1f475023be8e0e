"""/metrics tells what the lifecycle recorded, and a dead dependency never hangs a scrape."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import client_for, settings_for
from velocast.config import Settings
from velocast.data import store
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.monitor import check_drift, latest_drift, record_health
from velocast.lifecycle.operations.cycle import audit_cycle
from velocast.lifecycle.operations.cycle_steps import CycleResult
from velocast.monitoring.health import HealthReport


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def _cycle(settings: Settings, model_type: str, drift: bool | None, error: str | None = None,
           decision: str | None = "no_fine_tune", test_mode: bool = False) -> None:
    """One audit row as the weekly cycle writes it (``audit_cycle``, what both cycle shells call)."""
    audit_cycle(CycleResult(str(uuid.uuid4()), model_type, "2021-08-09T00:00:00+00:00", test_mode=test_mode,
                            forced=False,
                            strategy="sliding_window", policy="double_eval", window_days=30,
                            new_data=drift is not None, drift_detected=drift, drift_share=0.5 if drift else 0.0,
                            decision=None if error else decision, error=error), settings)


def test_lifecycle_gauges_tell_what_was_recorded(real_home: Path) -> None:
    settings = settings_for(real_home)
    # lgbm, oldest first: drift, no drift, drift, drift, nothing new (not checked), failed
    for drift in (True, False, True, True):
        _cycle(settings, "lgbm", drift)
    _cycle(settings, "lgbm", None, decision=None)
    _cycle(settings, "lgbm", None, error="drift step failed: KeyError: 'x'")
    _cycle(settings, "rf", False)
    _cycle(settings, "rf", True, test_mode=True)  # smoke tests on a sample count in no alert
    _cycle(settings, "rf", None, error="smoke test failed", test_mode=True)
    record_health("lgbm", HealthReport("critical", 62.5, 0.41, 40.0, 0.8, 0.5625, 168, "2021-08-03 .. 2021-08-09",
                                       ["RMSE 62.50 is above the absolute threshold 50"]), settings)
    check = check_drift("lgbm", window_days=14, settings=settings)  # no champion: the data alone
    assert check.report.status in ("ok", "drift")

    with client_for(real_home) as client:
        scraped = samples(client.get("/metrics").text)
    assert value(scraped, "velocast_drift_detected_streak", model_type="lgbm") == 2.0
    assert value(scraped, "velocast_drift_detected_streak", model_type="rf") == 0.0
    assert value(scraped, "velocast_last_cycle_error", model_type="lgbm") == 1.0
    assert value(scraped, "velocast_last_cycle_error", model_type="rf") == 0.0
    for event, decision, model_type, n in AuditLog(settings=settings).counts():
        assert value(scraped, "velocast_audit_events_total", event=event, decision=decision or "",
                     model_type=model_type or "") == n
    assert value(scraped, "velocast_audit_events_total", event="error", decision="", model_type="lgbm") == 1.0
    assert value(scraped, "velocast_audit_events_total", event="error", decision="", model_type="rf") == 1.0
    assert value(scraped, "velocast_audit_events_total", event="cycle", decision="no_fine_tune", model_type="lgbm") == 4

    assert value(scraped, "velocast_champion_health_state", model_type="lgbm", state="critical") == 1.0
    assert value(scraped, "velocast_champion_health_state", model_type="lgbm", state="ok") == 0.0
    assert value(scraped, "velocast_champion_health_rmse", model_type="lgbm") == 62.5
    assert value(scraped, "velocast_champion_health_baseline_rmse", model_type="lgbm") == 40.0
    assert value(scraped, "velocast_champion_health_rmse_increase", model_type="lgbm") == 0.5625
    assert value(scraped, "velocast_champion_health_rows", model_type="lgbm") == 168.0
    assert time.time() - value(scraped, "velocast_champion_health_timestamp_seconds", model_type="lgbm") < 600

    report = latest_drift(settings, "lgbm")["report"]
    assert value(scraped, "velocast_drift_share", model_type="lgbm") == pytest.approx(report["drift_share"])
    assert value(scraped, "velocast_drift_status", model_type="lgbm", status=report["status"]) == 1.0
    assert value(scraped, "velocast_drift_share", model_type="rf") is None  # rf never checked
    assert time.time() - value(scraped, "velocast_drift_report_timestamp_seconds", model_type="lgbm") < 600
    for feature in report["features"]:
        labels = {"model_type": "lgbm", "feature": feature["name"], "role": "input"}
        assert value(scraped, "velocast_drift_feature_tested", **labels) == float(feature["tested"])
        if feature["tested"]:
            assert value(scraped, "velocast_drift_feature_drifted", **labels) == float(feature["drifted"])
            assert value(scraped, "velocast_drift_feature_effect", **labels) == pytest.approx(feature["effect"])
            assert value(scraped, "velocast_drift_feature_p_value", **labels) == pytest.approx(feature["p_value"])
            assert value(scraped, "velocast_drift_feature_statistic", **labels,
                         test=feature["test"]) == pytest.approx(feature["statistic"])
    assert value(scraped, "velocast_drift_feature_tested", model_type="lgbm", feature="bike_count", role="target") == 1.0
    assert value(scraped, "velocast_store_latest_count_timestamp_seconds") == store.latest_timestamp(settings).timestamp()
    assert value(scraped, "velocast_ready", model_type="lgbm") == 0.0  # no model in this home: /ready is 503
    for source in ("audit", "drift", "health", "store", "jobs", "champions", "readiness", "served"):
        assert value(scraped, "velocast_metrics_source_failures_total", source=source, kind="error") == 0.0
        assert value(scraped, "velocast_metrics_source_last_success_timestamp_seconds", source=source) is not None


@pytest.fixture
def silent_database() -> Any:
    """A TCP port that accepts connections and never answers: a database that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"postgresql+psycopg2://velocast:pw@127.0.0.1:{sock.getsockname()[1]}/velocast"


def test_a_hanging_database_never_hangs_a_scrape(real_home: Path, silent_database: str) -> None:
    pytest.importorskip("psycopg2")
    with client_for(real_home, settings={"audit_url": silent_database}) as client:  # starts despite it
        client.app.state.metrics.lifecycle.budget = 1.0
        started = time.monotonic()
        first = client.get("/metrics")
        assert first.status_code == 200 and time.monotonic() - started < 4
        scraped = samples(first.text)
        assert value(scraped, "velocast_metrics_source_failures_total", source="audit", kind="timeout") == 1.0
        assert value(scraped, "velocast_store_latest_count_timestamp_seconds") is not None  # the rest is served
        assert value(scraped, "velocast_audit_events_total", event="cycle", decision="", model_type="lgbm") is None
        deadline = time.monotonic() + 30  # PostgreSQL's connect timeout (5 s) ends the read: an error
        while value(scraped, "velocast_metrics_source_failures_total", source="audit", kind="error") != 1.0:
            assert time.monotonic() < deadline, "the audit read never failed"
            started = time.monotonic()
            response = client.get("/metrics")
            assert response.status_code == 200 and time.monotonic() - started < 4
            scraped = samples(response.text)
            time.sleep(0.5)
        names = {name for name, _ in scraped}
        assert not names & {"velocast_audit_events_total", "velocast_last_cycle_error", "velocast_training_jobs"}
        assert value(scraped, "velocast_metrics_source_last_success_timestamp_seconds", source="audit") is None
        assert value(scraped, "velocast_metrics_source_last_success_timestamp_seconds", source="store") is not None
        assert client.get("/health").status_code == 200
