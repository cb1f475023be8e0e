"""Serving real counters with the champion: readiness, /models, /predict, hot swap, /metrics."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import HEADERS, client_for, tidy_records
from tests.conftest import run_cli


def _champion_version(client: TestClient, model_type: str = "lgbm") -> str | None:
    champion = client.get("/models").json()["models"][model_type]["champion"]
    return champion["version"] if champion else None




def _wait_for_version(client: TestClient, record: dict[str, Any], version: str, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = client.post("/predict", json={"records": [record]})
        assert response.status_code == 200, response.text
        if response.json()["model"]["version"] == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"/predict did not serve version {version} within {timeout}s")


def test_ready_once_the_champion_is_loaded(client: TestClient, model_home: dict[str, Any]) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["champion"] is True
    assert body["model_version"] == _champion_version(client)
    assert body["model_uri"] == f"models:/bike-traffic-lgbm/{body['model_version']}"


def test_models_shows_champions_with_metrics_and_versions(client: TestClient, model_home: dict[str, Any]) -> None:
    models = client.get("/models").json()["models"]
    lgbm = models["lgbm"]
    assert lgbm["champion"]["version"] == model_home["lgbm_v1"] and "champion" in lgbm["champion"]["aliases"]
    assert 0 < lgbm["champion"]["metrics"]["test_baseline_r2"] <= 1
    assert lgbm["champion"]["metrics"]["test_baseline_rmse"] > 0
    assert {v["version"] for v in lgbm["versions"]} >= {model_home["lgbm_v1"], model_home["lgbm_v2"]}
    assert lgbm["champion"]["tags"]["horizon"] == "day-ahead" and lgbm["champion"]["run_id"]
    assert lgbm["served"]["version"] == model_home["lgbm_v1"] and lgbm["served"]["champion"] is True
    assert models["baseline"]["champion"] is None
    assert [v["version"] for v in models["baseline"]["versions"]][:1] == [model_home["baseline_v1"]]
    assert models["rf"]["versions"] == []
    assert all(v["metrics"] == {} for v in lgbm["versions"])  # one query per version only when asked
    every = client.get("/models", params={"all_metrics": True}).json()["models"]["lgbm"]["versions"]
    assert all(v["metrics"]["test_baseline_rmse"] > 0 and "test_baseline_r2" in v["metrics"] for v in every)


def test_predict_real_counters_with_tidy_names(client: TestClient, counter_rows: pd.DataFrame) -> None:
    rows = counter_rows[(counter_rows["date"] >= "2021-08-03 01:00") & (counter_rows["date"] < "2021-08-03 07:00")]
    records = tidy_records(rows)
    assert len(records) == 48  # 8 counters x 6 hours
    response = client.post("/predict", json={"records": records, "model_type": "lgbm"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"model_type": "lgbm", "version": _champion_version(client),
                             "uri": f"models:/bike-traffic-lgbm/{_champion_version(client)}",
                             "run_id": body["model"]["run_id"], "horizon": "day-ahead", "champion": True}
    predictions = body["predictions"]
    assert [p["index"] for p in predictions] == list(range(48))
    assert [p["counter_id"] for p in predictions] == [r["counter_id"] for r in records]
    # `date` is naive UTC: 01:00 UTC is 03:00 in Paris in August
    assert predictions[0]["timestamp"] == "2021-08-03T03:00:00+02:00"
    assert all(p["prediction"] >= 0 and p["warnings"] == [] and p["probability"] is None for p in predictions)
    assert body["metrics"]["n"] == 48 and body["metrics"]["rmse"] > 0
    # the model sees the difference between the night and the morning rush hour
    by_hour = pd.DataFrame(predictions).groupby("timestamp")["prediction"].mean()
    assert by_hour["2021-08-03T08:00:00+02:00"] > 3 * by_hour["2021-08-03T03:00:00+02:00"]


def test_predict_with_open_data_names_and_unknown_counters(client: TestClient,
                                                           opendata_records: list[dict[str, Any]]) -> None:
    known = {"Identifiant du compteur": "100047547-104047547", "Date et heure de comptage": "2021-08-02T08:00:00+02:00"}
    response = client.post("/predict", json={"records": [*opendata_records, known]})
    assert response.status_code == 200, response.text
    body = response.json()
    predictions = body["predictions"]
    assert len(predictions) == len(opendata_records) + 1
    unknown = predictions[:-1]
    assert all(p["counter_id"] == "100003096-353242251" for p in unknown)  # not among the trained counters
    assert all("unknown to the model" in p["warnings"][0] and p["prediction"] >= 0 for p in unknown)
    assert unknown[0]["timestamp"] == opendata_records[0]["Date et heure de comptage"]
    assert predictions[-1]["warnings"] == [] and predictions[-1]["timestamp"] == "2021-08-02T08:00:00+02:00"
    assert any("unknown to the model" in w for w in body["warnings"])
    assert body["metrics"]["n"] == len(opendata_records)  # the export carries counts


def test_naive_timestamp_is_paris_time_and_naive_date_is_utc(client: TestClient) -> None:
    counter = "100056334-103056334"
    records = [{"counter_id": counter, "timestamp": "2021-08-02T08:00:00"},
               {"counter_id": counter, "date": "2021-08-02 06:00:00"},
               {"Identifiant du compteur": counter, "Date et heure de comptage": "2021-08-02T06:00:00Z"},
               {"counter_id": counter, "timestamp": "2021-08-02T08:00:00", "temperature_c": 30.0, "rain_mm": 4.0}]
    predictions = client.post("/predict", json={"records": records}).json()["predictions"]
    assert {p["timestamp"] for p in predictions} == {"2021-08-02T08:00:00+02:00"}
    assert predictions[0]["prediction"] == pytest.approx(predictions[1]["prediction"])
    assert predictions[0]["prediction"] == pytest.approx(predictions[2]["prediction"])
    assert predictions[3]["warnings"] == ["same counter and hour as record 0"]
    # that record's own weather answers it (a scenario of the hour), not the first record's
    assert predictions[3]["weather"] == "given" and predictions[0]["weather"] != "given"
    assert predictions[3]["prediction"] != pytest.approx(predictions[0]["prediction"])


def test_weather_given_in_part_is_not_used_and_the_answer_says_so(client: TestClient) -> None:
    """The model needs temperature and rain: a record giving only one is answered with the stored forecast
    of its hour (the home holds one for every day), exactly as the record without weather, and is told."""
    counter = "100056334-103056334"
    records = [{"counter_id": counter, "timestamp": "2021-08-02T08:00:00+02:00"},
               {"counter_id": counter, "timestamp": "2021-08-02T08:00:00+02:00", "temperature_c": 35.0},
               {"counter_id": counter, "timestamp": "2021-08-02T08:00:00+02:00", "temperature_c": 35.0,
                "rain_mm": 0.0}]
    plain, partial, whole = client.post("/predict", json={"records": records}).json()["predictions"]
    assert (plain["weather"], partial["weather"], whole["weather"]) == ("forecast", "forecast", "given")
    assert partial["prediction"] == plain["prediction"] and partial["upper"] == plain["upper"]
    assert whole["prediction"] != pytest.approx(plain["prediction"])
    assert ("incomplete weather given (no rain_mm; temperature_c and rain_mm are both needed): not used"
            in partial["warnings"])
    assert not any("incomplete" in w for w in plain["warnings"] + whole["warnings"])


def test_an_unknown_counter_gets_a_prediction_and_a_warning(client: TestClient) -> None:
    record = {"counter_id": "999999999-1", "counter_name": "Pont neuf", "timestamp": "2021-08-02T08:00:00+02:00",
              "latitude": 48.8571, "longitude": 2.3412}
    response = client.post("/predict", json={"records": [record]})
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    assert prediction["prediction"] > 0
    assert prediction["warnings"] == [("counter 999999999-1 is unknown to the model: predicted from its location "
                                       "and the calendar"),
                                      ("no history: no count of counter 999999999-1 in the 28 days before 2021-08-02 is known; "
                                       "predicted from the calendar and its usual level")]


def test_without_a_champion_the_latest_version_serves_with_a_warning(client: TestClient,
                                                                     model_home: dict[str, Any]) -> None:
    record = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}
    body = client.post("/predict", json={"records": [record], "model_type": "baseline"}).json()
    assert body["model"]["champion"] is False and body["model"]["horizon"] == "calendar"
    assert any("no baseline champion yet: serving the latest registered version" in w for w in body["warnings"])
    response = client.post("/predict", json={"records": [record], "horizon": "calendar"})
    assert response.status_code == 422  # no calendar lgbm model is registered
    assert response.json()["detail"][0]["field"] == "horizon"
    assert "no registered lgbm model with horizon 'calendar'" in response.json()["detail"][0]["message"]


def test_ten_thousand_records(client: TestClient, counter_rows: pd.DataFrame) -> None:
    rows = counter_rows.head(10_000)
    records = tidy_records(rows, with_counts=False)
    started = time.perf_counter()
    response = client.post("/predict", json={"records": records})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text[:2000]
    predictions = response.json()["predictions"]
    assert len(predictions) == 10_000
    assert [p["counter_id"] for p in predictions[::997]] == [r["counter_id"] for r in records[::997]]
    expected = pd.to_datetime(rows["date"].iloc[::997]).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")
    assert [p["timestamp"] for p in predictions[::997]] == [t.isoformat() for t in expected]
    print(f"\n/predict of 10,000 records over TestClient: {elapsed:.2f}s")


def test_latency_of_small_requests(client: TestClient, counter_rows: pd.DataFrame) -> None:
    records = tidy_records(counter_rows.tail(100), with_counts=False)
    client.post("/predict", json={"records": records[:1]})
    figures = {}
    for n in (1, 100):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            assert client.post("/predict", json={"records": records[:n]}).status_code == 200
            runs.append(time.perf_counter() - started)
        figures[n] = sorted(runs)[len(runs) // 2]
    print(f"\n/predict median latency over TestClient: 1 record {figures[1] * 1000:.0f} ms, "
          f"100 records {figures[100] * 1000:.0f} ms")
    assert figures[1] < 5


def test_a_promotion_by_the_cli_is_served_without_restart(client: TestClient, at_model_home: dict[str, Any]) -> None:
    """The refresh thread sees the CLI's promotion, loads v2 and compiles its trees with lleaves while v1
    (compiled) keeps serving; v2 serves once compiled, and no request fails or waits meanwhile."""
    v1, v2 = at_model_home["lgbm_v1"], at_model_home["lgbm_v2"]
    record = {"counter_id": "100056330-104056330", "timestamp": "2021-08-03T18:00:00+02:00"}
    assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == v1
    cache = client.app.state.cache
    answers: list[tuple[int, str | None, bool]] = []  # status, version, whether the served model was compiled
    stop = threading.Event()

    def hammer() -> None:  # requests keep coming during the swap
        while not stop.is_set():
            response = client.post("/predict", json={"records": [record]})
            served = cache.snapshot().get(("lgbm", None))
            compiled = served is not None and served.model.serving.model.compiled
            answers.append((response.status_code, response.json().get("model", {}).get("version"), compiled))

    for compiled_file in (at_model_home["home"] / "cache" / "lleaves").glob("*.so"):
        compiled_file.unlink()  # v2 may have been compiled by an earlier test of this home: compile it now
    worker = threading.Thread(target=hammer)
    worker.start()
    pending_seen = []
    try:
        time.sleep(0.3)
        out = run_cli(["promote", "--model-type", "lgbm", "--version", v2, "--reason", "hot swap", "--force"])
        assert out.exit_code == 0, out.output
        assert _champion_version(client) == v2  # /models reads the registry directly
        started = time.monotonic()
        while time.monotonic() - started < 120 and cache.snapshot()[("lgbm", None)].version != v2:
            pending_seen.append(client.get("/models").json()["models"]["lgbm"]["served"]["next_version"])
            time.sleep(0.1)
        waited = _wait_for_version(client, record, v2)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    print(f"\nnew champion served {time.monotonic() - started:.2f}s after the CLI promotion "
          f"({len(answers)} requests during the swap)")
    assert waited < 5  # the cache had swapped: the next request is v2's
    assert answers and {status for status, _, _ in answers} == {200}
    versions = [version for _, version, _ in answers]
    assert set(versions) == {v1, v2} and versions == sorted(versions, key=[v1, v2].index)  # v1, then only v2
    assert all(compiled for _, version, compiled in answers if version == v2), "v2 served before it was compiled"
    assert v2 in pending_seen  # /models said which version waited for its compiled trees
    models = client.get("/models").json()["models"]["lgbm"]["served"]
    assert (models["version"], models["next_version"]) == (v2, None)
    assert client.get("/ready").json()["model_version"] == v2

    # and back with the API's rollback: visible at once (the cache is invalidated)
    response = client.post("/rollback", json={"model_type": "lgbm", "reason": "back to v1", "force": True}, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert (response.json()["from_version"], response.json()["to_version"]) == (v2, v1)
    assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == v1
    events = client.get("/audit", params={"model_type": "lgbm", "limit": 2}).json()["events"]
    assert [(e["event"], e["from_version"], e["to_version"]) for e in events] == [("rollback", v2, v1),
                                                                                 ("promotion", v1, v2)]
    assert events[0]["reasons"][0] == "back to v1" and events[1]["reasons"][0] == "hot swap"


def test_without_a_compile_wait_a_promotion_swaps_at_once_and_compiles_after(
        model_home: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    shutil.copytree(model_home["home"], home, ignore=shutil.ignore_patterns("*.so"))  # nothing compiled yet
    monkeypatch.setenv("VELOCAST_HOME", str(home))
    v1, v2 = model_home["lgbm_v1"], model_home["lgbm_v2"]
    record = {"counter_id": "100056330-104056330", "timestamp": "2021-08-03T18:00:00+02:00"}
    caplog.set_level(logging.INFO, logger="velocast.lifecycle.decisions.champion")
    with client_for(home, model_compile_wait_seconds=0) as client:
        assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == v1
        out = run_cli(["promote", "--model-type", "lgbm", "--version", v2, "--reason", "no wait", "--force"])
        assert out.exit_code == 0, out.output
        _wait_for_version(client, record, v2)
        assert "now served by version %s (was %s; prepared" % (v2, v1) in caplog.text
        assert "its trees still compiling" in caplog.text and "waits for its compiled trees" not in caplog.text
        serving = client.app.state.cache.snapshot()[("lgbm", None)].model.serving
        serving.compiling.join(timeout=300)  # and the compiled trees take over once built
        assert serving.model.compiled


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    record = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}
    client.post("/predict", json={"records": [record]})
    client.post("/predict", json={"records": [record], "horizon": "day-ahead"})  # the same model, asked by horizon
    client.get("/jobs/nope")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("velocast_http_requests_total", "velocast_http_request_duration_seconds_bucket",
                 "velocast_predictions_total", "velocast_champion_version", "velocast_served_model_version",
                 "velocast_last_decision_info", "velocast_training_jobs"):
        assert name in text, name
    assert 'route="/predict",status="200"' in text
    assert 'route="/jobs/{job_id}",status="404"' in text  # the template, not the path
    assert 'velocast_champion_version{model_type="lgbm"}' in text
    served = [line for line in text.splitlines()
              if line.startswith("velocast_served_model_version{") and 'model_type="lgbm"' in line]
    assert len(served) == 1 and 'horizon="day-ahead"' in served[0], served  # the served model's own horizon
    assert 'velocast_last_decision_info{decision="' in text or 'velocast_last_decision_info{model_type="lgbm"' in text


def test_predict_answers_intervals_of_the_requested_coverage(client: TestClient, counter_rows: pd.DataFrame) -> None:
    rows = counter_rows[(counter_rows["date"] >= "2021-08-03 04:00") & (counter_rows["date"] < "2021-08-03 08:00")]
    records = tidy_records(rows, with_counts=False)
    widths = {}
    for coverage in (0.5, None, 0.95):
        body = client.post("/predict", json={"records": records, **({"coverage": coverage} if coverage else {})})
        assert body.status_code == 200, body.text
        body = body.json()
        assert body["coverage"] == (coverage or 0.8)  # default: VELOCAST_INTERVAL_COVERAGE
        for p in body["predictions"]:
            assert 0 <= p["lower"] <= p["upper"] and p["probability"] is None
        widths[body["coverage"]] = sum(p["upper"] - p["lower"] for p in body["predictions"])
    assert widths[0.5] < widths[0.8] < widths[0.95]
    for bad in (0.3, 1.0, "high"):
        refused = client.post("/predict", json={"records": records[:1], "coverage": bad})
        assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "coverage"


def test_concurrent_requests_with_other_coverages_get_their_own_intervals(client: TestClient,
                                                                           counter_rows: pd.DataFrame) -> None:
    """Requests are micro-batched only with requests of the same coverage: each answer is its own."""
    rows = counter_rows[(counter_rows["date"] >= "2021-08-02 05:00") & (counter_rows["date"] < "2021-08-02 07:00")]
    records = tidy_records(rows, with_counts=False)
    alone = {c: client.post("/predict", json={"records": records, "coverage": c}).json()["predictions"]
             for c in (0.6, 0.9)}
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = client.post("/predict", json={"records": records, "coverage": (0.6, 0.9)[i % 2]}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, body in answers.items():
        coverage = (0.6, 0.9)[i % 2]
        assert body["coverage"] == coverage
        # Equal to the last bits' noise: the background lleaves build may land between the calls, and
        # lleaves and LightGBM sum the trees in another order (1e-15 apart); the two coverages'
        # intervals differ by whole bikes.
        assert [b for p in body["predictions"] for b in (p["lower"], p["upper"])] == \
               pytest.approx([b for p in alone[coverage] for b in (p["lower"], p["upper"])], rel=1e-9)
