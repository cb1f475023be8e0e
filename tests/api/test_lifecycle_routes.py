"""Lifecycle routes on real data: training jobs, evaluation, promotion, drift reports, audit."""

from __future__ import annotations

import time
from typing import Any

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import HEADERS, tidy_records
from velocast.tracking.registry import Registry


def _wait_for_job(client: TestClient, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
    started = time.monotonic()
    seen = set()
    while time.monotonic() - started < timeout:
        body = client.get(f"/jobs/{job_id}").json()
        seen.add(body["status"])
        if body["status"] in ("succeeded", "failed"):
            body["seen"] = seen
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {body['status']} after {timeout}s")


def test_training_job_runs_in_the_background_and_decides_without_promoting(
        client: TestClient, model_home: dict[str, Any], counter_rows: pd.DataFrame) -> None:
    champion_before = client.get("/models").json()["models"]["lgbm"]["champion"]["version"]
    recent = counter_rows[counter_rows["date"] >= "2021-08-03"]  # labelled rows posted as current data
    # one stump: its R² on test_baseline is far below the gate, so the decision is reject_regression by construction
    request = {"model_type": "lgbm", "data_source": "baseline", "env": "dev", "test_mode": True,
               "hyperparams": {"n_estimators": 1, "num_leaves": 2}, "current_data": tidy_records(recent)}
    response = client.post("/train", json=request, headers=HEADERS)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and response.headers["location"] == f"/jobs/{accepted['job_id']}"
    job = _wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["seen"] & {"queued", "running"}
    for name in ("metrics_baseline", "metrics_current", "double_evaluation_enabled", "baseline_regression",
                 "deployment_decision", "decision_reasons", "model_uri", "run_id", "model_version"):
        assert job[name] is not None, name
    assert job["double_evaluation_enabled"] is True and job["metrics_current"]["n"] > 0
    assert job["deployment_decision"] == "reject_regression" and job["baseline_regression"] is True
    assert job["decisions"] == {"double_eval": "reject_regression", "relative_rmse": "reject_regression",
                                "significant": "reject_regression"}
    assert "R² on test_baseline" in job["decision_reasons"][0] and "< 0.6" in job["decision_reasons"][0]
    assert job["compared_champion"] == champion_before  # what /promote_champion takes as expected_champion
    assert job["double_evaluation"]["champion"] == f"models:/bike-traffic-lgbm/{champion_before}"
    assert job["request"]["current_data_rows"] == len(recent)
    assert any("posted current data" in note for note in job["notes"])
    # the hyperparameters were used, and the job did not promote
    assert job["hyperparams"]["n_estimators"] == 1
    run = mlflow.MlflowClient(tracking_uri=client.app.state.settings.tracking_uri).get_run(job["run_id"])
    assert run.data.params["hp_n_estimators"] == "1"
    assert client.get("/models").json()["models"]["lgbm"]["champion"]["version"] == champion_before
    events = client.get("/audit", params={"event": "training", "limit": 1}).json()["events"]
    assert events[0]["run_id"] == job["run_id"] and events[0]["deployment_decision"] == job["deployment_decision"]
    assert events[0]["details"]["job_id"] == accepted["job_id"]
    metrics = client.get("/metrics").text
    assert 'velocast_training_jobs{status="succeeded"} 1.0' in metrics


@pytest.mark.parametrize(("hyperparams", "message"), [
    ({"eta": 0.1}, "unknown hyperparameters for lgbm: ['eta']"),
    ({"num_leaves": 0}, "num_leaves=0: expected between 2 and 4096"),
    ({"n_estimators": 2.5}, "expected an integer"),
])
def test_bad_hyperparams_are_refused_before_queuing(client: TestClient, hyperparams: dict[str, Any],
                                                    message: str) -> None:
    response = client.post("/train", json={"model_type": "lgbm", "hyperparams": hyperparams}, headers=HEADERS)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["field"] == "hyperparams" and message in detail["message"]


def test_bad_current_data_is_reported_by_index(client: TestClient) -> None:
    records = [{"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00", "bike_count": 3},
               {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T09:00:00+02:00"}]
    response = client.post("/train", json={"model_type": "baseline", "current_data": records}, headers=HEADERS)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert (detail[0]["index"], detail[0]["field"], detail[0]["loc"][0]) == (1, "bike_count", "current_data")
    assert client.get("/jobs/does-not-exist").status_code == 404


def test_evaluate_a_version_against_the_champion(client: TestClient, model_home: dict[str, Any]) -> None:
    response = client.post("/evaluate", json={"model_type": "lgbm", "version": model_home["lgbm_v2"]},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["decisions"]) == {"double_eval", "relative_rmse", "significant"}
    evaluation = body["double_evaluation"]
    assert evaluation["challenger"] == f"models:/bike-traffic-lgbm/{model_home['lgbm_v2']}"
    assert evaluation["metrics_baseline"]["rows"] > 0 and evaluation["metrics_baseline"]["champion"]["r2"] is not None
    assert all(not path.startswith("/") for path in body["reports"].values())  # no server paths
    response = client.post("/evaluate", json={"model_type": "lgbm", "version": "99"}, headers=HEADERS)
    assert response.status_code == 404 and "has no version 99" in response.json()["detail"]
    response = client.post("/evaluate", json={"model_type": "lgbm", "version": "1", "run_id": "abc"},
                           headers=HEADERS)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "run_id"


def test_promote_and_rollback_through_the_api(client: TestClient, model_home: dict[str, Any]) -> None:
    v1, v2 = model_home["lgbm_v1"], model_home["lgbm_v2"]
    record = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}
    assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == v1
    run_id = Registry(client.app.state.settings).get("lgbm", v2).run_id
    request = {"model_type": "lgbm", "run_id": run_id, "reason": "better on test_current"}
    response = client.post("/promote_champion", json=request, headers=HEADERS)  # v2 is a test-mode model
    assert response.status_code == 409 and "test-mode model" in response.json()["detail"]
    response = client.post("/promote_champion", json={**request, "force": True, "expected_champion": v2},
                           headers=HEADERS)  # compared against the wrong champion: refused
    assert response.status_code == 409 and f"the champion is version {v1}, not version {v2}" in response.json()["detail"]
    response = client.post("/promote_champion", json={**request, "force": True, "expected_champion": v1},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    promoted = response.json()
    assert (promoted["action"], promoted["from_version"], promoted["to_version"]) == ("promote", v1, v2)
    assert promoted["override"] is True and "test-mode model" in promoted["overridden"][0]
    assert promoted["previous_alias_after"] == v1 and promoted["to_run_id"] == run_id
    body = client.post("/predict", json={"records": [record]}).json()
    assert body["model"]["version"] == v2  # at once: the API's own promotion invalidates the cache
    assert client.get("/models").json()["models"]["lgbm"]["previous_champion"] == v1
    response = client.post("/rollback", json={"model_type": "lgbm"}, headers=HEADERS)  # v1 is a test-mode model too
    assert response.status_code == 409 and "test-mode model" in response.json()["detail"]
    response = client.post("/rollback", json={"model_type": "lgbm", "force": True, "reason": "rolled back through "
                                              "the API"}, headers=HEADERS)
    assert response.status_code == 200 and (response.json()["from_version"], response.json()["to_version"]) == (v2, v1)
    assert response.json()["override"] is True
    assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == v1
    events = client.get("/audit", params={"model_type": "lgbm", "limit": 2}).json()["events"]
    assert [(e["event"], e["reasons"][0]) for e in events] == [("rollback", "rolled back through the API"),
                                                              ("promotion", "better on test_current")]
    assert events[1]["deployment_decision"] == "override" and events[1]["details"]["override"] is True
    # what cannot be done is said so
    response = client.post("/rollback", json={"model_type": "baseline"}, headers=HEADERS)
    assert response.status_code == 409 and "no previous champion" in response.json()["detail"]
    response = client.post("/promote_champion", json={"model_type": "lgbm", "version": "99"}, headers=HEADERS)
    assert response.status_code == 404 and "has no version 99" in response.json()["detail"]
    response = client.post("/promote_champion", json={"model_type": "lgbm"}, headers=HEADERS)
    assert response.status_code == 422 and "exactly one of version or run_id" in response.json()["detail"][0]["message"]
    response = client.post("/promote_champion", json={"model_type": "xgb", "version": "1"}, headers=HEADERS)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "model_type"


def test_audit_filters_are_validated(client: TestClient) -> None:
    assert client.get("/audit", params={"limit": 0}).status_code == 422
    response = client.get("/audit", params={"event": "coffee"})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "event"
    body = client.get("/audit", params={"limit": 3}).json()
    assert body["count"] <= 3 and all(e["event_id"] and e["timestamp"] for e in body["events"])


def test_monitor_posted_records_and_serve_the_html_report(client: TestClient, counter_rows: pd.DataFrame) -> None:
    recent = counter_rows[counter_rows["date"] >= "2021-08-02"]
    response = client.post("/monitor", json={"model_type": "lgbm", "records": tidy_records(recent)},
                           headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in ("ok", "drift", "insufficient_data")
    assert body["verdict"]["current_rows"] == len(recent) and "features" in body["verdict"]
    assert body["drift_share"] == body["verdict"]["drift_share"]
    assert body["report_url"] == f"/reports/drift/{body['report_name']}.html"
    report = client.get(body["report_url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<html" in report.text[:2000].lower()
    assert client.get("/reports/drift/latest.html").text == report.text
    assert "velocast_drift_share" in client.get("/metrics").text
    # records without counts cannot be monitored
    unlabelled = [{"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}]
    response = client.post("/monitor", json={"records": unlabelled}, headers=HEADERS)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "bike_count"


def test_monitor_the_stores_last_days(client: TestClient) -> None:
    response = client.post("/monitor", json={"model_type": "lgbm", "window_days": 7}, headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    # the last whole day's last hour (Paris): the store's 2 hours of 10 August are a day still being counted
    assert body["verdict"]["current_period"][1].startswith("2021-08-09T23:00")
    assert body["verdict"]["current_rows"] > 0
    assert client.get(body["report_url"]).status_code == 200
    assert client.post("/monitor", json={"window_days": 0}, headers=HEADERS).status_code == 422


@pytest.mark.parametrize("path", [
    "/reports/drift/..%2F..%2Fmlflow.db.html",
    "/reports/drift/..%2Flatest.json.html",
    "/reports/drift/%2e%2e%2f%2e%2e%2faudit.db.html",
    "/reports/drift/....html",
    "/reports/drift/..html",
    "/reports/drift/%2Fetc%2Fpasswd.html",
    "/reports/drift/does-not-exist.html",
    "/reports/drift/..%5C..%5Csummary.json.html",
    "/reports/../mlflow.db",
])
def test_report_paths_cannot_escape_the_drift_folder(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert "SQLite format" not in response.text and "root:" not in response.text
