"""Promotion fails closed, on real data: gate and test-mode overrides, compare-and-swap, rollback
history, undo-only recovery, reads that never write, test-mode cycles, a rollback racing a cycle."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import run_cli
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.promotion import (
    ChampionChanged,
    PromotionError,
    history,
    pending,
    promote,
    rollback,
)
from velocast.lifecycle.operations.cycle import monitor_and_fine_tune
from velocast.lifecycle.training.train import train
from velocast.tracking.registry import NoServableModel, Registry

WEAK = {"n_estimators": 1, "num_leaves": 2}  # one stump: R² on test_baseline far below the 0.60 gate




def _champion(model_type: str) -> str | None:
    ref = Registry().champion(model_type)
    return ref.version if ref else None


def test_a_gate_failing_version_needs_force_and_a_reason_and_is_audited_as_override(real_home: Path) -> None:
    weak = train("lgbm", hyperparams=WEAK)
    assert weak.baseline_regression is True and not weak.test_mode
    ref = Registry().get("lgbm", weak.model_version)
    gate = (f"bike-traffic-lgbm version {weak.model_version} failed the baseline gate "
            "(R² on test_baseline below 0.6 at training)")
    assert Registry().blockers(ref) == [gate]
    # with no champion, nothing stands in for one: never the gate-failing latest version
    with pytest.raises(NoServableModel, match="failed the baseline gate"):
        Registry().serving("lgbm")
    with pytest.raises(PromotionError, match="failed the baseline gate.*--force"):
        promote("lgbm", version=weak.model_version)
    with pytest.raises(PromotionError, match="needs a reason"):
        promote("lgbm", version=weak.model_version, force=True)
    assert _champion("lgbm") is None and history("lgbm") == []
    done = promote("lgbm", version=weak.model_version, force=True, reason="incident: any model beats none")
    assert done.override and _champion("lgbm") == weak.model_version
    row = history("lgbm")[0]
    assert (row.event, row.deployment_decision, row.details["override"]) == ("promotion", "override", True)
    assert row.reasons == ["incident: any model beats none", f"override (--force): {gate}"]
    # the API says the same: 409 without force, 200 with force and a reason
    from tests.api.conftest import HEADERS, KEY, settings_for
    from velocast.api import create_app

    with TestClient(create_app(settings_for(real_home, KEY))) as client:
        body = {"model_type": "lgbm", "version": weak.model_version, "reason": "again"}
        response = client.post("/promote_champion", json=body, headers=HEADERS)
        assert response.status_code == 409 and "failed the baseline gate" in response.json()["detail"]
        response = client.post("/promote_champion", json={**body, "force": True}, headers=HEADERS)
        assert response.status_code == 200 and response.json()["override"] is True


def test_promotion_is_compare_and_swap_and_a_refusal_is_audited(real_home: Path) -> None:
    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    promote("baseline", version=v1, reason="first", force=True, expected_champion=None)
    with pytest.raises(ChampionChanged, match=f"the champion is version {v1}, not unset"):
        promote("baseline", version=v2, reason="compared with nothing", force=True, expected_champion=None)
    assert _champion("baseline") == v1
    refused = AuditLog().list(event="error", limit=1)[0]
    assert refused.details["refused"] == "champion_changed" and refused.details["requested_version"] == v2
    assert (refused.from_version, refused.to_version) == (v1, v2)  # the move asked for, not made
    assert refused.actor and refused.env == "dev"
    done = promote("baseline", version=v2, reason="compared with v1", force=True, expected_champion=v1)
    assert (done.from_version, done.to_version) == (v1, v2)
    # the CLI: --expected-champion, refused in one line
    out = run_cli(["promote", "--model-type", "baseline", "--version", v1, "--force",
                                       "--reason", "back", "--expected-champion", v1])
    assert out.exit_code == 2 and "refused: the champion is version" in out.output and "Traceback" not in out.output
    assert _champion("baseline") == v2


def test_a_second_rollback_never_brings_back_the_version_rolled_back_from(real_home: Path) -> None:
    v1, v2, v3 = (train("baseline", model_test=True).model_version for _ in range(3))
    for version in (v1, v2):
        promote("baseline", version=version, reason=f"v{version}", force=True)
    assert rollback("baseline", reason="v2 misbehaves", force=True).to_version == v1
    promote("baseline", version=v3, reason="v3", force=True)
    back = rollback("baseline", reason="v3 misbehaves too", force=True)
    assert (back.from_version, back.to_version, back.previous_alias_after) == (v3, v1, None)
    with pytest.raises(PromotionError, match="no previous champion.*rolled back from are skipped"):
        rollback("baseline", reason="and again", force=True)  # never v2 (rolled back from), never v3
    assert _champion("baseline") == v1
    promote("baseline", version=v2, reason="v2 fixed: promoted again on purpose", force=True)
    assert rollback("baseline", reason="no", force=True).to_version == v1  # v3 stays skipped


def test_an_interrupted_promotion_is_undone_at_the_next_write_and_reads_never_run_it(real_home: Path) -> None:
    from tests.api.conftest import KEY, settings_for
    from velocast.api import create_app
    from velocast.lifecycle.decisions.champion import ChampionCache

    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    promote("baseline", version=v1, reason="first", force=True)
    env = {**os.environ, "VELOCAST_FAULT": "promotion:after_alias"}
    killed = subprocess.run([sys.executable, "-m", "velocast.cli", "promote", "--model-type", "baseline", "--version",
                             v2, "--force", "--reason", "dies before its audit row"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert _champion("baseline") == v2 and pending("baseline").to_version == v1  # written, not committed
    settings = settings_for(real_home, KEY)
    # reads: the CLI, GET /models (no lifespan: no start-up recovery) and the cache leave the journal alone...
    out = run_cli(["champion", "--model-type", "baseline"])
    assert out.exit_code == 0 and "awaits its undo" in out.output
    assert TestClient(create_app(settings)).get("/models").status_code == 200
    assert pending("baseline") is not None
    served = ChampionCache(settings, refresh_seconds=0).get("baseline")
    assert (served.version, served.champion) == (v1, True)  # ...and what serves is the champion before it
    # the API's start-up (a write path, off the request path) undoes it: never completes it
    with TestClient(create_app(settings)) as client:
        for _ in range(100):
            if pending("baseline") is None:
                break
            time.sleep(0.1)
        assert pending("baseline") is None
        assert client.get("/models").json()["models"]["baseline"]["champion"]["version"] == v1
    assert history("baseline")[0].to_version == v1


@pytest.fixture
def weak_lgbm_champion(real_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A gate-failing lgbm champion (forced) that any fine-tuned challenger beats; the gate lowered so a
    1,000-row test-mode challenger passes it: the cycle's decision is ``deploy`` by construction."""
    weak = train("lgbm", hyperparams=WEAK)
    promote("lgbm", version=weak.model_version, force=True, reason="a weak champion to beat")
    monkeypatch.setenv("VELOCAST_R2_BASELINE_THRESHOLD", "0.3")
    return weak.model_version


