"""Monitoring: the latest drift verdict and its report, the champion's health, the audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from velocast.lifecycle.audit import EVENTS
from velocast.models import MODEL_TYPES
from velocast.monitoring.drift import DriftReport
from velocast.ui import common
from velocast.ui.client import ClientError

HEALTH_TTL_SECONDS = 300
STATE_ICONS = {"ok": ":material/check_circle:", "degraded": ":material/warning:", "critical": ":material/error:",
               "unknown": ":material/help:", "drift": ":material/warning:", "insufficient_data": ":material/help:",
               "error": ":material/error:"}


@st.cache_data(ttl=HEALTH_TTL_SECONDS, show_spinner="Scoring the champion on the latest days...")
def _health(key: tuple[str, ...], model_type: str) -> dict[str, Any]:
    return common.client().champion_health(model_type)


st.title("Monitoring")
client = common.client()
model_type = common.model_type_picker(key="monitor_type")

# ------------------------------------------------------------------ drift
st.header("Drift")
if st.button("Run a drift check now", key="run_drift",
             help="Compares the store's last 30 days with test_baseline on the champion's inputs and predictions "
                  "(what `velocast drift` does); takes a few seconds."):
    try:
        with st.spinner("Checking drift..."):
            client.run_drift_check(model_type)
    except ClientError as exc:
        st.error(str(exc))

latest = client.latest_drift(model_type)
if latest is None:
    st.info(f"No drift check yet: run `velocast drift --model-type {model_type}` (or the button above).",
            icon=":material/monitor_heart:")
else:
    report = latest.get("report", {})
    status = report.get("status", "unknown")
    when = Path(latest.get("folder", "")).name
    checked = latest.get("checked_at") or (pd.Timestamp(when[:15]).tz_localize("UTC") if len(when) >= 15 else None)
    verdict = DriftReport.from_dict(report) if "status" in report else None
    headline = verdict.headline if verdict else "unknown"
    st.markdown(f"{STATE_ICONS.get(status, '')} Latest verdict (velocast's): **{headline}**"
                + (f" ({status})" if status != headline else "")
                + (f" — checked {common.paris_time(checked)}" if checked is not None else ""))
    for reason in verdict.reasons if verdict else []:
        st.markdown(f"- {reason}")
    d1, d2, d3, d4 = st.columns(4)
    d1.metric("Drift detected", {True: "yes", False: "no"}.get(report.get("drift_detected"), "–"))
    d2.metric("Share of drifted input features", common.fmt(report.get("drift_share"), 2))
    d3.metric("Drifted input features", f"{report.get('n_drifted', 0)} / {report.get('n_features', 0)}")
    d4.metric("New counters", len(report.get("new_counters") or []))
    periods = [f"{name} {' .. '.join(str(x)[:10] for x in p)} (Paris days)" for name, p in (("reference", report.get("reference_period")),
                                                          ("current", report.get("current_period"))) if p]
    if periods:
        st.caption("; ".join(periods) + f" ({report.get('current_rows', 0):,} current rows)")
    for text in (report.get("note"), report.get("error")):
        if text:
            st.caption(text)
    if report.get("drifted_features"):
        st.markdown("Drifted: " + ", ".join(f"`{f}`" for f in report["drifted_features"]))
    features = pd.DataFrame(report.get("features") or [])
    if not features.empty:
        with st.expander("Every monitored column"):
            st.dataframe(features[[c for c in ("name", "kind", "test", "p_value", "effect", "drifted",
                                               "reference_mean", "current_mean") if c in features]],
                         hide_index=True)
    html = client.drift_report_html(model_type)
    if html is None:
        st.caption("No HTML report was written for this check.")
    else:
        st.caption("The HTML report opens with velocast's verdict; Evidently's panels below it only draw the "
                   "distributions.")
        st.download_button("Download the evidently report (HTML)", html, file_name=f"drift_{when}.html",
                           mime="text/html", key="drift_download")
        if st.toggle("Show the evidently report here", key="show_report"):
            st.iframe(html.decode("utf-8", errors="replace"), height=900, alt="evidently drift report")

# ------------------------------------------------------------------ champion health
st.header("Champion health")
health = _health(common.client_key(), model_type)
state = health.get("state", "unknown")
st.markdown(f"{STATE_ICONS.get(state, '')} {model_type} champion: **{state}**")
h1, h2, h3, h4 = st.columns(4)
h1.metric("RMSE, last 7 days", common.fmt(health.get("rmse"), 2))
h2.metric("RMSE on test_baseline", common.fmt(health.get("baseline_rmse"), 2))
h3.metric("R², last 7 days", common.fmt(health.get("r2"), 3))
drop = health.get("drop")
h4.metric("RMSE change", "–" if drop is None else f"{drop:+.0%}")
st.caption("; ".join(health.get("reasons") or []) + (f" — {health['rows']:,} rows, {health['period']}"
                                                     if health.get("period") else ""))

# ------------------------------------------------------------------ audit log
st.header("Audit log")
f1, f2, f3 = st.columns(3)
event = f1.selectbox("Event", ["all", *EVENTS], key="audit_event")
audit_type = f2.selectbox("Model type", ["all", *MODEL_TYPES], key="audit_type")
limit = f3.number_input("Rows", min_value=1, max_value=1000, value=50, step=10, key="audit_limit")
try:
    events = client.audit(limit=int(limit), event=None if event == "all" else event,
                          model_type=None if audit_type == "all" else audit_type)
except ClientError as exc:
    st.error(str(exc))
    events = []
if not events:
    st.info("No audit event matches (training, evaluation, promotion, drift... are recorded as they happen).")
else:
    columns = ["timestamp", "event", "model_type", "deployment_decision", "from_version", "to_version",
               "r2_baseline", "rmse_baseline", "r2_current", "rmse_current", "drift_share", "health_state", "actor",
               "reasons", "error_message", "model_uri"]
    table = common.events_frame(events, columns)
    st.dataframe(table.dropna(axis=1, how="all"), hide_index=True)
    st.caption(f"{len(events)} event(s), newest first.")
