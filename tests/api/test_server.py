"""`velocast serve`: a real uvicorn server on a free loopback port, called over HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
