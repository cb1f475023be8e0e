"""Optuna over 2 worker processes sharing one study in PostgreSQL, through the ``velocast`` command.

The model is ``rf`` on the model-test sample: its trials take a second or two, where LightGBM's
search space (up to 1,200 trees) makes six trials cost minutes; the distribution is the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.scale.conftest import MlflowServer, PostgresCluster

ROOT = Path(__file__).resolve().parents[2]


def test_two_workers_share_one_study_in_postgresql(stack_env: dict[str, str], pg: PostgresCluster,
                                                   mlflow_server: MlflowServer) -> None:
    import mlflow

    from velocast.tracking.registry import Registry

    storage = pg.url("optuna", driver="postgresql")  # as a user writes it; velocast picks the installed driver
    study_name = f"rf-{uuid.uuid4().hex[:8]}"
    command = [str(Path(sys.executable).with_name("velocast")), "train", "--model-type", "rf", "--model-test",
               "--hyperopt", "--n-trials", "6", "--n-jobs-workers", "2", "--study-storage", storage,
               "--study-name", study_name, "--json"]
    if not Path(command[0]).exists():
        command[0:1] = [sys.executable, "-m", "velocast.cli"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            cwd=ROOT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    result = json.loads(stdout[stdout.index("["):])[0]

    # every trial of the study finished (complete, or pruned as hopeless on its first folds), run by two
    # processes other than the command itself
    study = optuna.load_study(study_name=study_name, storage=pg.url("optuna"))
    assert len(study.trials) == 6
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.COMPLETE in states
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    pids = {t.user_attrs["worker_pid"] for t in study.trials}
    assert len(pids) == 2 and proc.pid not in pids
    assert sorted(t.user_attrs["worker"] for t in study.trials) == [0, 0, 0, 1, 1, 1]

    # each trial is a child run of the training run, logged by the worker that ran it
    run_id = result["run_id"]
    children = mlflow.search_runs(experiment_names=["velocast"],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    complete = children[children.get("tags.optuna_state", pd.Series("", index=children.index)) != "pruned"]
    assert len(children) == 6 and len(complete) >= 1 and complete["metrics.cv_rmse"].notna().all()
    assert set(children["tags.optuna_study"]) == {study_name}
    assert {int(p) for p in children["tags.optuna_worker_pid"]} == pids
    assert sorted(complete["metrics.cv_rmse"]) == pytest.approx(
        sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE))

    # the final model: trained with the study's best parameters and registered on the server
    parent = mlflow.get_run(run_id)
    assert parent.data.tags["optuna_workers"] == "2" and parent.data.tags["optuna_study"] == study_name
    assert parent.data.metrics["cv_best_rmse"] == pytest.approx(study.best_value)
    for name, value in study.best_params.items():
        assert parent.data.params[f"hp_{name}"] == str(value)
    ref = Registry().for_run("rf", run_id)
    assert ref.version == result["model_version"] and result["registry_uri"] == ref.uri
