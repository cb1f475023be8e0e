"""A logged model's environment is installable: pinned PyPI names, velocast's code logged with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from packaging.requirements import Requirement

from velocast.config import get_settings
from velocast.models import build_pipeline
from velocast.tracking import mlflow_runs
from velocast.tracking.mlflow_runs import MODEL_REQUIREMENTS, pip_requirements

PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.]*$")


def test_requirements_are_pinned_pypi_names_without_velocast() -> None:
    plain, with_torch = pip_requirements(), pip_requirements(with_torch=True)
    for line in plain + with_torch:
        assert PINNED.match(line), line  # name==version, no local label such as +cpu
    names = [Requirement(line).name for line in plain]
    assert "velocast" not in names and "torch" not in names
    assert set(names) == {n for n in MODEL_REQUIREMENTS if _installed(n)}
    assert any(line.startswith("torch==") for line in with_torch) == _installed("torch")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require (markers and extras left out), normalised."""
    seen: set[str] = set()
    todo = [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen or not _installed(name):
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None:
                todo.append(requirement.name.lower().replace("_", "-"))
    return seen


def test_the_requirements_cover_what_a_model_imports() -> None:
    """What importing the model's classes adds to MLflow's own imports is covered by MODEL_REQUIREMENTS."""
    code = ("import sys, json, importlib.metadata as md; import mlflow.pyfunc, skops.io; before = set(sys.modules); "
            "import velocast.models.pipeline, velocast.features, velocast.models.compiled; "
            "[__import__(f'velocast.models.{n}') for n in ('lgbm', 'rf', 'rf_class', 'baseline', 'nn')]; "
            "dists = md.packages_distributions(); "
            "print(json.dumps(sorted({d for m in set(sys.modules) - before for d in dists.get(m.split('.')[0], [])})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    imported = {d.lower().replace("_", "-") for d in json.loads(done.stdout.splitlines()[-1])} - {"velocast"}
    covered = _closure(set(MODEL_REQUIREMENTS) | {"mlflow"})
    assert imported <= covered, sorted(imported - covered)


def test_a_logged_model_names_installable_requirements_and_carries_velocast(home: Path) -> None:
    rows = pd.DataFrame({"counter_id": ["a", "b"] * 24,
                         "timestamp": pd.date_range("2021-06-01", periods=48, freq="h", tz="Europe/Paris"),
                         "latitude": 48.85, "longitude": 2.35, "bike_count": range(48)})
    pipeline = build_pipeline("baseline").fit(rows, rows["bike_count"].to_numpy(float))
    mlflow_runs.configure(get_settings())
    with mlflow.start_run():
        info = mlflow_runs.log_model(pipeline, mlflow_runs.input_example(rows.drop(columns="bike_count")))
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    lines = [line for line in (folder / "requirements.txt").read_text().splitlines() if line.strip()]
    assert all(PINNED.match(line) for line in lines), lines
    names = {Requirement(line).name for line in lines}
    assert "velocast" not in names and {"mlflow", "scikit-learn", "pandas"} <= names
    assert (folder / "code" / "velocast" / "models" / "baseline.py").is_file()
    assert (folder / "code" / "velocast" / "resources").is_dir()  # calendars the features read
    # a plain MLflow process loads it with the logged velocast code first on its path
    code = ("import sys, mlflow.pyfunc; m = mlflow.pyfunc.load_model(sys.argv[1]); import velocast; "
            "print(velocast.__file__)")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith(str(folder / "code" / "velocast"))


def test_loading_in_process_leaves_sys_path_as_it_was(home: Path) -> None:
    rows = pd.DataFrame({"counter_id": ["a"] * 24, "timestamp": pd.date_range("2021-06-01", periods=24, freq="h",
                                                                             tz="Europe/Paris"),
                         "latitude": 48.85, "longitude": 2.35, "bike_count": range(24)})
    pipeline = build_pipeline("baseline").fit(rows, rows["bike_count"].to_numpy(float))
    mlflow_runs.configure(get_settings())
    with mlflow.start_run():
        info = mlflow_runs.log_model(pipeline, mlflow_runs.input_example(rows.drop(columns="bike_count")))
    before = list(sys.path)
    loaded = mlflow_runs.load_sklearn_model(info.model_uri)
    assert sys.path == before
    import velocast

    module = sys.modules[type(loaded[-1]).__module__]  # this process's velocast, not the model's copy
    assert Path(module.__file__).is_relative_to(Path(velocast.__file__).parent)
