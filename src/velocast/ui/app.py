"""The velocast web UI (Streamlit): ``velocast ui`` or ``streamlit run .../velocast/ui/app.py``.

Pages are addressed by URL path: ``/`` (predict), ``/batch``, ``/models``, ``/monitoring``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from velocast import __version__
from velocast.ui import common

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="velocast", page_icon="🚲", layout="wide")  # an emoji: no icon fetched from the internet
common.setup_logging()

PAGES = [
    st.Page(HERE / "pages" / "predict.py", title="Predict", icon=":material/query_stats:", url_path="predict",
            default=True),
    st.Page(HERE / "pages" / "batch.py", title="Batch", icon=":material/table_view:", url_path="batch"),
    st.Page(HERE / "pages" / "models.py", title="Models", icon=":material/model_training:", url_path="models"),
    st.Page(HERE / "pages" / "monitoring.py", title="Monitoring", icon=":material/monitor_heart:",
            url_path="monitoring"),
]

page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"velocast {__version__} — hourly bike counts at the Paris counters")
    client = common.client()
    st.caption(f"Answers from the {client.source}.")
    for note in client.notes:
        st.caption(note)
page.run()
