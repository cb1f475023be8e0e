"""Compile a LightGBM model text to machine code with lleaves, in a process of its own.

``python -m velocast.models.lleaves_build MODEL_TXT TARGET OPTIONS_JSON`` writes ``TARGET`` (the compiled object
lleaves loads with ``Model.compile(cache=TARGET)``) atomically: a crash leaves no half-written file.

Building the LLVM IR is pure Python (about a second for 150 trees of 255 leaves) and LLVM's
optimisation takes a core for a few more: in a thread of the API's worker it held the GIL away from
the requests it serves. Here it runs at a lower CPU priority (``NICENESS``), so the serving processes
keep the cores they need and LightGBM serves until the object is ready.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess  # nosec B404 - runs this module with this interpreter, never a shell
import sys
from pathlib import Path
from typing import Any

NICENESS = 10  # added to this process's niceness: the servers' requests go first
# Inlining the trees into their blocks predicts ~40% faster (400k rows: 0.63 s instead of 1.06 s on
# 2 cores for 300 trees x 63 leaves) but compiles slower (40 s instead of 9 s for those 18,900
# leaves, and minutes for 150 x 255): above INLINE_MAX_LEAVES leaves, one function per tree.
INLINE_MAX_LEAVES = 25_000
BLOCK_SIZE = 16  # trees per cache block (lleaves' default 34 was ~15% slower here)


def options(model_text: str) -> dict[str, Any]:
    """lleaves' ``compile`` options for the model of ``model_text`` (see ``INLINE_MAX_LEAVES``)."""
    leaves = sum(int(n) for n in re.findall(r"^num_leaves=(\d+)", model_text, re.MULTILINE))
    # "small" code model: shorter jumps; it only fails for objects of gigabytes
    return {"finline": leaves <= INLINE_MAX_LEAVES, "fblocksize": BLOCK_SIZE, "fcodemodel": "small"}


def options_tag(chosen: dict[str, Any]) -> str:
    """The part of a compiled object's file name that names its options."""
    return f"{'inline' if chosen['finline'] else 'noinline'}-b{chosen['fblocksize']}-{chosen['fcodemodel']}"


def build(model_file: Path, target: Path, chosen: dict[str, Any], timeout: float = 900) -> None:
    """Compile ``model_file`` to ``target`` with the options ``chosen``, in a child process
    (RuntimeError with its error if it fails)."""
    command = [sys.executable, "-m", __name__, str(model_file), str(target), json.dumps(chosen)]  # no shell
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # nosec B603
    if done.returncode != 0 or not target.exists():
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise RuntimeError(f"compiling {model_file.name} with lleaves failed: {detail[0]}")


def _end_with_parent() -> None:
    """Be sent SIGTERM when the process that started this one dies (Linux), and leave on SIGTERM through
    ``finally`` blocks: a server stopped mid-compile leaves no orphan compiler and no partial file."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the compile ends on its own
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(143)


def _main(model_file: str, target: str, chosen: dict[str, Any]) -> None:
    _end_with_parent()
    os.nice(NICENESS)
    import lleaves

    partial = Path(f"{target}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        lleaves.Model(model_file=model_file).compile(cache=str(partial), **chosen)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m velocast.models.lleaves_build MODEL_TXT TARGET OPTIONS_JSON")
    _main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
