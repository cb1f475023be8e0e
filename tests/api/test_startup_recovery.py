"""The API's start-up repairs what killed processes left, off the request path: a training killed
mid-way (its MLflow run RUNNING, its version pending) is FAILED and removed, not RUNNING forever."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from fastapi.testclient import TestClient

from tests.api.conftest import KEY, settings_for
from velocast.api import create_app
from velocast.tracking.registry import Registry


def _runs(settings) -> dict[str, str]:
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    return {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}


def test_a_killed_training_is_failed_at_the_next_api_start(real_home: Path) -> None:
    env = {**os.environ, "VELOCAST_FAULT": "train:after_register"}
    killed = subprocess.run([sys.executable, "-m", "velocast.cli", "train", "--model-type", "baseline", "--model-test"],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == 137, killed.stderr[-2000:]
    settings = settings_for(real_home, KEY)
    assert list(_runs(settings).values()) == ["RUNNING"]
    assert [v.complete for v in Registry(settings).versions("baseline", include_pending=True)] == [False]
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200  # served while the repair runs in its thread
        deadline = time.monotonic() + 60
        while "RUNNING" in _runs(settings).values() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(_runs(settings).values()) == ["FAILED"]
        assert Registry(settings).versions("baseline", include_pending=True) == []  # the half-registered version
        assert client.get("/models").json()["models"]["baseline"]["versions"] == []
