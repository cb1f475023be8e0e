"""Batch: upload a CSV (tidy or open-data), see the rejected rows, download the predictions."""

from __future__ import annotations

import streamlit as st

from velocast.data.ingest import IngestError
from velocast.ui import common
from velocast.ui.client import ClientError, NoModelError, content_key

st.title("Batch predictions")
st.caption("Upload counter-hours as CSV — the tidy format (`counter_id`, `date` or `timestamp`, ...) or the Paris "
           "open-data export (`;`-separated, French headers). `bike_count` is optional: when given, the scores "
           "are shown. Rows that cannot be read are listed with their row number and the reason.")

client = common.client()
left, right = st.columns([3, 1])
with right:
    model_type = common.model_type_picker(key="batch_model_type")
with left:
    upload = st.file_uploader("Counts file (CSV or parquet)", type=["csv", "parquet"], key="upload")
if upload is None:
    st.stop()

content = upload.getvalue()
memo_key = (content_key(content), upload.name, model_type, common.client_key())
memo = st.session_state.get("batch")
if memo is None or memo["key"] != memo_key:
    try:
        batch = client.validate_upload(upload.name, content)
    except IngestError as exc:
        st.error(f"This file cannot be read: {exc}")
        st.stop()
    result = error = None
    if not batch.accepted.empty:
        try:
            with st.spinner(f"Predicting {len(batch.accepted):,} rows..."):
                result = client.predict(batch.accepted, model_type)
        except NoModelError as exc:
            error = ("warning", str(exc))
        except ClientError as exc:
            error = ("error", str(exc))
    memo = {"key": memo_key, "batch": batch, "result": result, "error": error}
    st.session_state["batch"] = memo

batch, result, error = memo["batch"], memo["result"], memo["error"]
c1, c2, c3 = st.columns(3)
c1.metric("Rows read", f"{batch.rows_read:,}")
c2.metric("Accepted", f"{len(batch.accepted):,}")
c3.metric("Rejected", f"{len(batch.rejected):,}")
st.caption(f"Format detected: {batch.format}.")

if not batch.rejected.empty:
    st.subheader("Rejected rows")
    st.caption("Row numbers count the data rows of the file from 1 (the header is not counted). "
               + ", ".join(f"{reason}: {n}" for reason, n in batch.rejected_by_reason().items()))
    rejected = batch.rejected.rename(columns={"source_row": "row"})
    first = ["row", "reason", "detail"]
    st.dataframe(common.label_file_times(rejected[first + [c for c in rejected.columns if c not in first]]),
                 hide_index=True)

if error is not None:
    (st.warning if error[0] == "warning" else st.error)(error[1])
    st.stop()
if result is None:
    st.info("No row of this file can be predicted: see the reasons above.")
    st.stop()

st.subheader("Predictions")
st.caption(f"Model: **{result.model.label}** — `{result.model.uri}`")
if result.coverage is not None:
    st.caption(f"`lower` and `upper`: the {result.coverage:.0%} prediction interval of each row (calibrated: "
               f"{result.coverage:.0%} of the counts fall inside).")
for warning in result.warnings:
    st.warning(warning)
if result.metrics:
    metrics = {k: v for k, v in result.metrics.items() if k in ("rmse", "mae", "r2", "n", "interval_coverage",
                                                                  "interval_width")}
    st.caption("Scores on the rows that carry a count: "
               + ", ".join(f"{k} {common.fmt(v, 3) if v is None or isinstance(v, float) else v}" for k, v in metrics.items()))
output = batch.output(result)
st.dataframe(common.label_file_times(output), hide_index=True)
st.caption("Times: the tidy format's `date` is UTC, a `timestamp` is read with its offset (none: Paris time); "
           "each row's predicted hour is shown in Europe/Paris time. The CSV keeps the file's column names.")
st.download_button("Download the predictions (CSV)", output.to_csv(index=False).encode("utf-8"),
                   file_name=f"{upload.name.rsplit('.', 1)[0]}_predictions.csv", mime="text/csv",
                   type="primary", key="download")
