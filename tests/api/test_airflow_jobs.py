"""``POST /train`` through a real Airflow 3 API server (``airflow api-server`` on 127.0.0.1).

The module starts Airflow's API server once (SQLite metadata database, the project's DAGs
serialised, the simple auth manager with one user): about 25 s. No scheduler runs, so a triggered
run stays ``queued``; its end is set through Airflow's own REST API (``PATCH .../dagRuns/{id}``),
and the API must report what Airflow says. The DAG's task itself is run by ``tests/dags``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import HEADERS, client_for, free_port
from tests.conftest import wait_for_http

if importlib.util.find_spec("airflow") is None:
    pytest.skip("Airflow is an optional extra: pip install -e '.[airflow]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "velocast-api", "airflow-pw-0123456789"
TRAIN = {"model_type": "baseline", "test_mode": True}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("airflow-api")
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-of-the-test-0123456789",
           "AIRFLOW__API__SECRET_KEY": "api-secret-of-the-test-0123456789"}
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        out = subprocess.run([sys.executable, "-m", "airflow", *command], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    port = free_port()
    log_path = home / "api-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/v2/monitor/health", server, log_path, "airflow api-server")
        token = httpx.post(f"{url}/auth/token", json={"username": USER, "password": PASSWORD}).json()["access_token"]
        yield {"url": url, "token": token}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _airflow_settings(airflow: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"airflow_url": airflow["url"], "airflow_username": USER, "airflow_password": PASSWORD, **more}


def _dag_run(airflow: dict[str, Any], run_id: str, state: str | None = None) -> dict[str, Any]:
    """The DAG run as Airflow's REST API shows it (and, with ``state``, after setting it)."""
    url = f"{airflow['url']}/api/v2/dags/train_model/dagRuns/{run_id}"
    headers = {"Authorization": f"Bearer {airflow['token']}"}
    response = httpx.patch(url, json={"state": state}, headers=headers) if state else httpx.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_post_train_starts_the_training_dag_and_jobs_reports_its_run(airflow: dict[str, Any], home: Path) -> None:
    with client_for(home, settings=_airflow_settings(airflow)) as client:
        response = client.post("/train", json=TRAIN, headers=HEADERS)
        assert response.status_code == 202, response.text
        accepted = response.json()
        job_id = accepted["job_id"]
        assert accepted["runner"] == "airflow" and accepted["status"] == "queued"
        assert accepted["dag_run_id"] == f"velocast_job_{job_id}"
        run = _dag_run(airflow, accepted["dag_run_id"])  # Airflow holds the run, with the job id as its conf
        assert run["conf"] == {"job_id": job_id} and run["state"] == "queued" and run["run_type"] == "manual"
        assert run["triggered_by"] == "rest_api" and run["triggering_user_name"] == USER

        job = client.get(f"/jobs/{job_id}").json()
        assert (job["status"], job["dag_id"], job["dag_run_state"], job["dag_run_error"]) == (
            "queued", "train_model", "queued", None)
        assert job["request"]["model_type"] == "baseline" and job["owner"] is None

        other = client.post("/train", json=TRAIN, headers=HEADERS).json()
        _dag_run(airflow, accepted["dag_run_id"], state="failed")
        _dag_run(airflow, other["dag_run_id"], state="success")
        failed = client.get(f"/jobs/{job_id}").json()
        assert failed["status"] == "failed" and failed["dag_run_state"] == "failed"
        assert failed["error"] == (f"the Airflow DAG run {accepted['dag_run_id']} of train_model failed (see its "
                                   "task log in Airflow)")
        succeeded = client.get(f"/jobs/{other['job_id']}").json()
        assert succeeded["status"] == "succeeded" and "succeeded without recording a result" in succeeded["notes"][0]
        metrics = client.get("/metrics").text
        assert 'velocast_training_jobs{status="failed"} 1.0' in metrics
        assert 'velocast_training_jobs{status="succeeded"} 1.0' in metrics

        waiting = client.post("/train", json=TRAIN, headers=HEADERS).json()
    # Airflow unreachable: the job shows its last known state and why it could not be read now
    down = _airflow_settings(airflow, airflow_url=f"http://127.0.0.1:{free_port()}", airflow_timeout_seconds=2)
    with client_for(home, settings=down) as client:
        job = client.get(f"/jobs/{waiting['job_id']}").json()
        assert job["status"] == "queued" and job["dag_run_state"] == "queued"
        assert job["dag_run_error"].startswith("Airflow at http://127.0.0.1:") and "is unreachable" in job["dag_run_error"]
        assert client.get(f"/jobs/{job_id}").json()["status"] == "failed"  # finished jobs need no Airflow


def test_a_static_token_works_and_bad_credentials_or_dag_are_named(airflow: dict[str, Any], home: Path) -> None:
    static = {"airflow_url": airflow["url"], "airflow_token": airflow["token"]}
    with client_for(home, settings=static) as client:
        response = client.post("/train", json=TRAIN, headers=HEADERS)
        assert response.status_code == 202 and _dag_run(airflow, response.json()["dag_run_id"])["state"] == "queued"
    with client_for(home, settings=_airflow_settings(airflow, airflow_password="wrong-password")) as client:
        response = client.post("/train", json=TRAIN, headers=HEADERS)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith(f"Airflow at {airflow['url']} refused the token of VELOCAST_AIRFLOW_USERNAME "
                             f"'{USER}' (401)") and "wrong-password" not in detail
    with client_for(home, settings=_airflow_settings(airflow, airflow_train_dag="no_such_dag")) as client:
        response = client.post("/train", json=TRAIN, headers=HEADERS)
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"Airflow at {airflow['url']} refused to start DAG 'no_such_dag' "
                                                "(404)")
