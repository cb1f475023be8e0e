"""Property-based tests of the champion/challenger decisions (pure functions of metrics and a policy).

For generated ``DoubleEvaluation``s (with or without a champion, with or without test_current,
daily and per-counter errors for the ``significant`` policy):

- the decision is one of the three kinds and its reasons are non-empty strings;
- a baseline R² below the threshold (or missing, or not a number) is ``reject_regression`` under
  every policy;
- a challenger identical to the champion is never deployed;
- ``deploy`` under ``double_eval`` means the challenger's R² beats the champion's on the compared set;
- monotonicity: making the challenger better on test_current never turns ``deploy`` into a skip.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tests.hardening.conftest import properties
from velocast.evaluation.policies import (
    POLICIES,
    DoubleEvaluation,
    PairedScores,
    Policy,
    decide,
    decide_all,
)

KINDS = {"deploy", "reject_regression", "skip_no_improvement"}
r2s = st.one_of(st.floats(-5, 1, allow_nan=False), st.sampled_from([0.6, 0.59999, 0.60001, 1.0, 0.0]))
rmses = st.floats(0, 500, allow_nan=False)


def regression(r2: float, rmse: float) -> dict:
    return {"r2": r2, "rmse": rmse, "mae": rmse * 0.7, "rmse_log1p": 0.5, "n": 1000}


@st.composite
def daily(draw: st.DrawFn, n_days: int) -> pd.DataFrame:
    n = draw(st.lists(st.integers(1, 48), min_size=n_days, max_size=n_days))
    se_cp = draw(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=n_days, max_size=n_days))
    se_ch = draw(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=n_days, max_size=n_days))
    return pd.DataFrame({"day": range(n_days), "n": n, "se_challenger": se_ch, "se_champion": se_cp})


@st.composite
def per_counter(draw: st.DrawFn) -> pd.DataFrame:
    k = draw(st.integers(0, 6))
    return pd.DataFrame({"counter": [f"c{i}" for i in range(k)],
                         "n": draw(st.lists(st.integers(0, 200), min_size=k, max_size=k)),
                         "rmse_challenger": draw(st.lists(st.floats(0, 300, allow_nan=False), min_size=k, max_size=k)),
                         "rmse_champion": draw(st.lists(st.floats(0, 300, allow_nan=False), min_size=k, max_size=k))},
                        columns=["counter", "n", "rmse_challenger", "rmse_champion"])


@st.composite
def evaluations(draw: st.DrawFn, baseline_r2: st.SearchStrategy | None = None) -> DoubleEvaluation:
    has_champion = draw(st.booleans()) or draw(st.booleans())
    base_ch = regression(draw(baseline_r2 if baseline_r2 is not None else r2s), draw(rmses))
    base_cp = regression(draw(r2s), draw(rmses)) if has_champion else None
    current = None
    if draw(st.booleans()) or draw(st.booleans()):
        n_days = draw(st.integers(0, 12))
        current = PairedScores("test_current", draw(st.integers(1, 5000)), regression(draw(r2s), draw(rmses)),
                               regression(draw(r2s), draw(rmses)) if has_champion else None,
                               draw(daily(n_days)) if has_champion else None,
                               draw(per_counter()) if has_champion else None)
    return DoubleEvaluation("lgbm", "regression", "models:/bike-traffic-lgbm/2",
                            "models:/bike-traffic-lgbm/1" if has_champion else None,
                            PairedScores("test_baseline", draw(st.integers(1, 5000)), base_ch, base_cp), current)


policies = st.builds(Policy, name=st.sampled_from(POLICIES), r2_threshold=st.sampled_from([0.6, 0.0, 0.8, -1.0]),
                     relative_rmse_factor=st.sampled_from([0.95, 1.0, 0.5]),
                     bootstrap_resamples=st.sampled_from([50, 200]), seed=st.integers(0, 5))


def compared_set(evaluation: DoubleEvaluation) -> PairedScores:
    """test_current when it has a champion's scores and enough rows to compare on, else test_baseline."""
    current = evaluation.current
    enough = current is not None and current.champion and current.rows >= Policy().min_current_rows
    return current if enough else evaluation.baseline


