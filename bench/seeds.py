"""The spread of one model's accuracy over random seeds, on the rows of ``bench/accuracy.py``.

    python bench/seeds.py                                 # lgbm day-ahead, seeds 1, 2, 3
    python bench/seeds.py --horizon calendar --seeds 1,2,3,4,5

Trains on 2020-09-01..2021-07-09 and scores 2021-07-10..2021-08-09 as served and with perfect
weather, once per seed (LightGBM's bagging and feature sampling), and prints one row per seed and
the mean. A change to features or defaults is worth keeping only if it beats this spread on the
same seeds. Writes ``bench/results/seeds-<model>-<horizon>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import fit_and_score, prepare  # noqa: E402
from bench.common import RESULTS, isolated  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="lgbm")
    parser.add_argument("--horizon", default="day-ahead", choices=("day-ahead", "calendar"))
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated random seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        home = str(folder / "home")
        isolated(prepare, folder)
        print("| seed | RMSE as served | RMSE(log1p) as served | RMSE perfect weather | fit (s) |\n|---:|---:|---:|---:|---:|")
        for seed in seeds:
            result, _, _ = isolated(fit_and_score, args.model_type, args.horizon, {}, "full", str(folder), home,
                                    False, seed)
            row = {"seed": seed, "rmse_as_served": result["as_served"]["rmse"],
                   "rmse_log1p_as_served": result["as_served"]["rmse_log1p"],
                   "rmse_perfect_weather": result["perfect_weather"]["rmse"], "fit_seconds": result["fit_seconds"]}
            rows.append(row)
            print(f"| {seed} | {row['rmse_as_served']:.2f} | {row['rmse_log1p_as_served']:.3f} | "
                  f"{row['rmse_perfect_weather']:.2f} | {row['fit_seconds']:.0f} |", flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    print(f"| mean | {mean['rmse_as_served']:.2f} | {mean['rmse_log1p_as_served']:.3f} | "
          f"{mean['rmse_perfect_weather']:.2f} | {mean['fit_seconds']:.0f} |")
    out = RESULTS / f"seeds-{args.model_type}-{args.horizon}.json"
    out.write_text(json.dumps({"model_type": args.model_type, "horizon": args.horizon, "runs": rows, "mean": mean},
                              indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
