"""velocast on the team stack, configured by environment variables only.

MLflow server on PostgreSQL with artifacts on S3 (moto), summary.json on ``s3://``, the audit log
on PostgreSQL: train, register, promote, load ``models:/…@champion`` through the server, serve
``POST /predict`` with the champion, roll back — then every store is checked directly, without
velocast: the registry's aliases through a plain MLflow client, summary.json with boto3, the audit
rows with SQLAlchemy, the model files in the bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.scale.conftest import AWS_ENV, BUCKET, MlflowServer, PostgresCluster, S3Server


def audit_rows(pg: PostgresCluster, after_id: int = 0) -> list[dict]:
    """Rows of the velocast audit log in PostgreSQL, read with SQLAlchemy (not velocast)."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg.url("velocast_audit"))
    try:
        with engine.connect() as con:
            if not sa.inspect(con).has_table("audit_log"):
                return []
            rows = con.execute(sa.text("SELECT * FROM audit_log WHERE id > :after ORDER BY id"),
                               {"after": after_id}).mappings().all()
    finally:
        engine.dispose()
    return [dict(r) for r in rows]


def last_audit_id(pg: PostgresCluster) -> int:
    rows = audit_rows(pg)
    return rows[-1]["id"] if rows else 0


def read_summary(s3: S3Server, uri: str) -> list[dict]:
    """summary.json straight from the bucket with boto3."""
    key = uri.removeprefix(f"s3://{BUCKET}/")
    return json.loads(s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def records(subset_file: Path, day: str = "2021-08-02", n: int = 6) -> list[dict]:
    rows = pd.read_parquet(subset_file)
    rows = rows[rows["date"].dt.strftime("%Y-%m-%d") == day].sort_values(["date", "counter_id"]).head(n)
    return [{"counter_id": str(r.counter_id), "date": r.date.isoformat(sep=" "), "bike_count": float(r.bike_count)}
            for r in rows.itertuples(index=False)]


def test_train_promote_serve_and_roll_back_through_the_stack(stack_env: dict[str, str], pg: PostgresCluster,
                                                            s3: S3Server, mlflow_server: MlflowServer,
                                                            real_subset_file: Path) -> None:
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from velocast.api import create_app
    from velocast.lifecycle.decisions.promotion import promote, rollback
    from velocast.lifecycle.training.train import train
    from velocast.tracking.registry import Registry

    audit_start = last_audit_id(pg)
    earlier = Registry().champion("lgbm")  # the server is shared: another test may have left a champion
    c0 = earlier.version if earlier else None
    base = train("baseline", model_test=True)
    v1 = train("lgbm", model_test=True, hyperparams={"n_estimators": 40})
    promote("lgbm", version=v1.model_version, reason="first champion on the stack", force=True)
    v2 = train("lgbm", model_test=True, hyperparams={"n_estimators": 60, "num_leaves": 15}, seed=1)
    promote("lgbm", version=v2.model_version, reason="second champion on the stack", force=True)

    # the registry lives on the server: a plain client of the server sees the aliases
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    assert client.get_model_version_by_alias("bike-traffic-lgbm", "champion").version == v2.model_version
    assert client.get_model_version_by_alias("bike-traffic-lgbm", "previous-champion").version == v1.model_version
    assert client.get_run(v2.run_id).data.metrics["test_baseline_rmse"] == pytest.approx(v2.metrics_baseline["rmse"])

    # the model files are in the bucket, where summary.json's model_uri says
    keys = set(s3.keys("mlartifacts/mlflow/"))
    for result in (base, v1, v2):
        assert result.model_uri.startswith(f"s3://{BUCKET}/mlartifacts/mlflow/"), result.model_uri
        prefix = result.model_uri.removeprefix(f"s3://{BUCKET}/")
        assert {f"{prefix}/MLmodel", f"{prefix}/model.skops"} <= keys, sorted(k for k in keys if prefix in k)
    assert any(k.endswith("plots/feature_importance.png") for k in keys)  # run artifacts too

    # models:/…@champion resolves through the server and downloads from S3
    champion = mlflow.sklearn.load_model("models:/bike-traffic-lgbm@champion")
    assert champion.named_steps["features"].horizon == v2.horizon

    # the API serves that champion
    posted = records(real_subset_file)
    with TestClient(create_app()) as api:
        response = api.post("/predict", json={"records": posted, "model_type": "lgbm"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["version"] == v2.model_version and body["model"]["champion"] is True
        assert len(body["predictions"]) == len(posted) and all(p["prediction"] >= 0 for p in body["predictions"])

        back = rollback("lgbm", reason="rollback on the stack", force=True)  # v1: test-mode
        assert back.to_version == v1.model_version

    assert client.get_model_version_by_alias("bike-traffic-lgbm", "champion").version == v1.model_version
    if c0 is None:  # nothing was champion before v1
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias("bike-traffic-lgbm", "previous-champion")
    else:  # the champion before v1 is next in line again
        assert client.get_model_version_by_alias("bike-traffic-lgbm", "previous-champion").version == c0
    with TestClient(create_app()) as api:  # a fresh server process would serve v1 now
        body = api.post("/predict", json={"records": posted}).json()
        assert body["model"]["version"] == v1.model_version and body["model"]["champion"] is True

    # summary.json on S3: every run, the champion flag on v1 only
    entries = {e["run_id"]: e for e in read_summary(s3, stack_env["VELOCAST_SUMMARY_URI"])}
    assert set(entries) == {base.run_id, v1.run_id, v2.run_id}
    assert [entries[r.run_id]["is_champion"] for r in (base, v1, v2)] == [False, True, False]
    assert entries[v2.run_id]["model_uri"] == v2.model_uri and entries[v2.run_id]["model_version"] == v2.model_version

    # the audit log in PostgreSQL: both promotions and the rollback, in order
    rows = [r for r in audit_rows(pg, audit_start) if r["model_type"] == "lgbm"]
    assert [(r["event"], r["from_version"], r["to_version"]) for r in rows] == [
        ("promotion", c0, v1.model_version), ("promotion", v1.model_version, v2.model_version),
        ("rollback", v2.model_version, v1.model_version)]
    assert json.loads(rows[-1]["reasons"]) == [  # v1 is a test-mode model: brought back as an override
        "rollback on the stack",
        f"override (--force): bike-traffic-lgbm version {v1.model_version} is a test-mode model (trained on a small "
        "sample)"]

    # a consumer with S3 credentials only (no tracking server) loads the champion from summary.json
    code = ("import sys; from velocast.tracking.summary import load_best_model; "
            "m = load_best_model('lgbm'); print(type(m).__name__, m.named_steps['features'].horizon)")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **AWS_ENV,
           "MLFLOW_S3_ENDPOINT_URL": stack_env["MLFLOW_S3_ENDPOINT_URL"],
           "VELOCAST_SUMMARY_URI": stack_env["VELOCAST_SUMMARY_URI"], "VELOCAST_HOME": os.environ["VELOCAST_HOME"],
           "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens there: the server is not needed
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["Pipeline", v1.horizon]
