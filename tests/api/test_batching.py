"""Concurrent /predict requests are batched, and each still gets exactly its own answer."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from tests.api.conftest import tidy_records


def test_concurrent_requests_are_batched_and_answered_separately(client: TestClient,
                                                                 counter_rows: pd.DataFrame) -> None:
    records = tidy_records(counter_rows.head(64), with_counts=False)
    alone = {i: client.post("/predict", json={"records": [records[i]]}).json() for i in range(len(records))}
    batcher = client.app.state.batcher
    before = batcher.batched_requests
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = client.post("/predict", json={"records": [records[i]]})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batcher.batched_requests > before  # some requests really shared a batch
    for i, response in answers.items():
        assert response.status_code == 200
        body = response.json()
        assert len(body["predictions"]) == 1 and body["predictions"][0]["index"] == 0
        assert body["predictions"][0]["counter_id"] == records[i]["counter_id"]
        assert abs(body["predictions"][0]["prediction"] - alone[i]["predictions"][0]["prediction"]) < 1e-6


def test_a_bad_request_in_a_batch_gets_its_own_errors(client: TestClient, counter_rows: pd.DataFrame) -> None:
    good = tidy_records(counter_rows.head(20), with_counts=False)
    bad = {**good[0], "timestamp": "not a date"}
    results: dict[str, Any] = {}

    def ask(name: str, records: list[dict[str, Any]]) -> None:
        results[name] = client.post("/predict", json={"records": records})

    threads = [threading.Thread(target=ask, args=(f"good{i}", [r])) for i, r in enumerate(good)]
    threads.append(threading.Thread(target=ask, args=("bad", [good[1], bad])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["bad"].status_code == 422
    assert results["bad"].json()["detail"][0]["index"] == 1
    assert all(results[f"good{i}"].status_code == 200 for i in range(len(good)))
