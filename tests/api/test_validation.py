"""Malformed requests: every one is a 422 (or 413) naming the record's index and the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import HEADERS

KNOWN = "100047547-104047547"  # a counter of the real subset in the store
GOOD = {"counter_id": KNOWN, "timestamp": "2021-08-02T08:00:00+02:00"}
DROP = object()


def rec(**changes: Any) -> dict[str, Any]:
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


def body(*records: Any, **extra: Any) -> dict[str, Any]:
    return {"records": list(records), **extra}


def raw(text: str) -> bytes:
    return text.encode("utf-8")


GOOD_JSON = json.dumps(GOOD)

# (case, request body (dict = JSON; bytes = raw, sent as application/json), index, field)
CASES: list[tuple[str, Any, int | None, str]] = [
    ("missing counter_id", body(GOOD, rec(counter_id=DROP)), 1, "counter_id"),
    ("missing timestamp", body(rec(timestamp=DROP)), 0, "timestamp"),
    ("missing open-data timestamp", body({"Identifiant du compteur": KNOWN, "Comptage horaire": 3}), 0, "timestamp"),
    ("counter_id of the wrong type", body(rec(counter_id=["a", "b"])), 0, "counter_id"),
    ("count that is not a number", body(rec(bike_count="many")), 0, "bike_count"),
    ("count that is a boolean", body(rec(bike_count=True)), 0, "bike_count"),
    ("timestamp that is a number", body(rec(timestamp=1627884000)), 0, "timestamp"),
    ("NaN count", raw('{"records": [' + GOOD_JSON.replace("}", ', "bike_count": NaN}') + "]}"), 0, "bike_count"),
    ("infinite latitude", raw('{"records": [' + GOOD_JSON.replace("}", ', "latitude": Infinity}') + "]}"), 0,
     "latitude"),
    ("unparseable timestamp", body(GOOD, rec(timestamp="yesterday at 8")), 1, "timestamp"),
    ("impossible date", body(rec(timestamp="2021-02-30T08:00:00+01:00")), 0, "timestamp"),
    ("date far in the future", body(rec(timestamp="2150-06-01T08:00:00+02:00")), 0, "timestamp"),
    ("date before any counter", body(rec(timestamp="1990-06-01T08:00:00+02:00")), 0, "timestamp"),
    ("date beyond the representable range", body(rec(timestamp="3000-01-01T00:00:00+01:00")), 0, "timestamp"),
    ("open-data date out of range", body({"Identifiant du compteur": KNOWN,
                                          "Date et heure de comptage": "2150-01-01T00:00:00+01:00"}), 0,
     "Date et heure de comptage"),
    ("not a whole hour", body(rec(timestamp="2021-08-02T08:30:00+02:00")), 0, "timestamp"),
    ("local time in the DST gap", body(rec(timestamp="2021-03-28T02:00:00")), 0, "timestamp"),
    ("negative count", body(GOOD, GOOD, rec(timestamp="2021-08-02T09:00:00+02:00", bike_count=-4)), 2,
     "bike_count"),
    ("negative open-data count", body({"Identifiant du compteur": KNOWN, "Comptage horaire": "-1",
                                       "Date et heure de comptage": "2021-08-02T08:00:00+02:00"}), 0,
     "Comptage horaire"),
    ("coordinates outside Île-de-France", body(rec(counter_id="new-1", latitude=43.30, longitude=5.40)), 0,
     "latitude"),
    ("unreadable open-data coordinates", body({"Identifiant du compteur": "new-2", "Coordonnées géographiques": "north",
                                               "Date et heure de comptage": "2021-08-02T08:00:00+02:00"}), 0,
     "Coordonnées géographiques"),
    ("unknown counter without coordinates", body(rec(counter_id="new-3")), 0, "latitude"),
    ("blank counter_id", body(rec(counter_id="   ")), 0, "counter_id"),
    ("the same field under both names", body(rec(**{"Identifiant du compteur": KNOWN})), 0,
     "Identifiant du compteur"),
    ("conflicting duplicates", body(rec(bike_count=3), rec(bike_count=4)), 0, "bike_count"),
    ("humidity above 100%", body(rec(humidity=150)), 0, "humidity"),
    ("string too long", body(rec(counter_name="x" * 5000)), 0, "counter_name"),
    ("unknown field in a record", body(rec(colour="red")), 0, "colour"),
    ("record that is not an object", body(GOOD, "a string"), 1, None),
    ("empty list", body(), None, "records"),
    ("records that is not a list", {"records": GOOD}, None, "records"),
    ("no records at all", {"model_type": "lgbm"}, None, "records"),
    ("unknown model type", body(GOOD, model_type="xgboost"), None, "model_type"),
    ("unknown horizon", body(GOOD, horizon="next-week"), None, "horizon"),
    ("unknown top-level field", body(GOOD, model="lgbm"), None, "model"),
    ("body that is not JSON", raw("records=1"), None, "body"),
    ("JSON with trailing garbage", raw(json.dumps(body(GOOD)) + " garbage"), None, "body"),
    ("body that is a JSON list", raw(json.dumps([GOOD])), None, "body"),
    ("body that is not UTF-8", b'{"records": [{"counter_id": "\xff\xfe"}]}', None, "body"),
]


@pytest.mark.parametrize(("case", "payload", "index", "field"), CASES, ids=[c[0] for c in CASES])
def test_malformed_predict_request_is_a_422_naming_index_and_field(
        empty_client: TestClient, case: str, payload: Any, index: int | None, field: str | None) -> None:
    if isinstance(payload, bytes):
        response = empty_client.post("/predict", content=payload, headers={"Content-Type": "application/json"})
    else:
        response = empty_client.post("/predict", json=payload)
    assert response.status_code == 422, (case, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, response.text
    matching = [d for d in detail if d["index"] == index and d["field"] == field]
    assert matching, f"{case}: no error with index={index} field={field}: {detail}"
    message = matching[0]["message"]
    assert len(message) > 15
    if index is not None:
        assert message.startswith(f"record {index}: ")
        assert matching[0]["loc"][:2] == ["records", index]
    if field not in (None, "body"):
        assert field in message or field in matching[0]["loc"], message


def test_the_messages_say_what_is_expected(empty_client: TestClient) -> None:
    detail = empty_client.post("/predict", json=body()).json()["detail"]
    assert "give at least one record" in detail[0]["message"]
    detail = empty_client.post("/predict", json=body(rec(timestamp="2150-06-01T08:00:00+02:00"))).json()["detail"]
    assert "expected an hour between 2000-01-01 and 2099-12-31" in detail[0]["message"]
    detail = empty_client.post("/predict", json=body(rec(bike_count=-4))).json()["detail"]
    assert detail[0]["reason"] == "negative bike_count" and "expected a count >= 0" in detail[0]["message"]
    detail = empty_client.post("/predict", json=body(rec(counter_id="new", latitude=43.3, longitude=5.4))).json()["detail"]
    assert "Île-de-France" in detail[0]["reason"] and "expected latitude in" in detail[0]["message"]
    detail = empty_client.post("/predict", json=body(rec(timestamp=DROP))).json()["detail"]
    assert "'timestamp' or 'date' or 'Date et heure de comptage'" in detail[0]["message"]
    detail = empty_client.post("/predict", json=body(GOOD, model_type="xgboost")).json()["detail"]
    assert "'lgbm'" in detail[0]["message"] and "'xgboost'" in detail[0]["message"]


def test_every_bad_record_is_reported_at_once(empty_client: TestClient) -> None:
    records = [GOOD, rec(bike_count=-1), rec(timestamp="2021-08-02T10:00:00+02:00"), rec(timestamp="soon"),
               rec(counter_id="new", timestamp="2021-08-02T11:00:00+02:00", latitude=10.0, longitude=2.3)]
    detail = empty_client.post("/predict", json=body(*records)).json()["detail"]
    assert [(d["index"], d["field"]) for d in detail] == [(1, "bike_count"), (3, "timestamp"), (4, "latitude")]


def test_too_many_records(empty_client: TestClient) -> None:
    records = [rec(timestamp=f"2021-08-02T{h % 24:02d}:00:00+02:00") for h in range(20_001)]
    response = empty_client.post("/predict", json=body(*records))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["field"] == "records" and "at most 20,000" in detail[0]["message"]


def test_wrong_content_type_is_a_422(empty_client: TestClient) -> None:
    response = empty_client.post("/predict", content=json.dumps(body(GOOD)), headers={"Content-Type": "text/plain"})
    assert response.status_code == 422
    assert "application/json" in response.json()["detail"][0]["message"]


def test_a_check_of_the_whole_body_names_its_field(empty_client: TestClient) -> None:
    response = empty_client.post("/promote_champion", json={"model_type": "lgbm", "version": "1", "run_id": "abc"},
                                 headers=HEADERS)
    assert response.status_code == 422
    item = response.json()["detail"][0]
    assert item["field"] == "version" and item["loc"] == ["version"] and "exactly one of" in item["message"]


def test_huge_payloads_are_refused_with_413(empty_client: TestClient) -> None:
    huge = b'{"records": [' + b",".join([json.dumps(GOOD).encode()] * 400_000) + b"]}"
    assert len(huge) > 20 * 1024 * 1024
    response = empty_client.post("/predict", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "VELOCAST_API_MAX_BODY_MB" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit applies to what is streamed
        for _ in range(22):
            yield b" " * (1024 * 1024)

    response = empty_client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
