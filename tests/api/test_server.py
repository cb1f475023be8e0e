"""`velocast serve`: a real uvicorn server on a free loopback port, called over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from typer.testing import CliRunner

from velocast.cli import app as cli_app


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_help() -> None:
    out = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert out.exit_code == 0 and "--host" in out.output and "--port" in out.output


def test_velocast_serve_over_http(model_home: dict[str, Any], tmp_path: Any) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VELOCAST_API_KEY", "MLFLOW_TRACKING_URI")}
    env.update(VELOCAST_HOME=str(model_home["home"]), VELOCAST_API_MODEL_REFRESH_SECONDS="0.5")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "velocast.cli", "serve", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=base, timeout=30) as http:
            while True:
                assert server.poll() is None, log_path.read_text()[-3000:]
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start in 90 s"
                time.sleep(0.3)
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
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = log_path.read_text()
    assert "velocast API on http://127.0.0.1" in output
    assert "mutating routes are disabled: set VELOCAST_API_KEY" in output
