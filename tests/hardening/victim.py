"""The processes the kill -9 tests kill, forked from one pre-loaded parent.

Importing velocast's training stack costs ~7 s on a small machine (MLflow, scikit-learn, skops,
torch through scikit-learn's array API); paying it for each of 20 victims would take minutes. So
this script imports everything once, says ``ready``, then for each JSON command read on stdin
forks a child that runs the command in a loop until it is killed — a separate process with its
own pid, killed with a real SIGKILL by the test; nothing of the parent is shared but the imported
code (the parent never opens the velocast home, so no database connection crosses the fork).

Commands (one JSON object a line): ``{"scenario": ..., "out": path, "env": {...}, ...}``

- ``summary``: append entries ``<tag>-<i>`` to summary.json at ``uri``; after each append returns,
  write ``<run id>\\n`` to ``out`` (unbuffered ``os.write``: once written, a kill cannot lose it);
- ``promote``: run the CLI ``velocast promote --model-type <model_type> --version <v>`` in a loop,
  alternating over ``versions``; write ``promoted <v>`` after each;
- ``train``: run the CLI ``velocast train --model-type baseline --model-test`` in a loop; write
  ``trained <version> <run id>`` after each (``loop: false``: once);

For each command the parent answers ``{"pid": ...}`` at once and ``{"pid": ..., "exit": ..., "signal": ...}``
when the child is gone.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def preload() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import mlflow.sklearn
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import skops.io  # noqa: F401
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    import velocast.cli
    import velocast.lifecycle.decisions.promotion
    import velocast.lifecycle.training.train
    import velocast.tracking.summary  # noqa: F401

    _init_modules_to_packages_map()  # MLflow's map of installed packages (seconds, computed once)


def _say(text: str) -> None:
    os.write(1, (text + "\n").encode("utf-8"))


def _cli(args: list[str]) -> None:
    import typer

    from velocast.cli import app

    code = typer.main.get_command(app).main(args, prog_name="velocast", standalone_mode=False)
    if code not in (None, 0):
        raise SystemExit(f"velocast {' '.join(args)} exited with {code}")


def run_summary(command: dict[str, Any]) -> None:
    from velocast.tracking.summary import SummaryEntry, SummaryStore

    store = SummaryStore(command["uri"])
    i = 0
    while True:
        run_id = f"{command['tag']}-{i}"
        store.append(SummaryEntry(timestamp="2021-06-01T00:00:00+00:00", model_type="lgbm", env="dev",
                                  test_mode=True, run_id=run_id, model_uri=f"file:///models/{run_id}", rmse=30.0 + i,
                                  r2=0.8, extra_metrics={"padding": "x" * 200}))
        _say(run_id)
        i += 1


def run_promote(command: dict[str, Any]) -> None:
    versions = command["versions"]
    i = 0
    while True:
        version = versions[i % len(versions)]
        _cli(["promote", "--model-type", command["model_type"], "--version", version, "--reason", f"kill test {i}",
              "--force"])
        _say(f"promoted {version}")
        i += 1


def run_train(command: dict[str, Any]) -> None:
    from velocast.tracking.summary import SummaryStore

    while True:
        _cli(["train", "--model-type", "baseline", "--model-test", "--seed", str(command.get("seed", 42))])
        last = SummaryStore().read()[-1]
        _say(f"trained {last.model_version} {last.run_id}")
        if not command.get("loop", True):
            return


SCENARIOS = {"summary": run_summary, "promote": run_promote, "train": run_train}


def child(command: dict[str, Any]) -> None:
    fd = os.open(command["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(command.get("env") or {})
    code = 0
    try:
        _say("started")
        SCENARIOS[command["scenario"]](command)
    except BaseException:  # noqa: BLE001 - report and exit; the test reads the output file
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    os._exit(code)


def main() -> None:
    sys.path.insert(0, os.getcwd())
    preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(command)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}), flush=True)


if __name__ == "__main__":
    main()
