"""How OpenMP's wait policy changes LightGBM fits that share the cores: ``python bench/omp_wait.py``.

Two LightGBM fits (2 threads each, as velocast's default ``n_jobs``) run at the same time on this
machine's cores, first with ``OMP_WAIT_POLICY=ACTIVE`` (threads spin while they wait for each other,
OpenMP's usual default), then with ``PASSIVE`` (they sleep; velocast's default), and each fit also
runs alone. The rows: the real counts with calendar features and the count of the same hour the day
before (a few columns are enough: the cost at stake is the threads' waiting, once per histogram).
Results: ``bench/results/omp_wait.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REAL_COUNTS, RESULTS, machine

TREES = 150
POLICIES = ("ACTIVE", "PASSIVE")

FIT = """
import sys, time
import numpy as np, pandas as pd, lightgbm as lgb
rows = pd.read_parquet(sys.argv[1], columns=["counter_id", "date", "bike_count"]).sort_values(["counter_id", "date"])
date = rows["date"]
X = pd.DataFrame({"counter": rows["counter_id"].astype("category").cat.codes, "hour": date.dt.hour,
                  "weekday": date.dt.weekday, "day_of_year": date.dt.dayofyear,
                  "yesterday": rows.groupby("counter_id")["bike_count"].shift(24)})
y = np.log1p(rows["bike_count"].to_numpy(float))
started = time.perf_counter()
lgb.LGBMRegressor(n_estimators=int(sys.argv[2]), num_leaves=63, min_child_samples=100, n_jobs=2,
                  verbose=-1).fit(X, y)
print(round(time.perf_counter() - started, 2))
"""


def _fits(policy: str, at_once: int) -> list[float]:
    """Wall seconds of ``at_once`` fits started together under ``policy``."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    procs = [subprocess.Popen([sys.executable, "-c", FIT, str(REAL_COUNTS), str(TREES)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(at_once)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "trees": TREES, "load_average_before": os.getloadavg()[:3]}
    for policy in POLICIES:
        out[policy] = {"alone_seconds": _fits(policy, 1), "two_at_once_seconds": _fits(policy, 2)}
        print(f"{policy}: alone {out[policy]['alone_seconds']} s, two at once {out[policy]['two_at_once_seconds']} s",
              flush=True)
    return out


def render(result: dict[str, Any]) -> str:
    title = (f"# OpenMP wait policy and LightGBM fits sharing the cores ({result['machine']['date']}, "
             f"{result['machine']['cores']} cores, commit {result['machine']['commit']})")
    lines = [title, "",
             f"One fit: {TREES} trees x 63 leaves, 2 threads, on every row of the real counts file.", "",
             "| OMP_WAIT_POLICY | one fit alone | two fits at once (each) |", "|---|---:|---:|"]
    for policy in POLICIES:
        both = " / ".join(f"{s:.1f} s" for s in result[policy]["two_at_once_seconds"])
        lines.append(f"| {policy} | {result[policy]['alone_seconds'][0]:.1f} s | {both} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    started = time.perf_counter()
    result = run()
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "omp_wait.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "omp_wait.md").write_text(render(result))
    print(render(result))
