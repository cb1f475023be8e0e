"""The OpenAPI examples of /predict work as given on the real data, and timestamps are whole Paris hours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from tests.api.conftest import settings_for
from velocast.api import create_app
from velocast.api.config import ApiConfig
from velocast.data import store
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.training.train import train

SEBASTOPOL = ("100057445-103057445", "100057445-104057445")


def _client(real_home: Path, real_counts: pd.DataFrame) -> TestClient:
    """The real subset plus the two Sébastopol counters of the examples, with a small champion."""
    rows = real_counts[real_counts["counter_id"].astype(str).isin(SEBASTOPOL)].rename(columns={"date": "timestamp"})
    rows = rows.assign(counter_id=rows["counter_id"].astype(str), site_id=rows["site_id"].astype(str),
                       counter_name=rows["counter_name"].astype(str), site_name=rows["site_name"].astype(str),
                       timestamp=pd.to_datetime(rows["timestamp"]).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"),
                       installation_date=pd.to_datetime(rows["counter_installation_date"]))
    settings = settings_for(real_home)
    store.upsert_counts(rows[["counter_id", "counter_name", "site_id", "site_name", "timestamp", "bike_count",
                              "latitude", "longitude", "installation_date"]], settings)
    result = train("lgbm", model_test=True, settings=settings)
    promote("lgbm", version=result.model_version, reason="test", force=True, settings=settings)
    return TestClient(create_app(settings, config=ApiConfig(model_refresh_seconds=0)))


def test_openapi_examples_of_predict_work_as_given(real_home: Path, real_counts: pd.DataFrame) -> None:
    client = _client(real_home, real_counts)
    spec = client.get("/openapi.json").json()
    examples = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"tidy", "opendata"}
    for name, example in examples.items():
        response = client.post("/predict", json=example["value"])
        assert response.status_code == 200, (name, response.text)
        predictions = response.json()["predictions"]
        assert len(predictions) == len(example["value"]["records"])
        for item in predictions:
            assert item["prediction"] > 0
            if item["counter_id"] in SEBASTOPOL:  # a known counter the day after the last stored day
                assert not any(w.startswith(("history incomplete", "beyond", "no history")) for w in item["warnings"])
    tidy = client.post("/predict", json=examples["tidy"]["value"]).json()["predictions"]
    assert tidy[1]["weather"] == "given" and tidy[0]["weather"] == "missing"
    assert any("unknown to the model" in w for w in tidy[2]["warnings"])


def test_predict_refuses_hours_that_are_not_whole_paris_hours(real_home: Path, real_counts: pd.DataFrame) -> None:
    client = _client(real_home, real_counts)
    for stamp in ("2021-08-10T10:00:00+05:30", "2021-08-10T08:30:00+02:00"):
        response = client.post("/predict", json={"records": [{"counter_id": SEBASTOPOL[0], "timestamp": stamp}]})
        assert response.status_code == 422, stamp
        assert "whole hour of Paris time" in response.text
    ok = client.post("/predict", json={"records": [{"counter_id": SEBASTOPOL[0],
                                                    "timestamp": "2021-08-10T06:00:00+00:00"}]})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["timestamp"] == "2021-08-10T08:00:00+02:00"
    autumn = client.post("/predict", json={"records": [{"counter_id": SEBASTOPOL[0], "timestamp": "2021-10-31T02:00:00"}]})
    assert autumn.status_code == 200
    item = autumn.json()["predictions"][0]
    assert item["timestamp"] == "2021-10-31T02:00:00+02:00"
    assert any("occurs twice in Paris" in w for w in item["warnings"])
