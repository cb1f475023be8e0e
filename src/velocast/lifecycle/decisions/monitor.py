"""Monitoring with I/O: drift of the champion's real inputs, and the champion's health.

Drift compares the features the champion actually computes (weather, history, calendar flags,
the counter), its predictions and the counts of a reference (default: ``test_baseline``) with a
current window (default: the store's last 30 days), with seasonal matching; the verdict is ours
(``velocast.monitoring.drift``), evidently renders the HTML report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast import progress
from velocast.config import Settings, get_settings
from velocast.data import splits, store
from velocast.data.schema import paris_midnight
from velocast.features import FeatureBuilder
from velocast.fileio import atomic_write_json, file_lock
from velocast.lifecycle.inputs import enrich
from velocast.lifecycle.serving.predict import LoadedModel
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.datasets import days_unseen_by
from velocast.models import predict_frame
from velocast.monitoring.drift import (
    DriftPolicy,
    DriftReport,
    detect_drift,
    seasonal_reference,
    write_reports,
)
from velocast.monitoring.health import HealthPolicy, HealthReport, health_state
from velocast.tracking.registry import Registry

log = logging.getLogger(__name__)

# The model inputs monitored for drift: the weather that drives cycling, the count history the
# day-ahead models read, the counter mix and the hour. Calendar flags (holidays, events, weekday,
# month) are known in advance: a week that differs from its season on them is not data drift.
DRIFT_NUMERICAL = ["temperature_c", "rain_mm", "wind_ms", "lag_1d", "lag_7d", "mean_7d_same_hour",
                   "yesterday_total"]
DRIFT_CATEGORICAL = ["counter_id", "hour"]
DRIFT_DAILY = ["temperature_c", "rain_mm", "wind_ms"]  # one value per hour for all counters: tested per day


@dataclass
class DriftCheck:
    report: DriftReport
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "reports": self.paths}


def check_window(days: int) -> None:
    """A window of recent days is at least one whole day."""
    if days < 1:
        raise ValueError(f"window_days must be at least 1 (whole days), got {days}")


def window(days: int, end: pd.Timestamp | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """Labelled rows of the ``days`` whole days ending with ``end``'s day (default: the latest day)."""
    settings = settings or get_settings()
    check_window(days)
    if end is None:
        return store.last_days(days, settings)
    return store.query_counts(paris_midnight(end, 1 - days), paris_midnight(end, 1), settings=settings)


def champion_model(model_type: str, settings: Settings) -> LoadedModel | None:
    registry = Registry(settings)
    ref = registry.champion(model_type, with_metrics=True)
    return registry.load_model(ref) if ref else None


def _monitored(rows: pd.DataFrame, builder: FeatureBuilder, pipeline: Any | None) -> pd.DataFrame:
    features = builder.transform(rows)
    out = pd.DataFrame({"timestamp": rows["timestamp"].to_numpy(), "counter_id": rows["counter_id"].astype(str).to_numpy(),
                        "bike_count": rows["bike_count"].to_numpy(float)}, index=rows.index)
    for column in DRIFT_NUMERICAL:
        out[column] = rows[column].to_numpy(float) if column in rows else float("nan")
    for column in DRIFT_CATEGORICAL:
        if column in features and column != "counter_id":
            out[column] = features[column].astype(int).astype(str).to_numpy()
    if pipeline is not None and "prediction" not in out:
        out["prediction"] = predict_frame(pipeline, rows)["prediction"].to_numpy(float)
    return out


def check_drift(model_type: str = "lgbm", reference: pd.DataFrame | None = None, current: pd.DataFrame | None = None,
                window_days: int = 30, end: pd.Timestamp | None = None, settings: Settings | None = None,
                policy: DriftPolicy | None = None, write: bool = True) -> DriftCheck:
    """Drift of the current window against the reference, on the champion's inputs and predictions."""
    settings = settings or get_settings()
    if current is None:
        check_window(window_days)
    reference = reference if reference is not None else splits.load_split("test_baseline", splits.ensure_split(settings), settings)
    current = current if current is not None else window(window_days, end, settings)
    progress.step(f"loading the {model_type} champion; building the inputs of {len(reference):,} reference and "
                  f"{len(current):,} current rows")
    champion = champion_model(model_type, settings)
    # drift is watched on the observed weather (the monitoring truth) and the history the model read
    ref_rows = enrich(reference.reset_index(drop=True), settings, weather="observed")
    cur_rows = enrich(current.reset_index(drop=True), settings, weather="observed")
    if champion is not None:
        builder, pipeline = champion.pipeline.named_steps["features"], champion.pipeline
        known = set(builder.counter_ids_)
        with_prediction = champion.spec.task == "regression"
    else:  # no champion yet: monitor the data alone
        builder = FeatureBuilder().fit(ref_rows, ref_rows["bike_count"])
        pipeline, known, with_prediction = None, set(ref_rows["counter_id"].astype(str)), False
    progress.step("predicting with the champion" if with_prediction else "computing the monitored features")
    ref = _monitored(ref_rows, builder, pipeline if with_prediction else None)
    cur = _monitored(cur_rows, builder, pipeline if with_prediction else None) if len(cur_rows) else cur_rows
    categorical = [c for c in DRIFT_CATEGORICAL if c in ref]
    progress.step("testing each column (seasonally matched reference)")
    report = detect_drift(ref, cur, DRIFT_NUMERICAL, categorical, target="bike_count",
                          prediction="prediction" if with_prediction else None, known_counters=known,
                          policy=policy or DriftPolicy(), daily=DRIFT_DAILY)
    paths: dict[str, str] = {}
    if write:
        checked_at = datetime.now(timezone.utc)
        folder = settings.reports_dir / "drift" / f"{checked_at:%Y%m%dT%H%M%S%f}"
        matched = seasonal_reference(ref, cur)[0] if report.status not in ("error", "insufficient_data") else ref
        columns = [c for c in (*DRIFT_NUMERICAL, *categorical, "bike_count", "prediction") if c in ref]
        progress.step("writing the JSON verdict and the HTML report")
        written = write_reports(report, matched, cur, columns, folder) if len(cur) else {}
        paths = {k: str(v) for k, v in written.items()}
        latest = {"model_type": model_type, "folder": str(folder), "checked_at": checked_at.isoformat(), **paths,
                  "report": report.to_dict()}
        atomic_write_json(_drift_latest_path(settings, model_type), latest)  # the model type's latest check
        atomic_write_json(_drift_latest_path(settings), latest)  # the latest check of any model type
    return DriftCheck(report, paths)


