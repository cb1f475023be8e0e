"""No training frame ever holds a day its model is judged on, whatever the entry point.

Property-based over the split's cutoff, the weekly window, posted data and simulation starts: for
every run each entry point makes (CLI ``train``/``train --data``, ``POST /train`` with
``current_data``, the cycle's ``sliding_window`` and ``continue`` fine-tunes, ``simulate``,
``retrain --merge``), the days it trained on (its ``data/days.json``, written from the frame given
to ``fit``) are disjoint from the held-out days computed *here*, independently, from the split
snapshot and the test set the entry point scores on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from fastapi.testclient import TestClient
from hypothesis import Phase, given, settings as hypothesis_settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.hardening.conftest import properties
from velocast.api import create_app
from velocast.cli import app as cli
from velocast.config import PARIS_TZ, Settings
from velocast.data import splits, store
from velocast.lifecycle.operations.cycle import fine_tune, quarterly_retrain
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.operations.simulate import simulate
from velocast.lifecycle.training.train import train
from velocast.tracking.registry import Registry

runner = CliRunner()


def runs(max_examples: int) -> hypothesis_settings:
    """Few examples (each trains models), no shrinking: a failing example is reported as generated."""
    return hypothesis_settings(properties(max_examples), phases=[Phase.explicit, Phase.generate])
CUTOFFS = st.sampled_from(["2021-06-20", "2021-07-10", "2021-07-25"])


@contextmanager
def fresh_home(template: Path, root: Path, cutoff: str) -> Iterator[Settings]:
    """A copy of the ingested real-subset home with a split at ``cutoff`` (its own split version)."""
    home = root / f"home-{time.monotonic_ns()}"
    shutil.copytree(template, home)
    settings = Settings(home=home)
    splits.record_split(cutoff, settings=settings)
    with pytest_env(home):
        yield settings
    shutil.rmtree(home, ignore_errors=True)


@contextmanager
def pytest_env(home: Path) -> Iterator[None]:
    import os
    before = os.environ.get("VELOCAST_HOME")
    os.environ["VELOCAST_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("VELOCAST_HOME", None)
        else:
            os.environ["VELOCAST_HOME"] = before


def days_of(frame: pd.DataFrame) -> set[str]:
    return set(splits.paris_day(frame["timestamp"]).astype(str))


def latest_days(frame: pd.DataFrame, fraction: float = 0.2) -> set[str]:
    """The latest ``fraction`` of the days of ``frame`` (how a window or posted rows are split by time)."""
    days = sorted(days_of(frame))
    return set(days[-max(1, int(round(len(days) * fraction))):])


def trained_days(settings: Settings, run_id: str) -> set[str]:
    Registry(settings)  # points MLflow at this home
    return set(mlflow.artifacts.load_dict(f"runs:/{run_id}/data/days.json")["train_days"])


def split_held_out(settings: Settings) -> set[str]:
    """The active split's test_baseline days and its store test_current days, read from the snapshot."""
    record = splits.active_split(settings)
    _, test_current = splits.split_by_time(splits.load_split("current", record, settings), record.current_test_fraction)
    return set(record.test_days) | days_of(test_current)


def window_of(settings: Settings, days: int) -> pd.DataFrame:
    """The last ``days`` whole Paris days (a last day whose 23:00 is not stored yet is still being counted)."""
    latest = store.latest_timestamp(settings).tz_convert(PARIS_TZ).tz_localize(None)
    end = latest.normalize() + pd.Timedelta(days=1 if latest.hour == 23 else 0)
    return store.query_counts((end - pd.Timedelta(days=days)).tz_localize(PARIS_TZ), end.tz_localize(PARIS_TZ),
                              settings=settings)


@runs(3)
@given(cutoff=CUTOFFS, source=st.sampled_from(["baseline", "reference", "file"]))
def test_cli_training(real_store_template: Path, tmp_path: Path, cutoff: str, source: str) -> None:
    with fresh_home(real_store_template, tmp_path, cutoff) as settings:
        args = ["train", "--model-type", "baseline", "--model-test", "--json"]
        if source == "file":  # a file holding every stored row, test days included
            path = tmp_path / f"all-{time.monotonic_ns()}.parquet"
            store.query_counts(settings=settings).to_parquet(path)
            args += ["--data", str(path)]
        else:
            args += ["--data-source", source]
        done = runner.invoke(cli, args)
        assert done.exit_code == 0, done.output
        run_id = Registry(settings).latest("baseline").run_id
        assert trained_days(settings, run_id).isdisjoint(split_held_out(settings))


