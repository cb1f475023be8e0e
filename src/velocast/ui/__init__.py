"""The web UI of velocast (Streamlit). ``velocast ui`` runs ``APP_PATH``; pages call ``client``."""

from pathlib import Path

APP_PATH = Path(__file__).resolve().parent / "app.py"

__all__ = ["APP_PATH"]
