"""Recalibrate the champion's prediction intervals on the newest labelled days, without retraining.

Drift widens (or narrows) a model's errors before anyone retrains it: the intervals calibrated at
training then cover less (or more) than they should. ``recalibrate`` keeps the champion's point
model and recalibrates its intervals (``velocast.models.calibrate``) on the newest labelled days
the model never trained on (at most ``VELOCAST_INTERVAL_CALIBRATION_DAYS``), built as served in
both weather variants: exact split conformal prediction for the served model itself.

The result is what an MLflow user expects of a changed model: a new registered version of
``bike-traffic-<type>`` (a run ``<type>-recalibrate`` logging the recalibrated model, its parent's
point metrics, tags and training days), promoted through the journaled promotion (``champion``
moves to it, ``previous-champion`` keeps the former calibration, so ``velocast rollback`` undoes
a recalibration), plus an audit event ``recalibration`` with the days used and the coverage the
former calibration had on them. Loading ``models:/bike-traffic-<type>@champion`` anywhere (the
API's model cache, the UI, plain MLflow) therefore gives the new intervals.

The weekly cycle runs it after its decision, whether the champion was kept or replaced.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import mlflow
import pandas as pd

from velocast import __version__
from velocast.config import Settings, get_settings
from velocast.data.splits import paris_day
from velocast.lifecycle.audit import AuditEvent, AuditLog
from velocast.lifecycle.decisions.monitor import champion_model, window
from velocast.lifecycle.decisions.promotion import promote
from velocast.lifecycle.inputs import model_inputs
from velocast.lifecycle.serving.scoring import ServedRows
from velocast.lifecycle.training.datasets import days_unseen_by
from velocast.lifecycle.training.train import training_attempt
from velocast.models import calibrate, calibration_info, get_spec, registered_name
from velocast.tracking import mlflow_runs
from velocast.tracking.registry import ATTEMPT_TAG, STATUS_TAG, Registry
from velocast.tracking.summary import SummaryEntry

log = logging.getLogger(__name__)

MIN_DAYS = 3  # fewer unseen labelled days than this: no recalibration
RECALIBRATED_FROM = "recalibrated_from"


@dataclass
class Recalibration:
    model_type: str
    status: str  # done | skipped
    summary: str
    from_version: str | None = None
    to_version: str | None = None
    run_id: str | None = None
    days: list[str] = field(default_factory=list)
    rows: int = 0
    coverage: float | None = None  # nominal coverage checked
    before: dict[str, Any] = field(default_factory=dict)  # the former calibration's interval metrics on the days
    audit_event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ANY_CHAMPION = object()  # recalibrate whichever version is champion


def recalibrate(model_type: str = "lgbm", days: int | None = None, end: str | pd.Timestamp | None = None,
                settings: Settings | None = None, reason: str | None = None,
                expected_champion: str | None | object = ANY_CHAMPION) -> Recalibration:
    """Recalibrate the champion of ``model_type`` on its newest unseen labelled days (module docstring).

    ``days``: most days used (default ``VELOCAST_INTERVAL_CALIBRATION_DAYS``); ``end``: the last day
    considered (default: the latest stored count); ``expected_champion``: the version the caller
    means (None: no champion), else whichever is champion. Skipped, with the reason, when there is
    no champion, another one than expected, or fewer than ``MIN_DAYS`` labelled days it never
    trained on.
    """
    settings = settings or get_settings()
    if get_spec(model_type).task != "regression":
        return Recalibration(model_type, "skipped", f"{model_type} is a classifier: it has no prediction intervals")
    days = int(days or settings.interval_calibration_days)
    champion = champion_model(model_type, settings)
    now = champion.version if champion is not None else None
    if expected_champion is not ANY_CHAMPION and now != expected_champion:  # the promotion below is compare-and-swap
        return Recalibration(model_type, "skipped", f"the champion changed meanwhile (now {f'v{now}' if now else 'none'}"
                             f", expected {f'v{expected_champion}' if expected_champion else 'none'}): not recalibrated",
                             now)
    if champion is None or champion.ref is None:
        return Recalibration(model_type, "skipped", f"no {model_type} champion to recalibrate")
    registry = Registry(settings)
    end_ts = None if end is None else pd.Timestamp(end)
    # the window is wide enough to find ``days`` unseen days when the most recent ones were trained on
    rows = window(days + 31, end_ts, settings)
    if rows.empty:
        return Recalibration(model_type, "skipped", "no labelled days in the store", champion.version)
    stored_days = set(paris_day(rows["timestamp"]).astype(str))
    unseen = sorted(days_unseen_by(registry, champion.ref, stored_days, settings))[-days:]
    if len(unseen) < MIN_DAYS:
        return Recalibration(model_type, "skipped", f"only {len(unseen)} labelled day(s) unseen by v{champion.version}"
                             f" (at least {MIN_DAYS} needed): intervals kept", champion.version, days=unseen)
    chosen = rows[paris_day(rows["timestamp"]).astype(str).isin(unseen).to_numpy()].reset_index(drop=True)
    served = ServedRows.build(chosen, settings)
    if not len(served):
        return Recalibration(model_type, "skipped", "every unseen labelled row lies in a sensor outage",
                             champion.version, days=unseen)
    before = served.score(champion.pipeline).metrics
    before = {k: v for k, v in before.items() if k.startswith("interval_")}
    pipeline = calibrate(champion.pipeline, served.calibration_rows)
    shown = (f"coverage {before['interval_coverage']:.3f} of the nominal {settings.interval_coverage:.2f} before"
             if before.get("interval_coverage") is not None else "no intervals before")
    why = (reason or "recalibration") + (f": intervals of v{champion.version} recalibrated on {len(unseen)} unseen "
                                         f"days {unseen[0]} .. {unseen[-1]} ({shown})")
    version, run_id = _register(model_type, champion, pipeline, served, unseen, before, settings, registry)
    # compare-and-swap on the champion recalibrated (a rollback meanwhile wins); a champion promoted with
    # an override (test-mode, gate) keeps it: the point model is the same
    blockers = registry.blockers(champion.ref)
    promote(model_type, version=version, reason=why + (f" (the champion's override stands: {'; '.join(blockers)})"
                                                       if blockers else ""),
            settings=settings, expected_champion=champion.version, force=bool(blockers), decision="recalibrate")
    event = AuditLog(settings=settings).record(AuditEvent(
        event="recalibration", model_type=model_type, deployment_decision="recalibrate",
        model_uri=f"models:/{registered_name(model_type)}/{version}", run_id=run_id,
        from_version=champion.version, to_version=version, reasons=[why],
        details={"days": unseen, "rows": len(served), "weather": served.weather,
                 "coverage": settings.interval_coverage, "before": before,
                 "calibration": calibration_info(pipeline)}))
    log.info("%s", why)
    return Recalibration(model_type, "done", why, champion.version, version, run_id, unseen, len(served),
                         settings.interval_coverage, before, event.event_id)


def _register(model_type: str, champion: Any, pipeline: Any, served: ServedRows, days: list[str],
              before: dict[str, Any], settings: Settings, registry: Registry) -> tuple[str, str]:
    """Log and register the recalibrated model as a new complete version; its summary entry too."""
    parent = champion.ref
    client = registry.client
    parent_run = client.get_run(parent.run_id) if parent.run_id else None
    registered = None
    with training_attempt(settings) as attempt, \
            mlflow.start_run(run_name=f"{model_type}-recalibrate", tags={ATTEMPT_TAG: attempt,
                                                                        "model_type": model_type}) as run:
        try:
            inherited = {k: v for k, v in (parent_run.data.tags if parent_run else {}).items()
                         if not k.startswith("mlflow.") and k not in (ATTEMPT_TAG, "registered_version")}
            mlflow.set_tags({**inherited, "model_type": model_type, "velocast_version": __version__,
                             RECALIBRATED_FROM: parent.version, "intervals": "conformal",
                             "interval_coverage": str(settings.interval_coverage)})
            if parent_run is not None:
                mlflow.log_params({k: v for k, v in parent_run.data.params.items() if not k.startswith("calibration_")})
                mlflow.log_metrics({k: v for k, v in parent_run.data.metrics.items() if "interval_" not in k})
            mlflow.log_params({"calibration_days": len(days), "calibration_first_day": days[0],
                               "calibration_last_day": days[-1], "calibration_rows": len(served)})
            mlflow_runs.log_metrics("recalibration_before", before)
            trained = registry.run_json(parent.run_id, "data/days.json")
            if trained is not None:  # the point model is the parent's: so are the days it trained on
                mlflow.log_dict(trained, "data/days.json")
            mlflow.log_dict({**(calibration_info(pipeline) or {}), "days": days,
                             "recalibrated_from": parent.version}, "intervals/calibration.json")
            info = mlflow_runs.log_model(pipeline, mlflow_runs.input_example(model_inputs(served.decision_rows)))
            tags = {k: v for k, v in parent.tags.items() if k not in (STATUS_TAG, ATTEMPT_TAG)}
            registered = registry.register(model_type, info.model_uri, run.info.run_id,
                                           tags={**tags, RECALIBRATED_FROM: parent.version,
                                                 "calibration_end": days[-1], ATTEMPT_TAG: attempt},
                                           model_id=info.model_id)
            mlflow.set_tag("registered_version", registered.version)
            entry = registry.summary.find(parent.run_id) if parent.run_id else None
            now = datetime.now(timezone.utc).isoformat()
            uri = mlflow_runs.artifact_location(info)
            if entry is not None:
                # the point metrics are the parent's (same trees); its interval metrics were of the former
                # calibration: not carried (as in MLflow), the recalibration's own figures are in the audit
                entry = replace(entry, timestamp=now, run_id=run.info.run_id, model_uri=uri,
                                model_version=registered.version, is_champion=False,
                                extra_metrics={k: v for k, v in entry.extra_metrics.items() if "interval_" not in k})
            else:
                entry = SummaryEntry(timestamp=now, model_type=model_type, env="prod", test_mode=False,
                                     run_id=run.info.run_id, model_uri=uri, registered_model=registered_name(model_type),
                                     model_version=registered.version, horizon=parent.tags.get("horizon"))
            registry.summary.append(entry)
        except BaseException:
            if registered is not None:
                log.error("recalibration failed after registration: deleting version %s", registered.version)
                try:
                    registry.delete_version(model_type, registered.version)
                except Exception:  # the original error matters more
                    log.exception("could not delete the half-registered version")
            raise
    registry.mark_complete(model_type, registered.version)
    return registered.version, run.info.run_id


__all__ = ["ANY_CHAMPION", "MIN_DAYS", "RECALIBRATED_FROM", "Recalibration", "recalibrate"]