def test_a_test_mode_cycle_never_promotes_and_is_audited_as_dev(weak_lgbm_champion: str) -> None:
    result = monitor_and_fine_tune("lgbm", force_fine_tune=True, test_mode=True)
    assert result.status == "ok" and result.decision == "deploy", (result.error, result.reasons)
    assert not result.promoted and result.champion_after == result.champion_before == weak_lgbm_champion
    assert _champion("lgbm") == weak_lgbm_champion
    assert any("not promoted" in r and "test-mode model" in r for r in result.reasons)
    row = AuditLog().list(event="cycle", limit=1)[0]
    assert (row.env, row.details["test_mode"], row.deployment_decision) == ("dev", True, "deploy")
    assert row.to_version == weak_lgbm_champion and row.model_improvement is False
    assert Registry().get("lgbm", result.challenger_version).tags["env"] == "dev"
    steps = {s.name: s for s in result.steps}
    assert steps["promote"].status == "done" and "champion kept" in steps["promote"].summary


def test_a_rollback_during_a_cycle_wins_over_its_promotion(real_home: Path) -> None:
    """A sample-trained baseline champion (v2, forced) that the cycle's full challenger beats: the cycle
    decides deploy, but a rollback lands between its evaluation and its promotion."""
    v1, v2 = (train("baseline", model_test=True).model_version for _ in range(2))
    for version in (v1, v2):
        promote("baseline", version=version, reason="sample champion", force=True)

    def rollback_after_evaluation(step) -> None:
        if step.name == "evaluate" and step.status == "done":
            assert step.details["decision"] == "deploy", step.details["reasons"]
            rollback("baseline", reason="incident during the cycle", force=True)

    result = monitor_and_fine_tune("baseline", force_fine_tune=True, on_step=rollback_after_evaluation)
    assert result.status == "error" and result.error.startswith("promote step failed: ChampionChanged"), result.error
    assert not result.promoted and result.champion_before == v2 and result.champion_after == v1
    assert _champion("baseline") == v1  # the rollback won
    cycle, refused = AuditLog().list(event="error", limit=2)  # newest first
    assert cycle.event_id == result.cycle_id and cycle.to_version == v1
    assert refused.details == {"refused": "champion_changed", "requested_version": result.challenger_version,
                               "expected_champion": v2, "champion": v1}
    assert [h.event for h in history("baseline")][:1] == ["rollback"]



