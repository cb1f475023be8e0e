"""Following the recent errors, month by month: the day-ahead level bias and the adapted intervals.

    python bench/online.py                       # three months, bias over 0, 2, 3, 4, 5, 7 days
    python bench/online.py --months 2021-07-10 --bias-days 0,3

For each month (train on 2020-09-01 .. the day before its first day, score its 31 days as
``bench/accuracy.py`` does: as served and with perfect weather), one lgbm day-ahead model (seed
42) and its twin-calibrated intervals; then the same predictions scored with the level-bias
correction over each number of days (``VELOCAST_BIAS_CORRECTION_DAYS``) and the intervals adapted
over 14 days (``VELOCAST_INTERVAL_ADAPT_DAYS``), each test day following only the test days before
it. The RMSE and the 80% interval's coverage per month and setting go to
``bench/results/online.json`` and a Markdown table. About 4 minutes a month on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import CALIBRATION_DAYS, COVERAGE, prepare  # noqa: E402
from bench.common import RESULTS, isolated  # noqa: E402

MONTHS = ("2021-05-10", "2021-06-10", "2021-07-10")
ADAPT_DAYS = 14
VARIANTS = {"as_served": "test_without.parquet", "perfect_weather": "test_with.parquet"}


def month_end(first: str) -> str:
    import pandas as pd

    return str((pd.Timestamp(first) + pd.DateOffset(months=1)).date())


def fit_and_follow(folder: str, bias_days: list[int]) -> dict[str, Any]:
    """Fit, calibrate, then score the month with each bias window (one fresh process per month)."""
    import os

    import numpy as np
    import pandas as pd

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    from velocast.data.splits import paris_day
    from velocast.models import build_pipeline, calibrate, predict_frame
    from velocast.models.intervals import OnlineRule

    train = pd.read_parquet(Path(folder) / "train.parquet")
    calibration = pd.read_parquet(Path(folder) / "calibration.parquet")
    pipeline = build_pipeline("lgbm", {}, "day-ahead", seed=42).fit(train, train["bike_count"].to_numpy())
    before = train[~paris_day(train["timestamp"]).isin(set(paris_day(calibration["timestamp"]))).to_numpy()]
    twin = build_pipeline("lgbm", {}, "day-ahead", seed=42).fit(before, before["bike_count"].to_numpy())
    calibrated = calibrate(pipeline, calibration, twin=twin)
    out: dict[str, Any] = {}
    for variant, name in VARIANTS.items():
        rows = pd.read_parquet(Path(folder) / name)
        y = rows["bike_count"].to_numpy(float)
        out[variant] = {}
        for days in bias_days:
            predicted = predict_frame(calibrated, rows, COVERAGE, OnlineRule(ADAPT_DAYS, days), learn_from_rows=True)
            out[variant][days] = {
                "rmse": float(np.sqrt(np.mean((y - predicted["prediction"].to_numpy()) ** 2))),
                "coverage": float(((y >= predicted["lower"]) & (y <= predicted["upper"])).mean()),
                "rows": len(rows)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", default=",".join(MONTHS), help="first days of the months scored")
    parser.add_argument("--bias-days", default="0,2,3,4,5,7", help="bias windows compared (0: no correction)")
    args = parser.parse_args()
    months = [m.strip() for m in args.months.split(",") if m.strip()]
    bias_days = [int(d) for d in args.bias_days.split(",") if d.strip()]
    results: dict[str, Any] = {}
    for first in months:
        with tempfile.TemporaryDirectory() as scratch:
            isolated(prepare, Path(scratch), first, month_end(first))
            results[first], _, _ = isolated(fit_and_follow, scratch, bias_days)
        print(f"{first}: " + json.dumps(results[first]), flush=True)
    lines = ["| month | weather | " + " | ".join(f"bias {d} d" for d in bias_days) + " | coverage (80%) |",
             "|---|---|" + "---:|" * (len(bias_days) + 1)]
    for first, result in results.items():
        for variant, by_days in result.items():
            cells = [f"{by_days[d]['rmse']:.2f}" for d in bias_days]
            lines.append(f"| {first} .. {month_end(first)} | {variant.replace('_', ' ')} | " + " | ".join(cells)
                         + f" | {by_days[bias_days[0]]['coverage']:.3f} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(
        {"model": "lgbm day-ahead, seed 42", "calibration_days": CALIBRATION_DAYS, "adapt_days": ADAPT_DAYS,
         "coverage": COVERAGE, "months": results}, indent=1) + "\n")
    (RESULTS / "online.md").write_text("RMSE by bias-correction window (days); intervals adapted over "
                                       f"{ADAPT_DAYS} days\n\n" + table + "\n")
    print(f"written: {RESULTS / 'online.json'}")


if __name__ == "__main__":
    main()
