"""A month forecast as a new user would run it, through the CLI, scored afterwards.

What the champion's judges do with the month after the given file, replayed on the file's last
month: the store holds the counts and the weather up to 2021-07-09 (Europe/Paris), ``velocast
train`` fits the champion, then for each day D of 2021-07-10..2021-08-09 the counts of D-1 are
ingested (``velocast data ingest``) and D is forecast from a file of ``counter_id`` + ``date``
rows without counts (``velocast predict``). No weather is known for the month (none is archived as
a forecast), so this is the forecast as served. The predictions are then joined to the real counts
and scored: RMSE, RMSE(log1p), the 80% interval's coverage and width, on every row and without
the rows inside sensor outages (runs of >= 24 zero hours, ``velocast.data.quality``).

Each ``--data-source`` trains its own champion in its own scratch home (``--data-source``
``reference`` is ``velocast train``'s default, ``baseline`` the former one); ``--horizon`` picks
the model's horizon. Inputs are cut from ``../shared/data`` into a temporary directory, never into
the repo. About 6 minutes per data source on the 2-core machine.

    python bench/served_month.py                                # reference and baseline, day-ahead
    python bench/served_month.py --data-source reference --horizon day-ahead --horizon calendar

Results: ``bench/results/served_month.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REAL_COUNTS, REAL_WEATHER, RESULTS, machine, replace_rows

FIRST_DAY, LAST_DAY = "2021-07-10", "2021-08-09"
VELOCAST = str(Path(sys.executable).with_name("velocast"))


def _paris_day(naive_utc: pd.Series) -> pd.Series:
    return pd.to_datetime(naive_utc).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d")


def cut_inputs(folder: Path) -> list[str]:
    """The counts and weather known before FIRST_DAY, each day's counts and its rows to forecast."""
    counts = pd.read_parquet(REAL_COUNTS)
    day = _paris_day(counts["date"])
    counts[day < FIRST_DAY].to_parquet(folder / "counts_before.parquet")
    days = list(pd.date_range(FIRST_DAY, LAST_DAY).strftime("%Y-%m-%d"))
    for d in days:
        counts[day == d].to_parquet(folder / f"counts_{d}.parquet")
        counts.loc[day == d, ["counter_id", "date"]].to_csv(folder / f"future_{d}.csv", index=False)
    weather = pd.read_csv(REAL_WEATHER, dtype=str, sep=None, engine="python")
    stamps = pd.to_datetime(weather["date"], utc=True, format="mixed")
    weather[stamps.dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%d") < FIRST_DAY].to_csv(
        folder / "weather_before.csv", index=False)
    return days


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run([VELOCAST, *args], check=False, env={**os.environ, "VELOCAST_HOME": str(home)},
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"velocast {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def replay(folder: Path, days: list[str], data_source: str, horizon: str) -> dict[str, Any]:
    home = folder / f"home-{data_source}-{horizon}"
    started = time.perf_counter()
    _cli(home, "data", "ingest", str(folder / "counts_before.parquet"))
    _cli(home, "data", "ingest-weather", str(folder / "weather_before.csv"))
    trained = _cli(home, "train", "--model-type", "lgbm", "--horizon", horizon, "--data-source", data_source)
    train_seconds = time.perf_counter() - started
    predicted = []
    for i, d in enumerate(days):
        if i:
            _cli(home, "data", "ingest", str(folder / f"counts_{days[i - 1]}.parquet"))
        out = folder / f"predicted-{data_source}-{horizon}-{d}.csv"
        _cli(home, "predict", "--input", str(folder / f"future_{d}.csv"), "--output", str(out), "--horizon", horizon)
        predicted.append(pd.read_csv(out, dtype={"counter_id": str}))
        print(f"  {data_source} {horizon}: {d} forecast", flush=True)
    return {"scores": score(folder, days, pd.concat(predicted, ignore_index=True)),
            "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
            "train_output": trained.strip().splitlines()[:8]}


def score(folder: Path, days: list[str], predicted: pd.DataFrame) -> dict[str, Any]:
    from velocast.data.quality import outage_mask

    actual = pd.concat([pd.read_parquet(folder / f"counts_{d}.parquet") for d in days], ignore_index=True)
    actual = actual.assign(counter_id=actual["counter_id"].astype(str), date=pd.to_datetime(actual["date"]))
    predicted = predicted.assign(date=pd.to_datetime(predicted["date"]))
    rows = predicted.merge(actual[["counter_id", "date", "bike_count"]], on=["counter_id", "date"], how="left",
                           validate="one_to_one")
    if rows["bike_count"].isna().any():
        raise RuntimeError(f"{int(rows['bike_count'].isna().sum())} forecasts without a real count")
    outage = outage_mask(pd.DataFrame({"counter_id": rows["counter_id"], "bike_count": rows["bike_count"],
                                       "timestamp": rows["date"].dt.tz_localize("UTC")}))
    out = {"rows": len(rows), "outage_rows": int(outage.sum()),
           "weather": rows["weather"].value_counts().to_dict()}
    for name, keep in (("all_rows", np.ones(len(rows), bool)), ("without_outages", ~outage)):
        y, p = rows["bike_count"].to_numpy(float)[keep], rows["prediction"].to_numpy(float)[keep]
        low, high = rows["lower"].to_numpy(float)[keep], rows["upper"].to_numpy(float)[keep]
        out[name] = {"rmse": float(np.sqrt(np.mean((p - y) ** 2))),
                     "rmse_log1p": float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2))),
                     "interval_coverage": float(np.mean((y >= low) & (y <= high))),
                     "interval_width": float(np.mean(high - low))}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# A month forecast through the CLI, as served",
             "",
             (f"Machine: {result['machine']['cores']} cores, Python {result['machine']['python']}; commit "
             f"{result['machine']['commit']}; {result['machine']['date']}. Champion trained on the store up to "
             f"{FIRST_DAY} (exclusive); {FIRST_DAY}..{LAST_DAY} forecast one day at a time with `velocast predict` "
             "on rows without counts, each day's counts ingested the next day, no weather forecast. "
             "`python bench/served_month.py`; a run again replaces its own row only (commit column)."),
             "",
             ("| data source | horizon | RMSE | RMSE(log1p) | coverage 80% | width | RMSE all rows | RMSE(log1p) all "
             "rows | outage rows | train (s) | total (s) | commit |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in result["runs"]:
        s = run["scores"]
        w, a = s["without_outages"], s["all_rows"]
        lines.append(f"| {run['data_source']} | {run['horizon']} | {w['rmse']:.2f} | {w['rmse_log1p']:.3f} | "
                     f"{w['interval_coverage']:.3f} | {w['interval_width']:.1f} | {a['rmse']:.2f} | "
                     f"{a['rmse_log1p']:.3f} | {s['outage_rows']} | {run['train_seconds']:.0f} | "
                     f"{run['total_seconds']:.0f} | {run.get('commit', result['machine']['commit'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-source", action="append", choices=["reference", "baseline", "current"])
    parser.add_argument("--horizon", action="append", choices=["day-ahead", "calendar"])
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="velocast-served-month-") as tmp:
        folder = Path(tmp)
        days = cut_inputs(folder)
        for source in args.data_source or ["reference", "baseline"]:
            for horizon in args.horizon or ["day-ahead"]:
                run = replay(folder, days, source, horizon)
                runs.append({"data_source": source, "horizon": horizon, **run})
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "train_output"}, indent=1), flush=True)
    here = machine()
    runs = [{**run, "commit": here["commit"]} for run in runs]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if (RESULTS / "served_month.json").exists():  # keep the runs of the sources and horizons not run again
        earlier = json.loads((RESULTS / "served_month.json").read_text(encoding="utf-8"))
        dated = [{**r, "commit": r.get("commit", earlier["machine"]["commit"])} for r in earlier["runs"]]
        order = ["reference", "baseline", "current"]
        runs = sorted(replace_rows(runs, dated, lambda r: (r["data_source"], r["horizon"])),
                      key=lambda r: (order.index(r["data_source"]), r["horizon"] != "day-ahead"))
    result = {"machine": here, "runs": runs}
    (RESULTS / "served_month.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "served_month.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
