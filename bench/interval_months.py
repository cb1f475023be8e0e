"""Prediction intervals of the lgbm day-ahead model month by month, scored as served.

    python bench/interval_months.py                                   # the three months below
    python bench/interval_months.py --months 2020-12-10               # one month (about 3 minutes)
    PYTHONPATH=/tmp/old/src python bench/interval_months.py --results /tmp/before   # an older velocast

Each month is scored as ``bench/accuracy.py`` scores its month: trained on 2020-09-01 .. the day
before its first day, intervals calibrated by a twin on the last 28 training days, each test day
following the errors of the test days before it (``VELOCAST_INTERVAL_ADAPT_DAYS``,
``VELOCAST_BIAS_CORRECTION_DAYS``), no weather of the predicted days ("as served"). The months
are chosen for their changes of level: 2020-12-10 (the Christmas holidays), 2021-04-01 (the April
lockdown and spring holidays), 2021-07-10 (the summer holidays, ``make bench``'s month). Reported:
coverage of the 80% interval, mean width, interval score, worst counter and share of counters
(>= 14 days) inside 0.70-0.90, the width against the naive per-hour intervals at the same coverage,
and the coverage of each eighth of the predicted counts for both. Results go to
``bench/results/interval_months.json`` and ``.md`` (a month run again replaces its row).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import fit_and_score, prepare  # noqa: E402
from bench.common import RESULTS, isolated, save_rows  # noqa: E402
from bench.online import month_end  # noqa: E402

MONTHS = ("2020-12-10", "2021-04-01", "2021-07-10")


def month(first: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="velocast-bench-intervals-") as tmp:
        folder = Path(tmp)
        isolated(prepare, folder, first, month_end(first))
        metrics, _, _ = isolated(fit_and_score, "lgbm", "day-ahead", {}, "full", str(folder), str(folder / "home"), True)
    shown = metrics["as_served"]["intervals"]
    model, naive = shown["model"], shown["naive_same_coverage"]
    return {"month": f"{first} .. {month_end(first)} (exclusive)", "rmse": round(metrics["as_served"]["rmse"], 2),
            "coverage": round(model["interval_coverage"], 3), "width": round(model["interval_width"], 1),
            "interval_score": round(model["interval_score"], 1),
            "worst_counter": round(model["interval_worst_counter_coverage"], 3),
            "counters_in_band": round(model["interval_counters_in_band"], 3),
            "width_ratio_same_coverage": round(shown["width_ratio_to_naive_same_coverage"], 3),
            "coverage_by_level": model["coverage_by_level"], "naive_coverage_by_level": naive["coverage_by_level"]}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| month | RMSE | coverage | width | interval score | worst counter | counters in band | width / naive at "
             "the same coverage | coverage by eighth of predicted counts (quietest first) | naive's |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['month']} | {r['rmse']:.2f} | {r['coverage']:.3f} | {r['width']:.1f} | "
                     f"{r['interval_score']:.1f} | {r['worst_counter']:.3f} | {r['counters_in_band']:.0%} | "
                     f"{r['width_ratio_same_coverage']:.3f} | {' '.join(f'{c:.2f}' for c in r['coverage_by_level'])} | "
                     f"{' '.join(f'{c:.2f}' for c in r['naive_coverage_by_level'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", default=",".join(MONTHS), help="first days of the months scored")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON and Markdown results")
    args = parser.parse_args()
    rows = []
    for first in args.months.split(","):
        rows.append(month(first.strip()))
        print(json.dumps(rows[-1]), flush=True)
    print(save_rows(args.results, "interval_months", rows, lambda r: r["month"], lambda r: r["month"], markdown))


if __name__ == "__main__":
    main()
