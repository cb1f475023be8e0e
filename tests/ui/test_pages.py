"""Every page of the web UI, rendered with streamlit's AppTest on real data and real models."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import OPENDATA_SAMPLE
from tests.ui.conftest import open_page, table_with, texts
from velocast.data import store
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.monitor import latest_drift
from velocast.tracking.registry import Registry

DAY = date(2021, 8, 3)  # a stored day after the split cutoff


def test_predict_page_forecasts_a_counter_day_with_its_counts(at_ui_home: dict[str, Any]) -> None:
    counters = store.counters()
    at = open_page()
    assert at.title[0].value == "Predict"
    options = at.selectbox(key="counter").options
    assert sorted(options) == sorted(counters["counter_name"].astype(str))  # real names, from the store
    counter = counters.iloc[3]
    at.selectbox(key="counter").set_value(str(counter["counter_name"]))
    at.date_input(key="day").set_value(DAY)
    at.selectbox(key="hour").set_value(8)
    at.button(key="predict").click().run()
    assert not at.exception, [e.value for e in at.exception]

    metrics = {m.label: m.value for m in at.metric}
    predicted = float(metrics["Predicted bikes at 08:00 (Paris)"].replace(",", ""))
    assert predicted >= 0
    stored = store.query_counts("2021-08-03", "2021-08-04", counter_ids=[str(counter["counter_id"])])
    at_eight = stored[stored["timestamp"].dt.hour == 8]["bike_count"].iloc[0]
    assert metrics["Counted at 08:00 (Paris)"] == f"{at_eight:.0f}"
    shown = texts(at)
    assert f"{counter['counter_name']} — Tuesday 03 August 2021 (Paris)" in shown
    assert "lgbm v2 (champion)" in shown and "models:/bike-traffic-lgbm/2" in shown
    hourly = at.dataframe[0].value
    assert list(hourly.columns) == ["hour (Paris)", "predicted", "actual", "lower", "upper"] and len(hourly) == 24
    assert hourly["actual"].tolist() == stored["bike_count"].tolist()
    assert hourly.loc[hourly["hour (Paris)"] == "08:00", "predicted"].iloc[0] == pytest.approx(predicted, abs=0.5)
    assert (hourly["lower"] >= 0).all() and (hourly["lower"] <= hourly["upper"]).all()
    at_eight_row = hourly[hourly["hour (Paris)"] == "08:00"].iloc[0]
    assert f"80% interval: **{at_eight_row['lower']:.0f} – {at_eight_row['upper']:.0f}** bikes" in texts(at)
    chart = at.get("vega_lite_chart")[0].proto.spec  # the day as a chart, the interval as a band
    assert '"area"' in chart and '"lower"' in chart and '"upper"' in chart and "80% interval" in chart
    width = (hourly["upper"] - hourly["lower"]).sum()
    at.select_slider(key="coverage").set_value(0.95)
    at.button(key="predict").click().run()
    wider = at.dataframe[0].value
    assert (wider["upper"] - wider["lower"]).sum() > width and "95% interval" in at.get("vega_lite_chart")[0].proto.spec
    at.select_slider(key="coverage").set_value(0.8)

    # the weather the user sets is used, and said
    at.toggle(key="own_weather").set_value(True).run()
    at.number_input(key="temperature").set_value(2.0)
    at.number_input(key="rain").set_value(8.0)
    at.button(key="predict").click().run()
    assert not at.exception
    assert "Weather set: 2.0 °C, 8.0 mm of rain per hour." in texts(at)

    # 02:00 on the day summer time starts does not exist: the page says so and shows 03:00
    at.date_input(key="day").set_value(date(2021, 3, 28))
    at.selectbox(key="hour").set_value(2)
    at.button(key="predict").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "02:00 does not exist on that day in Paris" in " ".join(i.value for i in at.info)
    assert "Predicted bikes at 03:00 (Paris)" in {m.label for m in at.metric}
    assert len(at.dataframe[0].value) == 23


def _tidy_csv(rows: pd.DataFrame, path: Path) -> Path:
    """Rows of the tidy file as CSV, with data row 4 broken (an unreadable date)."""
    frame = rows.copy()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.loc[3, "date"] = "sometime in August"
    frame.to_csv(path, index=False)
    return path


def test_batch_page_lists_rejected_rows_and_predicts_the_rest(at_ui_home: dict[str, Any], recent_rows: pd.DataFrame,
                                                              tmp_path: Path) -> None:
    rows = recent_rows.head(12)
    path = _tidy_csv(rows, tmp_path / "mine.csv")
    at = open_page("batch")
    assert at.title[0].value == "Batch predictions"
    assert not at.dataframe  # nothing before an upload

    at.file_uploader(key="upload").set_value(("mine.csv", path.read_bytes(), "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Rows read": "12", "Accepted": "11", "Rejected": "1"}
    rejected = table_with(at, "reason")
    assert rejected["row"].tolist() == [4] and rejected["reason"].tolist() == ["unparseable timestamp"]
    assert "sometime in August" in rejected["detail"].iloc[0]
    predictions = table_with(at, "prediction")
    assert len(predictions) == 11 and predictions["prediction"].notna().all()
    assert predictions["counter_id"].astype(str).tolist() == rows.drop(index=3)["counter_id"].tolist()
    # the file's UTC dates and the predicted Paris hours, side by side, each labelled with its zone
    assert {"date (UTC, as in the file)", "hour predicted (Europe/Paris)"} <= set(predictions.columns)
    assert "date" not in predictions.columns and "date (UTC, as in the file)" in table_with(at, "reason").columns
    shown = texts(at)
    assert "Format detected: tidy." in shown and "lgbm v2 (champion)" in shown
    assert "Scores on the rows that carry a count: rmse" in shown
    assert at.get("download_button")[0].proto.label == "Download the predictions (CSV)"

    # the open-data export (';', French headers): its counters are predicted from their location
    sample = OPENDATA_SAMPLE.read_bytes()
    at.file_uploader(key="upload").set_value(("export.csv", sample, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    n_rows = len(pd.read_csv(OPENDATA_SAMPLE, sep=";"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows read"] == str(n_rows)
    assert "Format detected: opendata." in texts(at)
    predictions = table_with(at, "prediction")
    assert len(predictions) == int(metrics["Accepted"]) > 0
    assert "Identifiant du compteur" in predictions.columns and predictions["prediction"].notna().all()


def test_batch_output_keeps_the_file_columns(at_ui_home: dict[str, Any], recent_rows: pd.DataFrame,
                                             tmp_path: Path) -> None:
    from velocast.ui.client import LocalClient

    path = _tidy_csv(recent_rows.head(6), tmp_path / "mine.csv")
    client = LocalClient()
    batch = client.validate_upload("mine.csv", path.read_bytes())
    output = batch.output(client.predict(batch.accepted))
    assert list(output.columns) == [*pd.read_csv(path).columns, "timestamp_paris", "prediction", "lower", "upper",
                                    "coverage", "weather", "notes"]
    assert (output["coverage"] == 0.8).all() and (output["lower"] <= output["upper"]).all()
    assert output["prediction"].ge(0).all() and output["weather"].isin(["forecast", "missing", "given"]).all()
    assert len(output) == 5 and batch.rejected["source_row"].tolist() == [4]
    # a file that cannot be read is named as the user uploaded it, in the page's terms
    from velocast.data.ingest import IngestError

    with pytest.raises(IngestError) as raised:
        client.validate_upload("my counts.csv", b"colour,size\nred,3\n")
    assert "my counts.csv" in str(raised.value) and "velocast-upload-" not in str(raised.value)
    assert "--mapping" not in str(raised.value) and "This page reads those two formats." in str(raised.value)


def test_models_page_shows_champion_metrics_and_history(at_ui_home: dict[str, Any]) -> None:
    registry = Registry()
    champion = registry.champion("lgbm", with_metrics=True)
    at = open_page("models")
    shown = texts(at)
    assert f"lgbm champion: v{champion.version}" in shown and champion.run_id in shown
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Champion version"] == "v2"
    assert metrics["RMSE (test_baseline)"] == f"{champion.metrics['test_baseline_rmse']:.2f}"
    assert metrics["R² (test_baseline)"] == f"{champion.metrics['test_baseline_r2']:.3f}"

    table = table_with(at, "model type")
    assert table.set_index("model type").loc["lgbm", "champion"] == "v2"
    assert table.set_index("model type").loc["lgbm", "previous champion"] == "1"
    versions = table_with(at, "role")
    expected = {int(r.version): r.metrics["test_baseline_rmse"] for r in registry.versions("lgbm", with_metrics=True)}
    assert dict(zip(versions["version"], versions["rmse"])) == pytest.approx(expected)
    assert len(at.get("vega_lite_chart")) == 2  # rmse and r2 over versions
    history = table_with(at, "to_version")
    assert history["to_version"].tolist() == ["2", "1"] and history["event"].tolist() == ["promotion"] * 2
    assert history.columns[0] == "time (Europe/Paris)"
    assert "better on test_current" in history["reasons"].iloc[0]


def test_monitoring_page_shows_drift_health_and_audit(at_ui_home: dict[str, Any]) -> None:
    report = latest_drift()["report"]
    at = open_page("monitoring")
    shown = texts(at)
    headline = {True: "drift", False: "no drift"}.get(report["drift_detected"], "unknown")
    shown_status = f" ({report['status']})" if report["status"] != headline else ""
    assert f"Latest verdict (velocast's): **{headline}**{shown_status} — checked " in shown
    assert "(Paris time)" in shown and all(reason in shown for reason in report["reasons"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Drift detected"] == {True: "yes", False: "no"}.get(report["drift_detected"], "–")
    assert metrics["Share of drifted input features"] == f"{report['drift_share']:.2f}"
    assert metrics["Drifted input features"] == f"{report['n_drifted']} / {report['n_features']}"
    assert metrics["RMSE, last 7 days"] != "–"  # the champion scored on the store's last days
    assert "lgbm champion: **" in shown
    assert len(table_with(at, "p_value")) == report["n_features"]
    assert at.get("download_button")[0].proto.label == "Download the evidently report (HTML)"
    at.toggle(key="show_report").set_value(True).run()
    assert not at.exception and at.get("iframe")

    audit = table_with(at, "event")
    assert len(audit) == AuditLog().count()
    at.selectbox(key="audit_event").set_value("promotion").run()
    audit = table_with(at, "event")
    assert audit["event"].tolist() == ["promotion", "promotion"] and audit["to_version"].tolist() == ["2", "1"]
    at.selectbox(key="audit_type").set_value("rf").run()
    assert "No audit event matches" in texts(at)


def test_pages_say_what_to_run_without_a_model(real_home: Path) -> None:
    at = open_page()
    at.button(key="predict").click().run()
    assert not at.exception
    assert "run `velocast train --model-type lgbm`" in texts(at)
    at.switch_page("pages/models.py").run()
    assert "No model is registered yet: run `velocast train --model-type lgbm`" in texts(at)
    at.switch_page("pages/monitoring.py").run()
    shown = texts(at)
    assert "No drift check yet: run `velocast drift --model-type lgbm`" in shown
    assert "lgbm champion: **unknown**" in shown and "no lgbm champion yet" in shown


def test_pages_say_how_to_load_data_without_any(home: Path) -> None:
    at = open_page()
    assert "No counts in the store yet" in texts(at) and "velocast data ingest" in texts(at)
    at.switch_page("pages/batch.py").run()
    assert not at.exception
    at.switch_page("pages/monitoring.py").run()
    at.button(key="run_drift").click().run()  # nothing to check yet: said, not a traceback
    assert not at.exception, [e.value for e in at.exception]
    assert any("no drift check possible: the store is empty" in e.value for e in at.error)
