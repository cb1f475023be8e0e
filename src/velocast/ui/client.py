"""The one code path of the web UI: a small client over the library or over the HTTP API.

``LocalClient`` calls velocast's library (the store, the registry, ``predict_rows``...);
``ApiClient`` calls a running ``velocast serve`` with httpx (``VELOCAST_API_URL``, sending
``X-API-Key`` when ``VELOCAST_API_KEY`` is set). ``get_client()`` picks one from the settings.
The pages only talk to a ``Client``; neither client imports streamlit.

Every page answer has an API route (``/counters``, ``/counts``, ``/predict``, ``/models``,
``/audit``, ``/drift/latest``, ``/reports/drift/latest.html``, ``/monitor``, ``/champion_health``);
only an uploaded file is read locally before its rows are sent to ``/predict``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from velocast.config import PARIS_TZ, Settings, get_settings, redact
from velocast.data.schema import to_paris

if TYPE_CHECKING:
    from velocast.lifecycle.serving.predict import RowsToPredict

log = logging.getLogger(__name__)

# prediction requests sent to the API are split into chunks of this many records
API_CHUNK = 5_000
# how long a LocalClient serves a loaded model before re-checking which version is champion
MODEL_RECHECK_SECONDS = 15.0


class ClientError(RuntimeError):
    """The request could not be served (the API answered an error, or is unreachable)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the API's HTTP status, when it answered


class NoModelError(ClientError):
    """No model of that type can serve yet; the message says which command to run."""


@dataclass
class ModelInfo:
    """One registered model version (or the model that served a prediction)."""

    model_type: str
    version: str | None
    uri: str
    run_id: str | None = None
    champion: bool = False
    horizon: str | None = None
    aliases: list[str] = field(default_factory=list)
    created_at: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        version = f"v{self.version}" if self.version else self.uri
        role = "champion" if self.champion else "latest version, not champion"
        return f"{self.model_type} {version} ({role})"

    def baseline_metric(self, name: str) -> float | None:
        value = self.metrics.get(f"test_baseline_{name}")
        return None if value is None else float(value)


@dataclass
class ModelTypeOverview:
    model_type: str
    champion: ModelInfo | None
    previous_champion: str | None
    versions: list[ModelInfo] = field(default_factory=list)


@dataclass
class PredictResult:
    # the rows given + ``prediction`` (``probability`` for rf_class; ``lower``/``upper`` for regressors),
    # ``weather_source``, ``notes``
    frame: pd.DataFrame
    model: ModelInfo
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    coverage: float | None = None  # of ``lower``/``upper`` (None: the model has no calibrated intervals)


@dataclass
class BatchInput:
    """An uploaded table, read like ``velocast predict`` reads a file (``bike_count`` optional)."""

    name: str
    read: RowsToPredict

    @property
    def format(self) -> str:
        return self.read.raw.format

    @property
    def accepted(self) -> pd.DataFrame:
        """Canonical rows, with the weather columns the file carries."""
        return self.read.rows

    @property
    def rejected(self) -> pd.DataFrame:  # source_row, the file's columns, reason, detail
        return self.read.checked.rejected

    @property
    def rows_read(self) -> int:
        return self.read.checked.rows_read

    def rejected_by_reason(self) -> dict[str, int]:
        return self.read.checked.rejected_by_reason()

    def output(self, result: PredictResult) -> pd.DataFrame:
        """The accepted rows with their original columns, plus the forecast columns (``velocast predict``'s)."""
        return self.read.output(result.frame, result.coverage)


def no_model_message(model_type: str) -> str:
    return (f"No {model_type} model is registered yet: run `velocast train --model-type {model_type}` "
            f"(then `velocast promote --model-type {model_type} --version 1` to make it the champion).")


def _naive_day(day: Any) -> pd.Timestamp:
    """Midnight of ``day`` as a naive (Europe/Paris wall-clock) timestamp."""
    return to_paris(day, naive="paris").tz_localize(None).normalize()


