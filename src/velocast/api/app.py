"""The FastAPI app: thin routes over ``velocast.lifecycle`` and ``velocast.tracking``.

``create_app(settings)`` builds one app with its own model cache, training-job runner and
Prometheus registry; ``velocast serve`` runs it with uvicorn.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from fastapi import (
    APIRouter,
    Body,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from velocast import __version__
from velocast.api.batching import PredictBatcher, PredictKey
from velocast.api.config import ApiConfig
from velocast.api.heap import HeapSettler
from velocast.api.jobs import AirflowUnavailable, JobManager, QueueFull
from velocast.api.metrics import ApiMetrics, MetricsMiddleware
from velocast.api.records import EARLIEST, LATEST, KnownCounters, RecordRows, RecordsRejected, error, to_rows
from velocast.api.schemas import (
    ChampionHealthResponse,
    CounterInfo,
    CountersResponse,
    CountsResponse,
    CountValue,
    DriftLatestResponse,
    OPENDATA_EXAMPLE,
    TIDY_EXAMPLE,
    AuditEventName,
    AuditResponse,
    ErrorResponse,
    EvaluateRequest,
    EvaluateResponse,
    HealthResponse,
    JobStatus,
    ModelsResponse,
    ModelType,
    ModelTypeInfo,
    ModelVersionInfo,
    MonitorRequest,
    MonitorResponse,
    PredictRecord,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
    PromotionResponse,
    ReadyResponse,
    RollbackRequest,
    ServedInfo,
    TrainAccepted,
    TrainRequest,
    ValidationErrorResponse,
)
from velocast.api.security import DISABLED, key_configured, require_api_key
from velocast.api.workers import RebalanceMiddleware, current_share
from velocast.config import PARIS_TZ, Settings, get_settings, install_log_redaction, redact, redact_secrets
from velocast.data import splits, store
from velocast.errors import DependencyUnavailable, is_disk_full, write_failure
from velocast.lifecycle.decisions import promotion
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.champion import ChampionCache, NoModelError, ServedModel, overview
from velocast.lifecycle.decisions.evaluate import evaluate
from velocast.lifecycle.operations.jobs import TrainSpec
from velocast.lifecycle.decisions.monitor import champion_health, check_drift, latest_drift
from velocast.lifecycle.inputs import WEATHER_SOURCE
from velocast.lifecycle.serving.adaptation import adaptation_warm, warm_adaptation
from velocast.lifecycle.serving.fast_path import ServedRows
from velocast.lifecycle.serving.predict import Predictions, predict_rows, summarise_notes, unknown_counters_warning
from velocast.lifecycle.serving.served_history import store_history
from velocast.lifecycle.training.train import reconcile
from velocast.models import MODEL_TYPES, get_spec, registered_name, validate_hyperparams
from velocast.tracking.registry import ModelRef

log = logging.getLogger("velocast.api")

DESCRIPTION = """
Hourly bike-count forecasts for the Paris counters, served by the current **champion** of each
model type (hot-swapped within seconds of a promotion made anywhere: this API, the CLI, Airflow).

* Read-only routes (`/health`, `/ready`, `/models`, `/predict`, `/jobs/{id}`, `/audit`, `/metrics`,
  `/reports/drift/{name}.html`) need no key.
* Mutating routes (`/train`, `/evaluate`, `/monitor`, `/promote_champion`, `/rollback`) need the
  header `X-API-Key` equal to the server's `VELOCAST_API_KEY`; without a configured key they answer 503.
* Records use the tidy field names (`counter_id`, `timestamp`/`date`, `latitude`, ...) or the Paris
  open-data headers (`Identifiant du compteur`, `Date et heure de comptage`, ...), and are validated
  exactly like an ingested file: every rejected record is reported with a 422 naming its `index`
  in the request and the `field`.
