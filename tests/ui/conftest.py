"""Fixtures of the web UI tests: one home with real data and trained models, shared by the package.

``ui_home`` holds, on the real subset: ``lgbm`` v1 (promoted first) and v2 (the champion now, v1 its
previous champion), two small test-mode models, and one drift check of the champion with its
evidently report. The UI only reads, so one home serves every test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import subset_rows_since
from velocast.config import Settings
from velocast.ui import APP_PATH

ENV_NAMES = ("MLFLOW_TRACKING_URI", "VELOCAST_SUMMARY_URI", "VELOCAST_AUDIT_URL", "VELOCAST_API_KEY",
             "VELOCAST_WEBHOOK_URL", "VELOCAST_API_URL", "VELOCAST_EVENTS_FILE")
TIMEOUT = 120  # seconds for one script run (the first loads MLflow and the model)


@pytest.fixture(scope="package")
def ui_home(real_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from velocast.lifecycle.decisions.monitor import check_drift
    from velocast.lifecycle.decisions.promotion import promote
    from velocast.lifecycle.training.train import train

    home = tmp_path_factory.mktemp("ui-models") / "home"
    shutil.copytree(real_store_template, home)
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        mp.setenv("VELOCAST_HOME", str(home))
        settings = Settings(home=home)
        v1 = train("lgbm", model_test=True, hyperparams={"n_estimators": 40}, settings=settings)
        promote("lgbm", version=v1.model_version, reason="first champion", force=True, settings=settings)
        v2 = train("lgbm", model_test=True, hyperparams={"n_estimators": 60, "num_leaves": 15}, seed=1,
                   settings=settings)
        promote("lgbm", version=v2.model_version, reason="better on test_current", force=True, settings=settings)
        drift = check_drift("lgbm", settings=settings)
    return {"home": home, "v1": v1, "v2": v2, "drift": drift}


@pytest.fixture
def at_ui_home(ui_home: dict[str, Any], _isolated_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Point the environment (and so the UI) at the trained home for one test."""
    monkeypatch.setenv("VELOCAST_HOME", str(ui_home["home"]))
    return ui_home


@pytest.fixture(scope="session")
def recent_rows(real_subset_file: Path) -> pd.DataFrame:
    """Real rows of the subset after the split cutoff, in the tidy file's columns."""
    return subset_rows_since(real_subset_file, "2021-08-02")


def open_page(page: str | None = None) -> AppTest:
    """The app run once on its default page (Predict), then switched to ``pages/<page>.py``."""
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every text the page shows (titles, markdown, captions, alerts, metrics), as one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts)


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table shown that has ``column``."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column on the page")