def _drift_latest_path(settings: Settings, model_type: str | None = None) -> Path:
    return settings.reports_dir / "drift" / (f"latest-{model_type}.json" if model_type else "latest.json")


def latest_drift(settings: Settings | None = None, model_type: str | None = None) -> dict[str, Any] | None:
    """The latest drift check of ``model_type`` (None: of any model type), or None before any."""
    settings = settings or get_settings()
    path = _drift_latest_path(settings, model_type)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    legacy = latest_drift(settings) if model_type else None  # written before checks were kept per model type
    return legacy if legacy is not None and "model_type" not in legacy else None


def latest_drifts(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The latest drift check of each model type checked: ``{model_type: check}``."""
    settings = settings or get_settings()
    out = {}
    for path in sorted((settings.reports_dir / "drift").glob("latest-*.json")):
        check = json.loads(path.read_text(encoding="utf-8"))
        out[check.get("model_type") or path.stem.removeprefix("latest-")] = check
    return out


def _health_path(settings: Settings):
    return settings.reports_dir / "health" / "latest.json"


def record_health(model_type: str, report: HealthReport, settings: Settings | None = None) -> None:
    """Keep ``report`` as the latest health check of ``model_type`` (``reports/health/latest.json``)."""
    settings = settings or get_settings()
    path = _health_path(settings)
    with file_lock(settings.locks_dir / "health_latest.lock"):
        latest = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        latest[model_type] = {**report.to_dict(), "checked_at": datetime.now(timezone.utc).isoformat()}
        atomic_write_json(path, latest)


def latest_health(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The latest health check of each model type the weekly cycle checked: ``{model_type: report}``."""
    path = _health_path(settings or get_settings())
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _unseen_by(model: LoadedModel, rows: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, list[str]]:
    """``rows`` without those of days ``model`` trained on (its health is judged on unseen days only), and
    a note on what was left out."""
    if model.ref is None:
        return rows, [f"{model.uri} has no record of its training days: the score may include days it trained on"]
    days = splits.paris_day(rows["timestamp"]).astype(str).to_numpy()
    unseen = days_unseen_by(Registry(settings), model.ref, set(days), settings)
    seen = sorted(set(days) - unseen)
    if not seen:
        return rows, []
    keep = np.isin(days, sorted(unseen))
    note = (f"{int((~keep).sum()):,} rows of {len(seen)} day(s) the champion trained on ({seen[0]} .. {seen[-1]}) "
            "left out")
    return rows[keep].reset_index(drop=True), [note]


def champion_health(model_type: str = "lgbm", days: int = 7, end: pd.Timestamp | None = None,
                    settings: Settings | None = None, policy: HealthPolicy | None = None,
                    champion: LoadedModel | None = None) -> HealthReport:
    """The champion's RMSE and R² on the latest labelled days vs its own test_baseline score."""
    settings = settings or get_settings()
    policy = policy or HealthPolicy(rmse_threshold=settings.health_rmse_threshold,
                                    coverage_tolerance=settings.coverage_tolerance)
    champion = champion or champion_model(model_type, settings)
    if champion is None:
        return HealthReport("unknown", None, None, None, None, None, 0, None, [f"no {model_type} champion yet"])
    if champion.spec.task != "regression":
        return HealthReport("unknown", None, None, None, None, None, 0, None, ["health is defined for regressors"])
    rows = window(days, end, settings)
    if rows.empty:
        return health_state(None, None, None, None, 0, policy)
    rows, unseen_notes = _unseen_by(champion, rows, settings)
    if rows.empty:
        return health_state(None, None, None, None, 0, policy, notes=unseen_notes)
    served = ServedRows.build(rows, settings)
    if not len(served):
        return health_state(None, None, None, None, 0, policy, notes=[*unseen_notes, *served.notes])
    metrics = served.score(champion.pipeline).metrics
    recorded = champion.ref.metrics if champion.ref else {}
    variant = f"test_baseline_{served.weather}_weather"
    scored = served.decision_rows
    period = f"{scored['timestamp'].min().date()} .. {scored['timestamp'].max().date()}"
    return health_state(metrics["rmse"], metrics["r2"], recorded.get(f"{variant}_rmse", recorded.get("test_baseline_rmse")),
                        recorded.get(f"{variant}_r2", recorded.get("test_baseline_r2")), len(served), policy, period,
                        notes=[f"scored as served, {served.weather} weather", *unseen_notes, *served.notes],
                        coverage=metrics.get("interval_coverage"), nominal_coverage=metrics.get("interval_nominal"),
                        interval_width=metrics.get("interval_width"))


__all__ = [
    "DriftCheck",
    "champion_health",
    "check_drift",
    "latest_drift",
    "latest_drifts",
    "latest_health",
    "record_health",
    "window",
]
