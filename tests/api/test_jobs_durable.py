"""Training jobs outlive the server: stored in the database, visible from every replica, and a job
left running by a server killed with SIGKILL is failed with the reason when the server restarts."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.api.conftest import HEADERS, KEY, client_for, free_port, velocast_server


def _wait(http: Any, job_id: str, states: set[str], timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/jobs/{job_id}").json()
        if body["status"] in states:
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body['status']} after {timeout} s"
        time.sleep(0.1)


def test_a_job_taken_by_one_replica_is_seen_by_another(real_home: Path) -> None:
    with client_for(real_home) as first, client_for(real_home) as second:
        response = first.post("/train", json={"model_type": "baseline", "test_mode": True}, headers=HEADERS)
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["runner"] == "api" and accepted["dag_run_id"] is None
        seen = second.get(f"/jobs/{accepted['job_id']}").json()  # the other replica answers from the database
        assert seen["status"] in ("queued", "running", "succeeded") and seen["runner"] == "api"
        done = _wait(second, accepted["job_id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", done["error"]
        assert done["model_version"] == "1" and done["owner"].endswith(f"pid {first.app.state.jobs.owner.pid}")
        assert 'velocast_training_jobs{status="succeeded"} 1.0' in second.get("/metrics").text


def test_jobs_of_a_killed_server_are_failed_at_restart(real_home: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with velocast_server(real_home, log_path, VELOCAST_API_KEY=KEY) as (server, http):
        # a full training (seconds) and one queued behind it
        running = http.post("/train", json={"model_type": "lgbm"}, headers=HEADERS).json()["job_id"]
        waiting = http.post("/train", json={"model_type": "baseline", "test_mode": True}, headers=HEADERS)
        waiting = waiting.json()["job_id"]
        assert _wait(http, running, {"running", "succeeded", "failed"})["status"] == "running"
        assert http.get(f"/jobs/{waiting}").json()["status"] == "queued"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    with velocast_server(real_home, log_path, VELOCAST_API_KEY=KEY) as (_, http):
        killed = http.get(f"/jobs/{running}")
        assert killed.status_code == 200
        body = killed.json()
        assert body["status"] == "failed" and body["finished_at"] is not None
        assert body["error"].startswith("the server restarted while the job ran (")
        assert "is gone" in body["error"]
        queued = http.get(f"/jobs/{waiting}").json()
        assert queued["status"] == "failed" and queued["error"].startswith("the server restarted before the job ran")
        assert 'velocast_training_jobs{status="failed"} 2.0' in http.get("/metrics").text
        assert http.get("/jobs/0123").status_code == 404
    assert "marked failed: its server" in log_path.read_text()


def test_post_train_names_airflow_when_it_is_unreachable(real_home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with client_for(real_home, settings={"airflow_url": url, "airflow_username": "u",
                                                "airflow_password": "p4ssw0rd-x", "airflow_timeout_seconds": 2}) as client:
        started = time.monotonic()
        response = client.post("/train", json={"model_type": "baseline", "test_mode": True}, headers=HEADERS)
        assert time.monotonic() - started < 10
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith(f"Airflow at {url} is unreachable (POST /auth/token: ConnectError")
    assert "was not started" in detail and "p4ssw0rd-x" not in detail
    job_id = detail.split("training job ")[1].split()[0]
    with client_for(real_home) as client:  # the job is recorded as failed, with the same message
        body = client.get(f"/jobs/{job_id}").json()
    assert body["status"] == "failed" and body["runner"] == "airflow" and body["error"] == detail
