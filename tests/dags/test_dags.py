"""The Airflow DAGs: they load, import cheaply, match the spec, and run end to end with ``dag.test``.

Airflow runs in subprocesses (``airflow_runner.py``) on a temporary AIRFLOW_HOME whose metadata
database is migrated once for the module; the velocast home is the test's ``real_home``. The
library functions behind the DAGs are tested without Airflow in ``test_daily_jobs.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.http_server import refused_url

if importlib.util.find_spec("airflow") is None:  # not imported here: Airflow only runs in subprocesses
    pytest.skip("Airflow is an optional extra: pip install -e '.[airflow]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
RUNNER = Path(__file__).with_name("airflow_runner.py")
DAG_IDS = {"monitor_and_fine_tune", "daily_ingest", "daily_predict", "quarterly_retrain", "train_model"}
WEEKLY_TASKS = ["check_new_data", "run_drift", "run_health", "decide", "fine_tune", "evaluate_challenger",
                "promote_if_deployed", "recalibrate", "audit", "notify", "release_cycle_lease", "fail_run_on_error"]
UNREACHABLE_GATE = "0.9999"  # no model reaches it: the decision is reject_regression by construction
HEAVY = ("mlflow", "lightgbm", "sklearn", "torch", "evidently", "pandas")
LIGHT_VELOCAST = ("velocast", "velocast.choices")  # the names a DAG's params offer: they import nothing


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated Airflow metadata database in a temporary AIRFLOW_HOME, the dags folder configured."""
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=False, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return env


def _airflow(env: dict[str, str], *args: str, timeout: int = 600) -> dict:
    """Run ``airflow_runner.py`` with ``args`` in ``env`` (VELOCAST_HOME of the current test)."""
    env = {**env, "VELOCAST_HOME": os.environ["VELOCAST_HOME"]}
    out = subprocess.run([sys.executable, str(RUNNER), *args], check=False, env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-5000:] + out.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])


def _dag_test(env: dict[str, str], dag_id: str, conf: dict | None = None) -> dict:
    return _airflow(env, "test", str(DAGS), dag_id, json.dumps(conf or {}))


def _champion(model_type: str = "lgbm") -> str:
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    result = train(model_type, model_test=True)
    promote(model_type, version=result.model_version, reason="test champion (test-mode: forced)", force=True)
    return result.model_version


