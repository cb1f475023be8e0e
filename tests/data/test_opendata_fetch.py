"""``velocast data fetch``: incremental ingest from the Paris open-data portal's Explore API v2.1.

The portal is stood in for by a real HTTP server on 127.0.0.1 that serves the dataset's ``exports``
endpoint from the GENUINE rows of ``opendata_export_sample.csv``, converted to what the API returns
(the API field names, ``;``-separated CSV with CRLF line ends, or Parquet with a geo point), and
that applies the ``where`` (on ``date``) and ``select`` it receives, as the portal does.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import OPENDATA_SAMPLE
from tests.http_server import Received, Reply, ScriptedServer, refused_url
from velocast.cli import app as cli_app
from velocast.config import get_settings
from velocast.data import store
from velocast.data.opendata import OpenDataError, fetch_counts, incremental_since

EXPORT_PATH = "/api/explore/v2.1/catalog/datasets/comptage-velo-donnees-compteurs/exports/"
# the export's French headers -> the API's field names of the same dataset
API_FIELDS = {
    "Identifiant du compteur": "id_compteur", "Nom du compteur": "nom_compteur",
    "Identifiant du site de comptage": "id", "Nom du site de comptage": "name", "Comptage horaire": "sum_counts",
    "Date et heure de comptage": "date", "Date d'installation du site de comptage": "installation_date",
    "Lien vers photo du site de comptage": "photos", "Coordonnées géographiques": "coordinates",
    "Identifiant technique compteur": "counter", "ID Photos": "id_photos",
    "test_lien_vers_photos_du_site_de_comptage_": "test_lien_vers_photos_du_comptage", "id_photo_1": "id_photo_1",
    "url_sites": "url_sites", "type_dimage": "type_dimage", "mois_annee_comptage": "mois_annee_comptage",
}
WHERE = re.compile(r"date (>=|<) date'([^']+)'")


def api_rows() -> pd.DataFrame:
    """The genuine sample rows under the API's field names, as text (sorted by time like an export)."""
    frame = pd.read_csv(OPENDATA_SAMPLE, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert set(frame.columns) == set(API_FIELDS)
    frame = frame.rename(columns=API_FIELDS)
    return frame.sort_values("date", key=lambda d: pd.to_datetime(d, utc=True)).reset_index(drop=True)


class Portal:
    """The dataset's exports endpoint over ``rows``: ``where`` on date, ``select``, csv or parquet."""

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows

    def __call__(self, request: Received) -> Reply:
        if not request.path.startswith(EXPORT_PATH):
            return Reply(404, b'{"error_code": "NotFound"}')
        fmt = request.path.rsplit("/", 1)[-1]
        where = request.query.get("where", "")
        if where and WHERE.sub("", where).replace(" AND ", "").strip():
            return Reply(400, b'{"error_code": "ODSQLError", "message": "unexpected where"}')
        dates = pd.to_datetime(self.rows["date"], utc=True)
        keep = pd.Series(True, index=self.rows.index)
        for op, value in WHERE.findall(where):
            bound = pd.Timestamp(value)
            keep &= dates >= bound if op == ">=" else dates < bound
        fields = request.query["select"].split(",") if "select" in request.query else list(self.rows.columns)
        out = self.rows.loc[keep, fields]
        if fmt == "csv":
            return Reply(200, out.to_csv(sep=request.query.get("delimiter", ";"), index=False,
                                         lineterminator="\r\n").encode("utf-8"),
                         {"Content-Type": "text/csv; charset=utf-8"})
        return Reply(200, parquet_bytes(out), {"Content-Type": "application/vnd.apache.parquet"})


def parquet_bytes(rows: pd.DataFrame) -> bytes:
    """The API's Parquet: typed columns, the date with its zone, ``coordinates`` a {lon, lat} geo point."""
    lat_lon = rows["coordinates"].str.split(",", expand=True).astype(float)
    table = pa.table({
        **{c: pa.array(rows[c].tolist()) for c in rows.columns if c not in ("sum_counts", "date", "coordinates")},
        "sum_counts": pa.array(rows["sum_counts"].astype(float).astype(int)),
        "date": pa.array(pd.to_datetime(rows["date"], utc=True).dt.tz_convert("Europe/Paris")),
        "coordinates": pa.array([{"lon": lon, "lat": lat} for lat, lon in lat_lon.itertuples(index=False)]),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    monkeypatch.setenv("VELOCAST_HTTP_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("VELOCAST_HTTP_RETRIES", "2")
    monkeypatch.setenv("VELOCAST_OPENDATA_TIMEOUT_SECONDS", "5")
    with ScriptedServer(Portal(api_rows())) as server:
        monkeypatch.setenv("VELOCAST_OPENDATA_URL", f"{server.url}/api/explore/v2.1")
        yield server


def _nothing_stored() -> bool:
    settings = get_settings()
    leftovers = list((settings.home / "downloads").rglob("*")) if (settings.home / "downloads").exists() else []
    return not store.has_counts(settings) and not leftovers and not list(settings.quarantine_dir.glob("*"))


# --------------------------------------------------------------------------- incremental runs
def test_first_fetch_adds_the_rows_a_second_adds_none_a_late_correction_updates_one(portal: ScriptedServer) -> None:
    first = fetch_counts(until="2021-09-01T13:00")  # an empty store: everything before 13:00
    assert first.where == "date < date'2021-09-01T11:00:00Z'"
    assert first.rows_read == first.accepted == first.added == 10 and first.rejected == 0
    assert store.latest_timestamp() == pd.Timestamp("2021-09-01 12:00", tz="Europe/Paris")

    assert incremental_since() == pd.Timestamp("2021-08-30 12:00", tz="Europe/Paris")
    second = fetch_counts()  # incremental: from the last count minus 48 h
    assert portal.requests[-1].query["where"] == "date >= date'2021-08-30T10:00:00Z'"
    assert portal.requests[-1].query["select"].split(",")[:3] == ["id_compteur", "nom_compteur", "id"]
    assert portal.requests[-1].query["limit"] == "-1" and portal.requests[-1].path.endswith("/exports/csv")
    assert (second.rows_read, second.added, second.unchanged, second.updated) == (21, 11, 10, 0)
    stored = store.query_counts()
    assert len(stored) == 21 and stored["bike_count"].sum() == pytest.approx(1580.0)  # the sample's total

    third = fetch_counts()
    assert (third.added, third.updated, third.unchanged) == (0, 0, 21) and len(store.query_counts()) == 21

    rows = portal.respond.rows  # the portal corrects 08:00 (280 -> 281) after the fact
    rows.loc[rows["date"] == "2021-09-01T08:00:00+02:00", "sum_counts"] = "281.0"
    corrected = fetch_counts()
    assert (corrected.added, corrected.updated, corrected.unchanged) == (0, 1, 20)
    eight = store.query_counts("2021-09-01 08:00", "2021-09-01 09:00")
    assert eight["bike_count"].tolist() == [281.0]
    assert store.counters()["counter_name"].tolist() == ["97 avenue Denfert Rochereau SO-NE"]
    assert store.counters()["latitude"].tolist() == [48.83504]


def test_the_overlap_setting_moves_the_where_clause(portal: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fetch_counts(until="2021-09-01T13:00")
    monkeypatch.setenv("VELOCAST_OPENDATA_OVERLAP_HOURS", "3")
    report = fetch_counts()
    assert portal.requests[-1].query["where"] == "date >= date'2021-09-01T07:00:00Z'"  # 12:00 Paris - 3 h
    assert report.rows_read == 15 and report.added == 11 and report.unchanged == 4


def test_since_and_until_are_honoured(portal: ScriptedServer) -> None:
    report = fetch_counts(since="2021-09-01T08:00", until="2021-09-01T10:00")
    assert portal.requests[-1].query["where"] == ("date >= date'2021-09-01T06:00:00Z' AND "
                                                  "date < date'2021-09-01T08:00:00Z'")
    stored = store.query_counts()
    assert report.added == 2 and stored["timestamp"].dt.hour.tolist() == [8, 9]
    assert stored["bike_count"].tolist() == [280.0, 193.0]
    with pytest.raises(OpenDataError, match="is not after"):
        fetch_counts(since="2021-09-02", until="2021-09-01")


def test_a_parquet_export_gives_the_same_rows(portal: ScriptedServer) -> None:
    report = fetch_counts(fmt="parquet")
    assert portal.requests[-1].path.endswith("/exports/parquet") and "delimiter" not in portal.requests[-1].query
    assert report.added == 21 and report.rejected == 0
    stored = store.query_counts()
    assert stored["latitude"].unique().tolist() == [48.83504] and stored["longitude"].unique().tolist() == [2.33314]
    assert stored["bike_count"].sum() == pytest.approx(1580.0)


def test_bad_portal_rows_go_to_quarantine_like_any_ingest(portal: ScriptedServer) -> None:
    rows = portal.respond.rows
    rows.loc[rows["date"] == "2021-09-01T09:00:00+02:00", "sum_counts"] = "-4"
    report = fetch_counts()
    assert report.added == 20 and report.rejected_by_reason == {"negative bike_count": 1}
    quarantined = pd.read_parquet(report.quarantine_path)
    assert quarantined["sum_counts"].tolist() == ["-4"] and quarantined["source_file"].iloc[0].startswith(portal.url)


# --------------------------------------------------------------------------- failures
def test_429_with_retry_after_then_success(portal: ScriptedServer) -> None:
    portal.script = [Reply(429, b'{"error_code": "TooManyRequests"}', {"Retry-After": "1"})]
    report = fetch_counts()
    first, second = portal.requests
    assert second.at - first.at >= 0.95 and report.attempts == 2 and report.added == 21


def test_500_once_then_success(portal: ScriptedServer) -> None:
    portal.script = [Reply(500, b"Internal Server Error")]
    report = fetch_counts()
    assert len(portal.requests) == 2 and report.attempts == 2 and report.added == 21


def test_a_500_storm_fails_in_one_line_and_stores_nothing(portal: ScriptedServer) -> None:
    portal.script = [Reply(500, b"Internal Server Error")] * 3
    with pytest.raises(OpenDataError) as caught:
        fetch_counts()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"open-data export: GET {portal.url}{EXPORT_PATH}csv?")
    assert message.endswith("failed after 3 attempts: HTTP 500 Internal Server Error")
    assert len(portal.requests) == 3 and _nothing_stored()


def test_a_body_cut_before_its_length_is_retried_then_fails_with_nothing_stored(portal: ScriptedServer) -> None:
    body = Portal(api_rows())(Received(EXPORT_PATH + "csv", {}, 0.0)).body
    portal.script = [Reply(200, body, cut_after=len(body) // 2)]
    assert fetch_counts().added == 21  # one cut attempt, then a whole one
    assert len(portal.requests) == 2

    rows = portal.respond.rows
    rows.loc[rows["date"] == "2021-09-01T08:00:00+02:00", "sum_counts"] = "281.0"
    before = store.query_counts()
    portal.script = [Reply(200, body, cut_after=len(body) // 2)] * 3
    with pytest.raises(OpenDataError, match="failed after 3 attempts: .*(incomplete|closed|cut)"):
        fetch_counts()
    pd.testing.assert_frame_equal(store.query_counts(), before)  # the store as it was


def test_a_connection_closed_mid_row_stores_nothing(portal: ScriptedServer) -> None:
    body = Portal(api_rows())(Received(EXPORT_PATH + "csv", {}, 0.0)).body
    cut = body.index(b"\r\n", len(body) // 2) - 20  # in the middle of a row, no Content-Length to tell
    portal.script = [Reply(200, body, cut_after=cut, close_delimited=True)]
    with pytest.raises(OpenDataError, match="ends in the middle of a line"):
        fetch_counts()
    assert _nothing_stored()


def test_an_unreachable_portal_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_HTTP_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("VELOCAST_OPENDATA_URL", refused_url() + "/api/explore/v2.1")
    with pytest.raises(OpenDataError, match=r"^open-data export: GET http://127\.0\.0\.1:\d+/api/explore/v2\.1/catalog/"
                                            r"datasets/comptage-velo-donnees-compteurs/exports/csv\?.* failed after "
                                            r"4 attempts: ConnectError: .*[Rr]efused"):
        fetch_counts()
    assert _nothing_stored()


def test_a_404_is_told_apart_and_not_retried(portal: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCAST_OPENDATA_DATASET", "no-such-dataset")
    with pytest.raises(OpenDataError, match="HTTP 404 Not Found") as caught:
        fetch_counts()
    assert caught.value.__cause__.kind == "not_found" and len(portal.requests) == 1


# --------------------------------------------------------------------------- the CLI
def test_cli_fetch_reports_and_fails_in_one_line(portal: ScriptedServer, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    out = CliRunner().invoke(cli_app, ["data", "fetch", "--since", "2021-09-01", "--until", "2021-09-02"])
    assert out.exit_code == 0, out.output
    assert "accepted: 21  (added 21, updated 0, unchanged 0)" in out.output
    assert "where: date >= date'2021-08-31T22:00:00Z' AND date < date'2021-09-01T22:00:00Z'" in out.output

    portal.script = [Reply(503, b"busy")] * 3
    failed = CliRunner().invoke(cli_app, ["data", "fetch"])
    assert failed.exit_code == 1
    # the CLI's one line (the scripted server's threads may print their own tracebacks meanwhile)
    lines = [line for line in failed.output.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: open-data export: GET http://127.0.0.1:")
    assert "HTTP 503" in lines[0] and isinstance(failed.exception, SystemExit)  # not an uncaught error
