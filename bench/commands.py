"""Whole commands as a user runs them: `velocast train` (full and --model-test) and the demo."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import REAL_COUNTS, REAL_WEATHER, ROOT, run_command, velocast_env


def run(with_demo: bool = True) -> dict[str, Any]:
    velocast = str(ROOT / ".venv" / "bin" / "velocast")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="velocast-bench-cmd-") as tmp:
        env = velocast_env(Path(tmp) / "home")
        runs = [run_command([velocast, "--help"], env) for _ in range(3)]
        out["help"] = min(runs, key=lambda r: r["seconds"])  # best of 3: start-up, not the disk cache
        print(f"  --help {out['help']['seconds']}s", flush=True)
        run_command([velocast, "data", "ingest", str(REAL_COUNTS)], env)
        run_command([velocast, "data", "ingest-weather", str(REAL_WEATHER)], env)
        run_command([velocast, "data", "split", "--cutoff", "2021-07-10"], env)
        out["train_model_test"] = run_command([velocast, "train", "--model-type", "lgbm", "--model-test"], env)
        out["train_lgbm_full"] = run_command([velocast, "train", "--model-type", "lgbm"], env)
        print(f"  train --model-test {out['train_model_test']['seconds']}s; full {out['train_lgbm_full']['seconds']}s "
              f"peak {out['train_lgbm_full']['peak_rss_mb']} MiB", flush=True)
    if with_demo:
        with tempfile.TemporaryDirectory(prefix="velocast-bench-demo-") as tmp:
            out["demo"] = run_command([velocast, "demo"], velocast_env(Path(tmp) / "home"))
            print(f"  demo {out['demo']['seconds']}s", flush=True)
    return out
