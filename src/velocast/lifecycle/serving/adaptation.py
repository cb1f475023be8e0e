"""The recent errors served forecasts follow: the store's labelled days the model never saw.

A forecast for Paris day D follows the errors the same model made, as served, on the labelled
days before D that come after its calibration (``velocast.models.intervals``, "Following the
recent errors"): its interval adapts on days D-``VELOCAST_INTERVAL_ADAPT_DAYS``..D-1, and a
day-ahead prediction is corrected by its counter's level bias over D-``VELOCAST_BIAS_CORRECTION_DAYS``
..D-1. ``served_errors`` rebuilds those errors the way the serving path predicted them: the
store's counts of those days without their count (history before each day, the weather forecast
stored as of its cut-off, else none). Rows of sensor outages are left out as in every score, but
judged with the counts up to the end of their own day only (``outages_known_by_day_end``): a zero
run that reaches into D cannot change what a forecast of D reads. The level bias reads only days
the point model never trained on (``ConformalRegressor.unseen_from``), the intervals only days
after their calibration.

Serving and scoring read the same days (``served_window``, ``errors_for``). The errors depend on
the model, the store and the stored weather forecasts only, so serving computes them once per
loaded model, store version, forecasts version and window (``AdaptationCache``, kept on the
``LoadedModel``; warmed when a model is loaded): the first request after an ingest (of counts or
forecasts) pays for them, every other one reuses them and each day's adaptation.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from velocast.config import Settings
from velocast.data import store
from velocast.data.quality import zero_runs
from velocast.data.schema import paris_midnight
from velocast.data.weather_forecast import forecasts_version
from velocast.features import midnight_utc_hours, paris_day_hour
from velocast.lifecycle.inputs import build_inputs
from velocast.lifecycle.serving.fast_path import fast_inputs
from velocast.models.intervals import ConformalRegressor, OnlineRule, RecentErrors, day_number
from velocast.models.pipeline import is_calibrated

log = logging.getLogger(__name__)

_EPOCH = pd.Timestamp("1970-01-01")


def _midnight(day: int) -> pd.Timestamp:
    return paris_midnight(_EPOCH + pd.Timedelta(days=day))


def conformal_of(pipeline: Any) -> ConformalRegressor | None:
    """The calibrated interval step of a pipeline (None: a classifier or a model without intervals)."""
    return pipeline.named_steps["model"] if is_calibrated(pipeline) else None


def online_rule(settings: Settings) -> OnlineRule:
    """How served forecasts follow the errors of the days before them, per the settings."""
    return OnlineRule(int(settings.interval_adapt_days), int(settings.bias_correction_days))


def _span(conformal: ConformalRegressor, days: np.ndarray, rule: OnlineRule) -> tuple[int, int] | None:
    """The days whose errors forecasts of Paris day numbers ``days`` may follow: within the rule's
    window before them and after the calibration (None: no such day)."""
    if rule.window <= 0 or not len(days):
        return None
    first = max(int(days.min()) - rule.window, conformal.unseen_from)
    last = int(days.max()) - 1
    return (first, last) if first <= last else None


def served_window(model: Any, days: np.ndarray, settings: Settings) -> tuple[RecentErrors, dict[int, Any]]:
    """The recent errors for rows of Paris day numbers ``days``, and the cache of each day's adapted
    calibration and bias to use with them (``ConformalRegressor.day_by_day``). Empty when off.

    Requests whose days read only the store's last ``STORE_WINDOW_DAYS`` days (forecasts of
    tomorrow, of the days just past) share one window per store version: its errors are computed
    once, whatever the day asked. Older days get a window of their own (cached too)."""
    conformal = conformal_of(model.pipeline)
    span = _span(conformal, days, online_rule(settings)) if conformal is not None else None
    if span is None:
        return RecentErrors.empty(), {}
    version = store.version(settings)
    last = _last_store_day(settings, version)
    # the errors are those of forecasts as served: they change with the stored weather forecasts too
    version = (version, forecasts_version(settings))
    if last is not None:
        recent_first = max(conformal.unseen_from, last - STORE_WINDOW_DAYS + 1)
        if span[0] >= recent_first and recent_first <= last:  # each day D reads only its own days before D
            span = (recent_first, last)
    key = (version, *span, settings.outage_min_zero_hours, online_rule(settings))
    return model.adaptation.window(key, lambda: served_errors(model.pipeline, *span, settings, model.serving))


STORE_WINDOW_DAYS = 62  # the store's last days whose errors serving keeps per store version
_store_ends: dict[tuple, int | None] = {}


def _last_store_day(settings: Settings, version: int) -> int | None:
    """The Paris day number of the store's latest count (None: empty), read once per store version."""
    key = (str(settings.home), settings.store_uri, version)
    try:
        return _store_ends[key]
    except KeyError:
        latest = store.latest_timestamp(settings)
        found = day_number(latest) if latest is not None else None
        _store_ends.clear()  # one store version at a time is enough
        _store_ends[key] = found
        return found