@properties(max_examples=300)
@given(evaluations(), policies)
def test_every_decision_is_a_known_kind_with_reasons(evaluation: DoubleEvaluation, policy: Policy) -> None:
    decision = decide(evaluation, policy)
    assert decision.kind in KINDS
    assert decision.policy == policy.name
    assert decision.reasons and all(isinstance(r, str) and r.strip() for r in decision.reasons)
    assert decision.baseline_regression == (decision.kind == "reject_regression")
    assert decision.model_improvement == (decision.kind == "deploy")
    all_decisions = decide_all(evaluation, policy)
    assert set(all_decisions) == set(POLICIES)
    assert all_decisions[policy.name].kind == decision.kind


@properties(max_examples=200)
@given(evaluations(baseline_r2=st.one_of(st.floats(-1e9, 0.5999999), st.just(float("nan")), st.just(None),
                                         st.just(float("-inf")), st.just(float("inf")))))
def test_a_baseline_regression_is_rejected_by_every_policy(evaluation: DoubleEvaluation) -> None:
    for name, decision in decide_all(evaluation).items():  # threshold 0.60
        assert decision.kind == "reject_regression", (name, evaluation.baseline.challenger["r2"], decision.reasons)
        assert decision.baseline_regression


@properties(max_examples=200)
@given(evaluations(), policies)
def test_a_challenger_identical_to_the_champion_is_never_deployed(evaluation: DoubleEvaluation,
                                                                  policy: Policy) -> None:
    if evaluation.baseline.champion is None:  # give it a champion: the challenger's own twin
        evaluation.champion = "models:/bike-traffic-lgbm/1"
    evaluation.baseline.champion = dict(evaluation.baseline.challenger)
    current = evaluation.current
    if current is not None:
        current.champion = dict(current.challenger)
        if current.daily is not None:
            current.daily = current.daily.assign(se_champion=current.daily["se_challenger"])
        if current.per_counter is not None:
            current.per_counter = current.per_counter.assign(rmse_champion=current.per_counter["rmse_challenger"])
    assert decide(evaluation, policy).kind != "deploy"


@properties(max_examples=300)
@given(evaluations(), policies)
def test_double_eval_deploys_only_a_better_r2_on_the_compared_set(evaluation: DoubleEvaluation,
                                                                  policy: Policy) -> None:
    decision = decide(evaluation, Policy(name="double_eval", r2_threshold=policy.r2_threshold))
    if decision.kind == "deploy" and evaluation.has_champion:
        scores = compared_set(evaluation)
        assert scores.challenger["r2"] > scores.champion["r2"]
        assert evaluation.baseline.challenger["r2"] >= policy.r2_threshold


def improved(evaluation: DoubleEvaluation, r2_gain: float, rmse_factor: float, se_factor: float) -> DoubleEvaluation:
    """The same evaluation with a challenger at least as good on test_current in every respect."""
    better = copy.deepcopy(evaluation)
    current = better.current
    if current is None:
        return better
    current.challenger = regression(min(1.0, current.challenger["r2"] + r2_gain), current.challenger["rmse"] * rmse_factor)
    if current.daily is not None:
        current.daily = current.daily.assign(se_challenger=current.daily["se_challenger"] * se_factor)
    if current.per_counter is not None:
        current.per_counter = current.per_counter.assign(
            rmse_challenger=current.per_counter["rmse_challenger"] * se_factor)
    return better


@properties(max_examples=300)
@given(evaluations(), policies, st.floats(0, 2), st.floats(0, 1), st.floats(0, 1))
def test_a_better_challenger_is_never_less_deployable(evaluation: DoubleEvaluation, policy: Policy, r2_gain: float,
                                                      rmse_factor: float, se_factor: float) -> None:
    before = decide(evaluation, policy)
    after = decide(improved(evaluation, r2_gain, rmse_factor, se_factor), policy)
    if before.kind == "deploy":
        assert after.kind == "deploy", (before.reasons, after.reasons)
    if before.kind == "reject_regression":
        assert after.kind == "reject_regression"  # test_current never overrides the baseline gate


def test_nan_metrics_never_deploy() -> None:
    nan = float("nan")
    evaluation = DoubleEvaluation("lgbm", "regression", "models:/x/2", "models:/x/1",
                                  PairedScores("test_baseline", 10, regression(0.9, 10), regression(0.9, 10)),
                                  PairedScores("test_current", 1000, regression(nan, nan), regression(0.5, 20)))
    assert {d.kind for d in decide_all(evaluation).values()} == {"skip_no_improvement"}
    assert math.isnan(evaluation.current.challenger["r2"]) and not np.isnan(evaluation.current.champion["r2"])