def day_rows(counter: pd.Series | dict[str, Any], day: Any, temperature_c: float | None = None,
             rain_mm: float | None = None) -> pd.DataFrame:
    """One canonical row per hour of ``day`` (Europe/Paris) for one counter, without counts.

    ``temperature_c`` / ``rain_mm`` replace the stored weather for every hour when given.
    """
    local = _naive_day(day)
    # between two local midnights: DST days have 23 or 25 hours
    hours = pd.date_range(local.tz_localize(PARIS_TZ), (local + timedelta(days=1)).tz_localize(PARIS_TZ),
                          freq="h", inclusive="left")
    rows = pd.DataFrame({
        "counter_id": str(counter["counter_id"]), "counter_name": counter.get("counter_name"),
        "site_id": counter.get("site_id"), "site_name": counter.get("site_name"), "timestamp": hours,
        "bike_count": np.nan, "latitude": float(counter["latitude"]), "longitude": float(counter["longitude"]),
        "installation_date": pd.to_datetime(counter.get("installation_date")),
    })
    rows["installation_date"] = rows["installation_date"].astype("datetime64[ns]")
    if temperature_c is not None:
        rows["temperature_c"] = float(temperature_c)
    if rain_mm is not None:
        rows["rain_mm"] = float(rain_mm)
    return rows