# --------------------------------------------------------------------------- parsing
def test_dags_load_without_errors_and_match_the_spec(airflow_env: dict[str, str]) -> None:
    found = _airflow(airflow_env, "describe", str(DAGS))
    assert found["import_errors"] == {}
    dags = found["dags"]
    assert set(dags) == DAG_IDS
    schedules = {dag_id: d["schedule"] for dag_id, d in dags.items()}
    assert schedules == {"monitor_and_fine_tune": "0 0 * * 0", "daily_ingest": "0 0 * * *",
                         "daily_predict": "0 3 * * *", "quarterly_retrain": "0 3 1 */3 *",
                         "train_model": schedules["train_model"]}
    assert "None" in schedules["train_model"] or "Null" in schedules["train_model"]  # triggered by the API only
    for dag_id, d in dags.items():
        assert d["catchup"] is False and d["max_active_runs"] == 1, dag_id
        assert d["owner"] == "velocast" and "velocast" in d["tags"] and dag_id in d["doc_md"], dag_id
        retries = {t["retries"] for t in d["tasks"].values()}
        assert retries == ({2} if dag_id == "daily_ingest" else {0}), dag_id

    weekly = dags["monitor_and_fine_tune"]
    assert weekly["task_ids"] == WEEKLY_TASKS
    assert {k: v["value"] for k, v in weekly["params"].items()} == {
        "force_fine_tune": False, "test_mode": False, "model_type": "lgbm", "window_days": 30,
        "strategy": "sliding_window", "policy": "double_eval"}
    from velocast.choices import MODEL_TYPES, POLICIES, STRATEGIES

    assert weekly["params"]["strategy"]["schema"]["enum"] == list(STRATEGIES)
    assert weekly["params"]["policy"]["schema"]["enum"] == list(POLICIES)
    assert weekly["params"]["model_type"]["schema"]["enum"] == list(MODEL_TYPES)
    tasks = weekly["tasks"]
    assert tasks["audit"]["trigger_rule"] == "all_done" and tasks["notify"]["trigger_rule"] == "all_done"
    # the cycle lease is taken by the first task and given back by the last, whatever happened
    assert tasks["release_cycle_lease"]["trigger_rule"] == "all_done"
    assert tasks["release_cycle_lease"]["upstream"] == ["notify"]
    # no new data jumps straight to the audit; no fine-tuning straight to the recalibration
    assert {"check_new_data", "recalibrate"} <= set(tasks["audit"]["upstream"])
    assert set(tasks["recalibrate"]["upstream"]) == {"decide", "promote_if_deployed"}
    assert tasks["recalibrate"]["trigger_rule"] == "none_failed_min_one_success"
    assert tasks["fail_run_on_error"]["trigger_rule"] == "one_failed"
    assert set(tasks["fail_run_on_error"]["upstream"]) == set(WEEKLY_TASKS) - {"fail_run_on_error"}

    assert {k: v["value"] for k, v in dags["daily_ingest"]["params"].items()} == {"synthetic": False, "inbox": ""}
    # the sources come first; a failed fetch never keeps the next step from running
    for dag_id, (fetch, then) in {"daily_ingest": ("fetch_from_portal", "ingest_new_files"),
                                  "daily_predict": ("fetch_weather_forecast", "predict_tomorrow")}.items():
        assert dags[dag_id]["task_ids"] == [fetch, then]
        assert dags[dag_id]["tasks"][then] == {"trigger_rule": "all_done", "upstream": [fetch],
                                               "retries": dags[dag_id]["tasks"][fetch]["retries"]}
    assert {k: v["value"] for k, v in dags["daily_predict"]["params"].items()} == {"model_type": "lgbm"}
    assert dags["quarterly_retrain"]["params"]["promote_on_deploy"]["value"] is False
    assert dags["train_model"]["task_ids"] == ["run_job"]
    assert {k: v["value"] for k, v in dags["train_model"]["params"].items()} == {"job_id": ""}