"""

RECORD_LISTS = ("records", "current_data")
VALIDATION_422 = {422: {"model": ValidationErrorResponse, "description": "Invalid request: every problem with "
                        "the index of the record and the field."}}
KEY_ERRORS = {401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."},
              503: {"model": ErrorResponse, "description": DISABLED}}
_REPORT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

router = APIRouter()


# ------------------------------------------------------------------------------ dependencies
async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def app_config(request: Request) -> ApiConfig:
    return request.app.state.config


async def model_cache(request: Request) -> ChampionCache:
    return request.app.state.cache


async def job_manager(request: Request) -> JobManager:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(app_settings)]
ConfigDep = Annotated[ApiConfig, Depends(app_config)]
CacheDep = Annotated[ChampionCache, Depends(model_cache)]
JobsDep = Annotated[JobManager, Depends(job_manager)]


# ------------------------------------------------------------------------------ helpers
def _check_count(records: list[PredictRecord] | None, name: str, config: ApiConfig) -> None:
    if records is not None and len(records) > config.max_records:
        raise RecordsRejected([error(f"{name} holds {len(records):,} records: at most {config.max_records:,} "
                                     f"per request (VELOCAST_API_MAX_RECORDS)", name, loc=[name])])


def _rows(request: Request, records: list[PredictRecord], name: str, require_count: bool) -> Any:
    state = request.app.state
    _check_count(records, name, state.config)
    return to_rows(records, state.settings, state.counters.get(), require_count=require_count, loc=name)


def _served(cache: ChampionCache, model_type: str, horizon: str | None = None) -> ServedModel:
    try:
        return cache.get(model_type, horizon)
    except NoModelError as exc:
        if horizon:
            raise RecordsRejected([error(str(exc), "horizon", loc=["horizon"])]) from exc
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _prediction_items(result: Predictions, converted: RecordRows) -> list[dict[str, Any]]:
    """One ``RecordPrediction`` per posted record, in the posted order, with its warnings."""
    columns, row_of = result.columns, converted.row_of
    n = len(row_of)
    predictions = np.asarray(columns["prediction"], float)[row_of].tolist()  # Python floats at once
    probabilities = np.asarray(columns["probability"], float)[row_of].tolist() if "probability" in columns \
        else [None] * n
    lower, upper = ((np.asarray(columns["lower"], float)[row_of].tolist(),
                     np.asarray(columns["upper"], float)[row_of].tolist())
                    if result.coverage is not None else ([None] * n, [None] * n))
    rows = result.rows
    if isinstance(rows, ServedRows):
        counters, stamps = rows.counter_id[row_of].tolist(), _iso_hours(rows.utc_hour[row_of])
    else:
        counters = rows["counter_id"].astype(str).to_numpy()[row_of].tolist()
        stamps = np.asarray([t.isoformat() for t in rows["timestamp"]], dtype=object)[row_of].tolist()
    weather = np.asarray(columns[WEATHER_SOURCE])[row_of].tolist()
    unknown = set(result.unknown_counters)
    notes = result.row_notes
    items = []
    for i in range(n):
        warnings = list(converted.warnings.get(i, []))
        if counters[i] in unknown:
            warnings.append(f"counter {counters[i]} is unknown to the model: predicted from its location and the "
                            "calendar")
        if notes:
            warnings += notes[row_of[i]]
        if i in converted.duplicate_of:
            warnings.append(f"same counter and hour as record {converted.duplicate_of[i]}")
        items.append({"index": i, "counter_id": str(counters[i]), "timestamp": stamps[i],
                      "prediction": predictions[i], "lower": lower[i], "upper": upper[i],
                      "probability": probabilities[i], "weather": str(weather[i]), "warnings": warnings})
    return items


_PARIS = ZoneInfo(PARIS_TZ)


def _iso_hours(utc_hours: np.ndarray) -> list[str]:
    """Each UTC hour number in Paris time, ISO 8601 with its offset (as ``pd.Timestamp.isoformat``)."""
    return [_iso_hour(h) for h in np.asarray(utc_hours, np.int64).tolist()]


@functools.lru_cache(maxsize=65_536)  # requests ask for the same few days' hours again and again
def _iso_hour(utc_hour: int) -> str:
    return datetime.fromtimestamp(utc_hour * 3600, _PARIS).isoformat()


def _iso_ms(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat() if millis else None


def _version_info(ref: ModelRef) -> ModelVersionInfo:
    metrics = {k: float(v) for k, v in ref.metrics.items() if k.startswith(("test_baseline_", "test_current_"))}
    return ModelVersionInfo(version=ref.version, run_id=ref.run_id, uri=ref.uri, aliases=ref.aliases,
                            created_at=_iso_ms(ref.created_at), tags=ref.tags, metrics=metrics)


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return Path(path).name


# ------------------------------------------------------------------------------ read-only routes
@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/docs")


@router.get("/health", response_model=HealthResponse, tags=["service"], summary="Liveness (always 200)")
async def health() -> HealthResponse:  # on the event loop: no thread handoff for a constant answer
    return HealthResponse(version=__version__)


def readiness(cache: ChampionCache, model_type: str) -> ReadyResponse:
    """Can ``model_type`` serve now? (``/ready`` and the ``velocast_ready`` metric.)

    ``ready``; ``degraded`` when a dependency (the registry) fails while the loaded model keeps
    serving; ``not_ready`` when no model can serve.
    """
    try:
        served = cache.get(model_type)
    except Exception as exc:  # noqa: BLE001 - NoModelError, an unreachable registry, a model that cannot be loaded
        reason = str(exc) if isinstance(exc, (NoModelError, DependencyUnavailable)) \
            else f"cannot load the {model_type} model: {exc}"
        reason = redact_secrets(reason, cache.settings)  # an MLflow error names the tracking URL, password included
        return ReadyResponse(status="not_ready", model_type=model_type, reason=reason)
    body = ReadyResponse(status="ready", model_type=model_type, model_version=served.version,
                         model_uri=served.model.uri, champion=served.champion, warnings=served.warnings)
    if served.last_error:  # still serving the loaded model, but the registry does not answer
        body.status = "degraded"
        body.reason = f"{served.last_error}; still serving {model_type} version {served.version}"
    return body


@router.get("/ready", response_model=ReadyResponse, tags=["service"], summary="Readiness: a model is loaded",
            responses={503: {"model": ReadyResponse, "description": "No model can serve, or a dependency failed "
                             "while the loaded model keeps serving (`degraded`); the reason says why."}})
def ready(cache: CacheDep, config: ConfigDep) -> Any:
    body = readiness(cache, config.default_model_type)
    if body.status != "ready":
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return body


@router.get("/models", response_model=ModelsResponse, tags=["models"],
            summary="Champion (with its test metrics) and registered versions of every model type")
def models(cache: CacheDep, settings: SettingsDep,
           all_metrics: Annotated[bool, Query(description="Also read the MLflow metrics of every version "
                                              "(one query per version).")] = False) -> ModelsResponse:
    served = cache.snapshot()
    out = {}
    for model_type, types in overview(cache.registry, all_metrics).items():
        spec = get_spec(model_type)
        champion = types.champion
        now = served.get((model_type, None))
        out[model_type] = ModelTypeInfo(
            model_type=model_type, registered_name=registered_name(model_type), task=spec.task,
            description=spec.description, default_horizon=spec.default_horizon,
            champion=_version_info(champion) if champion else None,
            previous_champion=types.previous_champion,
            served=ServedInfo(version=now.version, uri=now.model.uri, champion=now.champion, horizon=now.model.horizon,
                              loaded_at=now.loaded_at.isoformat(), next_version=cache.pending(model_type))
            if now else None,
            versions=[_version_info(ref) for ref in types.versions])
    return ModelsResponse(models=out)


@router.post("/predict", response_model=PredictResponse, tags=["predictions"],
             summary="Predict counter-hours with the champion",
             responses={**VALIDATION_422, 503: {"model": ErrorResponse, "description": "No model registered yet."}})
async def predict(body: Annotated[PredictRequest, Body(openapi_examples={
                "tidy": {"summary": "tidy field names", "value": {"records": TIDY_EXAMPLE, "model_type": "lgbm"}},
                "opendata": {"summary": "open-data export field names", "value": {"records": OPENDATA_EXAMPLE}}})],
            request: Request, config: ConfigDep) -> PredictResponse:
    state = request.app.state
    model_type = body.model_type or config.default_model_type
    _check_count(body.records, "records", config)
    # requests asking for another coverage are batched apart: each answer carries its own intervals
    key = (model_type, body.horizon, body.coverage if body.coverage is not None else state.settings.interval_coverage)
    with_counts = any(r.bike_count is not None or r.fr_bike_count is not None for r in body.records)
    # requests carrying counts get their own metrics: they are not batched with others
    # on the event loop unless something must be loaded or computed first, or the request is large
    on_loop = _on_loop(state, model_type, body.horizon)
    if on_loop and not with_counts:
        payload = await state.batcher.submit(key, body.records)
    elif on_loop and len(body.records) <= state.batcher.inline_records:
        payload = _predict_one(state, key, body.records)
    else:
        payload = await run_in_threadpool(_predict_one, state, key, body.records)
    state.metrics.predictions.labels(model_type).inc(len(body.records))
    # validated once here and written by pydantic's serializer: FastAPI would validate the model again
    return Response(PredictResponse.model_validate(payload).model_dump_json(by_alias=True),
                    media_type="application/json")


def _on_loop(state: Any, model_type: str, horizon: str | None) -> bool:
    """May a request be predicted on the event loop, with nothing to load or compute first? (the model
    checked, the store's history and the model's recent errors built for the store's version)"""
    served = state.cache.at_once(model_type, horizon)
    if served is None:
        return False
    version = store.version(state.settings)
    return state.history.ready(version) and adaptation_warm(served.model, state.settings, version)


def _response(model_type: str, served: ServedModel, items: list[dict[str, Any]], warnings: list[str],
              metrics: dict[str, Any] | None, coverage: float | None) -> dict[str, Any]:
    model = served.model
    return {"model": {"model_type": model_type, "version": model.version, "uri": model.uri,
                      "run_id": model.ref.run_id if model.ref else None, "horizon": model.horizon,
                      "champion": served.champion},
            "coverage": coverage, "predictions": items, "warnings": warnings, "metrics": metrics}


def _predict_one(state: Any, key: PredictKey, records: list[PredictRecord]) -> dict[str, Any]:
    model_type, horizon, coverage = key
    converted = to_rows(records, state.settings, state.counters.get(), require_count=False, loc="records")
    served = _served(state.cache, model_type, horizon)
    result = predict_rows(converted.served, served.model, state.settings, coverage)
    return _response(model_type, served, _prediction_items(result, converted), [*served.warnings, *result.warnings],
                     result.metrics, result.coverage)


def _predict_many(state: Any, key: PredictKey, groups: list[list[PredictRecord]]) -> list[dict[str, Any]]:
    """Several requests predicted together; each gets its own items, indices and warnings back."""
    model_type, horizon, coverage = key
    converted = to_rows([r for g in groups for r in g], state.settings, state.counters.get(), require_count=False,
                        loc="records")
    served = _served(state.cache, model_type, horizon)
    result = predict_rows(converted.served, served.model, state.settings, coverage)
    items = _prediction_items(result, converted)
    unknown_ids = set(result.unknown_counters)
    out, start = [], 0
    for group in groups:
        mine = []
        for local, item in enumerate(items[start:start + len(group)]):
            warnings = [w for w in item["warnings"] if not w.startswith("same counter and hour")]
            earlier = converted.duplicate_of.get(start + local)
            if earlier is not None and earlier >= start:  # a duplicate within this request only
                warnings.append(f"same counter and hour as record {earlier - start}")
            mine.append({**item, "index": local, "warnings": warnings})
        unknown = sorted({i["counter_id"] for i in mine if i["counter_id"] in unknown_ids})
        notes = summarise_notes([result.row_notes[converted.row_of[start + local]] for local in range(len(group))])
        out.append(_response(model_type, served, mine,
                             [*served.warnings, *([unknown_counters_warning(unknown)] if unknown else []), *notes],
                             None, result.coverage))
        start += len(group)
    return out


@router.get("/jobs/{job_id}", response_model=JobStatus, tags=["lifecycle"], summary="Status of a training job",
            responses={404: {"model": ErrorResponse}})
def job_status(job_id: str, jobs: JobsDep) -> JobStatus:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no training job {job_id!r}")
    return JobStatus.model_validate(job.to_dict())


@router.get("/audit", response_model=AuditResponse, tags=["lifecycle"], summary="The audit log, newest first",
            responses=VALIDATION_422)
def audit(settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
          event: AuditEventName | None = None, model_type: ModelType | None = None) -> AuditResponse:
    events = AuditLog(settings=settings).list(limit=limit, event=event, model_type=model_type)
    return AuditResponse(count=len(events), events=[e.to_dict() for e in events])


@router.get("/metrics", tags=["service"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    exporter: ApiMetrics = request.app.state.metrics
    return Response(exporter.render(), media_type=exporter.content_type)


@router.get("/reports/drift/{name}.html", name="drift_report", tags=["lifecycle"],
            summary="A drift report written by /monitor (or `latest`)", response_class=FileResponse,
            responses={200: {"content": {"text/html": {}}}, 404: {"model": ErrorResponse}})
def drift_report(name: str, settings: SettingsDep) -> FileResponse:
    base = (settings.reports_dir / "drift").resolve()
    if name == "latest":
        folder = (latest_drift(settings) or {}).get("folder")
        name = Path(folder).name if folder else ""
    missing = HTTPException(status.HTTP_404_NOT_FOUND, "no such drift report")
    if not _REPORT_NAME.fullmatch(name):
        raise missing
    target = (base / name / "drift.html").resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise missing
    return FileResponse(target, media_type="text/html")


@router.get("/counters", response_model=CountersResponse, tags=["data"], summary="Counters in the store")
def counters(request: Request, settings: SettingsDep) -> CountersResponse:
    table = request.app.state.counters.get()
    latest = store.latest_timestamp(settings)
    items = [CounterInfo(**{k: (None if pd.isna(v) else str(v) if k in ("first_seen", "last_seen") else v)
                            for k, v in row.items() if k in CounterInfo.model_fields})
             for row in table.to_dict(orient="records")]
    return CountersResponse(count=len(items), latest=latest.isoformat() if latest is not None else None, counters=items)


@router.get("/counts", response_model=CountsResponse, tags=["data"], summary="Stored counts of one counter",
            responses=VALIDATION_422)
def counts(settings: SettingsDep, counter_id: Annotated[str, Query(min_length=1, max_length=200)],
           start: Annotated[date, Query(description="First day (Europe/Paris)")],
           end: Annotated[date, Query(description="Day after the last one (at most 31 days after start)")]) -> CountsResponse:
    if not start < end or (end - start).days > 31:
        raise RecordsRejected([error("end must be after start and at most 31 days later", "end", loc=["query", "end"])])
    if start < EARLIEST.date() or end > LATEST.date():  # Paris times of year 1 or 9999 cannot be made
        raise RecordsRejected([error(f"days must be between {EARLIEST.date()} and {LATEST.date()}", "start",
                                     loc=["query", "start"])])
    rows = store.query_counts(pd.Timestamp(start), pd.Timestamp(end), counter_ids=[counter_id], settings=settings)
    return CountsResponse(counter_id=counter_id, start=start.isoformat(), end=end.isoformat(),
                          counts=[CountValue(timestamp=t.isoformat(), bike_count=float(c))
                                  for t, c in zip(rows["timestamp"], rows["bike_count"])])


@router.get("/drift/latest", response_model=DriftLatestResponse, tags=["monitoring"],
            summary="The latest drift verdict of a model type (default: the API's default model type)")
def drift_latest(request: Request, settings: SettingsDep, config: ConfigDep,
                 model_type: ModelType | None = None) -> DriftLatestResponse:
    model_type = model_type or config.default_model_type
    latest = latest_drift(settings, model_type) or {}
    name = Path(latest["folder"]).name if latest.get("html") and latest.get("folder") else None
    return DriftLatestResponse(model_type=model_type, report=latest.get("report"), checked_at=latest.get("checked_at"),
                               report_url=str(request.app.url_path_for("drift_report", name=name)) if name else None)


@router.get("/champion_health", response_model=ChampionHealthResponse, tags=["monitoring"],
            summary="The champion's error on the latest labelled days vs its test_baseline", responses=VALIDATION_422)
def champion_health_route(settings: SettingsDep, model_type: ModelType = "lgbm",
                          days: Annotated[int, Query(ge=1, le=90)] = 7) -> ChampionHealthResponse:
    report = champion_health(model_type, days=days, settings=settings)
    return ChampionHealthResponse(model_type=model_type, **report.to_dict())


# ------------------------------------------------------------------------------ mutating routes
@router.post("/train", response_model=TrainAccepted, status_code=status.HTTP_202_ACCEPTED, tags=["lifecycle"],
             summary="Train a challenger in the background (never promotes)",
             dependencies=[Depends(require_api_key)],
             responses={**VALIDATION_422, **KEY_ERRORS, 429: {"model": ErrorResponse},
                        503: {"model": ErrorResponse, "description": f"{DISABLED}; or Airflow (VELOCAST_AIRFLOW_URL) "
                              "could not start the training DAG (the detail names it and why)."}})
def train_job(body: TrainRequest, request: Request, response: Response, jobs: JobsDep,
              settings: SettingsDep) -> TrainAccepted:
    try:
        hyperparams = validate_hyperparams(body.model_type, body.hyperparams)
    except ValueError as exc:
        raise RecordsRejected([error(str(exc), "hyperparams", loc=["hyperparams"])]) from exc
    current = _rows(request, body.current_data, "current_data", require_count=True).rows \
        if body.current_data is not None else None
    spec = TrainSpec(body.model_type, body.data_source, body.env or settings.env, hyperparams, body.test_mode,
                     body.horizon, current)
    try:
        job = jobs.submit(spec)
    except QueueFull as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc)) from exc
    except AirflowUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    url = request.app.url_path_for("job_status", job_id=job.job_id)
    response.headers["Location"] = str(url)
    return TrainAccepted(job_id=job.job_id, status=job.state, model_type=body.model_type, status_url=str(url),
                         runner=job.runner, dag_run_id=job.dag_run_id)


@router.post("/evaluate", response_model=EvaluateResponse, tags=["lifecycle"],
             summary="Double evaluation of a version against the champion, and every policy's decision",
             dependencies=[Depends(require_api_key)],
             responses={**VALIDATION_422, **KEY_ERRORS, 404: {"model": ErrorResponse}})
def evaluate_version(body: EvaluateRequest, settings: SettingsDep) -> EvaluateResponse:
    try:
        outcome = evaluate(body.model_type, version=body.version, run_id=body.run_id, settings=settings)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    out = outcome.to_dict()
    out["reports"] = {k: _relative(v, settings.reports_dir) for k, v in outcome.reports.items()}
    return EvaluateResponse.model_validate(out)


@router.post("/monitor", response_model=MonitorResponse, tags=["lifecycle"],
             summary="Drift of posted records (or the store's last days) against test_baseline",
             dependencies=[Depends(require_api_key)], responses={**VALIDATION_422, **KEY_ERRORS})
def monitor(body: MonitorRequest, request: Request, settings: SettingsDep, config: ConfigDep) -> MonitorResponse:
    model_type = body.model_type or config.default_model_type
    current = _rows(request, body.records, "records", require_count=True).rows if body.records else None
    check = check_drift(model_type, current=current, window_days=body.window_days, settings=settings)
    html = check.paths.get("html")
    name = Path(html).parent.name if html else None
    verdict = check.report.to_dict()
    return MonitorResponse(model_type=model_type, status=verdict["status"], drift_detected=verdict["drift_detected"],
                           drift_share=verdict["drift_share"], verdict=verdict, report_name=name,
                           report_url=str(request.app.url_path_for("drift_report", name=name)) if name else None)


@router.post("/promote_champion", response_model=PromotionResponse, tags=["lifecycle"],
             summary="Make a registered version the champion (alias, summary.json and audit together)",
             dependencies=[Depends(require_api_key)],
             responses={**VALIDATION_422, **KEY_ERRORS, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def promote_champion(body: PromoteRequest, settings: SettingsDep, cache: CacheDep) -> PromotionResponse:
    try:
        expected = promotion.expected_from_text(body.expected_champion)
    except ValueError as exc:  # not a version: invalid, not "the champion changed"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        done = promotion.promote(body.model_type, version=body.version, run_id=body.run_id,
                                 reason=body.reason or ("" if body.force else "promoted through the API"),
                                 settings=settings, force=body.force, expected_champion=expected)
    except promotion.PromotionError as exc:
        code = status.HTTP_404_NOT_FOUND if isinstance(exc.__cause__, LookupError) else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from exc
    cache.invalidate(body.model_type)
    return PromotionResponse(**done.to_dict())


@router.post("/rollback", response_model=PromotionResponse, tags=["lifecycle"],
             summary="Give the champion alias back to the previous champion",
             dependencies=[Depends(require_api_key)],
             responses={**VALIDATION_422, **KEY_ERRORS, 409: {"model": ErrorResponse}})
def rollback(body: RollbackRequest, settings: SettingsDep, cache: CacheDep) -> PromotionResponse:
    try:
        done = promotion.rollback(body.model_type,
                                  reason=body.reason or ("" if body.force else "rolled back through the API"),
                                  settings=settings, force=body.force)
    except promotion.PromotionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    cache.invalidate(body.model_type)
    return PromotionResponse(**done.to_dict())


# ------------------------------------------------------------------------------ errors
def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _message(kind: str, msg: str, field: str | None, value: Any, in_record: bool) -> str:
    if kind == "missing":
        return f"{field}: field required"
    if kind == "extra_forbidden":
        hint = ": use the tidy or the open-data field names (see /docs)" if in_record else ""
        return f"unknown field {field!r}{hint}"
    if kind == "too_short" and field in RECORD_LISTS:
        return f"{field} is empty: give at least one record"
    if kind == "finite_number":
        return f"{field}={value!r}: expected a finite number (NaN and infinity are not accepted)"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{field}={_shown(value)}: {msg}"
    return f"{field}: {msg}"


def validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``ErrorItem`` dicts naming the record index and the field."""
    items = []
    for err in exc.errors():
        loc = list(err.get("loc") or ())
        where = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else None
        kind, msg, ctx = err.get("type", ""), err.get("msg", ""), err.get("ctx") or {}
        if kind == "json_invalid":
            position = f" at character {loc[0]}" if loc else ""
            items.append(error(f"the body is not valid JSON: {ctx.get('error', msg)}{position}", "body", reason=kind,
                               loc=["body"]))
            continue
        if not loc and where == "body" and not ctx.get("field"):
            text = "the request needs a JSON body" if kind == "missing" else \
                "the body must be a JSON object (send it with Content-Type: application/json)"
            items.append(error(f"{text}: {msg}", "body", reason=kind, loc=["body"]))
            continue
        index = None
        if len(loc) >= 2 and loc[0] in RECORD_LISTS and isinstance(loc[1], int):
            index, rest = loc[1], loc[2:]
            field = str(rest[0]) if rest else ctx.get("field")
            message = msg if not rest else _message(kind, msg, field, err.get("input"), True)
            if index is not None:
                message = f"record {index}: {message}"
        else:
            field = ".".join(str(x) for x in loc) if loc else ctx.get("field")
            message = _message(kind, msg, field, err.get("input"), False) if loc else msg
            loc = loc or ([field] if field else [])  # a check of the whole body names the field it is about
        items.append(error(message, field, index, kind, [str(x) if not isinstance(x, int) else x for x in loc]))
    return items


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_items(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _rejected_handler(request: Request, exc: RecordsRejected) -> JSONResponse:
    errors = exc.errors
    for item in errors:
        if item["index"] is not None and not item["message"].startswith("record "):
            item["message"] = f"record {item['index']}: {item['message']}"
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_handler(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.detail == "There was an error parsing the body":
        item = error("the body is not valid JSON (it must be UTF-8 text)", "body", reason="json_invalid", loc=["body"])
        return JSONResponse({"detail": [item]}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return await http_exception_handler(request, exc)


async def _split_handler(request: Request, exc: splits.SplitError) -> JSONResponse:
    """No split can be made or read (an empty store, a day too few, an altered snapshot): 409, saying why."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


async def _dependency_handler(request: Request, exc: DependencyUnavailable) -> JSONResponse:
    """MLflow, the audit database or the object store did not answer: 503 naming it, never a 500 or a hang."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    detail = redact_secrets(str(exc), request.app.state.settings)
    return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def _os_error_handler(request: Request, exc: OSError) -> JSONResponse:
    """A write under VELOCAST_HOME that cannot be done: 507 for a full disk, 503 for read-only; else a 500."""
    message = write_failure(exc, request.app.state.settings.home)
    if message is None:
        return await _internal_handler(request, exc)
    log.error("%s %s: %s", request.method, request.url.path, message)
    code = status.HTTP_507_INSUFFICIENT_STORAGE if is_disk_full(exc) else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse({"detail": message}, status_code=code)


async def _internal_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"},
                        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


# ------------------------------------------------------------------------------ body size limit
class BodySizeLimitMiddleware:
    """Reject request bodies larger than ``max_bytes`` with a 413 (declared or streamed sizes)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _detail(self, size: int | None) -> str:
        told = f"{size:,} bytes >" if size is not None else "more than"
        return (f"request body too large: {told} the limit of {self.max_bytes:,} bytes "
                f"({self.max_bytes / 1024 / 1024:.4g} MB, VELOCAST_API_MAX_BODY_MB)")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._detail(int(declared))},
                                    status_code=status.HTTP_413_CONTENT_TOO_LARGE)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self._detail(None))
            return message

        await self.app(scope, limited_receive, send)


