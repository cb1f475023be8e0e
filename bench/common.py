"""Shared helpers of the benchmarks: machine facts, isolated runs with wall time and peak RSS."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "paris"
REAL_COUNTS = SHARED / "counts_2020-09-01_2021-08-09.parquet"
REAL_WEATHER = SHARED / "weather_orly_synop.csv"
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
            "ram_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu, "python": platform.python_version(),
            "commit": commit}


def _child(fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    try:
        started = time.perf_counter()
        result = fn(*args)
        wall = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(("ok", result, wall, peak_mb))
    except BaseException as exc:  # report, do not hang the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}", 0.0, 0.0))


def isolated(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run ``fn(*args)`` in a fresh process: (result, wall seconds, peak RSS in MiB of that process).

    A process that dies without an answer (e.g. killed by the kernel's out-of-memory killer) raises
    ``RuntimeError`` instead of leaving the parent waiting forever.
    """
    import queue as queues

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    while True:
        try:
            status, result, wall, peak = queue.get(timeout=5)
            break
        except queues.Empty:
            if proc.is_alive():
                continue
            try:  # it may have answered just before exiting
                status, result, wall, peak = queue.get(timeout=2)
                break
            except queues.Empty:
                proc.join()
                raise RuntimeError(f"{getattr(fn, '__name__', fn)} died without an answer "
                                   f"(exit code {proc.exitcode}; -9: killed, e.g. out of memory)") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(result)
    return result, wall, peak


_LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
             "sys.exit(code)")


def run_command(args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> dict[str, Any]:
    """Wall time and peak RSS of one command (measured by a launcher process of its own)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _LAUNCHER, rss.name, *args], cwd=cwd,
                              env={**os.environ, **(env or {})}, capture_output=True, text=True)
        wall = time.perf_counter() - started
        peak_kb = int(rss.read() or 0)
    return {"command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args)), "seconds": round(wall, 2),
            "returncode": done.returncode, "peak_rss_mb": round(peak_kb / 1024, 1),
            "tail": (done.stdout + done.stderr)[-800:] if done.returncode else ""}


def replace_rows(new: list[dict[str, Any]], earlier: list[dict[str, Any]],
                 key: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """``new`` plus the ``earlier`` rows whose ``key`` none of ``new`` has: a part of a bench run
    again replaces its own rows and keeps what was measured of the rest."""
    again = {key(r) for r in new}
    return [*new, *(r for r in earlier if key(r) not in again)]


def save_rows(folder: Path, name: str, rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
              order: Callable[[dict[str, Any]], Any], markdown: Callable[[list[dict[str, Any]]], str]) -> str:
    """Write ``rows`` to ``folder/name.json`` and ``.md``, keeping the rows of an earlier run that
    these do not measure again (``replace_rows``), sorted by ``order``; the Markdown written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    if path.exists():
        rows = replace_rows(rows, json.loads(path.read_text(encoding="utf-8")), key)
    rows = sorted(rows, key=order)
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    text = markdown(rows)
    (folder / f"{name}.md").write_text(text, encoding="utf-8")
    return text


def load_results() -> dict[str, Any]:
    path = RESULTS / "latest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def velocast_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VELOCAST_", "MLFLOW_"))}
    env["VELOCAST_HOME"] = str(home)
    return env


def python() -> str:
    return sys.executable
