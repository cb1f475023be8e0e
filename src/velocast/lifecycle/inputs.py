"""Model inputs from canonical rows: stored weather and day-ahead history attached.

History comes from the store plus any labelled rows given alongside (a file being scored, the
training frame of ``--data``), always restricted by ``features.add_history`` to days strictly
before each row's day.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from velocast.config import Settings, get_settings
from velocast.data import store
from velocast.data.weather import attach_weather, load_weather
from velocast.features import HISTORY_LAGS, add_history

_HISTORY_DAYS = max(HISTORY_LAGS) + 1


def history_for(rows: pd.DataFrame, settings: Settings, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts that can serve as history for ``rows``: the store's, plus ``extra`` labelled rows."""
    if rows.empty:
        return rows
    start = rows["timestamp"].min().normalize() - timedelta(days=_HISTORY_DAYS)
    end = rows["timestamp"].max().normalize()
    ids = pd.unique(rows["counter_id"].astype(str))
    # a few counters (an API request): read only theirs; many: one scan is cheaper than a long IN list
    stored = store.recent_counts(start, end + timedelta(days=1), counter_ids=list(ids) if len(ids) <= 50 else None,
                                 settings=settings)
    parts = [p for p in (extra, stored) if p is not None and not p.empty]
    if not parts:
        return stored
    combined = pd.concat([p[["counter_id", "timestamp", "bike_count"]] for p in parts], ignore_index=True)
    return combined.drop_duplicates(["counter_id", "timestamp"], keep="first")


def enrich(rows: pd.DataFrame, settings: Settings | None = None, extra_history: pd.DataFrame | None = None,
           weather: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows with weather (stored values fill what the rows lack) and history columns."""
    settings = settings or get_settings()
    weather = weather if weather is not None else load_weather(settings)
    out = attach_weather(rows, weather)
    labelled = rows[rows["bike_count"].notna()] if "bike_count" in rows else None
    extra = pd.concat([p for p in (extra_history, labelled) if p is not None], ignore_index=True) \
        if (extra_history is not None or labelled is not None) else None
    return add_history(out, history_for(rows, settings, extra))
