"""The Delta Lake counts backend on a local folder: same answers as Parquet, racing writers, kill -9.

The same scenarios run against an S3-compatible server in ``tests/scale/test_delta_store.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests import store_race
from velocast.config import Settings
from velocast.data import store
from velocast.data.ingest import ingest_file

pytest.importorskip("deltalake")


def _delta(tmp_path: Path, location: str | None = None) -> Settings:
    return Settings(home=tmp_path / "home-delta", store_uri=f"delta:{location or tmp_path / 'table'}")


def test_delta_store_answers_as_the_parquet_store(real_subset_file: Path, tmp_path: Path) -> None:
    parquet, delta = Settings(home=tmp_path / "home-parquet"), _delta(tmp_path)
    assert store.version(delta) == -1 and not store.has_counts(delta) and store.latest_timestamp(delta) is None
    first = [ingest_file(real_subset_file, settings=s) for s in (parquet, delta)]
    assert first[0].added == first[1].added > 30_000 and first[1].updated == first[1].unchanged == 0
    again = ingest_file(real_subset_file, settings=delta)
    assert (again.added, again.updated, again.unchanged) == (0, 0, first[1].added)
    version = store.version(delta)
    assert version >= 1 and not (tmp_path / "home-delta" / "locks").exists()  # no lock file anywhere

    for start, end in (("2021-03-25", "2021-04-02"), ("2020-10-20", "2020-10-26"), ("2020-09-01", "2021-08-10")):
        pd.testing.assert_frame_equal(store.query_counts(start, end, settings=delta),
                                      store.query_counts(start, end, settings=parquet))
        pd.testing.assert_frame_equal(store.recent_counts(start, end, settings=delta),
                                      store.query_counts(start, end, settings=parquet))
    pd.testing.assert_frame_equal(store.counters(delta), store.counters(parquet))
    assert store.latest_timestamp(delta) == store.latest_timestamp(parquet)
    assert {**store.summary(delta), "backend": "-"} == {**store.summary(parquet), "backend": "-"}

    # a correction of stored hours: one new table version; the serving cache sees it at once
    one = store.counters(delta)["counter_id"].iloc[0]
    day = store.recent_counts("2021-08-01", "2021-08-02", counter_ids=[one], settings=delta)
    result = store.upsert_counts(day.assign(bike_count=day["bike_count"] + 1000.0), delta)
    assert (result.added, result.updated, result.unchanged) == (0, 24, 0)
    assert store.version(delta) == version + 1
    after = store.recent_counts("2021-08-01", "2021-08-02", counter_ids=[one], settings=delta)
    np.testing.assert_allclose(after["bike_count"], day["bike_count"] + 1000.0)


def test_store_uri_of_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected nothing .* or delta:"):
        store.query_counts(settings=Settings(home=tmp_path, store_uri="iceberg:/x"))
    with pytest.raises(ValueError, match="location is empty"):
        store.query_counts(settings=Settings(home=tmp_path, store_uri="delta:"))


def run_race(real_subset_file: Path, tmp_path: Path, location: str, env: dict[str, str]) -> None:
    """Two processes with their own homes ("hosts") ingest overlapping files into one table at once."""
    race = store_race.race_files(real_subset_file, tmp_path / "files")
    reader = Settings(home=tmp_path / "reader", store_uri=f"delta:{location}")
    ingest_file(race.base, settings=reader)
    writers = [store_race.writer({**env, "VELOCAST_HOME": str(tmp_path / f"host-{name}"),
                                  "VELOCAST_STORE_URI": f"delta:{location}"}, files, tmp_path / f"{name}.log")
               for name, files in (("a", race.files_a), ("b", race.files_b))]
    done = [store_race.reports(w) for w in writers]
    got = store_race.stored(reader)
    assert not got.duplicated(["counter_id", "hour"]).any(), "a counter-hour is stored twice"
    pd.testing.assert_frame_equal(got, race.expected)  # every row once, both writers' corrections applied
    reports = [r for rows in done for r in rows]
    assert len(reports) == len(race.files_a) + len(race.files_b)
    assert sum(r["added"] for r in reports) == race.new_hours
    assert sum(r["updated"] for r in reports) == race.corrected


def test_two_writers_race_on_a_local_table(real_subset_file: Path, tmp_path: Path) -> None:
    run_race(real_subset_file, tmp_path, str(tmp_path / "table"), {})


# a writer that corrects one month again and again: commit k sets every count of March 2021 to its
# original value + k, then prints k (after the commit returned)
_WRITER = """
import sys
import pandas as pd
from velocast.config import get_settings
from velocast.data import store
settings = get_settings()
month = store.query_counts("2021-03-01", "2021-04-01", settings=settings)
start = int(sys.argv[1])
original = month["bike_count"] - (start - 1)  # the table holds commit start - 1
for k in range(start, start + 10_000):
    store.upsert_counts(month.assign(bike_count=original + k), settings)
    print(k, flush=True)
"""


def kill_writers(location: str, home: Path, env: dict[str, str], rounds: int, seed: int) -> list[int]:
    """Start a correcting writer, SIGKILL it at a random moment, check the table; ``rounds`` times."""
    settings = Settings(home=home, store_uri=f"delta:{location}")
    original = store.query_counts("2021-03-01", "2021-04-01", settings=settings)
    full = {**os.environ, **env, "VELOCAST_HOME": str(home), "VELOCAST_STORE_URI": f"delta:{location}",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    rng = np.random.default_rng(seed)
    committed, offsets = 0, []
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(committed + 1)], env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # wait for its first commit, then kill it at a random moment of a later one
        first = proc.stdout.readline()
        assert first.strip(), "the writer died before its first commit"
        time.sleep(float(rng.uniform(0.0, 1.5)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        printed = [int(x) for x in (first + out).split()]
        now = store.query_counts("2021-03-01", "2021-04-01", settings=settings)
        assert len(now) == len(original) and not now.duplicated(["counter_id", "timestamp"]).any()
        offset = np.unique(now["bike_count"].to_numpy() - original["bike_count"].to_numpy())
        assert len(offset) == 1, f"a half-applied commit is visible: offsets {offset[:5]}"
        # the last commit printed is there; at most the one in flight committed after it
        assert printed[-1] <= offset[0] <= printed[-1] + 1
        committed = int(offset[0])
        offsets.append(committed)
    return offsets


def test_a_writer_killed_mid_commit_leaves_the_previous_version(real_subset_file: Path, tmp_path: Path) -> None:
    location = str(tmp_path / "table")
    ingest_file(real_subset_file, settings=_delta(tmp_path, location))
    offsets = kill_writers(location, tmp_path / "home-delta", {}, rounds=4, seed=3)
    assert offsets == sorted(offsets) and offsets[-1] >= 4
