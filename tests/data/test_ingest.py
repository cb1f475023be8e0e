"""Ingest: the real files, quarantine reasons, idempotency, DST and mappings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import OPENDATA_SAMPLE, REAL_COUNTS
from velocast.cli import app
from velocast.data import schema as S
from velocast.data import store
from velocast.data.ingest import IngestError, ingest_file, read_table, validate

runner = CliRunner()


def test_real_parquet_is_read_and_accepted_whole(home: Path) -> None:
    report = ingest_file(REAL_COUNTS)
    assert report.format == "tidy"
    assert (report.rows_read, report.accepted, report.rejected) == (422_243, 422_243, 0)
    assert report.added == 422_243
    summary = store.summary()
    assert summary["rows"] == 422_243 and summary["counters"] == 52
    # naive UTC became Paris time: the first row 2020-09-01 01:00 UTC is 03:00+02:00 in Paris
    assert summary["first"] == "2020-09-01 03:00:00+02:00"
    # weekday morning peak at 08:00 Paris time both in winter (UTC+1) and in summer (UTC+2)
    for start, end in (("2021-01-11", "2021-02-06"), ("2021-06-07", "2021-07-03")):
        rows = store.query_counts(start, end)
        weekdays = rows[rows["timestamp"].dt.weekday < 5]
        morning = weekdays[weekdays["timestamp"].dt.hour < 12]
        assert morning.groupby(morning["timestamp"].dt.hour)["bike_count"].mean().idxmax() == 8


def test_opendata_sample_in_paris_time(home: Path) -> None:
    report = ingest_file(OPENDATA_SAMPLE)
    assert report.format == "opendata"
    assert (report.rows_read, report.accepted, report.rejected) == (21, 21, 0)
    rows = store.query_counts()
    assert str(rows["timestamp"].dt.tz) == "Europe/Paris"
    assert rows["timestamp"].min() == pd.Timestamp("2021-09-01 03:00", tz="Europe/Paris")
    assert rows.loc[rows["timestamp"].dt.hour == 8, "bike_count"].item() == 280.0
    assert rows["counter_id"].unique().tolist() == ["100003096-353242251"]
    assert rows["latitude"].iloc[0] == pytest.approx(48.83504)


def _bad_copy(tmp_path: Path) -> Path:
    frame = pd.read_csv(OPENDATA_SAMPLE, sep=";", dtype=str)
    frame.loc[2, "Comptage horaire"] = "-5"
    frame.loc[4, "Comptage horaire"] = "beaucoup"
    frame.loc[6, "Date et heure de comptage"] = "2021-13-45T99:00"
    frame.loc[8, "Coordonnées géographiques"] = "45.76,4.83"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, sep=";", index=False)
    return path


def test_bad_rows_are_quarantined_with_reasons(home: Path, tmp_path: Path) -> None:
    report = ingest_file(_bad_copy(tmp_path))
    assert report.rows_read == 21 and report.accepted == 17 and report.rejected == 4
    assert report.rejected_by_reason == {
        S.REASON_COUNT_NEGATIVE: 1, S.REASON_COUNT_NOT_NUMBER: 1,
        S.REASON_BAD_TIMESTAMP: 1, S.REASON_OUTSIDE_IDF: 1}
    quarantine = pd.read_parquet(report.quarantine_path)
    assert sorted(quarantine["source_row"]) == [3, 5, 7, 9]
    # the user's original values are kept, with the field named in the detail
    assert quarantine.loc[quarantine["source_row"] == 5, "Comptage horaire"].item() == "beaucoup"
    detail = quarantine.set_index("source_row")["detail"]
    assert detail[3].startswith("Comptage horaire='-5'")  # the file's own column names
    assert detail[7].startswith("Date et heure de comptage=")
    assert detail[9].startswith("Coordonnées géographiques='45.76,4.83'")
    assert len(store.query_counts()) == 17


def test_the_same_bad_file_twice_is_quarantined_once(home: Path, tmp_path: Path) -> None:
    bad = _bad_copy(tmp_path)
    first, again = ingest_file(bad), ingest_file(bad)
    assert first.quarantine_path == again.quarantine_path
    assert (first.already_quarantined, again.already_quarantined) == (False, True)
    assert len(list((home / "quarantine").glob("*.parquet"))) == 1
    assert "already quarantined by an earlier ingest: kept once" in "\n".join(again.lines())
    summary = runner.invoke(app, ["data", "summary"])
    assert "quarantined rows: 4 in 1 file(s)" in summary.output, summary.output
    other = tmp_path / "other.csv"  # other bad rows keep their own file
    frame = pd.read_csv(bad, sep=";", dtype=str)
    frame.loc[10, "Comptage horaire"] = "-1"
    frame.to_csv(other, sep=";", index=False)
    assert ingest_file(other).quarantine_path != first.quarantine_path


def test_cli_reports_reasons_and_exit_codes(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "ingest", str(_bad_copy(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "rejected: 4" in result.output and "negative bike_count: 1" in result.output
    # the steps as they happen, each with the elapsed time, then the total time
    assert "s  reading " in result.output and "s  validating 21 rows (opendata format)" in result.output
    assert "velocast data ingest: done in " in result.output
    missing = runner.invoke(app, ["data", "ingest", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    wrong = runner.invoke(app, ["data", "ingest", str(odd)])
    assert wrong.exit_code == 2
    assert "Expected the open-data export" in wrong.output and "found columns: ['a', 'b']" in wrong.output


def test_reingest_adds_nothing_and_newer_file_updates(home: Path, tmp_path: Path, real_counts: pd.DataFrame) -> None:
    part = real_counts[real_counts["date"] < "2020-09-08"].copy()
    path = tmp_path / "week.parquet"
    part.to_parquet(path)
    first = ingest_file(path)
    again = ingest_file(path)
    assert first.added == len(part)
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(part))
    assert len(store.query_counts()) == len(part)
    newer = real_counts[(real_counts["date"] >= "2020-09-07") & (real_counts["date"] < "2020-09-10")].copy()
    overlap = newer["date"] < "2020-09-08"
    newer.loc[overlap, "bike_count"] += 1.0
    newer.to_parquet(path)
    update = ingest_file(path)
    assert update.updated == int(overlap.sum())
    assert update.added == int((~overlap).sum())
    stored = store.query_counts("2020-09-07 12:00", "2020-09-07 13:00")
    expected = newer[newer["date"] == pd.Timestamp("2020-09-07 10:00")]
    assert sorted(stored["bike_count"]) == sorted(expected["bike_count"])


def test_duplicates(home: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(OPENDATA_SAMPLE, sep=";", dtype=str)
    same = frame.iloc[[0]].copy()
    conflicting = frame.iloc[[1]].copy()
    conflicting["Comptage horaire"] = "999"
    path = tmp_path / "dups.csv"
    pd.concat([frame, same, conflicting]).to_csv(path, sep=";", index=False)
    report = ingest_file(path)
    assert report.identical_duplicates_merged == 1
    assert report.rejected_by_reason == {S.REASON_CONFLICTING_DUPLICATE: 2}
    assert report.accepted == 20


def test_dst_days_from_naive_utc(home: Path, tmp_path: Path) -> None:
    utc = pd.to_datetime(["2020-10-24 23:00", "2020-10-25 00:00", "2020-10-25 01:00", "2020-10-25 02:00",
                          "2021-03-28 00:00", "2021-03-28 01:00", "2021-03-28 02:00"])
    frame = pd.DataFrame({"counter_id": "c1", "counter_name": "c", "site_id": "1", "site_name": "s",
                          "bike_count": range(len(utc)), "date": utc, "latitude": 48.85, "longitude": 2.35})
    path = tmp_path / "dst.parquet"
    frame.to_parquet(path)
    assert ingest_file(path).accepted == len(utc)
    local = [t.isoformat() for t in store.query_counts()["timestamp"]]
    assert local == ["2020-10-25T01:00:00+02:00", "2020-10-25T02:00:00+02:00", "2020-10-25T02:00:00+01:00",
                     "2020-10-25T03:00:00+01:00", "2021-03-28T01:00:00+01:00", "2021-03-28T03:00:00+02:00",
                     "2021-03-28T04:00:00+02:00"]


def test_mapping_with_naive_paris_times(home: Path, tmp_path: Path) -> None:
    table = pd.DataFrame({"sensor": ["s1"] * 4, "when": ["2020-10-25 02:00", "2020-10-25 02:00",
                                                         "2021-03-28 02:00", "2021-03-28 03:00"],
                          "n": ["3", "4", "5", "6"], "geo": ["48.85,2.35"] * 4})
    path = tmp_path / "other.csv"
    table.to_csv(path, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("timezone: Europe/Paris\ncolumns:\n  counter_id: sensor\n  timestamp: when\n"
                       "  bike_count: n\n  coordinates: geo\n")
    report = ingest_file(path, mapping_file=mapping)
    assert report.format == "mapping"
    assert report.rejected_by_reason == {S.REASON_DST_GAP: 1}
    stamps = [t.isoformat() for t in store.query_counts()["timestamp"]]
    assert stamps == ["2020-10-25T02:00:00+02:00", "2020-10-25T02:00:00+01:00", "2021-03-28T03:00:00+02:00"]


def test_mapping_errors_name_the_problem(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns:\n  counter_id: sensor\n  bogus: x\n")
    with pytest.raises(IngestError, match="unknown canonical names"):
        ingest_file(OPENDATA_SAMPLE, mapping_file=mapping)


def test_prediction_input_may_omit_counts() -> None:
    raw = read_table(OPENDATA_SAMPLE)
    raw.frame = raw.frame.drop(columns=["Comptage horaire"])
    result = validate(raw, require_count=False)
    assert len(result.accepted) == 21 and result.accepted["bike_count"].isna().all()


def test_future_rows_of_a_counter_the_store_does_not_know_say_its_location_is_needed(tmp_path: Path) -> None:
    known = pd.DataFrame({"counter_id": ["100056330-104056330"], "counter_name": ["Sébastopol"],
                          "site_id": ["100056330"], "site_name": ["Sébastopol"], "latitude": [48.86],
                          "longitude": [2.35]})
    rows = tmp_path / "future.csv"
    rows.write_text("counter_id,date\n100056330-104056330,2021-08-10 06:00:00\nnew-1,2021-08-10 06:00:00\n")
    result = validate(read_table(rows, require_count=False), require_count=False, known_counters=known)
    assert result.accepted["counter_id"].tolist() == ["100056330-104056330"]
    rejected = result.rejected.iloc[0]
    assert rejected["reason"] == S.REASON_BAD_COORDINATES
    assert rejected["detail"] == ("counter 'new-1' is not in the store, so its location is needed: give latitude "
                                  "and longitude (or coordinates) columns")
    # with a location column, the message names the value that was wrong
    rows.write_text("counter_id,date,latitude,longitude\nnew-1,2021-08-10 06:00:00,north,2.35\n")
    rejected = validate(read_table(rows, require_count=False), require_count=False, known_counters=known).rejected.iloc[0]
    assert rejected["detail"] == "latitude='north': expected 'lat,lon' or numeric latitude/longitude"


def test_a_rejected_tidy_date_is_named_and_explained_as_the_file_gives_it(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    pd.DataFrame({"counter_id": ["100057445-104057445"] * 2, "date": ["2021-08-10 06:00:00", "sometime"],
                  "latitude": [48.86, 48.86], "longitude": [2.35, 2.35]}).to_csv(path, index=False)
    rejected = validate(read_table(path, require_count=False), require_count=False).rejected
    assert rejected["detail"].tolist() == [
        "date='sometime': expected a date-time such as 2021-09-01 06:00:00 (naive: UTC, as the tidy file's date)"]
