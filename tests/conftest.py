"""Shared fixtures: the real Paris data (subsampled with fixed seeds) and isolated velocast homes."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "paris"
REAL_COUNTS = SHARED / "counts_2020-09-01_2021-08-09.parquet"
REAL_WEATHER = SHARED / "weather_orly_synop.csv"
OPENDATA_SAMPLE = SHARED / "opendata_export_sample.csv"
# a fixed subset of real counters keeps the suite fast while staying real
SUBSET_COUNTERS = 8
SUBSET_SEED = 7


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not REAL_COUNTS.exists():
        skip = pytest.mark.skip(reason=f"real data not found at {SHARED}")
        for item in items:
            if "real_" in " ".join(getattr(item, "fixturenames", [])):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own velocast home and no outside tracking server."""
    for name in ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL", "VELOCAST_API_KEY",
                 "VELOCAST_WEBHOOK_URL", "VELOCAST_API_URL", "VELOCAST_EVENTS_FILE",
                 "VELOCAST_DASK_SCHEDULER", "VELOCAST_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VELOCAST_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="session")
def real_counts() -> pd.DataFrame:
    return pd.read_parquet(REAL_COUNTS)


def run_cli(args: list[str]) -> Any:
    """Run the ``velocast`` CLI in-process; its logging setup (bound to the runner's stderr) is undone after."""
    import logging

    from typer.testing import CliRunner

    from velocast.cli import app

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(app, args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def subset_rows_since(subset_file: Path, day: str) -> pd.DataFrame:
    """Rows of the real subset from ``day`` on, in the tidy file's columns, ordered by date and counter."""
    frame = pd.read_parquet(subset_file)
    frame["counter_id"] = frame["counter_id"].astype(str)
    return frame[frame["date"] >= day].sort_values(["date", "counter_id"]).reset_index(drop=True)


@pytest.fixture(scope="session")
def real_subset_file(tmp_path_factory: pytest.TempPathFactory, real_counts: pd.DataFrame) -> Path:
    """The real file restricted to a seeded choice of counters (all hours of the year)."""
    ids = pd.Series(sorted(real_counts["counter_id"].astype(str).unique()))
    chosen = set(ids.sample(SUBSET_COUNTERS, random_state=SUBSET_SEED))
    subset = real_counts[real_counts["counter_id"].astype(str).isin(chosen)]
    path = tmp_path_factory.mktemp("real") / "subset.parquet"
    subset.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def real_store_template(tmp_path_factory: pytest.TempPathFactory, real_subset_file: Path) -> Path:
    """A velocast home with the real subset and weather ingested and a split recorded (copied per test)."""
    import os

    from velocast.config import Settings
    from velocast.data import splits
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather

    template = tmp_path_factory.mktemp("template") / "home"
    settings = Settings(home=template)
    old = os.environ.get("VELOCAST_HOME")
    os.environ["VELOCAST_HOME"] = str(template)
    try:
        ingest_file(real_subset_file, settings=settings)
        ingest_weather(REAL_WEATHER, settings=settings)
        splits.record_split("2021-06-01", settings=settings)
    finally:
        if old is None:
            os.environ.pop("VELOCAST_HOME", None)
        else:
            os.environ["VELOCAST_HOME"] = old
    return template


@pytest.fixture
def real_home(real_store_template: Path, home: Path) -> Path:
    """A fresh copy of the ingested real-subset home for one test."""
    shutil.copytree(real_store_template, home)
    return home


def wait_for_http(url: str, process: subprocess.Popen, log_path: Path, what: str, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200 while ``process`` runs; fail with the end of its log otherwise."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{what} exited:\n" + log_path.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer {url} in {timeout:g} s"
        time.sleep(0.3)
