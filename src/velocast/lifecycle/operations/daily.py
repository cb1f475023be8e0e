"""The two daily jobs: bring in new counts (portal, then inbox), then forecast the next day.

``fetch_portal_counts`` fetches the counts published since the store's last ones from the Paris
open-data portal (``velocast.data.opendata``); a failure is logged and returned, never raised, so
the inbox is still ingested. ``ingest_new_files`` reads every counts file dropped into ``<VELOCAST_HOME>/inbox`` (any format
``velocast data ingest`` reads), upserts it into the store and moves it to ``inbox/done/``; a file
that cannot be read at all goes to ``inbox/failed/`` with a ``.error.txt`` beside it, so one bad
file neither blocks the others nor is retried forever. Hidden files and names ending in ``.tmp``
or ``.part`` are left alone: a writer should copy under such a name, then rename. With
``synthetic=True`` the day after the store's latest one is generated into the inbox first
(``velocast.data.synthetic.next_day``), which simulates data arriving daily.

``fetch_weather`` stores the current weather forecast (``velocast.data.weather_forecast``), issued
now; a failure is logged and returned, never raised: the prediction then runs with the forecasts
stored before, or without weather, and says so. ``predict_tomorrow`` writes the day-ahead forecast of every stored counter for the day to forecast
(the latest stored day if incomplete, else the next one) to
``<VELOCAST_HOME>/store/forecasts/date=YYYY-MM-DD/forecasts.parquet``, atomically.

Both return small JSON-able dicts, so the Airflow DAGs pass them on as XComs.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velocast.config import PARIS_TZ, Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INBOX_SUFFIXES = (".csv", ".parquet", ".pq", ".txt")
_IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial")
DONE, FAILED = "done", "failed"


def default_inbox(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "inbox"


def forecasts_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).store_dir / "forecasts"


def forecast_path(day: str, settings: Settings | None = None) -> Path:
    """Where the forecast of ``day`` (``YYYY-MM-DD``, Europe/Paris) is stored."""
    return forecasts_dir(settings) / f"date={day}" / "forecasts.parquet"


def next_day_rows(day: pd.Timestamp, settings: Settings | None = None) -> pd.DataFrame:
    """One row per stored counter and hour of ``day`` (Europe/Paris; 23 or 25 hours on DST days)."""
    import pandas as pd

    from velocast.data import store
    from velocast.data.schema import paris_midnight

    counters = store.counters(settings)
    start = paris_midnight(day)
    hours = pd.date_range(start, start + pd.DateOffset(days=1), freq="h", inclusive="left")
    rows = counters.merge(pd.DataFrame({"timestamp": hours}), how="cross")
    return rows[["counter_id", "counter_name", "site_id", "site_name", "timestamp", "latitude", "longitude"]]


def forecast_day(latest: pd.Timestamp) -> pd.Timestamp:
    """The day to forecast: the latest stored day if it is incomplete, else the next one."""
    import pandas as pd

    local = latest.tz_convert(PARIS_TZ)
    return local.normalize() if local.hour < 23 else (local.normalize() + pd.DateOffset(days=1)).normalize()


def _pending(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in _IN_PROGRESS_SUFFIXES and p.suffix.lower() in INBOX_SUFFIXES)


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder``; a name already there gets a UTC time stamp, never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{path.stem}-{stamp}{path.suffix}"
    return Path(shutil.move(str(path), str(target)))


def fetch_portal_counts(synthetic: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """Fetch and ingest the portal's new counts; ``status`` ok / failed (with ``error``) / skipped.

    A synthetic run (``synthetic=True``, simulated arrival) does not fetch real counts. Any failure
    is logged and returned: the daily ingest of the inbox still runs after it.
    """
    from velocast.data.opendata import fetch_counts

    if synthetic:
        return {"status": "skipped", "summary": "synthetic run: the open-data portal is not fetched"}
    try:
        report = fetch_counts(settings=settings or get_settings())
    except Exception as exc:  # a source that fails must not stop the inbox ingest
        log.error("open-data portal fetch failed (the inbox is still ingested): %s", exc,
                  exc_info=not _expected_failure(exc))
        return {"status": "failed", "error": str(exc), "summary": f"portal fetch failed: {exc}"}
    log.info("open-data portal: %s", report.to_dict())
    return {"status": "ok", "where": report.where, "rows_read": report.rows_read, "added": report.added,
            "updated": report.updated, "unchanged": report.unchanged, "rejected": report.rejected,
            "quarantine_path": report.quarantine_path, "period_start": report.period_start,
            "period_end": report.period_end, "bytes": report.bytes_downloaded, "attempts": report.attempts,
            "summary": (f"portal: {report.rows_read:,} rows read ({report.added:,} added, {report.updated:,} "
                        f"updated, {report.rejected:,} quarantined) for {report.where}")}


def fetch_weather(settings: Settings | None = None) -> dict[str, Any]:
    """Fetch and store the current weather forecast; ``status`` ok / failed (with ``error``).

    Any failure is logged and returned, so the prediction that follows still runs.
    """
    from velocast.data.weather_forecast import fetch_weather_forecast

    try:
        result = fetch_weather_forecast(settings or get_settings())
    except Exception as exc:  # the forecast must not block the prediction
        log.error("weather forecast fetch failed (predicting with the forecasts stored before, if any): %s", exc,
                  exc_info=not _expected_failure(exc))
        return {"status": "failed", "error": str(exc), "summary": f"weather forecast fetch failed: {exc}"}
    return {"status": "ok", **result,
            "summary": f"weather forecast issued at {result['issued_at']}: {result['hours']} hours "
                       f"({result['first']} .. {result['last']}), {result['added']} added"}


def _expected_failure(exc: Exception) -> bool:
    """A source that is down or sends something wrong (one line says it all), not a bug of ours."""
    from velocast.data.opendata import OpenDataError
    from velocast.data.weather_forecast import WeatherForecastError

    return isinstance(exc, (OpenDataError, WeatherForecastError))


def ingest_new_files(inbox: Path | str | None = None, synthetic: bool = False, seed: int = 0,
                     settings: Settings | None = None) -> dict[str, Any]:
    """Ingest every new file of ``inbox`` (default ``<home>/inbox``) and move it to ``inbox/done``.

    With ``synthetic=True`` one synthetic day (the day after the store's latest) is written into
    the inbox first and ingested with the rest. Files that cannot be read at all
    (:class:`~velocast.data.ingest.IngestError`) are moved to ``inbox/failed`` and listed under
    ``failed``; any other error (disk, lock) propagates with the file left in place, for a retry.
    """
    from velocast.data import store
    from velocast.data.ingest import IngestError, ingest_file

    settings = settings or get_settings()
    inbox = Path(inbox) if inbox else default_inbox(settings)
    inbox.mkdir(parents=True, exist_ok=True)
    generated = None
    if synthetic:
        from velocast.data import synthetic as synth

        frame = synth.next_day(settings, seed=seed)
        day = frame["date"].min().tz_localize("UTC").tz_convert(PARIS_TZ).date()
        generated = synth.write(frame, inbox / f"synthetic_{day.isoformat()}.parquet")
    files: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for path in _pending(inbox):
        try:
            report = ingest_file(path, settings=settings)
        except IngestError as exc:
            moved = _move(path, inbox / FAILED)
            moved.with_name(moved.name + ".error.txt").write_text(f"{exc}\n", encoding="utf-8")
            log.error("inbox: %s could not be ingested (moved to %s): %s", path.name, moved, exc)
            failed.append({"file": path.name, "moved_to": str(moved), "error": str(exc)})
            continue
        moved = _move(path, inbox / DONE)
        log.info("inbox: %s ingested (%d added, %d updated, %d rejected) -> %s", path.name, report.added,
                 report.updated, report.rejected, moved)
        files.append({"file": path.name, "moved_to": str(moved), "format": report.format,
                      "rows_read": report.rows_read, "accepted": report.accepted, "rejected": report.rejected,
                      "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
                      "quarantine_path": report.quarantine_path})
    latest = store.latest_timestamp(settings)
    return {
        "inbox": str(inbox), "synthetic_file": str(generated) if generated else None,
        "files": files, "ingested": len(files), "failed": failed,
        "rows_read": sum(f["rows_read"] for f in files), "rows_added": sum(f["added"] for f in files),
        "rows_updated": sum(f["updated"] for f in files), "rows_rejected": sum(f["rejected"] for f in files),
        "latest": latest.isoformat() if latest is not None else None,
        "summary": (f"{len(files)} file(s) ingested ({sum(f['added'] for f in files):,} rows added, "
                    f"{sum(f['updated'] for f in files):,} updated, {sum(f['rejected'] for f in files):,} "
                    f"quarantined), {len(failed)} unreadable; latest count {latest}"),
    }


def predict_tomorrow(model_type: str = "lgbm", settings: Settings | None = None,
                     weather_fetch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Day-ahead forecasts of every stored counter for the day to forecast, stored as Parquet.

    The model is the champion of ``model_type`` (the latest version when there is no champion).
    The rows carry ``model_type``, ``model_version``, ``model_uri``, ``forecast_date`` and
    ``generated_at`` (UTC) beside the counter, the hour (``timestamp``, Europe/Paris),
    ``prediction`` and its interval (``lower``, ``upper``, ``coverage``: VELOCAST_INTERVAL_COVERAGE).
    Rewriting the same day replaces its file atomically. ``weather_forecast`` says
    which stored weather forecast, issued by 00:00 of the day, covers its hours (``weather_fetch``,
    the result of ``fetch_weather``, tells why there is none when its fetch failed).
    """
    import pandas as pd

    from velocast.data import store
    from velocast.fileio import atomic_write_parquet
    from velocast.lifecycle.serving.predict import load_model, predict_rows

    settings = settings or get_settings()
    latest = store.latest_timestamp(settings)
    if latest is None:
        raise ValueError(f"the store under {settings.home} is empty: ingest counts before forecasting")
    day = forecast_day(latest)
    rows = next_day_rows(day, settings)
    if rows.empty:
        raise ValueError(f"the store under {settings.home} has no counters to forecast")
    model = load_model(model_type, settings=settings)
    result = predict_rows(rows, model, settings)
    generated_at = pd.Timestamp.now(tz="UTC")
    frame = result.frame.assign(model_type=model_type, model_version=model.version, model_uri=model.uri,
                                forecast_date=day.date().isoformat(), generated_at=generated_at,
                                coverage=result.coverage)
    path = forecast_path(day.date().isoformat(), settings)
    atomic_write_parquet(frame, path)
    log.info("forecast of %s: %d rows by %s -> %s", day.date(), len(frame), model.uri, path)
    weather = _weather_coverage(rows["timestamp"], settings, weather_fetch)
    warnings = list(result.warnings) + ([weather["note"]] if weather["hours_covered"] == 0 else [])
    return {
        "path": str(path), "date": day.date().isoformat(), "rows": len(frame),
        "counters": int(frame["counter_id"].nunique()), "model_type": model_type,
        "model_version": model.version, "model_uri": model.uri, "generated_at": generated_at.isoformat(),
        "latest_count": latest.isoformat(), "total_predicted": round(float(frame["prediction"].sum()), 1),
        "interval_coverage": result.coverage, "warnings": warnings, "weather_forecast": weather,
        "summary": f"{len(frame):,} counter-hours of {day.date()} forecast by {model.uri} -> {path}; {weather['note']}",
    }


def _weather_coverage(timestamps: Any, settings: Settings, weather_fetch: dict[str, Any] | None) -> dict[str, Any]:
    """Which stored weather forecast, issued by 00:00 of the day, covers the hours to forecast."""
    import pandas as pd

    from velocast.data.weather_forecast import day_ahead_cutoffs, forecast_as_of

    hours = pd.Series(pd.unique(timestamps))
    known = forecast_as_of(hours, day_ahead_cutoffs(hours), settings=settings)
    covered = int(known["forecast_issued_at"].notna().sum())
    issued = known["forecast_issued_at"].max()
    day = hours.min().tz_convert(PARIS_TZ).date()
    if covered:
        note = f"weather forecast issued at {issued.isoformat()} covers {covered}/{len(hours)} hours of {day}"
    else:
        note = f"no weather forecast issued by 00:00 of {day} is stored: forecast without weather"
    if weather_fetch and weather_fetch.get("status") == "failed":
        note += f" (this run's weather fetch failed: {weather_fetch['error']})"
    return {"hours": len(hours), "hours_covered": covered,
            "issued_at": issued.isoformat() if covered else None, "note": note}
