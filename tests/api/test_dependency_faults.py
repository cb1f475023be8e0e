"""A real ``mlflow server`` on 127.0.0.1 killed under a serving API; MLflow unreachable at start-up.

Fast, clear failures: every call to MLflow is bounded (``VELOCAST_DEPENDENCY_TIMEOUT_SECONDS``
and the ``MLFLOW_HTTP_REQUEST_*`` variables velocast sets), so with the tracking server gone
``/ready`` answers 503 ``degraded`` within seconds while ``/predict`` keeps serving the loaded
champion, the routes that need the registry answer 503 naming it, and SIGTERM stops the server
within 10 s. The registry facade tells "not found" (an absent alias: None) from "failed"
(``DependencyUnavailable``), so a dead server is never read as "no champion".
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ENV_NAMES, KEY
from tests.processes import Process, free_port, http_up, wait_for

BOUND = 10.0  # seconds: every answer, and the exit on SIGTERM
RECORD = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES and not k.startswith("MLFLOW_HTTP_")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                  env.get("PYTHONPATH", "")]), **extra}


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``mlflow server`` (SQLite backend, artifacts written by clients to a local folder) on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--default-artifact-root", (tmp_path / "server-artifacts").as_uri(), "--no-serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = Process(command, _clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), tmp_path / "mlflow.log")
    try:
        wait_for(lambda: server.proc.poll() is None and http_up(f"{url}/health"), 120, "mlflow server", server.log)
        yield {"url": url, "process": server}
    finally:
        server.kill()


def _serve(home: Path, tracking_uri: str, log: Path, **extra: str) -> tuple[Process, str]:
    port = free_port()
    env = _clean_env(VELOCAST_HOME=str(home), MLFLOW_TRACKING_URI=tracking_uri, VELOCAST_API_KEY=KEY,
                     VELOCAST_API_MODEL_REFRESH_SECONDS="0.5", VELOCAST_API_DEFAULT_MODEL_TYPE="baseline",
                     VELOCAST_DEPENDENCY_TIMEOUT_SECONDS="3", **extra)
    server = Process([sys.executable, "-m", "velocast.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                     env, log)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.proc.poll() is None and http_up(f"{base}/health"), 120, "velocast serve", log)
    return server, base


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_registry_tells_not_found_from_failed(mlflow_server: dict[str, Any], home: Path) -> None:
    from velocast.config import Settings
    from velocast.errors import DependencyUnavailable
    from velocast.tracking.registry import NoServableModel, Registry

    live = Registry(Settings(home=home, mlflow_tracking_uri=mlflow_server["url"]))
    assert live.champion("lgbm") is None and live.versions("lgbm") == []  # the server says: no such model
    with pytest.raises(NoServableModel, match="no lgbm model is registered yet"):
        live.serving("lgbm")
    # a run's JSON artifact: present, absent (None), or unreadable because the server died (raises)
    client = live.client
    run = client.create_run(client.create_experiment("run-json"))
    client.log_dict(run.info.run_id, {"train_days": ["2021-07-01"]}, "data/days.json")
    client.set_terminated(run.info.run_id)
    assert live.run_json(run.info.run_id, "data/days.json") == {"train_days": ["2021-07-01"]}
    assert live.run_json(run.info.run_id, "data/missing.json") is None
    assert live.run_json("0" * 32, "data/days.json") is None  # no such run
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="^mlflow unreachable: .*Connection refused"):
        Registry(Settings(home=home, mlflow_tracking_uri=dead_url))
    mlflow_server["process"].kill()
    with pytest.raises(DependencyUnavailable, match="^mlflow unreachable"):
        live.champion("lgbm")  # never None: a dead server is not "no champion"
    with pytest.raises(DependencyUnavailable, match="^mlflow unreachable"):
        live.run_json(run.info.run_id, "data/days.json")  # never None: a dead server is not "not recorded"
    assert time.monotonic() - started < BOUND


def test_mlflow_killed_under_a_serving_api(mlflow_server: dict[str, Any], real_store_template: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from velocast.config import Settings
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    home = tmp_path / "home"
    shutil.copytree(real_store_template, home)
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VELOCAST_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    settings = Settings(home=home, mlflow_tracking_uri=mlflow_server["url"])
    trained = train("baseline", settings=settings)  # a full model: it passes the gate
    promote("baseline", version=trained.model_version, reason="champion on the tracking server", settings=settings)

    api, base = _serve(home, mlflow_server["url"], tmp_path / "api.log")
    headers = {"X-API-Key": KEY}
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            wait_for(lambda: http.get("/ready").status_code == 200, 60, "/ready 200", api.log)
            assert http.post("/predict", json={"records": [RECORD]}).json()["model"]["version"] == trained.model_version

            mlflow_server["process"].kill()  # the tracking server dies under the serving API
            waited = wait_for(lambda: http.get("/ready").status_code == 503, BOUND, "/ready 503", api.log)
            ready = http.get("/ready").json()
            assert ready["status"] == "degraded" and ready["reason"].startswith("mlflow unreachable: ")
            assert f"still serving baseline version {trained.model_version}" in ready["reason"]
            response, seconds = _timed(lambda: http.post("/predict", json={"records": [RECORD]}))
            assert response.status_code == 200 and response.json()["model"]["version"] == trained.model_version
            assert seconds < BOUND
            for call in (lambda: http.get("/models"), lambda: http.get("/champion_health?model_type=baseline"),
                         lambda: http.post("/promote_champion", headers=headers,
                                           json={"model_type": "baseline", "version": "1"}),
                         lambda: http.post("/rollback", headers=headers, json={"model_type": "baseline"})):
                response, seconds = _timed(call)
                assert response.status_code == 503 and seconds < BOUND, (response.text, seconds)
                assert response.json()["detail"].startswith("mlflow unreachable: "), response.text
            response, seconds = _timed(lambda: http.get("/metrics"))  # what it can read, in bounded time
            assert response.status_code == 200 and seconds < BOUND and "velocast_served_model_version" in response.text
            assert http.get("/audit").status_code == 200  # the audit log is local: unaffected
        print(f"\n/ready said degraded {waited:.1f}s after MLflow was killed")
        stopped = api.terminate_within(BOUND)
        print(f"SIGTERM: the API exited in {stopped:.1f}s")
    finally:
        api.kill()


def test_mlflow_unreachable_at_start_up(empty_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(empty_home, home)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api, base = _serve(home, dead, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            response, seconds = _timed(lambda: http.get("/ready"))
            assert response.status_code == 503 and seconds < BOUND
            assert response.json()["status"] == "not_ready"
            wait_for(lambda: "mlflow unreachable" in (http.get("/ready").json()["reason"] or ""), BOUND,
                      "/ready naming MLflow", api.log)
            response, seconds = _timed(lambda: http.post("/predict", json={"records": [RECORD]}))
            assert response.status_code == 503 and seconds < BOUND
            assert response.json()["detail"].startswith("mlflow unreachable: ")
            assert http.get("/health").status_code == 200
        api.terminate_within(BOUND)
    finally:
        api.kill()
