"""Schemathesis against the OpenAPI document of the running API: no 5xx for any generated input.

The real app (``create_app``) runs under uvicorn on a free 127.0.0.1 port, over a home holding the
real-data subset, a small trained ``lgbm`` champion and a ``baseline`` champion, with
``VELOCAST_API_KEY`` set (the valid key is sent, so mutating routes run their real logic instead of
stopping at the 401). Every operation except ``POST /train`` (it starts real training jobs) gets
schema-conforming (positive) and schema-violating (negative) inputs; the only check is
``not_a_server_error``. ``POST /train`` gets hand-made invalid bodies that must be refused
before any job is queued.

The figures (inputs generated, failures) are printed and written to ``api_fuzz.json`` in the
test's temporary folder.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from tests.api.conftest import KEY, settings_for
from velocast.api import create_app
from velocast.api.config import ApiConfig

# examples per operation and generation mode; the routes that compute (drift, double evaluation,
# champion health) get fewer so the whole run stays within a couple of minutes
EXAMPLES = 40
COSTLY = {("POST", "/monitor"): 8, ("POST", "/evaluate"): 15, ("GET", "/champion_health"): 10}
EXCLUDED = {("POST", "/train")}


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def api_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real-data home with a small lgbm champion (v1) and challenger (v2) and a baseline champion."""
    import shutil

    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    home = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(real_store_template, home)
    settings = settings_for(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VELOCAST_HOME", str(home))
        v1 = train("lgbm", model_test=True, hyperparams={"n_estimators": 30}, settings=settings)
        promote("lgbm", version=v1.model_version, reason="fuzz champion", force=True, settings=settings)
        train("lgbm", model_test=True, hyperparams={"n_estimators": 20}, seed=1, settings=settings)
        b1 = train("baseline", model_test=True, settings=settings)
        promote("baseline", version=b1.model_version, reason="fuzz baseline champion", force=True, settings=settings)
    return {"home": home}


@pytest.fixture(scope="module")
def server(api_home: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """uvicorn serving the real app on a free port of 127.0.0.1 (in a thread of this process)."""
    import uvicorn

    app = create_app(settings_for(api_home["home"], KEY), config=ApiConfig(model_refresh_seconds=1.0))
    sock = _free_socket()
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True, name="fuzz-uvicorn")
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        yield {"app": app, "base": base}
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    out = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in EXCLUDED:
            out.append(operation)
    return out


def documented_unavailable(operation: Any, response: Any) -> bool:
    """A 503 the operation documents (no model of that type yet), answered with its ErrorResponse.

    These are states of the service the contract announces (like ``/ready``), not crashes: a
    crash is a 500 (or an undocumented 5xx), which ``not_a_server_error`` still fails.
    """
    responses = (operation.definition.raw or {}).get("responses", {})
    if response.status_code != 503 or "503" not in responses:
        return False
    try:
        detail = response.json().get("detail") or response.json().get("reason")
    except ValueError:
        return False
    return isinstance(detail, str) and "internal error" not in detail


def _fuzz(operation: Any, mode: GenerationMode, base: str, stats: Counter, failures: list[dict[str, Any]]) -> None:
    key = (operation.method.upper(), operation.path)
    examples = COSTLY.get(key, EXAMPLES)
    statuses: Counter = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base, headers={"X-API-Key": KEY}, timeout=120)
        stats[f"{key[0]} {key[1]}"] += 1
        statuses[response.status_code] += 1
        if documented_unavailable(operation, response):
            return
        case.validate_response(response, checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:  # nothing in the operation can be made invalid (no parameters, free-form strings)
        stats[f"{key[0]} {key[1]} no {mode} inputs"] = 0
    except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
        failures.append({"operation": f"{key[0]} {key[1]}", "mode": str(mode), "error": str(exc)[:3000]})
    stats[f"{key[0]} {key[1]} statuses {mode}"] = dict(statuses)  # type: ignore[assignment]


def test_no_generated_input_gets_a_server_error(server: dict[str, Any], tmp_path: Path) -> None:
    operations = _operations(server["base"])
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert "POST /predict" in labels and "POST /promote_champion" in labels and "POST /train" not in labels
    stats: Counter = Counter()
    failures: list[dict[str, Any]] = []
    started = time.perf_counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server["base"], stats, failures)
    inputs = sum(v for k, v in stats.items() if isinstance(v, int))
    report = {"operations": len(operations), "inputs": inputs, "failures": failures,
              "seconds": round(time.perf_counter() - started, 1),
              "per_operation": {k: v for k, v in sorted(stats.items())}}
    (tmp_path / "api_fuzz.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["per_operation"], indent=1, default=str))
    print(f"\nschemathesis: {len(operations)} operations, {inputs} generated inputs, {len(failures)} failures "
          f"in {report['seconds']}s")
    assert inputs >= 10 * len(operations)
    assert not failures, json.dumps(failures, indent=2)[:8000]


def _jobs(app: Any) -> int:
    return sum(app.state.jobs.counts().values())  # every job stored, whatever its state


INVALID_TRAIN_BODIES: list[tuple[Any, int]] = [
    ({"model_type": "xgboost"}, 422),
    ({"data_source": "everything"}, 422),
    ({"env": "staging"}, 422),
    ({"test_mode": "maybe"}, 422),
    ({"horizon": "next-year"}, 422),
    ({"hyperparams": {"no_such_param": 3}}, 422),
    ({"model_type": "lgbm", "hyperparams": {"num_leaves": "many"}}, 422),
    ({"model_type": "lgbm", "hyperparams": {"num_leaves": -4}}, 422),
    ({"hyperparams": ["num_leaves", 31]}, 422),
    ({"current_data": []}, 422),
    ({"current_data": [{"counter_id": "x"}]}, 422),
    ({"current_data": [{"counter_id": "100003096-353242251", "timestamp": "2021-07-01T08:00:00+02:00"}]}, 422),
    ({"current_data": [{"counter_id": "100003096-353242251", "timestamp": "2021-07-01T08:00:00+02:00",
                        "bike_count": -3}]}, 422),
    ({"current_data": [{"counter_id": "100003096-353242251", "timestamp": "not a time", "bike_count": 3}]}, 422),
    ({"current_data": [{"counter_id": "c", "timestamp": "2021-07-01T08:00:00+02:00", "bike_count": 3,
                        "latitude": 10.0, "longitude": 2.3}]}, 422),
    ({"current_data": [{"counter_id": "c", "timestamp": "2021-07-01T08:00:00+02:00", "bike_count": 3,
                        "surprise": 1}]}, 422),
    ({"unknown_field": 1}, 422),
    ([], 422),
    ("a string", 422),
    (None, 422),
]


def test_train_refuses_invalid_bodies_before_queueing_anything(server: dict[str, Any]) -> None:
    base, app = server["base"], server["app"]
    before = _jobs(app)
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/train", json={"model_type": "lgbm"}).status_code == 401  # no key
        assert client.post("/train", json={"model_type": "lgbm"}, headers={"X-API-Key": "wrong"}).status_code == 401
        for body, expected in INVALID_TRAIN_BODIES:
            response = client.post("/train", json=body, headers={"X-API-Key": KEY})
            assert response.status_code == expected, (body, response.status_code, response.text[:500])
            detail = response.json()["detail"]
            assert isinstance(detail, list) and detail and all(item["message"] for item in detail), detail
        broken = client.post("/train", content=b"{not json", headers={"X-API-Key": KEY,
                                                                     "Content-Type": "application/json"})
        assert broken.status_code == 422
        latin = client.post("/train", content='{"model_type": "é"}'.encode("latin-1"),
                            headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        assert latin.status_code == 422
    assert _jobs(app) == before  # nothing was queued


# ------------------------------------------------------------------------------------ valid inputs
# Schema-conforming bodies are almost always refused by the record validation (random counter ids,
# random timestamps), so the model code behind /predict and /monitor would barely be exercised: these
# strategies build records that pass it, with edge values (DST hours, far dates, unknown counters
# located by coordinates, extreme weather, both field-name styles, duplicates).
from hypothesis import strategies as st  # noqa: E402  (beside the strategies it builds)

DST = ["2020-10-25T02:00:00", "2021-03-28T03:00:00", "2020-10-25T01:00:00", "2021-03-28T01:00:00"]


@st.composite
def valid_records(draw: st.DrawFn, counters: list[dict[str, Any]], labelled: bool = False) -> dict[str, Any]:
    known = draw(st.booleans()) or draw(st.booleans())
    counter = draw(st.sampled_from(counters)) if known else None
    counter_id = counter["counter_id"] if counter else draw(st.sampled_from(["999999999-1", "X-42", "100"]))
    when = draw(st.one_of(st.sampled_from(DST), st.datetimes(
        min_value=__import__("datetime").datetime(2000, 1, 2), max_value=__import__("datetime").datetime(2099, 12, 30)
    ).map(lambda d: d.replace(minute=0, second=0, microsecond=0).isoformat())))
    style = draw(st.sampled_from(["timestamp", "timestamp_offset", "date", "opendata"]))
    record: dict[str, Any] = {}
    if style == "opendata":
        record["Identifiant du compteur"] = counter_id
        record["Date et heure de comptage"] = when + draw(st.sampled_from(["+01:00", "+02:00", "Z", ""]))
    else:
        record["counter_id"] = counter_id
        record["date" if style == "date" else "timestamp"] = when + ("+02:00" if style == "timestamp_offset" else "")
    if counter is None or draw(st.booleans()):
        lat = draw(st.floats(48.2, 49.1))
        lon = draw(st.floats(1.5, 3.5))
        if style == "opendata":
            record["Coordonnées géographiques"] = f"{lat},{lon}"
        else:
            record["latitude"], record["longitude"] = lat, lon
    if labelled or draw(st.booleans()):
        record["Comptage horaire" if style == "opendata" else "bike_count"] = draw(
            st.one_of(st.floats(0, 5000), st.just(0.0)))
    for name, low, high in (("temperature_c", -60, 60), ("humidity", 0, 100), ("wind_ms", 0, 100),
                            ("cloud_cover", 0, 100), ("rain_mm", 0, 500)):
        if draw(st.integers(0, 4)) == 0:
            record[name] = draw(st.floats(low, high))
    return record


@pytest.fixture(scope="module")
def known_counters(server: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=server["base"], timeout=60) as client:
        return client.get("/counters").json()["counters"]


VALID_STATS: Counter = Counter()


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=180) as client:
        response = client.post(path, json=body, headers={"X-API-Key": KEY})
    VALID_STATS[f"{path} {response.status_code}"] += 1
    assert response.status_code < 500 or (response.status_code == 503 and "internal error" not in response.text), \
        (path, body, response.status_code, response.text[:2000])
    return response


def test_valid_predictions_never_get_a_server_error(server: dict[str, Any], known_counters: list[dict[str, Any]]) -> None:
    @settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(records=st.lists(valid_records(known_counters), min_size=1, max_size=6),
           model_type=st.sampled_from([None, "lgbm", "baseline", "rf"]),
           horizon=st.sampled_from([None, "calendar", "day-ahead"]), repeat=st.booleans())
    def run(records: list[dict[str, Any]], model_type: str | None, horizon: str | None, repeat: bool) -> None:
        body: dict[str, Any] = {"records": records + (records[:1] if repeat else [])}
        if model_type:
            body["model_type"] = model_type
        if horizon:
            body["horizon"] = horizon
        response = _post(server["base"], "/predict", body)
        if response.status_code == 200:
            predictions = response.json()["predictions"]
            assert len(predictions) == len(body["records"])
            assert all(p["prediction"] == p["prediction"] for p in predictions)  # no NaN

    run()
    assert VALID_STATS["/predict 200"] >= 10, VALID_STATS  # most generated records really reached a model
    print(f"\nvalid /predict bodies: {dict(VALID_STATS)}")


def test_lifecycle_routes_with_valid_bodies(server: dict[str, Any], known_counters: list[dict[str, Any]]) -> None:
    """Promotion, rollback, evaluation and monitoring through the running server, on valid bodies."""
    base = server["base"]
    promoted = _post(base, "/promote_champion", {"model_type": "lgbm", "version": "2", "reason": "fuzz", "force": True})
    assert promoted.status_code == 200 and promoted.json()["override"] is True  # v2 is a test-mode model
    assert _post(base, "/rollback", {"model_type": "lgbm", "reason": "fuzz"}).status_code == 409  # v1: test-mode too
    assert _post(base, "/rollback", {"model_type": "lgbm", "reason": "fuzz", "force": True}).status_code == 200
    again = _post(base, "/rollback", {"model_type": "lgbm"})  # back to v1 already; v2 was rolled back from
    assert again.status_code == 409 and "no previous champion" in again.json()["detail"]
    assert _post(base, "/evaluate", {"model_type": "lgbm", "version": "2"}).status_code == 200
    assert _post(base, "/evaluate", {"model_type": "baseline"}).status_code == 200
    counter = known_counters[0]
    labelled = [{"counter_id": counter["counter_id"], "timestamp": f"2021-07-{d:02d}T{h:02d}:00:00+02:00",
                 "bike_count": float(10 * h + d)} for d in range(1, 8) for h in range(24)]
    assert _post(base, "/monitor", {"model_type": "lgbm", "records": labelled}).status_code == 200
    assert _post(base, "/monitor", {"model_type": "baseline", "window_days": 7}).status_code == 200
    assert _post(base, "/monitor", {"model_type": "rf", "window_days": 3}).status_code < 500
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.get("/reports/drift/latest.html").status_code == 200
        assert client.get("/champion_health", params={"model_type": "lgbm", "days": 90}).status_code == 200
        assert client.get("/models", params={"all_metrics": True}).status_code == 200


# ------------------------------------------------------------------------------ unconstrained strings
# What the OpenAPI document leaves open (any string, any date) and the server passes further down:
# run ids go into MLflow filter strings, dates into Europe/Paris timestamps.
def test_any_run_id_is_a_client_error(server: dict[str, Any]) -> None:
    @settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(run_id=st.one_of(st.text(min_size=1, max_size=60),
                            st.sampled_from(["x' or name='y", "abc'", "' and run_id='", "%", "\\\\", "a\"b"])),
           model_type=st.sampled_from(["lgbm", "baseline", "rf"]), path=st.sampled_from(["/promote_champion",
                                                                                          "/evaluate"]))
    def run(run_id: str, model_type: str, path: str) -> None:
        response = _post(server["base"], path, {"model_type": model_type, "run_id": run_id})
        assert response.status_code in (404, 422), (run_id, response.status_code, response.text[:500])

    run()


def test_any_day_range_of_counts_is_answered(server: dict[str, Any], known_counters: list[dict[str, Any]]) -> None:
    from datetime import timedelta

    @settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(start=st.one_of(st.dates(), st.sampled_from([__import__("datetime").date(1, 1, 1),
                                                        __import__("datetime").date(9999, 12, 1)])),
           span=st.integers(-2, 40), counter=st.one_of(st.sampled_from([c["counter_id"] for c in known_counters]),
                                                       st.text(min_size=1, max_size=40)))
    def run(start: Any, span: int, counter: str) -> None:
        try:
            end = start + timedelta(days=span)
        except OverflowError:
            return
        with httpx.Client(base_url=server["base"], timeout=60) as client:
            response = client.get("/counts", params={"counter_id": counter, "start": start.isoformat(),
                                                     "end": end.isoformat()})
        assert response.status_code in (200, 422), (start, end, response.status_code, response.text[:500])

    run()
