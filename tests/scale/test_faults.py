"""The stack going down under a weekly cycle: it fails clearly, audits what it can, keeps the champion.

(a) The MLflow server stops — before a cycle, and in the middle of one (after the health step,
    before fine-tuning). A dedicated server (its own PostgreSQL database) so the shared one keeps
    serving the other tests. The cycle's ``error`` names the failed step, the audit row lands in
    PostgreSQL, and once the server is back the ``champion`` alias, the registered versions and
    summary.json's flags are as they were.
(b) The audit database does not answer: a TCP listener that accepts connections and never
    speaks (the worst case: a refused connection fails at once, a silent one would hang). The
    cycle still returns (libpq's ``connect_timeout``, set by velocast, gives up), reports the
    audit step failed, and the champion is unchanged. No timed assertion: a hang would trip the
    test's timeout instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.conftest import (
    MlflowServer,
    PostgresCluster,
    S3Server,
    apply_env,
    stack_variables,
)
from tests.scale.test_stack import audit_rows, last_audit_id, read_summary


def _champion_state(s3: S3Server, summary_uri: str) -> tuple[str | None, list[str], list[str]]:
    """(champion version, registered versions, run ids flagged champion in summary.json)."""
    from velocast.tracking.registry import Registry

    registry = Registry()
    champion = registry.champion("lgbm")
    versions = [r.version for r in registry.versions("lgbm")]
    flagged = [e["run_id"] for e in read_summary(s3, summary_uri) if e["model_type"] == "lgbm" and e["is_champion"]]
    return champion.version if champion else None, versions, flagged


def _make_champion() -> str:
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    result = train("lgbm", model_test=True, hyperparams={"n_estimators": 40})
    promote("lgbm", version=result.model_version, reason="champion before the fault", force=True)
    return result.model_version


@pytest.mark.timeout(600)  # a hang is a failure, not a wait
def test_mlflow_server_down_before_and_during_a_cycle(monkeypatch: pytest.MonkeyPatch, real_home: Path,
                                                      pg: PostgresCluster, s3: S3Server, mlflow_servers) -> None:
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune

    server: MlflowServer = mlflow_servers("mlflow_faults")
    variables = stack_variables(pg, s3, server, "models/faults-mlflow/summary.json")
    apply_env(monkeypatch, variables)
    version = _make_champion()
    before = _champion_state(s3, variables["VELOCAST_SUMMARY_URI"])
    assert before[0] == version and len(before[2]) == 1
    audit_start = last_audit_id(pg)

    # the server is down before the cycle starts: the first step fails, the audit still lands
    server.stop()
    down = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True)  # bounded retries: see conftest
    assert down.status == "error" and down.error.startswith("new_data step failed: "), down.error
    statuses = {s.name: s.status for s in down.steps}
    assert statuses["new_data"] == "failed" and statuses["audit"] == "done"

    # the server goes down mid-cycle: drift and health are done, then it stops before fine-tuning
    server.start()

    def stop_after_health(outcome) -> None:
        if outcome.name == "health" and outcome.status == "done":
            server.stop()

    mid = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True, on_step=stop_after_health)
    assert mid.status == "error" and mid.error.startswith("fine_tune step failed: "), mid.error
    assert [(s.name, s.status) for s in mid.steps][:3] == [("new_data", "done"), ("drift", "done"),
                                                          ("health", "done")]
    assert {s.name: s.status for s in mid.steps}["fine_tune"] == "failed"
    assert mid.champion_after == mid.champion_before == version and not mid.promoted

    # both failures are in the audit log on PostgreSQL, each naming its step
    rows = [r for r in audit_rows(pg, audit_start) if r["model_type"] == "lgbm"]
    assert [(r["event"], r["event_id"]) for r in rows] == [("error", down.cycle_id), ("error", mid.cycle_id)]
    assert rows[0]["error_message"] == down.error and rows[1]["error_message"] == mid.error
    assert rows[1]["from_version"] == rows[1]["to_version"] == version

    # back up: champion alias, registered versions and summary.json flags are as before
    server.start()
    assert _champion_state(s3, variables["VELOCAST_SUMMARY_URI"]) == before


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose 'server' accepts TCP connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # connections complete in the kernel's backlog; nothing ever reads them
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/velocast_audit"


@pytest.mark.timeout(600)  # the point: it must not hang
def test_audit_database_unreachable_fails_the_cycle_in_bounded_time(stack_env: dict[str, str], s3: S3Server,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    silent_database: str) -> None:
    from velocast.lifecycle.audit import PG_CONNECT_TIMEOUT, _connect_args
    from velocast.lifecycle.operations.cycle import monitor_and_fine_tune

    _make_champion()
    before = _champion_state(s3, stack_env["VELOCAST_SUMMARY_URI"])

    monkeypatch.setenv("VELOCAST_AUDIT_URL", silent_database)
    steps = []
    result = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True, on_step=steps.append)
    assert result.status == "error"
    audit = next(s for s in result.steps if s.name == "audit")
    assert audit.status == "failed" and "OperationalError" in audit.summary and "timeout" in audit.summary
    # a test-mode cycle never promotes: the audit step is the first to need the database
    assert result.error.startswith("audit step failed: ") and not result.promoted
    assert result.champion_after == result.champion_before == before[0]
    # libpq gave up ("timeout expired": its connect_timeout, which velocast sets) instead of waiting forever
    assert "timeout expired" in audit.summary
    assert _connect_args(silent_database, PG_CONNECT_TIMEOUT)["connect_timeout"] == PG_CONNECT_TIMEOUT

    monkeypatch.setenv("VELOCAST_AUDIT_URL", stack_env["VELOCAST_AUDIT_URL"])
    champion, versions, flagged = _champion_state(s3, stack_env["VELOCAST_SUMMARY_URI"])
    assert (champion, flagged) == (before[0], before[2])
    assert versions == before[1] + [result.challenger_version]  # registered, evaluated, never promoted
