"""Sensor outages (runs of zero counts) and degraded sensor days, on constructed series and on the real file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import run_cli
from velocast.config import Settings
from velocast.data.quality import degraded_days, degraded_mask, outage_mask, outages, zero_runs
from velocast.lifecycle.training.datasets import training_rows


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


def _city(days: int = 10, counters: int = 6, start: str = "2021-03-01") -> pd.DataFrame:
    """``counters`` counters of different sizes, each hour of ``days`` Paris days."""
    stamps = pd.date_range(start, periods=24 * days, freq="h", tz="Europe/Paris")
    profile = 1 + np.sin(np.arange(len(stamps)) * 2 * np.pi / 24) ** 2
    return pd.concat([pd.DataFrame({"counter_id": f"c{k}", "timestamp": stamps,
                                    "bike_count": np.round(profile * 10 * (k + 1))}) for k in range(counters)],
                     ignore_index=True)


def _scale(rows: pd.DataFrame, counter: str | None, days: list[str], factor: float) -> pd.DataFrame:
    day = rows["timestamp"].dt.date.astype(str)
    on = day.isin(days) & (rows["counter_id"] == counter if counter else True)
    return rows.assign(bike_count=np.where(on, np.round(rows["bike_count"] * factor), rows["bike_count"]))


def test_a_counter_far_below_its_usual_given_the_city_is_degraded_a_city_wide_drop_is_not() -> None:
    rows = _scale(_city(), None, ["2021-03-03"], 0.1)  # a lockdown day: every counter at 10%
    rows = _scale(rows, "c4", ["2021-03-06", "2021-03-07"], 0.1)  # one sensor fails for two days
    rows = _scale(rows, "c2", ["2021-03-08"], 0.3)  # a quiet day, above the 20% share
    found = degraded_days(rows, 0.2)
    assert found[["counter_id", "day"]].astype(str).values.tolist() == [["c4", "2021-03-06"], ["c4", "2021-03-07"]]
    assert np.allclose(found["ratio"], 0.1, atol=0.01)
    mask = degraded_mask(rows, 0.2)
    assert mask.sum() == 48 and set(rows.loc[mask, "counter_id"]) == {"c4"}
    assert not degraded_mask(rows, 0.0).any()  # 0 turns the rule off
    assert degraded_days(rows, 0.5)[["counter_id", "day"]].astype(str).values.tolist() == [
        ["c2", "2021-03-08"], ["c4", "2021-03-06"], ["c4", "2021-03-07"]]


def test_degraded_days_are_judged_on_whole_days_with_enough_counters() -> None:
    rows = _scale(_city(), "c4", ["2021-03-06"], 0.05)
    partial = rows[~((rows["counter_id"] == "c4") & (rows["timestamp"].dt.date.astype(str) == "2021-03-06")
                     & (rows["timestamp"].dt.hour >= 12))]  # 12 counted hours: not judged
    assert degraded_days(partial).empty
    few = rows[rows["counter_id"].isin(["c1", "c2", "c3", "c4"])]  # 4 counters: no city factor
    assert degraded_days(few).empty
    assert degraded_days(rows).shape[0] == 1


def test_training_leaves_degraded_days_out_and_says_so() -> None:
    rows = _scale(_city(), "c4", ["2021-03-06", "2021-03-07"], 0.1)
    notes: list[str] = []
    kept = training_rows(rows, set(), Settings(), notes)
    assert len(kept) == len(rows) - 48
    assert any("48 rows on degraded sensor days" in note for note in notes)
    assert len(training_rows(rows, set(), Settings(degraded_day_share=0.0))) == len(rows)


def test_the_real_file_degraded_days(real_counts: pd.DataFrame) -> None:
    """Clichy's weeks of a few bikes an hour in April 2021 and the flooded riverside road in February."""
    rows = real_counts.rename(columns={"date": "timestamp"})
    rows = rows.assign(timestamp=pd.to_datetime(rows["timestamp"]).dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"))
    found = degraded_days(rows)
    names = real_counts[["counter_id", "counter_name"]].drop_duplicates().astype(str)
    counted = found[found["total"] > 0].merge(names, on="counter_id")
    assert len(counted) == 86
    by_name = counted.groupby("counter_name")["day"].agg(["size", "min", "max"])
    assert by_name.loc["20 Avenue de Clichy NO-SE", "size"] == 24
    assert str(by_name.loc["20 Avenue de Clichy NO-SE", "min"]) == "2021-04-10"
    assert by_name.loc["Voie Georges Pompidou NE-SO", "size"] == 14
    assert str(by_name.loc["Voie Georges Pompidou NE-SO", "min"]).startswith("2021-02")
    assert len(by_name) == 11  # Clichy, Montparnasse, Sèvres, Bagnolet, Cours la Reine, Pompidou (both ways but one)
    # the lockdowns and Christmas move the city factor: no day flags more than 4 counters
    assert found.groupby("day").size().max() <= 4
    mask = degraded_mask(rows)
    assert int((mask & ~outage_mask(rows, 24)).sum()) == 1953


def test_data_quality_lists_the_outages_and_degraded_days_of_the_store(home: Path, real_counts: pd.DataFrame,
                                                                       tmp_path: Path) -> None:
    """`velocast data quality` on five months of six real counters, the two of Avenue de Clichy among them."""
    clichy = {"100063175-353277233", "100063175-353277235"}
    ids = sorted(set(real_counts["counter_id"].astype(str)) - clichy)[:4] + sorted(clichy)
    rows = real_counts[real_counts["counter_id"].astype(str).isin(ids)
                       & (real_counts["date"] >= "2021-01-01") & (real_counts["date"] < "2021-06-01")]
    path = tmp_path / "six.parquet"
    rows.to_parquet(path, index=False)
    assert run_cli(["data", "ingest", str(path)]).exit_code == 0
    out = run_cli(["data", "quality", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.output)
    assert {o["counter_id"] for o in found["outages"]} == clichy
    first = next(o for o in found["outages"] if o["counter_id"] == "100063175-353277233")
    assert first["first_hour"] == "2021-04-08 21:00:00+02:00" and first["hours"] == 35
    spans = found["degraded"]
    assert {s["counter_id"] for s in spans} == clichy  # the four working counters are never flagged
    longest = max(spans, key=lambda s: s["days"])
    assert longest["counter_name"] == "20 Avenue de Clichy NO-SE" and longest["days"] >= 10
    assert longest["median_ratio"] < 0.05
    text = run_cli(["data", "quality", "--since", "2021-05-10"]).output
    assert "sensor outages" in text and "degraded sensor days" in text and "0 day(s) in 0 span(s)" in text
