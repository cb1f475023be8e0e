"""Concurrent /predict requests are batched, and each still gets exactly its own answer."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from tests.api.conftest import client_for, tidy_records
from velocast.api.app import _on_loop
from velocast.data import store
from velocast.lifecycle.serving.adaptation import adaptation_warm


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


def test_requests_are_predicted_on_the_event_loop_only_when_nothing_is_left_to_build(
        model_home: dict[str, Any], tmp_path: Path, counter_rows: pd.DataFrame) -> None:
    """After an ingest, requests go to a thread (the loop keeps answering /health) until the refresh
    thread has rebuilt the store's history and the served model's recent errors for the new counts."""
    home = tmp_path / "home"
    shutil.copytree(model_home["home"], home)
    record = tidy_records(counter_rows.head(1), with_counts=False)[0]
    # one background pass at start-up, then none for a minute: the test drives the passes itself
    with client_for(home, model_refresh_seconds=60) as client:
        state = client.app.state
        deadline = time.monotonic() + 60
        while not _on_loop(state, "lgbm", None) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _on_loop(state, "lgbm", None)
        before = client.post("/predict", json={"records": [record]}).json()["predictions"][0]["prediction"]

        stored = store.query_counts("2021-06-01", "2021-06-02", settings=state.settings).head(1)
        store.upsert_counts(stored.assign(bike_count=stored["bike_count"] + 1), state.settings)  # an ingest
        version = store.version(state.settings)
        assert not state.history.ready(version) and not _on_loop(state, "lgbm", None)
        response = client.post("/predict", json={"records": [record]})  # served from a thread, as before
        assert response.status_code == 200 and client.get("/health").status_code == 200
        assert abs(response.json()["predictions"][0]["prediction"] - before) < 1e3

        for task in state.cache.background:  # what the refresh thread does at its next pass
            task()
        served = state.cache.at_once("lgbm")
        assert state.history.ready(version) and adaptation_warm(served.model, state.settings, version)
        assert _on_loop(state, "lgbm", None)
