"""Start-up: ``velocast --help`` imports Typer alone; heavy libraries load with the commands that use them."""

from __future__ import annotations

import subprocess
import sys


def _imported(*args: str) -> set[str]:
    """Modules imported by ``python -X importtime -m velocast.cli ARGS`` (its import-time report)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "velocast.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_imports_no_heavy_library() -> None:
    modules = _imported("--help")
    heavy = {"pandas", "numpy", "mlflow", "sklearn", "lightgbm", "torch", "matplotlib", "pydantic_settings",
             "velocast.config", "fastapi", "duckdb", "pandera", "rich.console"}
    assert not heavy & modules, sorted(heavy & modules)


def test_skops_is_imported_without_torch() -> None:
    code = ("import sys; from velocast.tracking.mlflow_runs import import_skops; import_skops(); "
            "import skops.io; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.split()[-1] == "False", done.stderr[-2000:]


def test_skops_module_scan_is_silent_about_other_packages_deprecated_attributes() -> None:
    """skops looks a function's module up by reading its name on every loaded module; in an Airflow task
    each deprecated Airflow attribute it reads warned (a thousand log lines per task)."""
    code = """
import sys, types, warnings
class DeprecatedImportWarning(FutureWarning):  # as Airflow's
    pass
def deprecated(name):
    warnings.warn(f"the attribute {name} is deprecated", DeprecatedImportWarning, stacklevel=2)
    raise AttributeError(name)
module = types.ModuleType("a_deprecating_package")
module.__getattr__ = deprecated
sys.modules[module.__name__] = module
from velocast.tracking.skops_io import import_skops, quiet_scan
import_skops()
from skops.io._utils import whichmodule
def lookup(): pass
lookup.__module__ = None  # as a scipy ufunc: searched for in every loaded module
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    whichmodule(lookup, "lookup")  # skops alone: warns
    with quiet_scan():  # as velocast saves and loads its models
        warnings.warn("velocast's own", FutureWarning)  # other FutureWarnings still show
        whichmodule(lookup, "lookup")
print(len(caught))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.split()[-1] == "2", (done.stdout, done.stderr[-2000:])


def test_openmp_threads_wait_passively_unless_told_otherwise() -> None:
    """velocast sets OMP_WAIT_POLICY=PASSIVE before LightGBM loads; an explicit value is kept."""
    import os

    code = "import velocast.models, os; print(os.environ['OMP_WAIT_POLICY'])"  # velocast.models loads lightgbm
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                              env=env if given is None else {**env, "OMP_WAIT_POLICY": given})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-1] == expected


def test_the_console_command_ends_like_python_would_without_tearing_its_modules_down(tmp_path) -> None:
    """``velocast`` exits with its command's status, after its threads, ``atexit`` handlers and output."""
    import os
    from pathlib import Path

    velocast = Path(sys.executable).with_name("velocast")  # the console script pip installed
    env = {**os.environ, "VELOCAST_HOME": str(tmp_path / "home")}
    bad = subprocess.run([str(velocast), "promote", "--model-type", "nope"], capture_output=True, text=True,
                         timeout=120, check=False, env=env)
    assert bad.returncode == 2 and "'nope' is not one of" in bad.stderr, bad.stderr[-2000:]
    code = ("import atexit, sys, threading, time\n"
            "from velocast import cli\n"
            "atexit.register(lambda: print('atexit ran', flush=False))\n"
            "def late():\n"
            "    time.sleep(0.3)\n"
            "    print('thread finished', flush=False)\n"
            "threading.Thread(target=late).start()\n"
            "sys.argv = ['velocast', *sys.argv[1:]]\n"
            "cli.console_main()\n")
    for args, status in ((["--version"], 0), (["promote", "--model-type", "nope"], 2)):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                              check=False, env=env)
        assert done.returncode == status, done.stderr[-2000:]
        lines = done.stdout.splitlines()
        assert lines[-2:] == ["thread finished", "atexit ran"], done.stdout  # in Python's order, none lost
    assert lines[:-2] == [] and "'nope' is not one of" in done.stderr
    assert subprocess.run([str(velocast), "--version"], capture_output=True, text=True, timeout=120, check=False,
                          env=env).stdout.startswith("velocast ")