# ------------------------------------------------------------------------------ the app
def recover_at_start(settings: Settings) -> list[str]:
    """Undo promotions a killed process left half-done and repair killed trainings (runs in a thread).

    A failure (MLflow unreachable...) is logged: the next promotion or training runs the same repair.
    """
    done: list[str] = []
    for model_type in MODEL_TYPES:
        try:
            if promotion.recover(model_type, settings):
                done.append(f"{model_type}: an interrupted promotion was resolved")
        except Exception as exc:  # noqa: BLE001 - start-up goes on; the next write retries
            log.warning("start-up: promotion recovery of %s failed: %s", model_type, redact_secrets(str(exc), settings))
    try:
        done += reconcile(settings)
    except Exception as exc:  # noqa: BLE001
        log.warning("start-up: reconciling killed trainings failed: %s", redact_secrets(str(exc), settings))
    for line in done:
        log.warning("start-up: %s", line)
    return done


DOCS_STATIC = "/docs-static"


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from files the API serves itself, not from a CDN: a machine
    without internet access gets the interactive documentation too (the ``fastapi-offline`` package's
    copies of Swagger UI 5 and ReDoc)."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_STATIC, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
                                   swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js", with_google_fonts=False,
                              redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png")


def create_app(settings: Settings | None = None, *, config: ApiConfig | None = None) -> FastAPI:
    """The API over ``settings`` (default: from the environment) and ``config`` (default: VELOCAST_API_*)."""
    settings = settings or get_settings()
    config = config or ApiConfig.from_settings(settings)
    cache = ChampionCache(settings, config.model_refresh_seconds,
                          compile_wait_seconds=config.model_compile_wait_seconds)
    jobs = JobManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # libraries put URLs (with their passwords) in their errors: mask secrets in what this server logs
        stop_redacting = install_log_redaction(settings)
        if not key_configured(settings.api_key):
            log.warning("VELOCAST_API_KEY is not set: %s (train, evaluate, monitor, promote_champion and rollback "
                        "answer 503; read-only routes work)", DISABLED)
        log.info("velocast API %s: home %s, tracking %s, default model %s, champion re-checked every %gs",
                 __version__, settings.home, redact(settings.tracking_uri), config.default_model_type,
                 config.model_refresh_seconds)
        # off the request path: finish what killed processes left (promotion journals, trainings)
        threading.Thread(target=recover_at_start, args=(settings,), name="velocast-start-recovery",
                         daemon=True).start()
        cache.start(warm=(config.default_model_type,))
        jobs.start()  # jobs left running by a server that died are marked failed
        try:
            yield
        finally:
            app.state.metrics.mark_dead()
            cache.stop()
            jobs.shutdown()
            HeapSettler.release()
            stop_redacting()

    app = FastAPI(title="velocast API", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=[{"name": "predictions", "description": "Forecasts by the champion."},
                                {"name": "models", "description": "Registered models and champions."},
                                {"name": "lifecycle", "description": "Training, evaluation, drift, promotion, "
                                 "audit."},
                                {"name": "service", "description": "Health, readiness, metrics."}],
                  contact={"name": "velocast"}, license_info={"name": "MIT"}, docs_url=None, redoc_url=None)
    _offline_docs(app)
    # the store's counts in memory for the serving path: built (and rebuilt after an ingest) by the refresh
    # thread, so requests rarely wait for it
    history = store_history(settings)
    cache.background.append(history.current)

    def warm_served() -> None:  # after an ingest: every served model's recent errors, before requests need them
        version = store.version(settings)
        for served in cache.snapshot().values():
            if not adaptation_warm(served.model, settings, version):
                warm_adaptation(served.model, settings)

    cache.background.append(warm_served)
    settler = HeapSettler(lambda: (frozenset((key, served.version) for key, served in cache.snapshot().items()),
                                   history.current().version))
    cache.background.append(settler)
    app.state.heap = settler
    app.state.history = history
    app.state.settings = settings
    app.state.config = config
    app.state.cache = cache
    app.state.jobs = jobs
    app.state.counters = KnownCounters(settings)
    app.state.metrics = ApiMetrics(settings, cache, jobs, ready=lambda: readiness(cache, config.default_model_type))
    app.state.batcher = PredictBatcher(lambda key, groups: _predict_many(app.state, key, groups),
                                       lambda key, records: _predict_one(app.state, key, records),
                                       max_records=config.max_records)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(RecordsRejected, _rejected_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(DependencyUnavailable, _dependency_handler)
    app.add_exception_handler(splits.SplitError, _split_handler)
    app.add_exception_handler(OSError, _os_error_handler)
    app.add_exception_handler(Exception, _internal_handler)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    share = current_share()
    if share is not None:  # one of several workers: even out the connections they hold (velocast.api.workers)
        app.add_middleware(RebalanceMiddleware, share=share)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key"])
    return app


__all__ = ["create_app", "validation_items"]
