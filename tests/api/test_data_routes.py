"""Read-only data and monitoring routes the web UI uses: counters, counts, latest drift, health."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from tests.api.conftest import KEY
from velocast.data import store


def test_counters_and_counts(client: TestClient, at_model_home: dict[str, Any]) -> None:
    body = client.get("/counters").json()
    table = store.counters()
    assert body["count"] == len(table) == 8
    assert {c["counter_id"] for c in body["counters"]} == set(table["counter_id"])
    assert pd.Timestamp(body["latest"]) == store.latest_timestamp()
    counter = body["counters"][0]["counter_id"]
    day = client.get("/counts", params={"counter_id": counter, "start": "2021-03-28", "end": "2021-03-29"}).json()
    assert len(day["counts"]) == 23  # the spring DST day has 23 hours
    stored = store.query_counts("2021-03-28", "2021-03-29", counter_ids=[counter])
    assert [c["bike_count"] for c in day["counts"]] == stored["bike_count"].tolist()


def test_counts_validation(client: TestClient) -> None:
    too_long = client.get("/counts", params={"counter_id": "x", "start": "2021-01-01", "end": "2021-03-01"})
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["field"] == "end"
    assert client.get("/counts", params={"counter_id": "x", "start": "nope", "end": "2021-01-02"}).status_code == 422
    empty = client.get("/counts", params={"counter_id": "unknown", "start": "2021-01-01", "end": "2021-01-02"})
    assert empty.status_code == 200 and empty.json()["counts"] == []


def test_latest_drift_and_champion_health(client: TestClient, at_model_home: dict[str, Any]) -> None:
    monitored = client.post("/monitor", json={"model_type": "lgbm", "window_days": 14},
                            headers={"X-API-Key": KEY})
    assert monitored.status_code == 200, monitored.text
    latest = client.get("/drift/latest").json()  # the default model type's (lgbm)
    assert latest["model_type"] == "lgbm" and latest["report"]["status"] == monitored.json()["verdict"]["status"]
    assert latest["report_url"] == monitored.json()["report_url"] and latest["checked_at"]
    assert client.get(latest["report_url"]).status_code == 200
    # a check of another model type is that type's: it does not replace lgbm's latest verdict
    row = store.query_counts("2021-08-01", "2021-08-02").iloc[0]
    record = {"counter_id": row["counter_id"], "timestamp": row["timestamp"].isoformat(), "bike_count": 10.0}
    other = client.post("/monitor", json={"model_type": "rf", "records": [record]}, headers={"X-API-Key": KEY})
    assert other.status_code == 200 and other.json()["status"] == "insufficient_data"
    assert client.get("/drift/latest").json()["report"] == latest["report"]
    assert client.get("/drift/latest", params={"model_type": "rf"}).json()["report"]["status"] == "insufficient_data"
    assert client.get("/drift/latest", params={"model_type": "nn"}).json()["report"] is None
    health = client.get("/champion_health", params={"model_type": "lgbm"}).json()
    assert health["state"] in {"ok", "degraded", "critical"} and health["rows"] > 0 and health["reasons"]
    assert client.get("/champion_health", params={"model_type": "xgb"}).status_code == 422
