"""How OpenMP's wait policy changes LightGBM fits that share the cores: ``python bench/omp_wait.py``.

Two LightGBM fits (2 threads each, as velocast's default ``n_jobs``) run at the same time on this
machine's cores, first with ``OMP_WAIT_POLICY=ACTIVE`` (threads spin while they wait for each other,
OpenMP's usual default), then with ``PASSIVE`` (they sleep; velocast's default), and each fit also
runs alone. The rows: the real file's training rows before 2021-07-10 with velocast's day-ahead
features (built once, in a scratch home); the fit: the default ``lgbm`` hyper-parameters with
``TREES`` trees.

Then, under ``PASSIVE``, one fit of the default ``lgbm`` (all its trees) alone on 1 and on 2 threads
for several row counts (the first rows of the matrix; the last size is the matrix twice): where
``velocast.models.lgbm.ONE_THREAD_FIT_ROWS`` comes from. Results: ``bench/results/omp_wait.json``
and ``.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_COUNTS, REAL_WEATHER, RESULTS, isolated, machine

TREES = 100
POLICIES = ("ACTIVE", "PASSIVE")
THREADS = (1, 2)
SIZES = (1_000, 20_000, 100_000, None, "twice")  # None: every row; "twice": the matrix stacked twice

FIT = """
import sys, time
import numpy as np, pandas as pd, lightgbm as lgb
from velocast.models.lgbm import DEFAULTS
X = pd.read_parquet(sys.argv[1])
trees, threads, rows = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
X = pd.concat([X, X], ignore_index=True) if rows == "twice" else X.iloc[:int(rows)] if rows != "None" else X
y = X.pop("__log1p_count__").to_numpy()
started = time.perf_counter()
lgb.LGBMRegressor(**{**DEFAULTS, "n_estimators": trees}, n_jobs=threads, verbose=-1).fit(X, y)
print(len(X), round(time.perf_counter() - started, 2))
"""


def features(folder: str) -> int:
    """The day-ahead feature matrix of the real training rows (and the log1p target) to ``folder``/X.parquet."""
    import numpy as np

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    from velocast.data import store
    from velocast.data.ingest import ingest_file
    from velocast.data.weather import ingest_weather
    from velocast.lifecycle.inputs import build_inputs
    from velocast.models import build_pipeline

    ingest_file(REAL_COUNTS)
    ingest_weather(REAL_WEATHER)
    rows = store.query_counts(end="2021-07-10")
    enriched = build_inputs(rows).frame("observed")
    y = enriched["bike_count"].to_numpy(float)
    X = build_pipeline("lgbm", None, "day-ahead").named_steps["features"].fit_transform(enriched, y)
    X["__log1p_count__"] = np.log1p(np.clip(y, 0, None))
    X.to_parquet(Path(folder) / "X.parquet")
    return len(X)


def _fits(matrix: Path, policy: str, at_once: int, trees: int = TREES, threads: int = 2,
          rows: int | str | None = None) -> list[float]:
    """Wall seconds of ``at_once`` fits started together under ``policy``."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    procs = [subprocess.Popen([sys.executable, "-c", FIT, str(matrix), str(trees), str(threads), str(rows)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(at_once)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def _rows(matrix: Path, rows: int | str | None) -> int:
    import pandas as pd

    total = len(pd.read_parquet(matrix, columns=["__log1p_count__"]))
    return 2 * total if rows == "twice" else total if rows is None else min(int(rows), total)


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "trees": TREES, "load_average_before": os.getloadavg()[:3]}
    with tempfile.TemporaryDirectory(prefix="velocast-bench-omp-") as tmp:
        out["rows"], _, _ = isolated(features, tmp)
        for policy in POLICIES:
            matrix = Path(tmp) / "X.parquet"
            alone = _fits(matrix, policy, 1) + _fits(matrix, policy, 1)  # twice: the best one is reported
            out[policy] = {"alone_seconds": alone, "two_at_once_seconds": _fits(matrix, policy, 2)}
            print(f"{policy}: alone {out[policy]['alone_seconds']} s, two at once "
                  f"{out[policy]['two_at_once_seconds']} s", flush=True)
        from velocast.models.lgbm import DEFAULTS

        out["default_trees"] = DEFAULTS["n_estimators"]
        out["threads"] = []
        for rows in SIZES:
            row: dict[str, Any] = {"rows": _rows(Path(tmp) / "X.parquet", rows)}
            for threads in THREADS:  # best of 2, alone
                row[f"{threads}_thread_seconds"] = min(_fits(Path(tmp) / "X.parquet", "PASSIVE", 1, DEFAULTS["n_estimators"],
                                                             threads, rows)[0] for _ in range(2))
            print(f"PASSIVE, {row['rows']:,} rows: {row['1_thread_seconds']} s on 1 thread, "
                  f"{row['2_thread_seconds']} s on 2", flush=True)
            out["threads"].append(row)
    return out


def render(result: dict[str, Any]) -> str:
    title = (f"# OpenMP wait policy and LightGBM fits sharing the cores ({result['machine']['date']}, "
             f"{result['machine']['cores']} cores, commit {result['machine']['commit']})")
    setup = (f"One fit: the default lgbm hyper-parameters with {TREES} trees, 2 threads, on {result['rows']:,} real "
             "training rows with velocast's day-ahead features.")
    lines = [title, "", setup, "",
             "| OMP_WAIT_POLICY | one fit alone (best of 2) | two fits at once (each) |", "|---|---:|---:|"]
    for policy in POLICIES:
        both = " / ".join(f"{s:.1f} s" for s in result[policy]["two_at_once_seconds"])
        lines.append(f"| {policy} | {min(result[policy]['alone_seconds']):.1f} s | {both} |")
    if result.get("threads"):
        caption = (f"One fit alone under PASSIVE: the default lgbm ({result['default_trees']} trees), best of 2, "
                   "on the first rows of the same matrix (the last line: the matrix twice).")
        lines += ["", caption, "",
                  "| rows | 1 thread | 2 threads |", "|---:|---:|---:|"]
        lines += [f"| {r['rows']:,} | {r['1_thread_seconds']:.2f} s | {r['2_thread_seconds']:.2f} s |"
                  for r in result["threads"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    started = time.perf_counter()
    result = run()
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "omp_wait.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "omp_wait.md").write_text(render(result))
    print(render(result))
