"""Sensor outages: runs of zero counts found exactly, on constructed series and on the real file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from velocast.data.quality import outage_mask, outages, zero_runs


def _series(counter: str, start: str, counts: list[float]) -> pd.DataFrame:
    stamps = pd.date_range(start, periods=len(counts), freq="h", tz="Europe/Paris")
    return pd.DataFrame({"counter_id": counter, "timestamp": stamps, "bike_count": np.asarray(counts, float)})


def test_runs_are_per_counter_and_broken_by_a_count_or_a_missing_hour() -> None:
    a = _series("a", "2021-03-01", [5, 0, 0, 0, 7, 0, 0])
    b = _series("b", "2021-03-01", [0, 0, 3])
    gap = _series("c", "2021-03-01", [0, 0]).pipe(lambda f: pd.concat([f, _series("c", "2021-03-01 03:00", [0])]))
    rows = pd.concat([b, a, gap], ignore_index=True).sample(frac=1, random_state=1)  # any order
    runs = zero_runs(rows["counter_id"], rows["timestamp"], rows["bike_count"].to_numpy())
    lengths = pd.Series(runs.length(), index=rows.index)
    by = rows.assign(length=lengths).sort_values(["counter_id", "timestamp"])
    assert by[by["counter_id"] == "a"]["length"].tolist() == [0, 3, 3, 3, 0, 2, 2]
    assert by[by["counter_id"] == "b"]["length"].tolist() == [2, 2, 0]
    assert by[by["counter_id"] == "c"]["length"].tolist() == [2, 2, 1]  # 02:00 is missing: the run ends


def test_outage_needs_the_minimum_run_length() -> None:
    night = _series("a", "2021-03-01", [0] * 23 + [4])
    broken = _series("b", "2021-03-01", [0] * 24 + [4])
    rows = pd.concat([night, broken], ignore_index=True)
    flagged = outage_mask(rows, min_hours=24)
    assert not flagged[:24].any()
    assert flagged[24:48].all() and not flagged[48]
    table = outages(rows, min_hours=24)
    assert table[["counter_id", "hours"]].values.tolist() == [["b", 24]]
    assert table["first_hour"].iloc[0] == pd.Timestamp("2021-03-01", tz="Europe/Paris")


def test_the_real_file_outages(real_counts: pd.DataFrame) -> None:
    """The two Avenue de Clichy counters from early May 2021 (76 days) and Montparnasse for a month from 2021-01-25."""
    rows = real_counts.rename(columns={"date": "timestamp"})
    rows = rows.assign(timestamp=pd.to_datetime(rows["timestamp"]).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"))
    table = outages(rows, min_hours=24)
    longest = table.sort_values("hours", ascending=False).head(4)
    assert set(longest["counter_id"]) == {"100063175-353277233", "100063175-353277235",
                                          "100049407-353255859", "100049407-353255860"}
    clichy = table[table["counter_id"] == "100063175-353277233"].sort_values("hours").iloc[-1]
    assert clichy["hours"] == 1834 and clichy["first_hour"] == pd.Timestamp("2021-05-06 01:00", tz="Europe/Paris")
    # no other counter is ever at zero for a whole day
    assert set(table["counter_id"]) == set(longest["counter_id"])
    assert int(outage_mask(rows, 24).sum()) == int(table["hours"].sum())