def test_a_rollback_brings_back_a_test_mode_version_only_as_an_override(real_home: Path) -> None:
    """A test-mode version (forced champion once) is what a rollback would bring back: the same rule as a promotion."""
    sample = train("baseline", model_test=True).model_version
    promote("baseline", version=sample, reason="incident: the sample model was all we had", force=True)
    real = train("baseline").model_version
    assert Registry().blockers(Registry().get("baseline", real)) == []
    promote("baseline", version=real, reason="a real model")
    blockers = Registry().blockers(Registry().get("baseline", sample))
    assert f"bike-traffic-baseline version {sample} is a test-mode model (trained on a small sample)" in blockers
    blocker = "; ".join(blockers)
    with pytest.raises(PromotionError, match="test-mode model.*not brought back by a rollback without an explicit "
                                             "override.*--force --reason"):
        rollback("baseline", reason="the real one misbehaves")
    with pytest.raises(PromotionError, match="a forced rollback needs a reason"):
        rollback("baseline", force=True)
    out = run_cli(["rollback", "--model-type", "baseline"])
    assert out.exit_code == 2 and out.output.strip() == (
        f"error: {blocker}: it is not brought back by a rollback without an explicit override (CLI: --force "
        "--reason \"why\"; API: \"force\": true and a reason)"), out.output
    assert _champion("baseline") == real and history("baseline")[0].event == "promotion"  # nothing moved

    from tests.api.conftest import HEADERS, KEY, settings_for
    from velocast.api import create_app

    with TestClient(create_app(settings_for(real_home, KEY))) as client:
        response = client.post("/rollback", json={"model_type": "baseline", "reason": "api"}, headers=HEADERS)
        assert response.status_code == 409 and "test-mode model" in response.json()["detail"], response.text
        response = client.post("/rollback", json={"model_type": "baseline", "force": True}, headers=HEADERS)
        assert response.status_code == 409 and "needs a reason" in response.json()["detail"], response.text
        assert _champion("baseline") == real
        out = run_cli(["rollback", "--model-type", "baseline", "--force", "--reason", "the real one misbehaves"])
        assert out.exit_code == 0, out.output
        assert f"champion {real} -> {sample} (rolled back; previous-champion: -); OVERRIDE of: {blocker}" in out.output
    row = history("baseline")[0]
    assert (row.event, row.from_version, row.to_version) == ("rollback", real, sample)
    assert row.details["override"] is True and row.details["overridden"] == blockers
    assert row.reasons == ["the real one misbehaves", *(f"override (--force): {b}" for b in blockers)]
