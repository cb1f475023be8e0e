"""Optuna tuning: fast by construction (shared fold features, early stopping, pruning), and never silent."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from velocast.config import Settings
from velocast.lifecycle.inputs import build_inputs
from velocast.lifecycle.training.datasets import load_datasets
from velocast.lifecycle.training.tuning import tune
from velocast.models import get_spec
from velocast.progress import LOGGER_NAME


@pytest.fixture
def rows(real_home: Path) -> pd.DataFrame:
    """The model-test sample of the real subset, enriched as training enriches it (1,000 rows, a year)."""
    settings = Settings(home=real_home)
    datasets = load_datasets("baseline", settings, model_test=True)
    return build_inputs(datasets.train.frame, settings).frame("observed")


def test_each_trial_is_reported_and_the_search_starts_from_the_defaults(rows: pd.DataFrame, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        result = tune("lgbm", rows, "day-ahead", n_trials=8, storage=storage, study_name="s", log_to_mlflow=False)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert [line.split(":")[0] for line in trial_lines] == [f"trial {k}/8" for k in range(1, 9)]
    assert all(" · best " in line and ", tuning " in line for line in trial_lines)  # value, best so far, elapsed
    assert [r.progress_done for r in caplog.records if r.getMessage().startswith("trial ")] == list(range(1, 9))

    study = optuna.load_study(study_name="s", storage=storage)
    spec = get_spec("lgbm")
    assert study.trials[0].params == {k: spec.defaults[k] for k in study.trials[0].params}  # the defaults first
    assert "n_estimators" not in study.trials[0].params  # grown with early stopping, not searched
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for trial in study.trials:
        folds = trial.user_attrs["fold_values"]
        if trial.state == optuna.trial.TrialState.PRUNED:  # stopped after a bad fold, and said so
            assert len(folds) < 3 and any(line.startswith(f"trial {trial.number + 1}/8: pruned after fold "
                                                          f"{len(folds)}/3") for line in trial_lines)
        else:
            assert len(folds) == 3 and all(1 <= t <= spec.tuning_max_trees for t in trial.user_attrs["trees"])
    best = study.best_trial
    assert result.best_value == pytest.approx(best.value) and result.best_trial == best.number
    assert result.best_params["n_estimators"] == best.user_attrs["trees"][-1]  # the largest fold's stopping point
    assert result.n_complete + result.n_pruned == 8


def test_timeout_stops_starting_new_trials(rows: pd.DataFrame) -> None:
    started = time.perf_counter()
    result = tune("rf", rows, "calendar", n_trials=500, timeout=3, log_to_mlflow=False)
    assert 1 <= result.n_trials < 500 and result.n_complete >= 1
    assert time.perf_counter() - started < 120  # 3 s, plus the trial running then and the fold features


def test_bad_timeout_and_too_few_days_are_clear_errors(rows: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="--timeout must be a positive number of seconds"):
        tune("lgbm", rows, "day-ahead", timeout=0, log_to_mlflow=False)
    with pytest.raises(ValueError, match="time-series CV needs at least 4 days"):
        tune("lgbm", rows.head(2), "day-ahead", log_to_mlflow=False)