class Client(ABC):
    """What the pages may ask for. ``source`` says where the answers come from."""

    source: str = ""
    notes: list[str]

    # ---------------------------------------------------------------- data
    @abstractmethod
    def counters(self) -> pd.DataFrame:
        """One row per counter (``velocast.data.store.counters`` columns); empty without data."""

    @abstractmethod
    def counts(self, counter_id: str, day: Any) -> pd.DataFrame:
        """Stored counts of one counter on one day (Europe/Paris); empty when the store has none."""

    @abstractmethod
    def latest_timestamp(self) -> pd.Timestamp | None:
        """The latest stored hour, or None without data."""

    def validate_upload(self, name: str, content: bytes) -> BatchInput:
        """Read an uploaded CSV/parquet (tidy or open-data, ``;`` or ``,``) and validate its rows.

        Raises ``velocast.data.ingest.IngestError`` when the file cannot be read at all.
        """
        from velocast.data.ingest import IngestError
        from velocast.lifecycle.serving.predict import read_rows_to_predict

        suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in {".csv", ".parquet", ".pq"} else ".csv"
        with tempfile.TemporaryDirectory(prefix="velocast-upload-") as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(content)
            try:
                read = read_rows_to_predict(path, known_counters=self.counters())
            except IngestError as exc:  # said of the file the user uploaded, in the page's terms
                message = str(exc).replace(str(path), name).replace(
                    "Use --mapping FILE for other tables.", "This page reads those two formats.")
                raise IngestError(message) from None
        batch = BatchInput(name, read)
        log.info("upload %s (%s): %d rows, %d accepted, %d rejected", name, batch.format, batch.rows_read,
                 len(read.checked.accepted), len(batch.rejected))
        return batch

    # ---------------------------------------------------------------- predictions
    @abstractmethod
    def predict(self, rows: pd.DataFrame, model_type: str = "lgbm", coverage: float | None = None) -> PredictResult:
        """Predict canonical rows with the champion of ``model_type`` (else its latest version).

        Regression forecasts carry ``lower``/``upper``, the interval of central ``coverage``
        (default: the server's or the settings' ``VELOCAST_INTERVAL_COVERAGE``).
        """

    # ---------------------------------------------------------------- models
    @abstractmethod
    def overview(self) -> dict[str, ModelTypeOverview]:
        """Champion, previous champion and versions (with metrics) of every model type."""

    @abstractmethod
    def history(self, model_type: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Promotions and rollbacks, newest first (``AuditEvent.to_dict`` form)."""

    @abstractmethod
    def audit(self, limit: int = 50, event: str | None = None, model_type: str | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first (``AuditEvent.to_dict`` form)."""

    # ---------------------------------------------------------------- monitoring
    @abstractmethod
    def latest_drift(self, model_type: str = "lgbm") -> dict[str, Any] | None:
        """The latest drift check of ``model_type`` (``{"checked_at", "html", "report": DriftReport.to_dict()}``)."""

    @abstractmethod
    def drift_report_html(self, model_type: str = "lgbm") -> bytes | None:
        """The evidently HTML of the latest drift check, if one was written."""

    @abstractmethod
    def run_drift_check(self, model_type: str = "lgbm", window_days: int = 30) -> dict[str, Any]:
        """Check drift now (writes a new report); returns the verdict."""

    @abstractmethod
    def champion_health(self, model_type: str = "lgbm", days: int = 7) -> dict[str, Any]:
        """``HealthReport.to_dict`` of the champion on the latest labelled days."""


# ==================================================================================== library
def _model_info(ref: Any, champion: bool, horizon: str | None = None) -> ModelInfo:
    created = datetime.fromtimestamp(ref.created_at / 1000, UTC).isoformat() if ref.created_at else None
    return ModelInfo(model_type=ref.model_type, version=ref.version, uri=ref.uri, run_id=ref.run_id,
                     champion=champion, horizon=horizon or ref.tags.get("horizon"), aliases=list(ref.aliases),
                     created_at=created, metrics={k: float(v) for k, v in ref.metrics.items()})


class LocalClient(Client):
    """Answers from the library, in this process (the embedded default)."""

    def __init__(self, settings: Settings | None = None, model_recheck_seconds: float = MODEL_RECHECK_SECONDS):
        self.settings = settings or get_settings()
        self.source = f"library (home {self.settings.home})"
        self.notes = []
        self.model_recheck_seconds = model_recheck_seconds
        self._champions: Any = None

    # data
    def counters(self) -> pd.DataFrame:
        from velocast.data import store

        return store.counters(self.settings)

    def counts(self, counter_id: str, day: Any) -> pd.DataFrame:
        from velocast.data import store

        start = _naive_day(day)
        return store.query_counts(start, start + timedelta(days=1), counter_ids=[str(counter_id)],
                                  settings=self.settings)

    def latest_timestamp(self) -> pd.Timestamp | None:
        from velocast.data import store

        return store.latest_timestamp(self.settings)

    # predictions
    def _served(self, model_type: str) -> Any:
        """What serves (``velocast.lifecycle.decisions.champion.ChampionCache``, as in the API): the champion, else a
        version that may stand in, reloaded only when it changed; a registry that does not answer leaves
        the loaded model serving."""
        from velocast.errors import DependencyUnavailable
        from velocast.lifecycle.decisions import champion

        try:
            return self.champions.get(model_type)
        except champion.NoModelError as exc:
            raise NoModelError(no_model_message(model_type) if "registered yet" in str(exc) else str(exc)) from exc
        except DependencyUnavailable as exc:
            raise ClientError(str(exc)) from exc
        except Exception as exc:  # a missing extra (torch for nn), a broken artifact...
            raise ClientError(f"cannot load the {model_type} model: {type(exc).__name__}: {exc}") from exc

    @property
    def champions(self) -> Any:
        """The ``ChampionCache`` of this client (made on first use: it imports MLflow)."""
        if self._champions is None:
            from velocast.lifecycle.decisions.champion import ChampionCache

            # no lleaves compilation here: the UI predicts a day at a time, LightGBM serves it
            self._champions = ChampionCache(self.settings, refresh_seconds=self.model_recheck_seconds,
                                            compile_models=False)
        return self._champions

    def predict(self, rows: pd.DataFrame, model_type: str = "lgbm", coverage: float | None = None) -> PredictResult:
        from velocast.lifecycle.serving.predict import predict_rows

        served = self._served(model_type)
        model = served.model
        try:
            result = predict_rows(rows.reset_index(drop=True), model, self.settings, coverage)
        except (LookupError, ValueError) as exc:
            raise ClientError(f"{model.uri} cannot predict these rows: {exc}") from exc
        info = _model_info(model.ref, served.champion, model.horizon) if model.ref else \
            ModelInfo(model_type, None, model.uri, horizon=model.horizon)
        return PredictResult(result.frame, info, [*served.warnings, *result.warnings], result.metrics, result.coverage)

    # models
    def overview(self) -> dict[str, ModelTypeOverview]:
        from velocast.lifecycle.decisions.champion import overview

        out = {}
        for model_type, types in overview(self.champions.registry, all_metrics=True).items():
            version = types.champion.version if types.champion else None
            infos = [_model_info(ref, ref.version == version) for ref in types.versions]
            current = next((i for i in infos if i.champion), None)
            out[model_type] = ModelTypeOverview(model_type, current, types.previous_champion, infos)
        return out

    def history(self, model_type: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        from velocast.lifecycle.decisions.promotion import history

        return [e.to_dict() for e in history(model_type, self.settings, limit=limit)]

    def audit(self, limit: int = 50, event: str | None = None, model_type: str | None = None) -> list[dict[str, Any]]:
        from velocast.lifecycle.audit import AuditLog

        return [e.to_dict() for e in AuditLog(settings=self.settings).list(limit=limit, event=event,
                                                                            model_type=model_type)]

    # monitoring
    def latest_drift(self, model_type: str = "lgbm") -> dict[str, Any] | None:
        from velocast.lifecycle.decisions.monitor import latest_drift

        return latest_drift(self.settings, model_type)

    def drift_report_html(self, model_type: str = "lgbm") -> bytes | None:
        latest = self.latest_drift(model_type) or {}
        path = Path(latest["html"]) if latest.get("html") else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def run_drift_check(self, model_type: str = "lgbm", window_days: int = 30) -> dict[str, Any]:
        from velocast.data.splits import SplitError
        from velocast.lifecycle.decisions.monitor import check_drift

        try:
            return check_drift(model_type, window_days=window_days, settings=self.settings).to_dict()
        except SplitError as exc:  # nothing to compare with yet (an empty store): said like the API's 409
            raise ClientError(f"no drift check possible: {exc}", 409) from exc

    def champion_health(self, model_type: str = "lgbm", days: int = 7) -> dict[str, Any]:
        from velocast.lifecycle.decisions.monitor import champion_health

        return champion_health(model_type, days=days, settings=self.settings).to_dict()


# ==================================================================================== HTTP API
def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Canonical rows as ``/predict`` records (tidy names; ISO timestamps with their offset)."""
    columns = [c for c in ("counter_id", "counter_name", "site_id", "site_name", "bike_count", "latitude",
                           "longitude", "temperature_c", "rain_mm", "humidity", "wind_ms", "cloud_cover")
               if c in rows]
    out = []
    stamps = [t.isoformat() for t in rows["timestamp"]]
    for stamp, values in zip(stamps, rows[columns].to_dict(orient="records")):
        record: dict[str, Any] = {"timestamp": stamp}
        for key, value in values.items():
            if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
                continue
            record[key] = str(value) if key in ("counter_id", "counter_name", "site_id", "site_name") else float(value)
        out.append(record)
    return out


def _api_model(payload: dict[str, Any], model_type: str, champion: bool) -> ModelInfo:
    return ModelInfo(model_type=model_type, version=payload.get("version"), uri=payload["uri"],
                     run_id=payload.get("run_id"), champion=champion, horizon=payload.get("tags", {}).get("horizon"),
                     aliases=payload.get("aliases", []), created_at=payload.get("created_at"),
                     metrics=payload.get("metrics", {}))


class ApiClient(Client):
    """Answers from a velocast HTTP API (``velocast serve``)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 settings: Settings | None = None, http: Any = None):
        """``http``: an ``httpx.Client`` to use instead of a new one (e.g. FastAPI's ``TestClient``)."""
        import httpx

        self.base_url = base_url.rstrip("/")
        self.http = http if http is not None else httpx.Client(base_url=self.base_url, timeout=timeout)
        if api_key:
            self.http.headers["X-API-Key"] = api_key
        self.source = f"API {self.base_url}"
        self.local = LocalClient(settings)  # only to read uploaded files (validation happens in the API too)
        self.notes = []

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"the API at {self.base_url} cannot be reached ({type(exc).__name__}: {exc})") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail", body) if isinstance(body, dict) else body
            except ValueError:
                detail = response.text[:500]
            if isinstance(detail, list):  # 422: one item per problem
                detail = "; ".join(str(d.get("message", d)) if isinstance(d, dict) else str(d) for d in detail)
            raise ClientError(f"{method} {path} answered {response.status_code}: {detail}", response.status_code)
        return response

    # data: GET /counters, GET /counts
    def counters(self) -> pd.DataFrame:
        body = self._call("GET", "/counters").json()
        table = pd.DataFrame(body["counters"])
        for column in ("first_seen", "last_seen"):
            if column in table:
                table[column] = pd.to_datetime(table[column], utc=True).dt.tz_convert(PARIS_TZ)
        return table

    def counts(self, counter_id: str, day: Any) -> pd.DataFrame:
        start = _naive_day(day)
        body = self._call("GET", "/counts", params={"counter_id": str(counter_id), "start": start.date().isoformat(),
                                                    "end": (start + timedelta(days=1)).date().isoformat()}).json()
        frame = pd.DataFrame(body["counts"], columns=["timestamp", "bike_count"])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_convert(PARIS_TZ)
        frame["counter_id"] = str(counter_id)
        return frame

    def latest_timestamp(self) -> pd.Timestamp | None:
        latest = self._call("GET", "/counters").json().get("latest")
        return pd.Timestamp(latest).tz_convert(PARIS_TZ) if latest else None

    # predictions: POST /predict
    def predict(self, rows: pd.DataFrame, model_type: str = "lgbm", coverage: float | None = None) -> PredictResult:
        rows = rows.reset_index(drop=True)
        records = _records(rows)
        predictions = np.full(len(rows), np.nan)
        probabilities = np.full(len(rows), np.nan)
        bounds = {"lower": np.full(len(rows), np.nan), "upper": np.full(len(rows), np.nan)}
        served_coverage = None
        weather = np.full(len(rows), None, dtype=object)
        notes = np.full(len(rows), "", dtype=object)
        warnings: list[str] = []
        model: dict[str, Any] | None = None
        metrics = None
        # the API scores the counts of each request on its own: labelled rows go in one request when they can
        labelled = "bike_count" in rows and rows["bike_count"].notna().any()
        size = max(API_CHUNK, self.local.settings.api_max_records) if labelled else API_CHUNK
        if labelled and len(records) > size:
            warnings.append(f"no scores: the {len(records):,} rows exceed the {size:,} records the API scores in one "
                            "request (VELOCAST_API_MAX_RECORDS); `velocast predict` scores a file of any size")
        for start in range(0, len(records), size):
            chunk = records[start:start + size]
            request = {"records": chunk, "model_type": model_type, **({"coverage": coverage} if coverage else {})}
            try:
                body = self._call("POST", "/predict", json=request).json()
            except ClientError as exc:
                if exc.status == 503:  # no model of that type registered on the server
                    raise NoModelError(f"{exc}. {no_model_message(model_type)}", exc.status) from exc
                raise
            model = body["model"]
            served_coverage = body.get("coverage")
            for item in body["predictions"]:
                predictions[start + item["index"]] = item["prediction"]
                for bound, values in bounds.items():
                    if item.get(bound) is not None:
                        values[start + item["index"]] = item[bound]
                if item.get("probability") is not None:
                    probabilities[start + item["index"]] = item["probability"]
                weather[start + item["index"]] = item.get("weather")
                notes[start + item["index"]] = "; ".join(item.get("warnings") or [])
            warnings.extend(w for w in body.get("warnings", []) if w not in warnings)
            metrics = body.get("metrics") if len(records) <= size else None
        if model is None:
            raise ClientError("no rows to predict")
        frame = rows.copy()
        frame["prediction"] = predictions
        if np.isfinite(probabilities).any():
            frame["probability"] = probabilities
        else:
            frame["lower"], frame["upper"] = bounds["lower"], bounds["upper"]
        frame["weather_source"], frame["notes"] = weather, notes
        info = ModelInfo(model_type=model["model_type"], version=model.get("version"), uri=model["uri"],
                         run_id=model.get("run_id"), champion=bool(model.get("champion")), horizon=model.get("horizon"))
        return PredictResult(frame, info, warnings, metrics, served_coverage)

    # models: GET /models, GET /audit
    def overview(self) -> dict[str, ModelTypeOverview]:
        body = self._call("GET", "/models", params={"all_metrics": "true"}).json()
        out = {}
        for model_type, info in body["models"].items():
            champion = info.get("champion")
            version = champion["version"] if champion else None
            versions = [_api_model(v, model_type, v["version"] == version) for v in info.get("versions", [])]
            for v in versions:  # /models gives metrics for the champion only
                if v.champion and champion:
                    v.metrics = {**champion.get("metrics", {}), **v.metrics}
            out[model_type] = ModelTypeOverview(model_type, _api_model(champion, model_type, True) if champion else None,
                                                info.get("previous_champion"), versions)
        return out

    def history(self, model_type: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        events = []
        for event in ("promotion", "rollback"):
            events += self.audit(limit=limit, event=event, model_type=model_type)
        return sorted(events, key=lambda e: e["timestamp"], reverse=True)[:limit]

    def audit(self, limit: int = 50, event: str | None = None, model_type: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"event": event} if event else {}), **({"model_type": model_type} if model_type else {})}
        return self._call("GET", "/audit", params=params).json()["events"]

    # monitoring: GET /drift/latest, GET /reports/drift/{name}.html, POST /monitor, GET /champion_health
    def latest_drift(self, model_type: str = "lgbm") -> dict[str, Any] | None:
        body = self._call("GET", "/drift/latest", params={"model_type": model_type}).json()
        if not body.get("report"):
            return None
        return {"report": body["report"], "html": body.get("report_url"), "checked_at": body.get("checked_at")}

    def drift_report_html(self, model_type: str = "lgbm") -> bytes | None:
        url = (self.latest_drift(model_type) or {}).get("html")
        if not url:
            return None
        try:
            return self._call("GET", url).content
        except ClientError as exc:
            if exc.status == 404:  # no drift report written yet
                return None
            raise

    def run_drift_check(self, model_type: str = "lgbm", window_days: int = 30) -> dict[str, Any]:
        body = self._call("POST", "/monitor", json={"model_type": model_type, "window_days": window_days}).json()
        return {**body["verdict"], "reports": {"html": body.get("report_url")}}

    def champion_health(self, model_type: str = "lgbm", days: int = 7) -> dict[str, Any]:
        return self._call("GET", "/champion_health", params={"model_type": model_type, "days": days}).json()


def get_client(settings: Settings | None = None) -> Client:
    """``ApiClient`` when ``VELOCAST_API_URL`` is set, else ``LocalClient``."""
    settings = settings or get_settings()
    if settings.api_url:
        log.info("web UI calls the API at %s", redact(settings.api_url))
        return ApiClient(settings.api_url, settings.api_key, settings=settings)
    return LocalClient(settings)


def content_key(content: bytes) -> str:
    return hashlib.sha1(content, usedforsecurity=False).hexdigest()  # a cache key for an upload, not a secret


__all__ = ["ApiClient", "BatchInput", "Client", "ClientError", "LocalClient", "ModelInfo", "ModelTypeOverview",
           "NoModelError", "PredictResult", "day_rows", "get_client", "no_model_message"]
