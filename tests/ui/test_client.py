"""The UI's two clients give the same answers: the library in-process, and the HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from velocast.api import create_app
from velocast.config import Settings
from velocast.data import store
from velocast.ui.client import API_CHUNK, ApiClient, ClientError, LocalClient, day_rows, get_client

KEY = "ui-test-key-0123456789"


@pytest.fixture
def clients(at_ui_home: dict[str, Any]) -> Iterator[tuple[LocalClient, ApiClient]]:
    app = create_app(Settings(home=at_ui_home["home"], api_key=KEY))
    with TestClient(app, base_url="http://testserver") as http:
        yield LocalClient(), ApiClient("http://testserver", api_key=KEY, http=http)


def test_api_client_predicts_like_the_library(clients: tuple[LocalClient, ApiClient]) -> None:
    local, api = clients
    counter = local.counters().iloc[0]
    rows = day_rows(counter, "2021-08-03", temperature_c=21.0, rain_mm=0.0)
    here, there = local.predict(rows, "lgbm"), api.predict(rows, "lgbm")
    assert there.model.version == here.model.version == "2" and there.model.champion and here.model.champion
    assert there.frame["prediction"].to_numpy() == pytest.approx(here.frame["prediction"].to_numpy(), abs=1e-6)
    assert there.frame["timestamp"].tolist() == rows["timestamp"].tolist()
    # rows carrying counts are scored by both
    labelled = store.query_counts("2021-08-03", "2021-08-04", counter_ids=[str(counter["counter_id"])])
    assert api.predict(labelled).metrics["rmse"] == pytest.approx(local.predict(labelled).metrics["rmse"])
    # more labelled rows than one prediction chunk: still scored in one request, as the library scores them
    many = store.query_counts("2021-06-20", "2021-08-04")
    assert len(many) > API_CHUNK
    scored_there, scored_here = api.predict(many).metrics, local.predict(many).metrics
    assert scored_there["n"] == scored_here["n"] and scored_there["rmse"] == pytest.approx(scored_here["rmse"])


def test_api_client_reads_models_history_audit_and_reports(clients: tuple[LocalClient, ApiClient]) -> None:
    local, api = clients
    here, there = local.overview()["lgbm"], api.overview()["lgbm"]
    assert there.champion.version == here.champion.version == "2"
    assert there.previous_champion == here.previous_champion == "1"
    assert [v.version for v in there.versions] == [v.version for v in here.versions] == ["1", "2"]
    assert there.champion.baseline_metric("rmse") == pytest.approx(here.champion.baseline_metric("rmse"))
    assert [h["to_version"] for h in api.history("lgbm")] == [h["to_version"] for h in local.history("lgbm")]
    assert [e["event_id"] for e in api.audit(limit=10)] == [e["event_id"] for e in local.audit(limit=10)]
    assert api.audit(event="rollback") == []
    report = api.drift_report_html()
    assert report is not None and report == local.drift_report_html()


def test_api_client_sends_the_key_and_reports_errors(clients: tuple[LocalClient, ApiClient]) -> None:
    _, api = clients
    assert api.http.headers["X-API-Key"] == KEY
    keyless = ApiClient("http://testserver", http=TestClient(api.http.app, base_url="http://testserver"))
    with pytest.raises(ClientError, match="401"):
        keyless.run_drift_check("lgbm")
    unreachable = ApiClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ClientError, match="cannot be reached"):
        unreachable.audit()


def test_get_client_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(get_client(), LocalClient)
    monkeypatch.setenv("VELOCAST_API_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("VELOCAST_API_KEY", "k")
    client = get_client()
    assert isinstance(client, ApiClient) and client.http.headers["X-API-Key"] == "k"


def test_day_rows_follow_paris_days() -> None:
    counter = {"counter_id": "c1", "counter_name": "c", "latitude": 48.85, "longitude": 2.35}
    assert len(day_rows(counter, "2021-08-03")) == 24
    assert len(day_rows(counter, "2021-03-28")) == 23  # spring forward
    autumn = day_rows(counter, "2021-10-31", temperature_c=10.0)
    assert len(autumn) == 25 and (autumn["temperature_c"] == 10.0).all()
    assert str(autumn["timestamp"].dt.tz) == "Europe/Paris" and autumn["timestamp"].iloc[0].hour == 0
