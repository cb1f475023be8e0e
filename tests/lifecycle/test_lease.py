"""The cycle lease: one cycle (or retrain) per model type, held across processes and Airflow tasks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from velocast.config import get_settings
from velocast.lifecycle.operations import cycle_tasks, lease
from velocast.lifecycle.operations.cycle import monitor_and_fine_tune, quarterly_retrain
from velocast.lifecycle.operations.lease import CycleBusy


def test_a_lease_is_held_by_its_owner_until_released_or_stale(home: Path) -> None:
    settings = get_settings()
    first = lease.acquire("lgbm", "airflow:monitor_and_fine_tune:run-1", settings)
    assert lease.acquire("lgbm", first.owner, settings).owner == first.owner  # the same owner renews it
    with pytest.raises(CycleBusy, match="another lgbm cycle is running.*held by airflow:monitor_and_fine_tune:run-1"):
        lease.acquire("lgbm", "airflow:monitor_and_fine_tune:run-2", settings)
    lease.acquire("rf", "someone", settings)  # another model type is independent
    assert not lease.release("lgbm", "airflow:monitor_and_fine_tune:run-2", settings)  # not its lease: kept
    assert lease.current("lgbm", settings).owner == first.owner
    assert lease.release("lgbm", first.owner, settings) and lease.current("lgbm", settings) is None
    # an expired lease (a run whose clean-up never ran) is taken over
    lease.acquire("lgbm", "airflow:lost-run", settings, seconds=0.05)
    time.sleep(0.1)
    assert lease.acquire("lgbm", "next", settings).owner == "next"


def test_a_killed_cli_cycle_frees_its_lease(home: Path) -> None:
    settings = get_settings()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    path = lease.lease_path(settings, "lgbm")
    path.parent.mkdir(parents=True, exist_ok=True)
    held = lease.acquire("lgbm", "cli", settings, process_bound=True)
    path.write_text(json.dumps({**held.__dict__, "pid": int(dead.stdout)}))  # its process is gone
    assert lease.acquire("lgbm", "new", settings).owner == "new"


def test_a_cycle_and_a_retrain_refuse_while_an_airflow_run_holds_the_lease(real_home: Path) -> None:
    settings = get_settings()
    started = cycle_tasks.begin("lgbm", owner="airflow:monitor_and_fine_tune:manual-1", settings=settings)
    assert started["proceed"] is True  # nothing trained yet: new data
    with pytest.raises(CycleBusy, match="held by airflow:monitor_and_fine_tune:manual-1"):
        monitor_and_fine_tune("lgbm")
    with pytest.raises(CycleBusy):
        quarterly_retrain("lgbm", cutoff="2021-07-15", test_mode=True)
    out = run_cli(["cycle", "--model-type", "lgbm"])
    assert out.exit_code == 3 and "another lgbm cycle is running" in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    out = run_cli(["retrain", "--model-type", "lgbm", "--merge"])
    assert out.exit_code == 3 and "another lgbm cycle is running" in out.output
    # the DAG's last task gives it back; a run refused as busy would not release another's lease
    assert cycle_tasks.release("lgbm", "airflow:monitor_and_fine_tune:other", settings)["released"] is False
    assert cycle_tasks.release("lgbm", "airflow:monitor_and_fine_tune:manual-1", settings)["released"] is True
    assert lease.current("lgbm", settings) is None
