"""`velocast serve`: a real uvicorn server on a free loopback port, called over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.api.conftest import velocast_server
from velocast.cli import app as cli_app


def test_serve_command_help() -> None:
    out = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert out.exit_code == 0 and "--host" in out.output and "--port" in out.output


def test_velocast_serve_over_http(model_home: dict[str, Any], tmp_path: Any) -> None:
    log_path = tmp_path / "server.log"
    with velocast_server(model_home["home"], log_path) as (_, http):
        assert http.get("/ready").status_code == 200
        champion = http.get("/models").json()["models"]["lgbm"]["champion"]["version"]
        record = {"counter_id": "100056331-103056331", "timestamp": "2021-08-04T17:00:00+02:00"}

        def predict(_: int) -> tuple[int, str]:
            response = http.post("/predict", json={"records": [record]})
            return response.status_code, response.json()["model"]["version"]

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(predict, range(24)))
        assert results == [(200, champion)] * 24
        response = http.post("/rollback", json={"model_type": "lgbm"}, headers={"X-API-Key": "anything"})
        assert response.status_code == 503 and "set VELOCAST_API_KEY" in response.json()["detail"]
        response = http.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and response.json()["detail"][0]["field"] == "body"
        assert "velocast_predictions_total" in http.get("/metrics").text
    output = log_path.read_text()
    assert "velocast API on http://127.0.0.1" in output
    assert "mutating routes are disabled: set VELOCAST_API_KEY" in output


def _series(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in a Prometheus text exposition."""
    out = []
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels_text, value = line[len(name) + 1:].rsplit("} ", 1)
            labels = dict(part.split("=", 1) for part in labels_text.split(","))
            out.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return out


def test_two_workers_share_metrics_and_see_a_promotion(model_home: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(model_home["home"], home)
    log_path = tmp_path / "server.log"
    with velocast_server(home, log_path, args=("--workers", "2")) as (server, http):
        sent = 40
        for _ in range(sent):  # a new connection each time: either worker may accept it
            assert httpx.get(f"{http.base_url}/ready", timeout=30).status_code == 200
        deadline = time.monotonic() + 60
        while True:  # both workers have loaded the champion (each reports the version it serves)
            served = _series(http.get("/metrics").text, "velocast_served_model_version")
            pids = {labels["pid"] for labels, value in served if value == float(model_home["lgbm_v1"])}
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(pids) == 2, served
        for _ in range(3):  # whichever worker answers the scrape counts the requests of both
            ready = [v for labels, v in _series(http.get("/metrics").text, "velocast_http_requests_total")
                     if labels["route"] == "/ready" and labels["status"] == "200"]
            assert ready == [float(sent)]
        promote = subprocess.run([sys.executable, "-m", "velocast.cli", "promote", "--model-type", "lgbm", "--version",
                                  model_home["lgbm_v2"], "--reason", "two workers (a test-mode model)", "--force"],
                                 env={**os.environ, "VELOCAST_HOME": str(home)}, capture_output=True, text=True)
        assert promote.returncode == 0, promote.stderr
        deadline = time.monotonic() + 60
        while True:  # both workers pick the promotion up
            served = _series(http.get("/metrics").text, "velocast_served_model_version")
            now = {labels["pid"] for labels, value in served
                   if value == float(model_home["lgbm_v2"]) and labels["champion"] == "true"}
            if now == pids or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert now == pids, served
        record = {"counter_id": "100056331-103056331", "timestamp": "2021-08-04T17:00:00+02:00"}
        versions = {httpx.post(f"{http.base_url}/predict", json={"records": [record]}, timeout=30).json()["model"]["version"]
                    for _ in range(12)}
        assert versions == {model_home["lgbm_v2"]}
        if sys.platform.startswith("linux"):  # a worker that dies is replaced, on its own socket of the port
            workers = _workers(server.pid)
            assert len(workers) == 2, workers
            os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 90
            while (len(_workers(server.pid)) < 2 or workers[0] in _workers(server.pid)) \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(_workers(server.pid)) == 2 and workers[0] not in _workers(server.pid)
            for _ in range(20):  # new connections each time: the kernel spreads them over both sockets
                assert httpx.get(f"{http.base_url}/ready", timeout=60).status_code == 200
            served = _series(http.get("/metrics").text, "velocast_served_model_version")
            assert str(workers[0]) not in {labels["pid"] for labels, _ in served}  # the dead worker's series went
    assert "2 workers" in log_path.read_text()


def _workers(pid: int) -> list[int]:
    """The API worker processes of a ``velocast serve --workers`` (Linux: its children running a worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            out.append(int(child))
    return sorted(out)
