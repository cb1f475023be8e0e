"""The weekly DAG with Airflow's metadata in PostgreSQL and velocast on the stack.

``airflow db migrate`` then ``airflow dags test monitor_and_fine_tune -c '{…}'``, both as
subprocesses with ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://…/airflow`` and the
velocast stack variables; the run's state is read from Airflow's tables in PostgreSQL, the
decision from the velocast audit log in PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale.conftest import PostgresCluster
from tests.scale.test_stack import audit_rows, last_audit_id

if importlib.util.find_spec("airflow") is None:  # Airflow only runs in subprocesses
    pytest.skip("Airflow is an optional extra: pip install -e '.[airflow]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@pytest.fixture(scope="module")
def airflow_vars(pg: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An AIRFLOW_HOME whose metadata database is ``airflow`` on the test cluster, migrated."""
    home = tmp_path_factory.mktemp("airflow-pg")
    variables = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                 "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                 "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow")}
    if importlib.util.find_spec("asyncpg") is None:
        # Airflow 3 also opens an async engine (postgresql+asyncpg, from apache-airflow[postgres]);
        # without asyncpg installed, an empty async URL turns that engine off (`dags test` needs none)
        variables["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = ""
    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env={**os.environ, **variables},
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return variables


def dag_runs(pg: PostgresCluster, dag_id: str) -> list[dict]:
    """Airflow's own record of the runs and their task states, read from PostgreSQL."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg.url("airflow"))
    try:
        with engine.connect() as con:
            runs = con.execute(sa.text("SELECT run_id, state, conf FROM dag_run WHERE dag_id = :d ORDER BY id"),
                               {"d": dag_id}).mappings().all()
            out = []
            for run in runs:
                tasks = con.execute(sa.text("SELECT task_id, state FROM task_instance WHERE dag_id = :d AND "
                                            "run_id = :r"), {"d": dag_id, "r": run["run_id"]}).all()
                out.append({**run, "tasks": dict(tasks)})
    finally:
        engine.dispose()
    return out


def test_weekly_dag_runs_with_a_postgresql_metadata_db(stack_env: dict[str, str], airflow_vars: dict[str, str],
                                                       pg: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train
    from velocast.tracking.registry import Registry

    champion = train("lgbm", model_test=True, hyperparams={"n_estimators": 40})
    promote("lgbm", version=champion.model_version, reason="champion before the weekly DAG", force=True)
    monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", "0.9999")  # no model reaches it: reject_regression
    audit_start = last_audit_id(pg)

    conf = {"force_fine_tune": True, "test_mode": True}
    out = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "monitor_and_fine_tune", "-c",
                          json.dumps(conf)], env={**os.environ, **airflow_vars}, capture_output=True, text=True,
                         timeout=600, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]

    runs = dag_runs(pg, "monitor_and_fine_tune")
    assert len(runs) == 1 and runs[0]["state"] == "success", runs
    assert {t: s for t, s in runs[0]["tasks"].items() if s != "success"} == {"fail_run_on_error": "skipped"}

    rows = [r for r in audit_rows(pg, audit_start) if r["event"] in ("cycle", "error")]
    assert [r["event"] for r in rows] == ["cycle"], rows
    row = rows[0]
    assert row["deployment_decision"] == "reject_regression" and row["env"] == "dev"
    assert row["error_message"] is None and row["run_id"] and row["r2_baseline"] is not None
    details = json.loads(row["details"])
    assert details["forced"] is True and details["test_mode"] is True
    assert [s["name"] for s in details["steps"]] == ["new_data", "drift", "health", "fine_tune", "evaluate", "promote",
                                                        "recalibrate"]
    after = Registry().champion("lgbm").version
    assert row["from_version"] == champion.model_version and row["to_version"] == after
    assert after == champion.model_version
