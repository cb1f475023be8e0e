"""The lgbm forecasts month by month: the calendar model's day of year and the degraded-day filter.

    python bench/months.py                                  # three months, both horizons
    python bench/months.py --months 2021-07-10 --horizons calendar

For each month (train on 2020-09-01 .. the day before its first day, score its days as
``bench/accuracy.py`` does: as served and with perfect weather, intervals calibrated by a twin, the
day-ahead level bias on), the default lgbm of each horizon is fitted (seed 42)

- with and without the Paris day of the year (``FeatureBuilder(day_of_year=...)``; velocast's
  default: calendar models without it, day-ahead models with it);
- on training rows with and without the degraded sensor days (``VELOCAST_DEGRADED_DAY_SHARE`` 0.2
  or 0; sensor outages are always left out).

The RMSE and RMSE(log1p) of each go to ``bench/results/months.json`` and a Markdown table, with the
RMSE(log1p) as served left once each counter-day's mean log error is taken out (the model given
every counter's daily level: ``bench.accuracy.within_counter_day``). A month run again replaces its
rows; the other months' rows are kept. About 8 minutes a month on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import fit_and_score, prepare  # noqa: E402
from bench.common import RESULTS, isolated, save_rows  # noqa: E402
from bench.online import MONTHS, month_end  # noqa: E402

SHARES = {"degraded days out": "0.2", "degraded days kept": "0"}


def month(first: str, horizons: list[str]) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="velocast-bench-months-") as tmp:
        for label, share in SHARES.items():
            folder = Path(tmp) / f"share-{share}"
            os.environ["VELOCAST_DEGRADED_DAY_SHARE"] = share  # read by the child processes' settings
            isolated(prepare, folder, first, month_end(first))
            for horizon in horizons:
                for day_of_year in (False, True):
                    metrics, _, _ = isolated(fit_and_score, "lgbm", horizon, {}, "full", str(folder),
                                             str(folder / "home"), True, 42, {"day_of_year": day_of_year})
                    row = {"month": f"{first} .. {month_end(first)} (exclusive)", "horizon": horizon,
                           "training rows": label, "day of year": day_of_year,
                           **{f"{variant} {k}": round(metrics[variant][k], 4) for variant in ("as_served", "perfect_weather")
                              for k in ("rmse", "rmse_log1p")},
                           "as_served rmse_log1p_within_counter_day": round(
                               metrics["as_served"]["rmse_log1p_within_counter_day"], 4)}
                    print(json.dumps(row), flush=True)
                    out.append(row)
    os.environ.pop("VELOCAST_DEGRADED_DAY_SHARE", None)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ("| month | horizon | training rows | day of year | RMSE as served | RMSE(log1p) as served | "
              "RMSE(log1p) as served, daily levels known | RMSE perfect weather | RMSE(log1p) perfect weather |")
    lines = [header, "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        within = r.get("as_served rmse_log1p_within_counter_day")
        lines.append(f"| {r['month']} | {r['horizon']} | {r['training rows']} | {'yes' if r['day of year'] else 'no'} | "
                     f"{r['as_served rmse']:.2f} | {r['as_served rmse_log1p']:.3f} | "
                     f"{'' if within is None else f'{within:.3f}'} | {r['perfect_weather rmse']:.2f} | "
                     f"{r['perfect_weather rmse_log1p']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", default=",".join(MONTHS), help="first days of the months scored")
    parser.add_argument("--horizons", default="calendar,day-ahead")
    args = parser.parse_args()
    rows = [r for first in args.months.split(",") for r in month(first, args.horizons.split(","))]
    print(save_rows(RESULTS, "months", rows, lambda r: (r["month"], r["horizon"]),
                    lambda r: (r["month"], r["training rows"] != "degraded days out", r["horizon"], r["day of year"]),
                    markdown))


if __name__ == "__main__":
    main()
