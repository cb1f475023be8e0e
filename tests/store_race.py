"""Writers racing on one counts store: files with overlaps and corrections, the rows expected after.

``race_files`` cuts the real subset into a base file (ingested first) and two writers' files:

- writer A: 1-14 Nov 2020 (stored already; a seeded 5% of its hours corrected by +1) and December
  (new);
- writer B: 15-30 Nov 2020 (stored already; a seeded 5% corrected by +2), December (new, the same
  rows as A's) and January (new).

Whatever order their commits land in, the store must end with the base rows, A's and B's
corrections applied, December and January once each; A's and B's reports must add up to exactly
the December + January hours added and the corrections updated.

``python tests/store_race.py FILE...`` (with the writer's environment) ingests the files in turn
and prints one JSON report per file: what the tests run in separate processes ("hosts").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SEED = 11


@dataclass
class Race:
    base: Path
    files_a: list[Path]
    files_b: list[Path]
    expected: pd.DataFrame  # counter_id, utc hour, bike_count
    new_hours: int
    corrected: int


def _cut(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    return frame[(frame["date"] >= start) & (frame["date"] < end)].reset_index(drop=True)


def _write_chunks(frame: pd.DataFrame, folder: Path, name: str, chunks: int) -> list[Path]:
    paths = []
    for k, part in enumerate(np.array_split(np.arange(len(frame)), chunks)):
        path = folder / f"{name}-{k}.parquet"
        frame.iloc[part].to_parquet(path, index=False)
        paths.append(path)
    return paths


def race_files(subset_file: Path, folder: Path, chunks: int = 3) -> Race:
    real = pd.read_parquet(subset_file)
    for column in ("counter_id", "counter_name", "site_name", "counter_technical_id"):
        real[column] = real[column].astype(str)
    real = real.sort_values(["date", "counter_id"]).reset_index(drop=True)
    rng = np.random.default_rng(SEED)
    base = _cut(real, "2020-10-01", "2020-12-01")
    early, late = _cut(real, "2020-11-01", "2020-11-15"), _cut(real, "2020-11-15", "2020-12-01")
    december, january = _cut(real, "2020-12-01", "2021-01-01"), _cut(real, "2021-01-01", "2021-02-01")
    fix_a = rng.random(len(early)) < 0.05
    fix_b = rng.random(len(late)) < 0.05
    early = early.assign(bike_count=early["bike_count"] + np.where(fix_a, 1.0, 0.0))
    late = late.assign(bike_count=late["bike_count"] + np.where(fix_b, 2.0, 0.0))
    folder.mkdir(parents=True, exist_ok=True)
    base_path = folder / "base.parquet"
    base.to_parquet(base_path, index=False)
    # interleave old and new hours in each chunk so that both writers' commits touch shared months
    side_a = pd.concat([early, december], ignore_index=True).sample(frac=1.0, random_state=SEED)
    side_b = pd.concat([late, december, january], ignore_index=True).sample(frac=1.0, random_state=SEED + 1)
    expected = pd.concat([_cut(base, "2020-10-01", "2020-11-01"), early, late, december, january],
                         ignore_index=True)
    expected = pd.DataFrame({"counter_id": expected["counter_id"].astype(str),
                             "hour": pd.to_datetime(expected["date"]).dt.tz_localize("UTC").astype("datetime64[ns, UTC]"),
                             "bike_count": expected["bike_count"].astype(float)})
    return Race(base_path, _write_chunks(side_a, folder, "a", chunks), _write_chunks(side_b, folder, "b", chunks),
                expected.sort_values(["hour", "counter_id"]).reset_index(drop=True),
                len(december) + len(january), int(fix_a.sum() + fix_b.sum()))


def writer(env: dict[str, str], files: list[Path], log: Path) -> subprocess.Popen:
    """A separate process ("host") ingesting ``files`` in turn; JSON reports on stdout."""
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen([sys.executable, str(Path(__file__)), *map(str, files)], env=full,
                            stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)  # noqa: SIM115


def reports(proc: subprocess.Popen, timeout: float = 240) -> list[dict]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"writer failed ({proc.returncode}): {out[-2000:]}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def stored(settings) -> pd.DataFrame:
    from velocast.data import store

    rows = store.query_counts(settings=settings)
    return pd.DataFrame({"counter_id": rows["counter_id"].astype(str),
                         "hour": rows["timestamp"].dt.tz_convert("UTC"),
                         "bike_count": rows["bike_count"].astype(float)}
                        ).sort_values(["hour", "counter_id"]).reset_index(drop=True)


def main(paths: list[str]) -> None:
    import logging

    from velocast.data.ingest import ingest_file

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for path in paths:
        report = ingest_file(path)
        print(json.dumps({"file": Path(path).name, "added": report.added, "updated": report.updated,
                          "unchanged": report.unchanged}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
