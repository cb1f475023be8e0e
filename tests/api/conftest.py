"""Fixtures of the API tests: homes copied from the real-data template, trained once per package.

``model_home`` holds, on the real subset: ``lgbm`` v1 (champion, promoted with ``force``) and v2
(registered), both small test-mode models, and ``baseline`` v1 (a full model, passing the baseline
gate) without a champion. ``empty_home`` has the data and no model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.conftest import OPENDATA_SAMPLE, subset_rows_since
from velocast.api import create_app
from velocast.api.config import ApiConfig
from velocast.config import Settings

KEY = "test-key-0123456789"
HEADERS = {"X-API-Key": KEY}
ENV_NAMES = ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL", "VELOCAST_API_KEY",
             "VELOCAST_WEBHOOK_URL", "VELOCAST_API_URL", "VELOCAST_EVENTS_FILE")


@pytest.fixture(scope="package", autouse=True)
def _restore_tracking_env() -> Iterator[None]:
    """Leave the environment as found: every ``Registry`` runs ``mlflow.set_tracking_uri``, which exports
    MLFLOW_TRACKING_URI, also from the apps' threads and module-scoped fixtures (outside any test's
    monkeypatch); later modules (and their subprocesses) must not inherit this package's homes."""
    before = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "VELOCAST_HOME")}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def settings_for(home: Path, api_key: str | None = None) -> Settings:
    """Settings of ``home`` alone: ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, which
    Settings would otherwise pick up from an earlier test's home."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        return Settings(home=home, api_key=api_key)


def _copy_home(template: Path, factory: pytest.TempPathFactory, name: str) -> Path:
    home = factory.mktemp(name) / "home"
    shutil.copytree(template, home)
    return home


@pytest.fixture(scope="package")
def empty_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_home(real_store_template, tmp_path_factory, "api-empty")


@pytest.fixture(scope="package")
def model_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from velocast.lifecycle.promotion import promote
    from velocast.lifecycle.train import train

    home = _copy_home(real_store_template, tmp_path_factory, "api-models")
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        mp.setenv("VELOCAST_HOME", str(home))
        settings = settings_for(home)
        v1 = train("lgbm", model_test=True, hyperparams={"n_estimators": 40}, settings=settings)
        promote("lgbm", version=v1.model_version, reason="first champion (a test-mode model: forced)", force=True,
                settings=settings)
        v2 = train("lgbm", model_test=True, hyperparams={"n_estimators": 60, "num_leaves": 15}, seed=1,
                   settings=settings)
        b1 = train("baseline", settings=settings)  # a full model: it may stand in for the missing champion
    return {"home": home, "lgbm_v1": v1.model_version, "lgbm_v2": v2.model_version, "baseline_v1": b1.model_version}


def client_for(home: Path, api_key: str | None = KEY, **config: Any) -> TestClient:
    settings = settings_for(home, api_key)
    return TestClient(create_app(settings, config=ApiConfig(**{"model_refresh_seconds": 0.3, **config})))


@pytest.fixture(scope="module")
def client(model_home: dict[str, Any]) -> Iterator[TestClient]:
    with client_for(model_home["home"]) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def empty_client(empty_home: Path) -> Iterator[TestClient]:
    with client_for(empty_home) as test_client:
        yield test_client


@pytest.fixture
def at_model_home(model_home: dict[str, Any], _isolated_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Point the environment (CLI, library defaults) at the trained home for one test."""
    monkeypatch.setenv("VELOCAST_HOME", str(model_home["home"]))
    return model_home


@pytest.fixture(scope="session")
def counter_rows(real_subset_file: Path) -> pd.DataFrame:
    """Real rows of the subset's counters after the split cutoff (the tidy file's columns)."""
    return subset_rows_since(real_subset_file, "2021-06-01")


def tidy_records(rows: pd.DataFrame, with_counts: bool = True) -> list[dict[str, Any]]:
    """Records as a client would post rows of the tidy file (``date`` naive UTC)."""
    out = []
    for row in rows.itertuples(index=False):
        record = {"counter_id": row.counter_id, "date": row.date.isoformat(sep=" "),
                  "counter_name": str(row.counter_name), "latitude": float(row.latitude),
                  "longitude": float(row.longitude)}
        if with_counts:
            record["bike_count"] = float(row.bike_count)
        out.append(record)
    return out


@pytest.fixture(scope="session")
def opendata_records() -> list[dict[str, Any]]:
    """The rows of the open-data export sample, as strings, exactly as read from the CSV."""
    frame = pd.read_csv(OPENDATA_SAMPLE, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return [{k: v for k, v in row.items() if v != ""} for row in frame.to_dict(orient="records")]