def adapts(model: Any, settings: Settings) -> bool:
    """Do ``model``'s served forecasts follow recent errors (intervals, and the rule not off)?"""
    return model.has_intervals and online_rule(settings).window > 0


def warm_adaptation(model: Any, settings: Settings) -> None:
    """Compute the recent errors a forecast of the day after the store's latest count follows, so the
    first request after a promotion or an ingest does not wait for them (a failure is logged;
    requests retry). Marks the model's cache warm for that store version (``adaptation_warm``)."""
    version = (store.version(settings), forecasts_version(settings))
    try:
        latest = store.latest_timestamp(settings)
        if latest is not None:
            served_window(model, np.asarray([day_number(paris_midnight(latest, 1).tz_localize(None))]), settings)
    except Exception:  # noqa: BLE001 - serving goes on; the first request computes them
        log.exception("warming the interval adaptation of %s failed", model.uri)
    model.adaptation.warmed = version  # tried once per data version: a failure is not retried every second


def adaptation_warm(model: Any, settings: Settings, version: int) -> bool:
    """Would a forecast of tomorrow find its recent errors computed for store ``version`` and the
    stored weather forecasts as they are now?"""
    return not adapts(model, settings) or model.adaptation.warmed == (version, forecasts_version(settings))


def errors_for(pipeline: Any, days: np.ndarray, rule: OnlineRule, settings: Settings) -> RecentErrors:
    """For scoring rows of Paris day numbers ``days``: the model's served errors on the store's
    labelled days they follow (``served_window``'s, without the cache; the scored rows add theirs
    for days the store lacks)."""
    conformal = conformal_of(pipeline)
    span = _span(conformal, days, rule) if conformal is not None else None
    return served_errors(pipeline, *span, settings) if span is not None else RecentErrors.empty()


def outages_known_by_day_end(rows: pd.DataFrame, day: np.ndarray, min_hours: int) -> np.ndarray:
    """True for labelled rows in a run of >= ``min_hours`` zero hours as known at the end of their own
    Paris day (``day``): the counts of that day and before, never a later one. A forecast of D reads
    errors of days before D only, so no later count (D's included) can turn a row of them into an
    outage and change it."""
    runs = zero_runs(rows["counter_id"], rows["timestamp"], rows["bike_count"].to_numpy(float))
    day_end = midnight_utc_hours(np.asarray(day, np.int64) + 1) - 1
    return (runs.start >= 0) & (np.minimum(runs.end, day_end) - runs.start + 1 >= min_hours)


def served_errors(pipeline: Any, first: int, last: int, settings: Settings, serving: Any = None) -> RecentErrors:
    """The errors of ``pipeline``, as served, on the store's labelled rows of Paris days ``first`` .. ``last``
    (rows of sensor outages known by the end of their day left out).

    ``serving``: the pipeline compiled for the serving path (``LoadedModel.serving``), else frames.
    """
    started = time.perf_counter()
    conformal = pipeline.named_steps["model"]
    before = math.ceil(settings.outage_min_zero_hours / 24) + 1  # days of counts where a run of zeros may begin
    rows = store.query_counts(_midnight(first - before), _midnight(last + 1), settings=settings)
    rows = rows[rows["bike_count"].notna()].reset_index(drop=True)
    if rows.empty:
        return RecentErrors.empty()
    day, _ = paris_day_hour(rows["timestamp"])
    rows = rows[(day >= first) & ~outages_known_by_day_end(rows, day, settings.outage_min_zero_hours)]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        return RecentErrors.empty()
    counts = rows["bike_count"].to_numpy(float)
    unlabelled = rows.drop(columns=["bike_count"])
    fast = fast_inputs(unlabelled, serving, settings) if serving is not None else None
    if fast is not None:
        prediction = serving.model.predict(fast.matrix)["prediction"]
        variant, counter = serving.model.groups(fast.matrix)
    else:
        enriched = build_inputs(unlabelled, settings).frame("served")
        Xf = pipeline[:-1].transform(enriched)
        prediction, variant, counter = conformal.predict(Xf), conformal.variant_of(Xf), conformal.counter_of(Xf)
    day, hour = paris_day_hour(rows["timestamp"])
    log.info("intervals adapt on %d labelled rows of %d days after the calibration (%.2f s)", len(rows),
             len(np.unique(day)), time.perf_counter() - started)
    return RecentErrors.of(prediction, counts, variant, counter, day, hour)


__all__ = ["conformal_of", "errors_for", "online_rule", "outages_known_by_day_end", "served_errors",
           "served_window", "warm_adaptation"]