@pytest.mark.parametrize("name", sorted(DAG_IDS))
def test_dag_files_import_without_heavy_modules(name: str, airflow_env: dict[str, str]) -> None:
    """DAG files import cheaply: of velocast only ``velocast.choices``, nothing of MLflow or the ML stack.

    (How long the import takes is a benchmark matter, not a test: it depends on the machine's load.)
    """
    code = ("import json, runpy, sys; runpy.run_path(sys.argv[1]); "
            f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
            f"or (m.split('.')[0] == 'velocast' and m not in {LIGHT_VELOCAST!r})]))")
    out = subprocess.run([sys.executable, "-c", code, str(DAGS / f"{name}.py")], check=False, env=airflow_env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []  # nothing heavy at parse time


# --------------------------------------------------------------------------- the weekly cycle
def test_weekly_dag_decides_audits_then_skips_without_new_data(airflow_env: dict[str, str], real_home: Path) -> None:
    from velocast.config import get_settings
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.operations import lease
    from velocast.tracking.registry import Registry

    before = _champion()
    run = _dag_test({**airflow_env, "VELOCAST_R2_BASELINE_THRESHOLD": UNREACHABLE_GATE}, "monitor_and_fine_tune",
                    {"force_fine_tune": True, "test_mode": True})
    assert run["state"] == "success", run["tasks"]
    assert {t: s for t, s in run["tasks"].items() if s != "success"} == {"fail_run_on_error": "skipped"}
    assert run["xcoms"]["release_cycle_lease.return_value"]["released"] is True
    assert lease.current("lgbm", get_settings()) is None
    rows = AuditLog().list(event="cycle")
    assert len(rows) == 1
    row = rows[0]
    assert row.deployment_decision == "reject_regression" and row.error_message is None
    assert row.env == "dev"  # a test-mode run is never production
    assert row.r2_baseline is not None and row.champion_r2_baseline is not None and row.run_id
    assert [s["name"] for s in row.details["steps"]] == ["new_data", "drift", "health", "fine_tune", "evaluate",
                                                         "promote", "recalibrate"]
    assert row.details["forced"] is True and row.details["test_mode"] is True
    after = Registry().champion("lgbm").version
    assert after == before and row.from_version == row.to_version == before  # test mode: never promoted
    recalibrate_step = [s for s in row.details["steps"] if s["name"] == "recalibrate"][0]
    assert "test mode" in recalibrate_step["summary"]
    audited = run["xcoms"]["audit.return_value"]
    assert audited["audit_event_id"] == row.event_id and audited["status"] == "ok"

    # the run recorded what data it saw: the next test-mode one, not forced, has nothing new and skips to
    # audit; a real run still has the data to judge (a smoke test never uses it up)
    from velocast.lifecycle.operations.cycle import check_new_data

    assert check_new_data("lgbm").new_data is True
    again = _dag_test(airflow_env, "monitor_and_fine_tune", {"test_mode": True})
    assert again["state"] == "success", again["tasks"]
    skipped = {"run_drift", "run_health", "decide", "fine_tune", "evaluate_challenger", "promote_if_deployed",
               "recalibrate", "fail_run_on_error"}
    assert {t for t, s in again["tasks"].items() if s == "skipped"} == skipped
    assert all(again["tasks"][t] == "success" for t in ("check_new_data", "audit", "notify", "release_cycle_lease"))
    last = AuditLog().list(limit=1)[0]
    assert last.event == "cycle" and last.deployment_decision == "skip_no_new_data"
    assert [s["status"] for s in last.details["steps"]] == ["done"] + ["skipped"] * 6
    assert Registry().champion("lgbm").version == after


def test_weekly_dag_audits_a_failed_step_as_error_and_fails_the_run(airflow_env: dict[str, str],
                                                                   real_home: Path) -> None:
    import mlflow

    from velocast.lifecycle.audit import AuditLog
    from velocast.tracking.registry import Registry

    version = _champion()
    ref = Registry().champion("lgbm")
    shutil.rmtree(mlflow.get_logged_model(ref.source.split("/")[-1]).artifact_location.removeprefix("file://"))
    run = _dag_test(airflow_env, "monitor_and_fine_tune", {"force_fine_tune": True, "test_mode": True})
    assert run["state"] == "failed"
    assert run["tasks"]["run_drift"] == "failed" and run["tasks"]["fine_tune"] == "upstream_failed"
    assert run["tasks"]["audit"] == "success" and run["tasks"]["notify"] == "success"
    assert run["tasks"]["fail_run_on_error"] == "failed"
    row = AuditLog().list(limit=1)[0]
    assert row.event == "error" and row.error_message.startswith("drift step failed: ")
    assert "Exception" in row.error_message  # the exception type, kept by the failure callback
    statuses = {s["name"]: s["status"] for s in row.details["steps"]}
    assert statuses == {"new_data": "done", "drift": "failed", "health": "skipped", "fine_tune": "skipped",
                        "evaluate": "skipped", "promote": "skipped", "recalibrate": "skipped"}
    assert Registry().champion("lgbm").version == version  # the champion stays


def test_weekly_dag_refuses_while_a_cli_cycle_holds_the_lease(airflow_env: dict[str, str], real_home: Path) -> None:
    from velocast.config import get_settings
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.operations import lease

    settings = get_settings()
    with lease.held("lgbm", settings, owner="velocast cycle (CLI)"):
        run = _dag_test(airflow_env, "monitor_and_fine_tune", {"force_fine_tune": True, "test_mode": True})
        assert run["state"] == "failed" and run["tasks"]["check_new_data"] == "failed"
        assert run["tasks"]["audit"] == "success" and run["tasks"]["release_cycle_lease"] == "success"
        assert run["xcoms"]["release_cycle_lease.return_value"]["released"] is False
        assert lease.current("lgbm", settings).owner == "velocast cycle (CLI)"  # the CLI's lease is untouched
    row = AuditLog().list(limit=1)[0]
    assert row.event == "error" and "CycleBusy: another lgbm cycle is running" in row.error_message


def test_daily_and_quarterly_dags_run_with_dag_test(airflow_env: dict[str, str], real_home: Path) -> None:
    from velocast.data import splits, store
    from velocast.lifecycle.audit import AuditLog
    from velocast.tracking.registry import Registry

    latest = store.latest_timestamp()
    ingest = _dag_test(airflow_env, "daily_ingest", {"synthetic": True})
    assert ingest["state"] == "success" and store.latest_timestamp() > latest
    assert ingest["xcoms"]["ingest_new_files.return_value"]["ingested"] == 1
    assert ingest["xcoms"]["fetch_from_portal.return_value"]["status"] == "skipped"

    # the portal unreachable: the failure is returned and the inbox is still ingested (nothing new in it)
    offline = {**airflow_env, "VELOCAST_OPENDATA_URL": refused_url(), "VELOCAST_HTTP_RETRIES": "0",
               "VELOCAST_WEATHER_FORECAST_URL": refused_url() + "/v1/forecast"}
    fetched = _dag_test(offline, "daily_ingest")
    assert fetched["state"] == "success", fetched["tasks"]
    portal = fetched["xcoms"]["fetch_from_portal.return_value"]
    assert portal["status"] == "failed" and "ConnectError" in portal["error"]
    assert fetched["tasks"] == {"fetch_from_portal": "success", "ingest_new_files": "success"}
    assert fetched["xcoms"]["ingest_new_files.return_value"]["failed"] == []

    retrain = _dag_test(airflow_env, "quarterly_retrain", {"test_mode": True})
    assert retrain["state"] == "success", retrain["tasks"]
    retrained = retrain["xcoms"]["retrain.return_value"]
    assert retrained["version"] == "1" and retrained["promoted"] is None  # promote_on_deploy is off by default
    assert retrained["new_split"] == retrained["old_split"] + 1
    assert splits.ensure_split().version == retrained["old_split"]  # a test-mode retrain leaves the baseline active
    assert AuditLog().list(limit=1)[0].event == "retrain" and Registry().champion("lgbm") is None

    # a test-mode version never stands in for a missing champion: it forecasts once promoted (forced)
    from velocast.lifecycle.decisions.promotion import promote

    promote("lgbm", version="1", force=True, reason="the daily forecasts need a champion")
    predict = _dag_test(offline, "daily_predict")  # the weather service unreachable: predicted all the same
    assert predict["state"] == "success", predict["tasks"]
    assert predict["tasks"] == {"fetch_weather_forecast": "success", "predict_tomorrow": "success"}
    assert predict["xcoms"]["fetch_weather_forecast.return_value"]["status"] == "failed"
    forecast = predict["xcoms"]["predict_tomorrow.return_value"]
    assert forecast["weather_forecast"]["hours_covered"] == 0
    assert "forecast without weather (this run's weather fetch failed: weather forecast: GET" in forecast["summary"]
    assert Path(forecast["path"]).exists() and forecast["model_version"] == "1"
    assert forecast["counters"] == store.counters()["counter_id"].nunique() and forecast["rows"] == forecast["counters"] * 24


# --------------------------------------------------------------------------- the API's training jobs
def test_train_model_dag_runs_a_stored_job_like_the_api(airflow_env: dict[str, str], real_home: Path) -> None:
    """The job the API stores (with posted rows) is run by the DAG through the same ``run_job``."""
    import pandas as pd

    from velocast.data import store
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.operations.jobs import JobStore, TrainSpec

    latest = store.latest_timestamp()
    recent = store.query_counts(latest.normalize() - pd.Timedelta(days=6), latest.normalize() + pd.Timedelta(days=1))
    jobs = JobStore()
    job = jobs.create(TrainSpec("baseline", "baseline", "dev", {}, True, None, recent), runner="airflow",
                      dag_id="train_model")
    run = _dag_test(airflow_env, "train_model", {"job_id": job.job_id})
    assert run["state"] == "success", run["tasks"]
    done = jobs.get(job.job_id)
    assert done.state == "succeeded" and done.error is None and done.started_at and done.finished_at
    assert done.result["model_version"] == "1" and done.spec["current_data_rows"] == len(recent)
    assert done.result["metrics_current"]["n"] > 0  # the posted rows made test_current
    summary = run["xcoms"]["run_job.return_value"]
    assert summary == {"job_id": job.job_id, "state": "succeeded", "model_type": "baseline", "model_version": "1",
                       "run_id": done.result["run_id"], "deployment_decision": done.result["deployment_decision"]}
    row = AuditLog().list(event="training", limit=1)[0]
    assert row.details["job_id"] == job.job_id and row.run_id == done.result["run_id"]

    again = _dag_test(airflow_env, "train_model", {"job_id": job.job_id})  # a finished job never runs twice
    assert again["state"] == "failed" and jobs.get(job.job_id).state == "succeeded"
