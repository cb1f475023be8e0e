"""The weekly cycle on real data: decisions, audit rows, errors, locking, notifications, retrain, simulate."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

from velocast.config import get_settings
from velocast.data import splits, store
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.operations import lease
from velocast.lifecycle.operations.cycle import CycleBusy, check_new_data, monitor_and_fine_tune, quarterly_retrain
from velocast.lifecycle.decisions.monitor import check_drift
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.operations.simulate import simulate
from velocast.lifecycle.training.train import train
from velocast.tracking.registry import Registry

# a baseline gate no model reaches: the decision is ``reject_regression`` by construction
UNREACHABLE_GATE = "0.9999"


@pytest.fixture
def champion_home(real_home: Path) -> Path:
    result = train("lgbm", hyperparams={"n_estimators": 80})
    promote("lgbm", version=result.model_version, reason="test champion")
    return real_home


def test_ordinary_week_is_not_drift_but_a_level_shift_is(champion_home: Path) -> None:
    week = store.query_counts("2021-02-01", "2021-02-08")
    ordinary = check_drift("lgbm", current=week).report
    assert ordinary.status == "ok" and ordinary.drift_detected is False, ordinary.to_dict()
    assert ordinary.seasonal_matching
    shifted = week.assign(bike_count=week["bike_count"] * 1.6)
    drifted = check_drift("lgbm", current=shifted).report
    assert drifted.drift_detected is True and drifted.target_drift.drifted
    assert drifted.prediction_drift is not None  # the champion's predictions were monitored too
    html = Path(check_drift("lgbm", current=shifted).paths["html"])
    assert html.exists() and html.stat().st_size > 10_000


def test_synthetic_level_shift_is_flagged_and_its_unshifted_twin_is_not(home: Path, tmp_path: Path) -> None:
    from velocast.data import synthetic
    from velocast.data.ingest import ingest_file

    for drift, expected in ((None, False), ("level_shift", True)):
        path = tmp_path / f"{drift}.parquet"
        synthetic.write(synthetic.generate(counters=10, days=150, start="2021-01-04", seed=3, drift=drift,
                                           drift_start="2021-05-10"), path)
        ingest_file(path)
        splits.record_split("2021-05-03")
        report = check_drift("lgbm", current=store.query_counts("2021-05-17", "2021-05-24"), write=False).report
        assert report.drift_detected is expected, (drift, report.to_dict())
        assert report.seasonal_matching


def test_forced_test_mode_cycle_decides_and_audits_one_coherent_row(champion_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", UNREACHABLE_GATE)
    before = Registry().champion("lgbm").version
    steps = []
    result = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True, on_step=steps.append)
    assert result.status == "ok" and result.decision == "reject_regression", (result.error, result.reasons)
    assert any(f"< {float(UNREACHABLE_GATE)}" in r for r in result.reasons), result.reasons
    assert [s.name for s in steps] == ["new_data", "drift", "health", "fine_tune", "evaluate", "promote",
                                       "recalibrate", "audit", "notify"]
    assert any("test mode" in r for r in result.reasons)
    rows = AuditLog().list(event="cycle")
    assert len(rows) == 1
    row = rows[0]
    assert row.event_id == result.cycle_id and row.deployment_decision == result.decision
    assert row.r2_baseline == pytest.approx(result.metrics["r2_baseline"])
    assert row.champion_r2_baseline is not None and row.run_id == result.challenger_run_id
    assert Registry().champion("lgbm").version == before and not result.promoted
    assert row.env == "dev" and row.to_version == before  # a test-mode cycle is never production
    assert result.recalibrated_version is None  # test mode: the champion is never changed
    # no new data since that cycle: the next test-mode one skips, and says so; a real cycle still has the
    # week's data to judge (a smoke test never uses it up)
    assert check_new_data("lgbm").new_data is True
    again = monitor_and_fine_tune("lgbm", test_mode=True)
    assert again.status == "skipped" and again.new_data is False
    assert [s.status for s in again.steps[1:7]] == ["skipped"] * 6
    assert AuditLog().list(limit=1)[0].deployment_decision == "skip_no_new_data"


def test_broken_champion_is_audited_as_error_and_kept(champion_home: Path) -> None:
    version = _break_champion()
    result = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True)
    assert result.status == "error" and result.error
    assert Registry().champion("lgbm").version == version
    error = AuditLog().list(limit=1)[0]
    assert error.event == "error" and error.error_message == result.error
    assert error.to_version == version  # the champion after the failed cycle is the same


def test_a_second_cycle_refuses_while_one_runs(real_home: Path) -> None:
    with lease.held("lgbm", get_settings(), owner="the first cycle"):
        with pytest.raises(CycleBusy, match="another lgbm cycle is running .held by the first cycle"):
            monitor_and_fine_tune("lgbm")


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _break_champion() -> str:
    ref = Registry().champion("lgbm")
    import mlflow

    model_dir = mlflow.get_logged_model(ref.source.split("/")[-1]).artifact_location.removeprefix("file://")
    shutil.rmtree(model_dir)
    return ref.version


def test_webhooks_report_decisions_and_a_failing_webhook_changes_nothing(real_home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("VELOCAST_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    try:
        _Receiver.received.clear()
        _Receiver.status = 200
        monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", UNREACHABLE_GATE)
        first = monitor_and_fine_tune("lgbm", test_mode=True)  # no champion yet: a first one is trained
        assert first.decision == "reject_regression" and first.notified and not first.promoted
        message = _Receiver.received[-1]
        assert message["velocast"]["cycle_id"] == first.cycle_id and message["content"] == message["text"]
        assert f"challenger v{first.challenger_version} rejected" in message["text"]
        monkeypatch.delenv("VELOCAST_R2_BASELINE_THRESHOLD")
        promote("lgbm", version=first.challenger_version, force=True, reason="a test-mode champion to break")
        _break_champion()
        broken = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True)
        assert broken.status == "error" and "FAILED" in _Receiver.received[-1]["text"]
        _Receiver.status = 500  # the webhook fails: the cycle is unaffected and says it could not notify
        again = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True)
        assert again.status == "error" and again.notified is False and again.audit_event_id
        assert AuditLog().list(limit=1)[0].event_id == again.cycle_id
    finally:
        server.shutdown()


def test_quarterly_retrain_keeps_the_old_test_days_unseen(champion_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", UNREACHABLE_GATE)
    server = HTTPServer(("127.0.0.1", 0), _Receiver)  # its rejection is notified, as a weekly cycle's
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("VELOCAST_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    _Receiver.received.clear()
    _Receiver.status = 200
    old = splits.active_split()
    before = Registry().champion("lgbm").version
    from tests.conftest import run_cli

    done = run_cli(["retrain", "--merge", "--cutoff", "2021-07-15", "--test-mode", "--promote", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    new = splits.get_split(out["new_split"])
    assert (out["old_split"], out["new_split"]) == (old.version, new.version) and new.parent_version == old.version
    assert splits.active_split().version == old.version  # a test-mode retrain leaves the baseline active
    assert set(old.test_days) <= set(new.test_days)
    train_days = set(splits.paris_day(splits.load_split("train_baseline", new)["timestamp"]).astype(str))
    assert train_days.isdisjoint(old.test_days)
    assert out["decision"] == "reject_regression" and out["promoted"] is None
    assert Registry().champion("lgbm").version == before
    assert out["evaluation"]["metrics_baseline"]["rows"] <= old.sizes["test_baseline"]
    assert AuditLog().list(event="retrain")[0].details["new_split"] == new.version
    server.shutdown()
    assert out["notified"] and len(_Receiver.received) == 1
    assert _Receiver.received[0]["text"].startswith(f"velocast lgbm: challenger v{out['version']} rejected: ")


def test_retrain_by_default_merges_every_day_and_compares_on_days_neither_model_saw(real_home: Path) -> None:
    """Right after a split, the default works; the champion (trained on part of the current period too)
    is compared with the new model only on held-out days it never trained on, and the result says which."""
    champion = train("lgbm", data_source="reference", model_test=True)
    promote("lgbm", version=champion.model_version, reason="test champion", force=True)
    seen = Registry().trained_days(Registry().get("lgbm", champion.model_version))
    assert seen and max(seen) > splits.active_split().cutoff  # it trained on days after the cutoff
    old_current = set(splits.paris_day(splits.load_split("test_current")["timestamp"]).astype(str))
    assert old_current and old_current.isdisjoint(seen)
    out = quarterly_retrain("lgbm", test_mode=True)
    new = splits.get_split(out["new_split"])
    assert new.cutoff == "2021-08-11"  # the day after the latest stored count (2021-08-10 01:00 Paris): all merged
    assert old_current <= set(new.test_days)  # the recent days no model trained on stay held out ...
    expected = set(new.test_days) - seen
    assert set(out["compared_days"]) == expected and expected < set(new.test_days)
    assert any(d in seen for d in new.test_days)
    recent = expected - set(splits.get_split(out["old_split"]).test_days)
    assert any(r.startswith(f"held-out days neither model trained on: {len(expected)} ") and
               f"test_current is the {len(recent)} of them held out from the period the new baseline added" in r
               for r in out["reasons"])
    # test_current: the recent held-out days only (not a copy of test_baseline)
    current = out["evaluation"]["metrics_current"]
    assert old_current <= recent and current is not None  # ... and the new model is judged on them
    assert current["rows"] >= 200 and not any("compared on test_baseline instead" in r for r in out["reasons"])
    assert out["reasons"][-1] == f"test mode: baseline v{new.version} recorded, v{out['old_split']} stays active"
    row = AuditLog().list(event="retrain")[0]
    assert row.details["compared_days"] == sorted(expected)


def test_simulate_writes_weekly_rmse_and_one_audit_row_per_week(real_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_ENV", "prod")  # a test-mode simulation is dev all the same, its first champion too
    result = simulate("2021-06-14", weeks=2, test_mode=True)
    _assert_simulation_env(result, "dev")
    assert [w.week for w in result.weeks] == [1, 2]
    for week in result.weeks:
        assert min(week.rmse_never, week.rmse_always, week.rmse_policy) > 0 and week.rows > 0
    table = pd.read_csv(result.files["csv"])
    assert list(table["week"]) == [1, 2] and Path(result.files["plot"]).stat().st_size > 5_000
    sim_audit = AuditLog(f"sqlite:///{Path(result.home) / 'audit.db'}")
    cycles = [e for e in sim_audit.list(limit=50) if e.event in ("cycle", "error")]
    assert len(cycles) == 2 and all(e.event == "cycle" for e in cycles)
    assert AuditLog().count() == 0  # the user's own audit log is untouched


def test_a_failed_retrain_leaves_the_old_baseline_active_and_is_audited(real_home: Path) -> None:
    from velocast.lifecycle.training.datasets import Dataset, load_datasets

    old = splits.active_split()
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):  # refused before anything is recorded
        quarterly_retrain("baseline", policy="bogus")
    assert [s.version for s in splits.list_versions()] == [old.version]
    # a champion that trained on every held-out day: no fair comparison, and the failure changes nothing
    datasets = load_datasets("baseline")
    datasets.train = Dataset("everything", pd.concat([datasets.train.frame, splits.load_split("test_baseline", old),
                                                      splits.load_split("current", old)]), "test")
    promote("baseline", version=train("baseline", datasets=datasets).model_version, reason="learned it all",
            force=True)
    with pytest.raises(ValueError, match="no held-out day is unseen by both"):
        quarterly_retrain("baseline")
    assert splits.active_split().version == old.version and len(splits.list_versions()) == 2
    row = AuditLog().list(limit=1)[0]
    assert row.event == "error" and "no held-out day is unseen by both" in row.error_message
    assert row.reasons == [f"quarterly retrain failed: baseline v{old.version + 1} recorded, v{old.version} stays active"]


def test_bad_options_are_refused_before_anything_is_trained_recorded_or_audited(home: Path) -> None:
    refused = [
        (lambda: monitor_and_fine_tune("lgbm", True, True, window_days=0), "window_days must be at least 1"),
        (lambda: monitor_and_fine_tune("lgbm", True, True, window_days=-5), "window_days must be at least 1"),
        (lambda: monitor_and_fine_tune("lgbm", env="staging"), "unknown env 'staging': expected one of dev, prod"),
        (lambda: monitor_and_fine_tune("lgbm", True, True, env="staging"), "unknown env 'staging'"),
        (lambda: quarterly_retrain("lgbm", policy="bogus"), "unknown policy 'bogus': expected one of double_eval"),
        (lambda: quarterly_retrain("lgbm", env="staging"), "unknown env 'staging'"),
        (lambda: simulate("2021-06-01", 1, policy="bogus"), "unknown policy 'bogus'"),
        (lambda: simulate("2021-06-01", 1, strategy="bogus"), "unknown strategy 'bogus'"),
        (lambda: simulate("2021-06-01", 1, window_days=0), "window_days must be at least 1"),
        (lambda: check_drift("lgbm", window_days=0), "window_days must be at least 1"),
    ]
    for call, message in refused:
        with pytest.raises(ValueError, match=message):
            call()
    assert AuditLog().list(limit=10) == []
    assert not (home / "simulations").exists() and not (home / "splits").exists()
    assert not (home / "mlflow.db").exists() and not (home / "reports").exists()


def _assert_simulation_env(result, env: str) -> None:
    from velocast.tracking.summary import SummaryStore

    entries = SummaryStore(str(Path(result.home) / "summary.json")).read()
    assert entries and {e.env for e in entries} == {env}, [(e.run_id, e.env) for e in entries]
    rows = AuditLog(f"sqlite:///{Path(result.home) / 'audit.db'}").list(limit=50)
    assert {e.env for e in rows if e.event in ("training", "cycle")} == {env}, [(e.event, e.env) for e in rows]


def test_simulate_records_its_env_from_the_option_or_velocast_env(real_home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import run_cli

    monkeypatch.setenv("VELOCAST_ENV", "prod")
    _assert_simulation_env(simulate("2021-06-14", weeks=1, model_type="baseline"), "prod")
    monkeypatch.setenv("VELOCAST_ENV", "dev")
    out = run_cli(["simulate", "--start", "2021-06-21", "--weeks", "1", "--model-type", "baseline", "--env", "prod"])
    assert out.exit_code == 0, out.output
    home = out.output.split("simulation home (its MLflow runs and audit log): VELOCAST_HOME=")[1].split()[0]
    _assert_simulation_env(type("Sim", (), {"home": home}), "prod")
