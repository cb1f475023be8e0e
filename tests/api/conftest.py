"""Fixtures of the API tests: homes copied from the real-data template, trained once per package.

``model_home`` holds, on the real subset and its weather (also stored as perfect forecasts): ``lgbm`` v1 (champion, promoted with ``force``) and v2
(registered), both small test-mode models, and ``baseline`` v1 (a full model, passing the baseline
gate) without a champion. ``empty_home`` has the data and no model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.conftest import OPENDATA_SAMPLE, subset_rows_since, wait_for_http
from velocast.api import create_app
from velocast.api.config import ApiConfig
from velocast.config import Settings

KEY = "test-key-0123456789"
HEADERS = {"X-API-Key": KEY}
ENV_NAMES = ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL", "VELOCAST_API_KEY",
             "VELOCAST_WEBHOOK_URL", "VELOCAST_API_URL", "VELOCAST_EVENTS_FILE",
             "VELOCAST_DASK_SCHEDULER", "VELOCAST_STORE_URI")


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


def settings_for(home: Path, api_key: str | None = None, **fields: Any) -> Settings:
    """Settings of ``home`` alone: ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, which
    Settings would otherwise pick up from an earlier test's home."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        return Settings(home=home, api_key=api_key, **fields)


@contextmanager
def isolated_home(home: Path) -> Iterator[Settings]:
    """The environment pointed at ``home`` alone (no outside tracking server, audit URL...): its Settings."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        mp.setenv("VELOCAST_HOME", str(home))
        yield settings_for(home)


def _copy_home(template: Path, factory: pytest.TempPathFactory, name: str) -> Path:
    home = factory.mktemp(name) / "home"
    shutil.copytree(template, home)
    return home


@pytest.fixture(scope="package")
def empty_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_home(real_store_template, tmp_path_factory, "api-empty")


@pytest.fixture(scope="package")
def model_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    from tests.conftest import REAL_WEATHER
    from velocast.data.weather_forecast import ingest_observed_as_forecast

    home = _copy_home(real_store_template, tmp_path_factory, "api-models")
    with isolated_home(home) as settings:
        # a forecast for every served day (the observations, as perfect forecasts): no weather warnings
        ingest_observed_as_forecast(REAL_WEATHER, settings=settings)
        v1 = train("lgbm", model_test=True, hyperparams={"n_estimators": 40}, settings=settings)
        promote("lgbm", version=v1.model_version, reason="first champion (a test-mode model: forced)", force=True,
                settings=settings)
        v2 = train("lgbm", model_test=True, hyperparams={"n_estimators": 60, "num_leaves": 15}, seed=1,
                   settings=settings)
        b1 = train("baseline", settings=settings)  # a full model: it may stand in for the missing champion
    return {"home": home, "lgbm_v1": v1.model_version, "lgbm_v2": v2.model_version, "baseline_v1": b1.model_version}


def client_for(home: Path, api_key: str | None = KEY, settings: dict[str, Any] | None = None,
               **config: Any) -> TestClient:
    """A TestClient of a new app over ``home`` (``settings``: more Settings fields; ``config``: ApiConfig)."""
    settings = settings_for(home, api_key, **(settings or {}))
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def velocast_server(home: Path, log_path: Path, port: int | None = None, args: tuple[str, ...] = (),
                    **env_vars: str) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """``velocast serve [args]`` on 127.0.0.1 over ``home`` (a subprocess), once it answers /health; stopped after."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VELOCAST_API_KEY", "MLFLOW_TRACKING_URI")}
    env.update(VELOCAST_HOME=str(home), VELOCAST_API_MODEL_REFRESH_SECONDS="0.5", **env_vars)
    with open(log_path, "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "velocast.cli", "serve", "--host", "127.0.0.1",
                                   "--port", str(port), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, log_path, "velocast serve", timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield server, http
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