@runs(3)
@given(cutoff=CUTOFFS, first=st.integers(0, 40), length=st.integers(8, 40))
def test_api_training_with_posted_current_data(real_store_template: Path, tmp_path: Path, cutoff: str, first: int,
                                               length: int) -> None:
    with fresh_home(real_store_template, tmp_path, cutoff) as settings:
        start = pd.Timestamp(cutoff, tz=PARIS_TZ) - pd.Timedelta(days=first)  # may reach back before the cutoff
        posted = store.query_counts(start, start + pd.Timedelta(days=length), settings=settings)
        records = [{"counter_id": c, "timestamp": t.isoformat(), "bike_count": float(y)}
                   for c, t, y in zip(posted["counter_id"], posted["timestamp"], posted["bike_count"])]
        app = create_app(settings.model_copy(update={"api_key": "k" * 20}))
        with TestClient(app) as client:
            accepted = client.post("/train", headers={"X-API-Key": "k" * 20},
                                   json={"model_type": "baseline", "test_mode": True, "current_data": records})
            assert accepted.status_code == 202, accepted.text
            url = accepted.json()["status_url"]
            for _ in range(600):
                job = client.get(url).json()
                if job["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.2)
        assert job["status"] == "succeeded", job
        held_out = set(splits.active_split(settings).test_days) | latest_days(posted)
        assert trained_days(settings, job["run_id"]).isdisjoint(held_out)


@runs(4)
@given(cutoff=CUTOFFS, window=st.integers(10, 60), strategy=st.sampled_from(["sliding_window", "continue"]))
def test_cycle_fine_tunes(real_store_template: Path, tmp_path: Path, cutoff: str, window: int, strategy: str) -> None:
    with fresh_home(real_store_template, tmp_path, cutoff) as settings:
        first = train("lgbm", model_test=True, hyperparams={"n_estimators": 20}, settings=settings)
        promote("lgbm", version=first.model_version, reason="test", force=True, settings=settings)
        tuned = fine_tune("lgbm", strategy, window, test_mode=True, settings=settings)
        judged = latest_days(window_of(settings, window))
        if strategy == "continue":  # it keeps the champion's trees: judged only on days they never learned
            learned = trained_days(settings, first.run_id)
            assert learned <= trained_days(settings, tuned.run_id)
            judged -= learned
            tags = mlflow.get_run(tuned.run_id).data.tags  # its lineage, as MLflow shows it
            assert (tags["continued_from_version"], tags["continued_from_run"]) == (first.model_version, first.run_id)
            assert tags["data_source"] == "train_current_window"
        held_out = set(splits.active_split(settings).test_days) | judged
        assert trained_days(settings, tuned.run_id).isdisjoint(held_out)
        recorded = mlflow.artifacts.load_dict(f"runs:/{tuned.run_id}/data/days.json")["held_out_days"]
        assert judged <= set(recorded)


@runs(2)
@given(start=st.sampled_from(["2021-06-28", "2021-07-12"]))
def test_simulation(real_store_template: Path, tmp_path: Path, start: str) -> None:
    with fresh_home(real_store_template, tmp_path, "2021-06-01") as settings:
        result = simulate(start, weeks=2, model_type="baseline", test_mode=True, settings=settings)
        sim = Settings(home=Path(result.home))
        record = splits.active_split(sim)
        runs = mlflow.search_runs(experiment_names=[sim.experiment_name], output_format="list")
        assert len(runs) >= 3
        for run in runs:
            days = trained_days(sim, run.info.run_id)
            assert days.isdisjoint(record.test_days), run.info.run_name


@runs(2)
@given(cutoff=CUTOFFS)
def test_retrain(real_store_template: Path, tmp_path: Path, cutoff: str) -> None:
    with fresh_home(real_store_template, tmp_path, cutoff) as settings:
        first = train("baseline", model_test=True, settings=settings)
        promote("baseline", version=first.model_version, reason="test", force=True, settings=settings)
        out = quarterly_retrain("baseline", test_mode=True, settings=settings)
        new = splits.get_split(out["new_split"], settings)
        assert splits.active_split(settings).version == out["old_split"]  # a test-mode run changes no baseline
        assert trained_days(settings, out["run_id"]).isdisjoint(new.test_days)
        assert set(out["compared_days"]) <= set(new.test_days)
