"""Service routes on a home without any model: health, readiness, keys, OpenAPI, CORS."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.api.conftest import HEADERS, client_for

RECORD = {"counter_id": "100047547-104047547", "timestamp": "2021-08-02T08:00:00+02:00"}
MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
READ_ONLY_POSTS = {"/predict"}  # a POST for its body only: it changes nothing and needs no key
# valid bodies of the mutating routes (the key check comes before the body is read)
MUTATING = {
    "/train": {"model_type": "baseline", "test_mode": True},
    "/evaluate": {"model_type": "lgbm"},
    "/monitor": {"model_type": "lgbm"},
    "/promote_champion": {"model_type": "lgbm", "version": "1"},
    "/rollback": {"model_type": "lgbm"},
}


def test_health_is_always_ok_and_ready_is_503_without_a_model(empty_client: TestClient) -> None:
    response = empty_client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    response = empty_client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and body["model_type"] == "lgbm"
    assert "no lgbm model is registered yet" in body["reason"]


def test_predict_without_any_model_is_503_after_validation(empty_client: TestClient) -> None:
    response = empty_client.post("/predict", json={"records": [RECORD]})
    assert response.status_code == 503
    assert "velocast train --model-type lgbm" in response.json()["detail"]
    assert empty_client.post("/predict", json={"records": []}).status_code == 422  # validation comes first


def test_models_lists_every_type_even_without_versions(empty_client: TestClient) -> None:
    models = empty_client.get("/models").json()["models"]
    assert set(models) == {"lgbm", "rf", "nn", "rf_class", "baseline"}
    assert all(m["champion"] is None and m["versions"] == [] and m["served"] is None for m in models.values())
    assert models["rf"]["registered_name"] == "bike-traffic-rf" and models["rf_class"]["task"] == "classification"


def _mutating_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app that changes something: enumerated, not listed by hand."""
    return sorted((method, route.path) for route in app.routes if isinstance(route, APIRoute)
                  for method in route.methods & MUTATING_METHODS if route.path not in READ_ONLY_POSTS)


def test_every_mutating_route_needs_the_key(empty_client: TestClient) -> None:
    routes = _mutating_routes(empty_client.app)
    assert {("POST", p) for p in ("/train", "/evaluate", "/monitor", "/promote_champion", "/rollback")} <= set(routes)
    assert READ_ONLY_POSTS <= {r.path for r in empty_client.app.routes if isinstance(r, APIRoute)}
    for method, path in routes:
        body = MUTATING.get(path, {})
        response = empty_client.request(method, path, json=body)
        assert response.status_code == 401 and "missing X-API-Key" in response.json()["detail"], (method, path)
        assert response.headers["www-authenticate"] == "X-API-Key"
        response = empty_client.request(method, path, json=body, headers={"X-API-Key": "wrong"})
        assert response.status_code == 401 and "invalid X-API-Key" in response.json()["detail"], (method, path)


def test_the_right_key_passes(empty_client: TestClient) -> None:
    response = empty_client.post("/promote_champion", json=MUTATING["/promote_champion"], headers=HEADERS)
    assert response.status_code == 404 and "has no version 1" in response.json()["detail"]
    response = empty_client.post("/rollback", json=MUTATING["/rollback"], headers=HEADERS)
    assert response.status_code == 409 and "no previous champion" in response.json()["detail"]


def test_without_a_configured_key_mutating_routes_are_disabled(empty_home: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="velocast.api")
    with client_for(empty_home, api_key=None) as client:
        for method, path in _mutating_routes(client.app):
            for headers in ({}, HEADERS):
                response = client.request(method, path, json=MUTATING.get(path, {}), headers=headers)
                assert response.status_code == 503, path
                assert response.json()["detail"] == "mutating routes are disabled: set VELOCAST_API_KEY"
        assert client.get("/health").status_code == 200
        assert client.get("/models").status_code == 200
        assert client.get("/audit").status_code == 200
    assert any("VELOCAST_API_KEY is not set" in r.getMessage() for r in caplog.records)


def test_openapi_is_complete_with_examples(empty_client: TestClient) -> None:
    spec = empty_client.get("/openapi.json").json()
    assert spec["info"]["title"] == "velocast API" and spec["info"]["version"] == "0.1.0"
    assert "X-API-Key" in spec["info"]["description"]
    paths = set(spec["paths"])
    assert {"/health", "/ready", "/models", "/predict", "/train", "/jobs/{job_id}", "/evaluate", "/monitor",
            "/promote_champion", "/rollback", "/audit", "/metrics", "/reports/drift/{name}.html"} <= paths
    schemas = spec["components"]["schemas"]
    for name in ("PredictRequest", "PredictResponse", "TrainRequest", "PromoteRequest", "MonitorRequest",
                 "ErrorItem"):
        assert schemas[name].get("examples"), name
    record = schemas["PredictRecord"]["properties"]
    assert {"counter_id", "timestamp", "date", "Identifiant du compteur", "Date et heure de comptage",
            "Coordonnées géographiques", "bike_count", "temperature_c"} <= set(record)
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]["application/json"]["examples"]) == {"tidy", "opendata"}
    assert predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ValidationErrorResponse")
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert "security" in spec["paths"]["/train"]["post"] and "security" not in predict
    assert empty_client.get("/docs").status_code == 200


def test_cors_is_off_by_default_and_on_for_listed_origins(empty_client: TestClient, empty_home: Path) -> None:
    preflight = {"Origin": "https://planner.example", "Access-Control-Request-Method": "POST"}
    response = empty_client.get("/health", headers={"Origin": "https://planner.example"})
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in empty_client.options("/predict", headers=preflight).headers
    with client_for(empty_home, cors_origins=("https://planner.example",)) as client:
        response = client.options("/predict", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://planner.example"
        response = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in response.headers


def test_a_smaller_body_limit_is_configurable(empty_home: Path) -> None:
    with client_for(empty_home, max_body_bytes=1000) as client:
        response = client.post("/predict", json={"records": [RECORD] * 30})
        assert response.status_code == 413 and "the limit of 1,000 bytes" in response.json()["detail"]
        assert client.post("/predict", json={"records": [{"counter_id": "x"}]}).status_code == 422
        streamed = client.post("/predict", content=iter([b'{"records": [' + b" " * 1500, b"]}"]),
                               headers={"Content-Type": "application/json"})  # no declared size
        assert streamed.status_code == 413
        assert streamed.json()["detail"].startswith("request body too large: more than the limit of 1,000 bytes")


def test_the_documented_examples_are_valid_requests() -> None:
    from velocast.api import schemas
    from velocast.models import MODEL_TYPES

    for model in (schemas.PredictRequest, schemas.TrainRequest, schemas.EvaluateRequest, schemas.MonitorRequest,
                  schemas.PromoteRequest, schemas.RollbackRequest):
        for example in model.model_config["json_schema_extra"]["examples"]:
            model.model_validate(example)
    assert schemas.ModelType.__args__ == MODEL_TYPES


def test_a_drift_check_on_an_empty_store_is_a_409_saying_so(home: Path) -> None:
    with client_for(home) as client:
        response = client.post("/monitor", json={"model_type": "lgbm"}, headers=HEADERS)
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == "the store is empty: ingest or generate data first (velocast data ingest)"
