"""Models: the champion of every model type, the promotion history, the metrics of every version."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from velocast.ui import common
from velocast.ui.client import ClientError

st.title("Models")
st.caption("Champions serve the predictions (MLflow alias `champion`). Metrics are on `test_baseline`, "
           "the held-out days of the baseline.")

client = common.client()
models = common.models_or_none()
if models is None:
    st.stop()
registered = {t: o for t, o in models.items() if o.versions}
if not registered:
    st.info("No model is registered yet: run `velocast train --model-type lgbm`, then "
            "`velocast promote --model-type lgbm --version 1` (or `velocast demo` for the whole tour).",
            icon=":material/model_training:")
    st.stop()

# ------------------------------------------------------------------ champions of every type
rows = []
for model_type, o in registered.items():
    c = o.champion
    rows.append({"model type": model_type, "champion": f"v{c.version}" if c else "none yet",
                 "run id": c.run_id if c else None,
                 "rmse": c.baseline_metric("rmse") if c else None, "mae": c.baseline_metric("mae") if c else None,
                 "r2": c.baseline_metric("r2") if c else None, "previous champion": o.previous_champion,
                 "versions": len(o.versions)})
st.subheader("Champions")
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"rmse": st.column_config.NumberColumn(format="%.2f"),
                            "mae": st.column_config.NumberColumn(format="%.2f"),
                            "r2": st.column_config.NumberColumn("R²", format="%.3f")})

# ------------------------------------------------------------------ one type in detail
types = list(registered)
model_type = st.selectbox("Model type", types, index=types.index("lgbm") if "lgbm" in types else 0,
                          key="models_type")
chosen = registered[model_type]
champion = chosen.champion
if champion is None:
    latest = chosen.versions[-1]
    st.warning(f"No {model_type} champion yet: predictions use the latest version v{latest.version}. Promote one "
               f"with `velocast promote --model-type {model_type} --version {latest.version}`.")
else:
    st.markdown(f"**{model_type} champion: v{champion.version}** — `{champion.uri}`, run `{champion.run_id}`")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Champion version", f"v{champion.version}")
    m2.metric("RMSE (test_baseline)", common.fmt(champion.baseline_metric("rmse"), 2))
    m3.metric("MAE (test_baseline)", common.fmt(champion.baseline_metric("mae"), 2))
    m4.metric("R² (test_baseline)", common.fmt(champion.baseline_metric("r2"), 3))

st.subheader("Metrics over versions")
metrics = pd.DataFrame([{"version": int(v.version), "rmse": v.baseline_metric("rmse"), "r2": v.baseline_metric("r2"),
                         "role": "champion" if v.champion else ""} for v in chosen.versions])
known = metrics.dropna(subset=["rmse", "r2"], how="all")
if known.empty:
    st.info("No test_baseline metrics recorded for these versions.")
else:
    chart = known.assign(version=known["version"].map(lambda v: f"v{v}"))
    g1, g2 = st.columns(2)
    g1.caption("RMSE on test_baseline (lower is better)")
    g1.line_chart(chart, x="version", y="rmse", height=240)
    g2.caption("R² on test_baseline (higher is better)")
    g2.line_chart(chart, x="version", y="r2", height=240)
    if len(known) < len(metrics):
        st.caption(f"{len(metrics) - len(known)} version(s) without recorded metrics are not drawn.")
with st.expander("Every version"):
    st.dataframe(metrics, hide_index=True)

st.subheader("Promotion history")
try:
    history = client.history(model_type, limit=100)
except ClientError as exc:
    st.error(str(exc))
    history = []
if not history:
    st.info(f"No promotion of {model_type} yet.")
else:
    table = common.events_frame(history, ["timestamp", "event", "from_version", "to_version", "actor", "reasons"])
    st.dataframe(table, hide_index=True)
