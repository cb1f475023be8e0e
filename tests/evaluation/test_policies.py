"""Every branch of every decision policy, on hand-made metric sets (pure, no I/O)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from velocast.evaluation.policies import POLICIES, DoubleEvaluation, PairedScores, Policy, decide, decide_all


def _reg(r2: float, rmse: float) -> dict:
    return {"r2": r2, "rmse": rmse, "mae": rmse * 0.6, "rmse_log1p": 0.4, "n": 1000}


def _daily(se_ch: list[float], se_cp: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"day": range(len(se_ch)), "n": 24, "se_challenger": se_ch, "se_champion": se_cp})


def _counters(ch: list[float], cp: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"counter": [f"c{i}" for i in range(len(ch))], "n": 100, "rmse_challenger": ch,
                         "rmse_champion": cp})


def _eval(base_ch: dict, base_cp: dict | None, cur_ch: dict | None = None, cur_cp: dict | None = None,
          daily: pd.DataFrame | None = None, counters: pd.DataFrame | None = None) -> DoubleEvaluation:
    baseline = PairedScores("test_baseline", 5000, base_ch, base_cp)
    current = None if cur_ch is None else PairedScores("test_current", 800, cur_ch, cur_cp, daily, counters)
    return DoubleEvaluation("lgbm", "regression", "models:/x/2", "models:/x/1" if base_cp else None, baseline, current)


@pytest.mark.parametrize("name", POLICIES)
def test_baseline_gate_rejects_under_every_policy(name: str) -> None:
    d = decide(_eval(_reg(0.051, 317.1), _reg(0.8, 40), _reg(0.854, 36), _reg(0.5, 50)), Policy(name=name))
    assert d.kind == "reject_regression" and d.baseline_regression
    assert "0.051 < 0.6" in d.reasons[0]


@pytest.mark.parametrize("name", POLICIES)
def test_no_champion_deploys_when_the_gate_passes(name: str) -> None:
    d = decide(_eval(_reg(0.7, 40), None), Policy(name=name))
    assert d.kind == "deploy" and "no champion" in " ".join(d.reasons)


def test_double_eval_deploy_skip_and_tie() -> None:
    assert decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.82, 30), _reg(0.80, 32))).kind == "deploy"
    assert decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.78, 30), _reg(0.80, 32))).kind == "skip_no_improvement"
    tie = decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.80, 30), _reg(0.80, 30)))
    assert tie.kind == "skip_no_improvement" and not tie.model_improvement


def test_an_undefined_r2_is_no_improvement() -> None:
    d = decide(_eval(_reg(0.8, 30), {**_reg(0.8, 30), "r2": None}))  # R² of one row is None (not defined)
    assert d.kind == "skip_no_improvement" and "not defined" in d.reasons[-1]


def test_threshold_is_configurable() -> None:
    ev = _eval(_reg(0.65, 30), None)
    assert decide(ev, Policy(r2_threshold=0.7)).kind == "reject_regression"
    assert decide(ev, Policy(r2_threshold=0.6)).kind == "deploy"


def test_relative_rmse_five_percent_rule() -> None:
    p = Policy(name="relative_rmse")
    assert decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.8, 94.9), _reg(0.8, 100)), p).kind == "deploy"
    assert decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.8, 95.0), _reg(0.8, 100)), p).kind == "skip_no_improvement"


def test_no_current_falls_back_to_baseline_and_says_so() -> None:
    d = decide(_eval(_reg(0.85, 28), _reg(0.80, 30)))
    assert d.kind == "deploy" and any("compared on test_baseline" in r for r in d.reasons)


def test_a_handful_of_current_rows_is_not_compared_on() -> None:
    """125 rows (two night hours of the counters) say nothing: test_baseline decides, and the reasons say why."""
    ev = _eval(_reg(0.85, 28), _reg(0.80, 30), _reg(0.60, 40), _reg(0.90, 20))
    ev.current.rows = 125
    d = decide(ev)
    assert d.kind == "deploy" and any("only 125 test_current rows (fewer than 200)" in r for r in d.reasons)
    ev.current.rows = 200
    assert decide(ev).kind == "skip_no_improvement"


def test_significant_needs_confidence_and_no_counter_regression() -> None:
    p = Policy(name="significant")
    rng = np.random.default_rng(0)
    cp = rng.uniform(900, 1100, 30)
    clearly_better = _daily(list(cp * 0.7), list(cp))
    ok = _eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.85, 25), _reg(0.8, 30), clearly_better, _counters([10, 12], [11, 12]))
    d = decide(ok, p)
    assert d.kind == "deploy" and d.details["share_better"] == 1.0
    noisy = _daily(list(cp * rng.uniform(0.8, 1.2, 30)), list(cp))
    assert decide(_eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.8, 30), _reg(0.8, 30), noisy, None), p).kind == \
        "skip_no_improvement"
    guarded = _eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.85, 25), _reg(0.8, 30), clearly_better, _counters([10, 20], [11, 12]))
    d = decide(guarded, p)
    assert d.kind == "skip_no_improvement" and "c1 (+67%)" in d.reasons[-1]
    one_day = _eval(_reg(0.8, 30), _reg(0.8, 30), _reg(0.85, 25), _reg(0.8, 30), _daily([1.0], [2.0]), None)
    assert decide(one_day, p).kind == "skip_no_improvement"


def test_identical_models_are_skipped_by_every_policy() -> None:
    same = _reg(0.8, 30)
    ev = _eval(same, same, same, same, _daily([100.0] * 10, [100.0] * 10), _counters([10], [10]))
    assert {d.kind for d in decide_all(ev).values()} == {"skip_no_improvement"}


def test_classification_uses_gates_and_auc() -> None:
    base = PairedScores("test_baseline", 100, {"auc": 0.9}, {"auc": 0.88})
    cur = PairedScores("test_current", 100, {"auc": 0.91}, {"auc": 0.89})
    ev = DoubleEvaluation("rf_class", "classification", "c", "p", base, cur, classifier_gates_passed=True)
    assert decide(ev).kind == "deploy"
    ev.classifier_gates_passed = False
    assert decide(ev).kind == "reject_regression"
    ev.classifier_failures = ["cv_auc_std 0.050012 < 0.05: FAIL (over the limit by 0.000012)"]
    assert decide(ev).reasons == ["the classifier validation gates failed on test_baseline: cv_auc_std 0.050012 "
                                  "< 0.05: FAIL (over the limit by 0.000012)"]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        Policy(name="yolo")
