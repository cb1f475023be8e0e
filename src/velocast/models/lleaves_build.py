"""Compile a LightGBM model text to machine code with lleaves, in a process of its own.

``python -m velocast.models.lleaves_build MODEL_TXT TARGET`` writes ``TARGET`` (the compiled object
lleaves loads with ``Model.compile(cache=TARGET)``) atomically: a crash leaves no half-written file.

Building the LLVM IR is pure Python (about a second for 150 trees of 255 leaves) and LLVM's
optimisation takes a core for a few more: in a thread of the API's worker it held the GIL away from
the requests it serves. Here it runs at a lower CPU priority (``NICENESS``), so the serving processes
keep the cores they need and LightGBM serves until the object is ready.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404 - runs this module with this interpreter, never a shell
import sys
from pathlib import Path
from typing import Any

NICENESS = 10  # added to this process's niceness: the servers' requests go first
OPTIONS: dict[str, Any] = {"finline": False}  # one function per tree: inlining 150 x 255 leaves takes minutes


def build(model_file: Path, target: Path, timeout: float = 900) -> None:
    """Compile ``model_file`` to ``target`` in a child process (RuntimeError with its error if it fails)."""
    command = [sys.executable, "-m", __name__, str(model_file), str(target)]  # our paths, no shell
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # nosec B603
    if done.returncode != 0 or not target.exists():
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeError(f"compiling {model_file.name} with lleaves failed: {detail[0]}")


def _main(model_file: str, target: str) -> None:
    os.nice(NICENESS)
    import lleaves

    partial = Path(f"{target}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        lleaves.Model(model_file=model_file).compile(cache=str(partial), **OPTIONS)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m velocast.models.lleaves_build MODEL_TXT TARGET")
    _main(sys.argv[1], sys.argv[2])
