"""The durable training jobs' store: transitions, concurrent claims, orphans of dead servers."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import psutil
import pytest
import sqlalchemy as sa

from velocast.config import Settings
from velocast.lifecycle.operations.jobs import (
    JobNotRunnable,
    JobStore,
    Owner,
    TrainSpec,
    jobs_table,
    run_job,
)


def _spec(rows: pd.DataFrame | None = None) -> TrainSpec:
    return TrainSpec("baseline", "baseline", "dev", {"n": 1}, True, None, rows)


@pytest.fixture
def jobs(home) -> JobStore:
    return JobStore(Settings(home=home))


def _owner_of_exited_process() -> Owner:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = Owner(Owner.current().host, child.pid, psutil.Process(child.pid).create_time())
    child.wait()
    return owner


def test_a_job_lives_in_the_audit_database_with_its_request_and_rows(jobs: JobStore, home) -> None:
    rows = pd.DataFrame({"counter_id": ["a", "b"], "bike_count": [1.0, 2.0],
                         "timestamp": pd.to_datetime(["2021-08-01 08:00", "2021-08-01 09:00"]).tz_localize(
                             "Europe/Paris")})
    job = jobs.create(_spec(rows), runner="api", owner=Owner.current())
    assert (home / "audit.db").exists() and sa.inspect(jobs.engine).has_table("training_jobs")
    again = JobStore(Settings(home=home)).get(job.job_id)  # another process would read the same row
    assert again.state == "queued" and again.runner == "api" and again.model_type == "baseline"
    assert again.spec == {"model_type": "baseline", "data_source": "baseline", "env": "dev", "hyperparams": {"n": 1},
                          "test_mode": True, "horizon": None, "current_data_rows": 2}
    spec = jobs.spec(job.job_id)
    pd.testing.assert_frame_equal(spec.current_data, rows)  # the posted rows, dtypes and time zone kept
    assert jobs.get("nope") is None
    with pytest.raises(JobNotRunnable, match="no training job 'nope'"):
        jobs.spec("nope")
    with pytest.raises(JobNotRunnable, match="no job_id given"):  # the DAG triggered without its conf
        run_job("  ")


def test_transitions_are_compare_and_set(jobs: JobStore) -> None:
    me = Owner.current()
    job = jobs.create(_spec(), runner="api", owner=me)
    assert jobs.finish(job.job_id, {"x": 1}) is False  # not running yet
    assert jobs.claim(job.job_id, me) is True and jobs.claim(job.job_id, me) is False
    assert jobs.finish(job.job_id, {"model_version": "3"}) is True
    assert jobs.fail(job.job_id, "late") is False  # a finished job never changes again
    done = jobs.get(job.job_id)
    assert done.state == "succeeded" and done.result == {"model_version": "3"} and done.error is None
    assert done.created_at <= done.started_at <= done.finished_at
    assert jobs.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0}


def claim_race(settings: Settings, job_id: str, claimers: int) -> list[bool]:
    """``claimers`` threads, each with its own store, claim ``job_id`` at the same moment."""
    barrier, results = threading.Barrier(claimers), []

    def claim() -> None:
        store = JobStore(settings)
        barrier.wait()
        results.append(store.claim(job_id, Owner.current()))

    threads = [threading.Thread(target=claim) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def test_one_claim_wins_among_concurrent_claimers(jobs: JobStore) -> None:
    job = jobs.create(_spec(), runner="api", owner=Owner.current())
    assert claim_race(jobs.settings, job.job_id, 8) == [False] * 7 + [True]


def test_jobs_of_a_dead_server_are_failed_and_live_ones_are_kept(jobs: JobStore) -> None:
    me = Owner.current()
    dead = _owner_of_exited_process()
    running = jobs.create(_spec(), runner="api", owner=dead)
    assert jobs.claim(running.job_id, dead)
    waiting = jobs.create(_spec(), runner="api", owner=dead)
    mine = jobs.create(_spec(), runner="api", owner=me)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = Owner(me.host, sleeper.pid, psutil.Process(sleeper.pid).create_time())
        other = jobs.create(_spec(), runner="api", owner=alive)
        reused = jobs.create(_spec(), runner="api", owner=Owner(me.host, sleeper.pid, alive.started - 100))
        far = jobs.create(_spec(), runner="api", owner=Owner("another-host", 1, 1.0))
        airflow = jobs.create(_spec(), runner="airflow", dag_id="train_model")
        failed = {job.job_id for job in jobs.fail_orphans(lease_seconds=300, me=me)}
        # the dead owner's jobs, and a job whose pid now belongs to another process (a restarted container)
        assert failed == {running.job_id, waiting.job_id, reused.job_id}
        assert jobs.get(running.job_id).error.startswith("the server restarted while the job ran")
        assert jobs.get(waiting.job_id).error.startswith("the server restarted before the job ran")
        assert f"pid {dead.pid}" in jobs.get(running.job_id).error
        for kept in (mine, other, far, airflow):
            assert jobs.get(kept.job_id).state == "queued"
        # another host cannot be checked: its jobs fail when their heartbeat is older than the lease
        with jobs.engine.begin() as con:
            con.execute(jobs_table.update().where(jobs_table.c.job_id == far.job_id).values(
                heartbeat_at=datetime.now(UTC) - timedelta(seconds=301)))
        assert [j.job_id for j in jobs.fail_orphans(lease_seconds=300, me=me)] == [far.job_id]
        assert "no heartbeat from another-host pid 1 for more than 300 s" in jobs.get(far.job_id).error
        assert jobs.heartbeat(alive) == 1  # its live owner keeps its job
    finally:
        sleeper.kill()
        sleeper.wait()


def test_run_job_refuses_a_job_that_is_not_queued(jobs: JobStore) -> None:
    job = jobs.create(_spec(), runner="api", owner=Owner.current())
    jobs.fail(job.job_id, "cancelled")
    with pytest.raises(JobNotRunnable, match=f"training job {job.job_id} is failed, not queued"):
        run_job(job.job_id, jobs.settings)
    with pytest.raises(JobNotRunnable, match="no training job"):
        run_job("0" * 32, jobs.settings)


def test_a_training_error_is_recorded_and_raised(jobs: JobStore) -> None:
    job = jobs.create(_spec(), runner="api", owner=Owner.current())  # empty home: nothing to train on
    with pytest.raises(Exception) as raised:
        run_job(job.job_id, jobs.settings)
    failed = jobs.get(job.job_id)
    assert failed.state == "failed" and failed.error.startswith(type(raised.value).__name__)
    assert failed.started_at and failed.finished_at


def test_a_job_result_holds_one_evaluation(real_home, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision, baseline_regression and the test metrics of a job come from one double evaluation."""
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.operations.jobs import run_training
    from velocast.lifecycle.training.train import train

    settings = Settings(home=real_home)
    first = train("lgbm", model_test=True, hyperparams={"n_estimators": 30}, settings=settings)
    promote("lgbm", version=first.model_version, reason="test champion", force=True, settings=settings)
    # a gate no model passes: the decision must be reject_regression, and baseline_regression say so too
    monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", "0.99")
    strict = Settings(home=real_home)
    result = run_training(TrainSpec("lgbm", "baseline", "dev", {"n_estimators": 20}, True, None, None), strict)

    evaluation = result["double_evaluation"]
    assert result["deployment_decision"] == "reject_regression" and result["baseline_regression"] is True
    assert result["metrics_baseline"] == evaluation["metrics_baseline"]["challenger"]
    assert result["metrics_current"] == evaluation["metrics_current"]["challenger"]
    assert f"{result['metrics_baseline']['r2']:.4g} < 0.99" in result["decision_reasons"][0]
    audited = AuditLog(settings=strict).list(event="training", limit=1)[0]
    assert audited.baseline_regression is True and audited.r2_baseline == result["metrics_baseline"]["r2"]
    assert audited.deployment_decision == "reject_regression"


def test_a_test_mode_training_that_would_deploy_says_it_cannot_serve_as_is(real_home) -> None:
    from velocast.lifecycle.audit import AuditLog
    from velocast.lifecycle.operations.jobs import run_training

    settings = Settings(home=real_home, r2_baseline_threshold=-10.0)  # any model passes the gate
    result = run_training(TrainSpec("lgbm", "baseline", "dev", {"n_estimators": 20}, True, None, None), settings)
    assert result["deployment_decision"] == "deploy"  # no champion yet: the policy's verdict
    assert result["decision_reasons"][-1].startswith("not promotable as it is: a test-mode model")
    audited = AuditLog(settings=settings).list(event="training", limit=1)[0]
    assert audited.reasons == result["decision_reasons"]
