"""Double evaluation on real data, promotion/rollback consistency, crash recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from velocast.cli import app
from velocast.data import splits
from velocast.lifecycle.training.datasets import Dataset, load_datasets
from velocast.lifecycle.decisions.evaluate import evaluate
from velocast.lifecycle.decisions.promotion import PromotionError, history, promote, recover, rollback
from velocast.lifecycle.training.train import train
from velocast.tracking.registry import Registry
from velocast.tracking.summary import SummaryEntry, SummaryStore
from tests.conftest import run_cli

runner = CliRunner()


def _state(model_type: str = "baseline") -> tuple[str | None, str | None, list[str]]:
    registry = Registry()
    champion = registry.champion(model_type)
    previous = registry.by_alias(model_type, "previous-champion")
    flagged = [e.run_id for e in SummaryStore().read() if e.model_type == model_type and e.is_champion]
    return (champion.version if champion else None, previous.version if previous else None, flagged)


def _run_of(version: str, model_type: str = "baseline") -> str:
    return Registry().get(model_type, version).run_id


def test_small_sample_challenger_is_rejected_for_regression(real_home: Path) -> None:
    champion = train("rf", hyperparams={"n_estimators": 20})
    promote("rf", version=champion.model_version, reason="first champion")
    datasets = load_datasets("baseline")
    month = datasets.train.frame
    # a few hundred rows of the November 2020 lockdown: a model that knows nothing of normal traffic
    month = month[(month["timestamp"] >= "2020-11-02") & (month["timestamp"] < "2020-11-30")]
    datasets.train = Dataset("train_small", month.sample(400, random_state=1).sort_values("timestamp"), "test")
    challenger = train("rf", datasets=datasets, horizon="calendar", hyperparams={"n_estimators": 20})
    outcome = evaluate("rf", version=challenger.model_version)
    decision = outcome.decisions["double_eval"]
    assert decision.kind == "reject_regression"
    r2 = outcome.evaluation.baseline.challenger["r2"]
    assert r2 < 0.6 and f"{r2:.4g}" in decision.reasons[0]
    # both were scored on exactly the same rows: every test_baseline row but those of sensor outages
    outage = outcome.evaluation.baseline.challenger["outage_rows_excluded"]
    assert outage > 0 and any("sensor outages" in note for note in outcome.evaluation.notes)
    assert outcome.evaluation.baseline.rows + outage == splits.active_split().sizes["test_baseline"]
    assert outcome.evaluation.baseline.champion["n"] == outcome.evaluation.baseline.challenger["n"]


def test_identical_challenger_is_skipped_by_every_policy(real_home: Path) -> None:
    first = train("baseline")
    promote("baseline", version=first.model_version)
    outcome = evaluate("baseline", version=first.model_version)
    assert {d.kind for d in outcome.decisions.values()} == {"skip_no_improvement"}
    assert outcome.evaluation.current.rows > 0
    assert Path(outcome.reports["test_current_predicted_vs_actual"]).exists()
    # each set keeps its own breakdown, of the rows it was judged on
    for name, scores in (("test_baseline", outcome.evaluation.baseline), ("test_current", outcome.evaluation.current)):
        per_hour = pd.read_csv(outcome.reports[f"{name}_per_hour"])
        assert per_hour["rows"].sum() == scores.rows, name


def test_a_version_that_trained_on_test_days_is_never_judged_on_them(real_home: Path) -> None:
    """A version fitted after the split on its test days (a cycle's challenger, a retrain) must not be
    scored on rows it learned: those days are left out for both models, and with no unseen
    test_baseline day left the evaluation refuses to judge (fail closed)."""
    import pandas as pd

    promote("baseline", version=train("baseline").model_version)
    split = splits.active_split()
    current = splits.load_split("test_current", split)
    datasets = load_datasets("baseline")
    datasets.train = Dataset("train_and_test_current", pd.concat([datasets.train.frame, current]), "test")
    leaked = train("baseline", datasets=datasets)
    outcome = evaluate("baseline", version=leaked.model_version)
    assert outcome.evaluation.current is None  # every test_current day was learned
    assert any(f"(version {leaked.model_version}) trained on" in note and "left out for both models" in note
               for note in outcome.evaluation.notes)
    assert outcome.evaluation.baseline.rows > 0
    assert any("compared on test_baseline instead" in r for r in outcome.decisions["double_eval"].reasons)
    out = run_cli(["evaluate", "--model-type", "baseline", "--version", leaked.model_version])
    assert out.exit_code == 0 and "left out for both models" in out.output and "reports: " in out.output
    # every evaluation is a decision on record, with its policy's verdict and both models' scores
    from velocast.lifecycle.audit import AuditLog

    rows = AuditLog().list(event="evaluation")
    assert len(rows) == 2 and rows[0].to_version == leaked.model_version
    assert rows[0].deployment_decision == outcome.decisions["double_eval"].kind
    assert rows[0].details["policy"] == "double_eval" and rows[0].r2_baseline is not None
    assert rows[0].champion_r2_baseline is not None and rows[0].reasons == outcome.decisions["double_eval"].reasons
    assert rows[0].actor and rows[0].env == "dev"  # who decided, where

    datasets = load_datasets("baseline")
    everything = pd.concat([datasets.train.frame, splits.load_split("test_baseline", split)])
    datasets.train = Dataset("train_and_test_baseline", everything, "test")
    seen_all = train("baseline", datasets=datasets)
    with pytest.raises(ValueError, match="every test_baseline day was seen in training by the challenger"):
        evaluate("baseline", version=seen_all.model_version)


def test_champion_health_is_judged_on_days_the_champion_never_trained_on(real_home: Path) -> None:
    import pandas as pd

    from velocast.lifecycle.decisions.monitor import champion_health

    promote("baseline", version=train("baseline").model_version)
    honest = champion_health("baseline", days=7)
    assert honest.rows > 0 and not any("the champion trained on" in n for n in honest.reasons)
    split = splits.active_split()
    datasets = load_datasets("baseline")
    datasets.train = Dataset("train_and_test_current",
                             pd.concat([datasets.train.frame, splits.load_split("test_current", split)]), "test")
    leaked = train("baseline", datasets=datasets)
    promote("baseline", version=leaked.model_version, reason="a champion that learned the latest days", force=True)
    health = champion_health("baseline", days=7)  # the store's last 7 days: all learned, none left to judge on
    assert health.state == "unknown" and health.rows == 0
    assert any("day(s) the champion trained on" in n and "left out" in n for n in health.reasons), health.reasons


def test_promote_rollback_promote_keeps_everything_in_step(real_home: Path) -> None:
    # test-mode models: every promotion is a forced, explained override
    v1, v2, v3 = (train("baseline", model_test=True).model_version for _ in range(3))
    promote("baseline", version=v1, reason="first", force=True)
    assert _state() == (v1, None, [_run_of(v1)])
    from velocast.lifecycle.audit import AuditLog

    events = AuditLog().count()
    again = promote("baseline", version=v1, reason="first, again", force=True)  # the champion already
    assert (again.from_version, again.to_version) == (v1, v1) and AuditLog().count() == events
    assert _state() == (v1, None, [_run_of(v1)]) and len(history("baseline")) == 1
    promote("baseline", run_id=_run_of(v2), reason="better", force=True)
    assert _state() == (v2, v1, [_run_of(v2)])
    promote("baseline", version=v3, reason="even better", force=True)
    assert _state() == (v3, v2, [_run_of(v3)])
    rollback("baseline", reason="v3 misbehaves", force=True)
    assert _state() == (v2, v1, [_run_of(v2)])
    promote("baseline", version=v3, reason="fixed", force=True)
    assert _state() == (v3, v2, [_run_of(v3)])
    past = history("baseline")
    assert [(h.event, h.from_version, h.to_version) for h in past] == [
        ("promotion", v2, v3), ("rollback", v3, v2), ("promotion", v2, v3), ("promotion", v1, v2), ("promotion", None, v1)]
    assert past[1].reasons[0] == "v3 misbehaves" and past[1].details["override"] is True and past[0].actor
    # the alias is what MLflow serves
    loaded = mlflow.pyfunc.load_model("models:/bike-traffic-baseline@champion")
    assert loaded.metadata.model_id == Registry().get("baseline", v3).source.split("/")[-1]


def test_nothing_to_roll_back_is_a_clear_error(real_home: Path) -> None:
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback("baseline")
    with pytest.raises(PromotionError, match="no version 9"):
        promote("baseline", version="9")


def test_kill_between_the_two_writes_is_undone_never_completed(real_home: Path) -> None:
    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    promote("baseline", version=v1, reason="first", force=True)
    env = {**os.environ, "VELOCAST_FAULT": "promotion:after_alias"}
    done = subprocess.run([sys.executable, "-m", "velocast.cli", "promote", "--model-type", "baseline",
                           "--version", v2, "--force", "--reason", "killed half-way"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 137, done.stderr[-2000:]
    alias, _, flagged = _state()
    assert alias == v2 and flagged == [_run_of(v1)]  # the crash left them disagreeing...
    assert recover("baseline")                          # ...until the journal's undo runs: the champion as it was
    assert _state() == (v1, None, [_run_of(v1)])
    assert history("baseline")[0].to_version == v1      # the promotion never committed: no promotion row
    from velocast.lifecycle.audit import AuditLog
    undone = AuditLog().list(event="error", limit=1)[0]
    assert "interrupted and is undone by recovery" in undone.error_message and undone.to_version == v1
    assert not recover("baseline")


def test_summary_json_is_a_view_a_failed_write_does_not_undo_the_promotion(real_home: Path) -> None:
    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    promote("baseline", version=v1, reason="first", force=True)
    summary = Path(SummaryStore().uri)
    good = summary.read_text()
    summary.write_text("{ not json")  # summary.json cannot be read nor written during the next promotion
    promote("baseline", version=v2, reason="second", force=True)  # the alias decides: the promotion stands
    assert Registry().champion("baseline").version == v2 and history("baseline")[0].to_version == v2
    summary.write_text(good)
    assert _state() == (v2, v1, [_run_of(v1)])  # the view is behind...
    assert not recover("baseline")              # ...no journal to handle, and recovery brings it in line
    assert _state() == (v2, v1, [_run_of(v2)])
    from velocast.lifecycle.audit import AuditLog
    assert not AuditLog().list(event="error")


def test_summary_rebuild_regenerates_the_file_from_the_registry(real_home: Path) -> None:
    runs = [train("baseline", model_test=True) for _ in range(2)]
    promote("baseline", version=runs[1].model_version, reason="second", force=True)
    summary = Path(SummaryStore().uri)
    before = json.loads(summary.read_text())
    summary.unlink()
    out = run_cli(["summary", "rebuild"])
    assert out.exit_code == 0, out.output
    assert "2 entries (2 as logged by their training" in out.output and "baseline v2" in out.output
    assert json.loads(summary.read_text()) == before  # the same entries, champion flag included
    # an entry of a run the registry does not hold is dropped; flags follow the alias
    SummaryStore().append(SummaryEntry.from_dict({**before[0], "run_id": "gone", "is_champion": True}))
    report = run_cli(["summary", "rebuild", "--json"])
    assert json.loads(report.output)["dropped"] == ["gone"]
    assert json.loads(summary.read_text()) == before
    # `velocast summary` shows the runs, the champion starred
    shown = run_cli(["summary", "--model-type", "baseline"])
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if " baseline " in line]
    assert len(lines) == 2 and lines[1].rstrip().endswith("* test-mode") and "*" not in lines[0]
    assert f"{runs[1].metrics_baseline['rmse']:.3f}" in lines[1]


def test_classifier_report_lists_every_metric_and_gate(real_home: Path) -> None:
    trained = train("rf_class", hyperparams={"n_estimators": 40})
    outcome = evaluate("rf_class", version=trained.model_version)
    text = Path(outcome.reports["text"]).read_text()
    for word in ("auc", "average_precision", "brier", "log_loss", "ece", "calibration_slope",
                 "calibration_intercept", "f1_optimal_threshold", "precision_at_07", "recall_at_07", "cv_auc_std"):
        assert word in text, word
    assert ("PASS" in text) or ("FAIL" in text)
    assert outcome.classifier["auc"] > 0.75  # as served: without the weather of the predicted day
    assert outcome.decisions["double_eval"].kind == ("deploy" if outcome.classifier["passed"] else "reject_regression")


def test_cli_evaluate_promote_champion(real_home: Path) -> None:
    trained = train("baseline", model_test=True)
    out = runner.invoke(app, ["evaluate", "--model-type", "baseline", "--version", trained.model_version])
    assert out.exit_code == 0, out.output
    for policy in ("double_eval", "relative_rmse", "significant"):
        assert f"policy {policy}" in out.output
    out = runner.invoke(app, ["promote", "--model-type", "baseline", "--run-id", trained.run_id, "--reason", "ok"])
    assert out.exit_code == 2 and "test-mode model" in out.output and "--force" in out.output  # one line, no promotion
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    out = runner.invoke(app, ["promote", "--model-type", "baseline", "--run-id", trained.run_id, "--force"])
    assert out.exit_code == 2 and "needs a reason" in out.output
    out = runner.invoke(app, ["promote", "--model-type", "baseline", "--run-id", trained.run_id, "--reason", "ok",
                              "--force"])
    assert out.exit_code == 0 and "champion - -> 1" in out.output and "OVERRIDE" in out.output
    out = runner.invoke(app, ["champion", "--model-type", "baseline", "--history"])
    assert "models:/bike-traffic-baseline/1" in out.output and "promotion" in out.output
    out = runner.invoke(app, ["audit", "list"])
    assert "promotion" in out.output


def test_promote_refuses_a_version_and_a_run_that_disagree_and_an_expected_champion_that_is_no_version(
        real_home: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.api.conftest import HEADERS, KEY, settings_for
    from velocast.api import create_app
    from velocast.lifecycle.audit import AuditLog

    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    forced = ["--force", "--reason", "test"]
    out = run_cli(["promote", "--model-type", "baseline", "--version", v2, "--run-id", _run_of(v1), *forced])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert (f"error: version {v2} and run {_run_of(v1)} name different versions of bike-traffic-baseline "
            f"(run {_run_of(v1)} is version {v1}, version {v2} is of run {_run_of(v2)}): give one of them") \
        in out.output, out.output
    with pytest.raises(ValueError, match="name different versions"):
        promote("baseline", version=v1, run_id=_run_of(v2), reason="test", force=True)
    assert _state() == (None, None, [])
    out = run_cli(["promote", "--model-type", "baseline", "--version", v1, "--run-id", _run_of(v1), *forced])
    assert out.exit_code == 0 and f"champion - -> {v1}" in out.output, out.output  # the same version: fine

    for bad in ("abc", "1.5", "v1"):
        out = run_cli(["promote", "--model-type", "baseline", "--version", v2, *forced, "--expected-champion", bad])
        assert out.exit_code == 2, out.output
        assert f"expected champion '{bad}' is not a version: give the champion version you compared against (a " \
            "number, e.g. 3) or 'none'" in out.output and "champion is version" not in out.output, out.output
    assert _state()[0] == v1
    assert AuditLog().list(event="error", limit=5) == []  # an invalid value, not an audited "champion changed"
    with TestClient(create_app(settings_for(real_home, KEY))) as client:
        body = {"model_type": "baseline", "version": v2, "force": True, "reason": "test", "expected_champion": "abc"}
        response = client.post("/promote_champion", json=body, headers=HEADERS)
        assert response.status_code == 422 and "is not a version" in response.json()["detail"], response.text
        response = client.post("/promote_champion", json={**body, "expected_champion": v1}, headers=HEADERS)
        assert response.status_code == 200 and response.json()["to_version"] == v2, response.text
