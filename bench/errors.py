"""Where one model's errors come from, on the rows of ``bench/accuracy.py`` scored as served.

    python bench/errors.py                          # lgbm calendar
    python bench/errors.py --horizon day-ahead --top 10

Trains on 2020-09-01..2021-07-09, scores 2021-07-10..2021-08-09 as served (no weather of the
predicted days, sensor-outage rows left out) and prints the RMSE and mean error of log1p(count),
per counter (worst first), per Paris hour and per Paris day: a positive mean error is a model
that predicts too many bikes. Meant for deciding what to work on, not as a benchmark result.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import prepare  # noqa: E402
from bench.common import isolated  # noqa: E402


def breakdown(model_type: str, horizon: str, folder: str, top: int) -> str:
    import os

    import numpy as np
    import pandas as pd

    os.environ["VELOCAST_HOME"] = str(Path(folder) / "home")
    from velocast.models import build_pipeline, predict_frame

    train = pd.read_parquet(Path(folder) / "train.parquet")
    test = pd.read_parquet(Path(folder) / "test_without.parquet")
    pipeline = build_pipeline(model_type, {}, horizon).fit(train, train["bike_count"].to_numpy())
    predicted = predict_frame(pipeline, test)["prediction"].to_numpy(float)
    local = test["timestamp"].dt.tz_convert("Europe/Paris")
    frame = pd.DataFrame({"counter": test["counter_name"].astype(str), "hour": local.dt.hour,
                          "day": local.dt.date.astype(str), "count": test["bike_count"].to_numpy(float),
                          "predicted": predicted,
                          "error": np.log1p(predicted) - np.log1p(test["bike_count"].to_numpy(float))})

    def table(by: str, limit: int | None = None) -> str:
        grouped = frame.groupby(by).agg(rows=("error", "size"),
                                        rmse_log1p=("error", lambda e: float(np.sqrt(np.mean(e ** 2)))),
                                        mean_error=("error", "mean"), mean_count=("count", "mean"),
                                        mean_predicted=("predicted", "mean"))
        if limit:
            grouped = grouped.sort_values("rmse_log1p", ascending=False).head(limit)
        return grouped.round(3).to_string()

    overall = float(np.sqrt(np.mean(frame["error"] ** 2)))
    return "\n\n".join([f"{model_type} {horizon}: RMSE(log1p) {overall:.3f}, mean error {frame['error'].mean():+.3f} "
                        f"on {len(frame):,} rows", table("counter", top), table("hour"), table("day")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="lgbm")
    parser.add_argument("--horizon", default="calendar", choices=("day-ahead", "calendar"))
    parser.add_argument("--top", type=int, default=15, help="counters shown, worst first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        isolated(prepare, Path(scratch))
        text, _, _ = isolated(breakdown, args.model_type, args.horizon, scratch, args.top)
    print(text)


if __name__ == "__main__":
    main()
