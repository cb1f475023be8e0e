"""One Streamlit script per page of the web UI (run by ``st.navigation`` in ``velocast.ui.app``)."""
