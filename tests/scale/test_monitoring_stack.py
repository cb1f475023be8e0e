"""The monitoring and the training jobs on the team stack: MLflow's /metrics as Prometheus scrapes
it (``--expose-prometheus``, as deploy/ runs the server), and the job rows on PostgreSQL."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import httpx
import pytest

from tests.deploy.test_monitoring import dashboard_expressions, metric_names
from tests.lifecycle.test_jobs import claim_race
from tests.scale.conftest import MlflowServer, PostgresCluster


def test_dashboards_use_metrics_the_mlflow_server_exports(mlflow_server: MlflowServer) -> None:
    if importlib.util.find_spec("prometheus_flask_exporter") is None:
        pytest.skip("prometheus-flask-exporter is not installed (pip install -e '.[monitoring]')")
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(f"{mlflow_server.url}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=30)
    response = httpx.get(f"{mlflow_server.url}/metrics", timeout=30)
    assert response.status_code == 200, response.text[:500]
    exported = {s.name for f in text_string_to_metric_families(response.text) for s in f.samples}
    used = {m for _, _, expr in dashboard_expressions() for m in metric_names(expr) if m.startswith("mlflow_")}
    assert used and used <= exported, sorted(used - exported)


def test_job_transitions_are_safe_between_replicas_on_postgresql(pg: PostgresCluster) -> None:
    import psutil

    from velocast.config import Settings
    from velocast.lifecycle.operations.jobs import JobStore, Owner, TrainSpec

    settings = Settings(audit_url=pg.url("velocast_audit"))
    spec = TrainSpec("baseline", "baseline", "dev", {}, True, None)
    first, second = JobStore(settings), JobStore(settings)  # two replicas' stores
    job = first.create(spec, runner="api", owner=Owner.current())
    assert second.get(job.job_id).state == "queued"
    assert claim_race(settings, job.job_id, 6) == [False] * 5 + [True]
    assert first.finish(job.job_id, {"model_version": "1"}) and second.get(job.job_id).result == {"model_version": "1"}

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = Owner(Owner.current().host, child.pid, psutil.Process(child.pid).create_time())
    child.wait()
    orphan = first.create(spec, runner="api", owner=dead)
    assert [j.job_id for j in second.fail_orphans(lease_seconds=300)] == [orphan.job_id]
    assert first.get(orphan.job_id).error.startswith("the server restarted before the job ran")
