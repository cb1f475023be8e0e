"""What every page shares: the cached client, cached data, and friendly empty states."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import streamlit as st

from velocast.config import Settings, get_settings, redact
from velocast.models import MODEL_TYPES
from velocast.ui.client import Client, ClientError, ModelTypeOverview, get_client

log = logging.getLogger("velocast.ui")

# a new client (and so a fresh look at the registry) at least this often
CLIENT_TTL_SECONDS = 30
DATA_TTL_SECONDS = 60
MODELS_TTL_SECONDS = 10


def setup_logging() -> None:
    """Send velocast's log records to stderr at the configured level (once per process)."""
    logger = logging.getLogger("velocast")
    if not any(getattr(h, "_velocast_ui", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._velocast_ui = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(getattr(logging, get_settings().log_level.upper(), logging.WARNING))


def _key(settings: Settings) -> tuple[str, ...]:
    """What makes two clients different: the environment they read."""
    return (str(settings.home.resolve()), settings.api_url or "", settings.api_key or "", settings.tracking_uri,
            settings.summary_location, settings.audit_location)


@st.cache_resource(ttl=CLIENT_TTL_SECONDS, show_spinner=False)
def _client(key: tuple[str, ...]) -> Client:
    log.info("new UI client for home %s, API %s", key[0], redact(key[1]) or "-")
    return get_client(get_settings())


def client() -> Client:
    return _client(_key(get_settings()))


def client_key() -> tuple[str, ...]:
    return _key(get_settings())


@st.cache_data(ttl=DATA_TTL_SECONDS, show_spinner=False)
def counters(key: tuple[str, ...]) -> pd.DataFrame:
    return _client(key).counters()


@st.cache_data(ttl=MODELS_TTL_SECONDS, show_spinner=False)
def overview(key: tuple[str, ...]) -> dict[str, ModelTypeOverview]:
    return _client(key).overview()


def no_data_message() -> None:
    home = get_settings().home
    st.info(f"No counts in the store yet (velocast home: `{home}`). Load data with "
            "`velocast data ingest <file>` (the Paris open-data export or the tidy file), or run `velocast demo`.",
            icon=":material/database:")


def model_type_picker(label: str = "Model type", key: str | None = None, default: str = "lgbm") -> str:
    return st.selectbox(label, MODEL_TYPES, index=MODEL_TYPES.index(default), key=key,
                        help="The champion of this type serves (else its latest version).")


def models_or_none() -> dict[str, ModelTypeOverview] | None:
    """The registry overview, or None (and an error shown) if it cannot be read."""
    try:
        return overview(client_key())
    except ClientError as exc:
        st.error(str(exc))
        return None


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


PARIS_TIME = "time (Europe/Paris)"
# columns of a user's file whose times are in another zone than Paris, as the UI labels them
FILE_TIME_LABELS = {"date": "date (UTC, as in the file)", "timestamp": "timestamp (as in the file)",
                    "timestamp_paris": "hour predicted (Europe/Paris)"}


def paris_time(value: Any) -> str:
    """A time as Paris wall-clock time, labelled: ``2021-08-03 08:00 (Paris time)``."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return f"{stamp.tz_convert('Europe/Paris'):%Y-%m-%d %H:%M} (Paris time)"


def label_file_times(frame: pd.DataFrame) -> pd.DataFrame:
    """A file's table for display: every time column named with its zone."""
    return frame.rename(columns={k: v for k, v in FILE_TIME_LABELS.items() if k in frame.columns})


def events_frame(events: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Audit events as a table: the chosen columns, reasons joined, times in Paris time (``PARIS_TIME``)."""
    frame = pd.DataFrame(events)
    if frame.empty:
        return pd.DataFrame(columns=[PARIS_TIME if c == "timestamp" else c for c in columns])
    if "reasons" in frame:
        frame["reasons"] = frame["reasons"].map(lambda r: "; ".join(r) if isinstance(r, list) else r)
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_convert("Europe/Paris") \
            .dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame[[c for c in columns if c in frame]].rename(columns={"timestamp": PARIS_TIME})
