"""Pydantic models of every request and response of the HTTP API.

Records (``/predict``, ``/monitor``, ``/train``'s ``current_data``) accept the tidy English field
names of ``shared/data/paris`` or the French headers of the Paris open-data export, field by
field; the values are then converted with the ingest validation (``velocast.api.records``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from velocast.choices import (
    AUDIT_EVENTS,
    DATA_SOURCES,
    DEFAULT_DATA_SOURCE,
    ENVS,
    HORIZONS,
    JOB_RUNNERS,
    JOB_STATES,
    MODEL_TYPES,
)
from velocast.data.ingest import OPENDATA_COLUMNS, TIDY_COLUMNS
from velocast.lifecycle.audit import AuditEvent
from velocast.lifecycle.decisions.promotion import Promotion

# the closed sets of names, as declared once in velocast.choices
ModelType = Literal[MODEL_TYPES]
Horizon = Literal[HORIZONS]
DataSource = Literal[DATA_SOURCES]
Env = Literal[ENVS]
JobState = Literal[JOB_STATES]
JobRunner = Literal[JOB_RUNNERS]
AuditEventName = Literal[AUDIT_EVENTS]

# columns of the open-data export and of the tidy file that carry nothing a prediction needs:
# accepted in a record and ignored
IGNORED_FIELDS = frozenset({
    "Lien vers photo du site de comptage", "Identifiant technique compteur", "ID Photos",
    "test_lien_vers_photos_du_site_de_comptage_", "id_photo_1", "url_sites", "type_dimage", "mois_annee_comptage",
    "counter_technical_id", "log_bike_count",
})

def _id_text(value: Any) -> Any:
    """Identifiers may be numbers in the tidy parquet (``site_id``); booleans never are."""
    if isinstance(value, bool):
        raise PydanticCustomError("string_type", "Input should be a valid string identifier, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number, not a boolean")
    return value


IdText = Annotated[str, BeforeValidator(_id_text)]
Number = Annotated[float, BeforeValidator(_number)]


class PredictRecord(BaseModel):
    """One counter-hour, in tidy or open-data field names (one name per field, not both)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, str_strip_whitespace=True,
        json_schema_extra={"description": (
            "One counter-hour. Give `counter_id` (or `Identifiant du compteur`) and one of `timestamp` "
            "(ISO 8601; naive = Europe/Paris time), `date` (naive UTC, as in the tidy file) or "
            "`Date et heure de comptage` (ISO with offset, as in the open-data export). Coordinates are "
            "needed only for counters the store does not know. The open-data photo/url columns and the "
            "tidy `counter_technical_id`/`log_bike_count` are accepted and ignored; any other unknown "
            "field is an error.")},
    )

    # tidy names
    counter_id: IdText | None = Field(None, max_length=200, description="Counter identifier.",
                                      examples=["100057445-104057445"])
    counter_name: str | None = Field(None, max_length=500, examples=["Totem 73 boulevard de Sébastopol S-N"])
    site_id: IdText | None = Field(None, max_length=200, examples=["100057445"])
    site_name: str | None = Field(None, max_length=500, examples=["Totem 73 boulevard de Sébastopol"])
    timestamp: str | None = Field(None, max_length=64, description="ISO 8601 hour, a whole hour of Paris time; "
                                  "without offset it is Europe/Paris local time (the repeated autumn hour is then "
                                  "read as summer time, with a warning).", examples=["2021-08-10T08:00:00+02:00"])
    date: str | None = Field(None, max_length=64, description="Naive UTC hour (the tidy file's `date`).",
                             examples=["2021-08-10 06:00:00"])
    bike_count: Number | None = Field(None, description="Observed count (optional; >= 0). When given, "
                                      "metrics are returned.", examples=[112.0])
    latitude: Number | None = Field(None, description="WGS84, within Île-de-France.", examples=[48.83504])
    longitude: Number | None = Field(None, description="WGS84, within Île-de-France.", examples=[2.33314])
    installation_date: str | None = Field(None, max_length=64, examples=["2012-02-22"])
    counter_installation_date: str | None = Field(None, max_length=64, examples=["2012-02-22"])
    # open-data names
    fr_counter_id: IdText | None = Field(None, alias="Identifiant du compteur", max_length=200)
    fr_counter_name: str | None = Field(None, alias="Nom du compteur", max_length=500)
    fr_site_id: IdText | None = Field(None, alias="Identifiant du site de comptage", max_length=200)
    fr_site_name: str | None = Field(None, alias="Nom du site de comptage", max_length=500)
    fr_bike_count: Number | None = Field(None, alias="Comptage horaire")
    fr_timestamp: str | None = Field(None, alias="Date et heure de comptage", max_length=64,
                                     description="ISO 8601 with offset (naive = UTC, as the ingest reads it).")
    fr_installation_date: str | None = Field(None, alias="Date d'installation du site de comptage", max_length=64)
    fr_coordinates: str | None = Field(None, alias="Coordonnées géographiques", max_length=100,
                                       description='"lat,lon"', examples=["48.83504,2.33314"])
    # optional weather forecast of that hour (else the latest stored forecast issued by the end of the day before)
    temperature_c: Number | None = Field(None, ge=-60, le=60, description="°C (used with rain_mm: the weather of a "
                                         "record is used only when both are given)")
    humidity: Number | None = Field(None, ge=0, le=100, description="%")
    wind_ms: Number | None = Field(None, ge=0, le=100, description="m/s")
    cloud_cover: Number | None = Field(None, ge=0, le=100, description="%")
    rain_mm: Number | None = Field(None, ge=0, le=500, description="mm in the hour")

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if isinstance(data, dict) and IGNORED_FIELDS.intersection(data):
            return {k: v for k, v in data.items() if k not in IGNORED_FIELDS}
        return data

    @model_validator(mode="after")
    def _one_name_per_field(self) -> PredictRecord:
        problem = _names_problem(frozenset(self.given()))
        if problem is not None:
            raise PydanticCustomError(*problem)
        return self

    def given(self) -> dict[str, Any]:
        """The fields the client gave, under the names the client used (in the fields' order)."""
        values = self.__dict__
        names = [name for name in self.model_fields_set if values[name] is not None]
        if len(names) > 1:
            names.sort(key=_POSITION.__getitem__)
        return {_ALIAS[name]: values[name] for name in names}


def _names_problem(given: frozenset[str]) -> tuple[str, str, dict[str, str]] | None:
    """Why a record giving the fields ``given`` (the client's names) is refused: pydantic's error type,
    message template and context; None when it is not. Records of a request give the same few sets of
    names, so each set is judged once (``_NAME_PROBLEMS``)."""
    try:
        return _NAME_PROBLEMS[given]
    except KeyError:
        pass
    problem = None
    for canonical, names in _NAMES_BY_CANONICAL.items():
        used = [n for n in names if n in given]
        if len(used) > 1:
            problem = ("record_conflicting_fields", "give only one of {names} (got {used})",
                       {"field": used[-1], "names": " / ".join(repr(n) for n in names), "used": ", ".join(used)})
            break
        if not used and canonical in _REQUIRED:
            problem = ("record_missing_field", "field required: give {names}",
                       {"field": names[0], "names": " or ".join(repr(n) for n in names)})
            break
    if problem is None and "Coordonnées géographiques" in given and ("latitude" in given or "longitude" in given):
        problem = ("record_conflicting_fields",
                   "give either 'Coordonnées géographiques' or latitude/longitude, not both",
                   {"field": "Coordonnées géographiques"})
    if len(_NAME_PROBLEMS) >= 4096:
        _NAME_PROBLEMS.clear()
    _NAME_PROBLEMS[given] = problem
    return problem


_NAME_PROBLEMS: dict[frozenset[str], tuple[str, str, dict[str, str]] | None] = {}
_REQUIRED = ("counter_id", "timestamp")
# (python attribute, name in the JSON) of every record field
_KEYS = [(name, info.alias or name) for name, info in PredictRecord.model_fields.items()]
_ALIAS = dict(_KEYS)
_POSITION = {name: i for i, (name, _) in enumerate(_KEYS)}
# canonical field -> the record names that may carry it (the canonical name first)
_NAMES_BY_CANONICAL: dict[str, tuple[str, ...]] = {}
for _name, _canonical in [*TIDY_COLUMNS.items(), *OPENDATA_COLUMNS.items()]:
    if any(key == _name for _, key in _KEYS):
        _NAMES_BY_CANONICAL[_canonical] = _NAMES_BY_CANONICAL.get(_canonical, ()) + (_name,)
_NAMES_BY_CANONICAL = {c: tuple(sorted(names, key=lambda n: n != c)) for c, names in _NAMES_BY_CANONICAL.items()}

# Totem 73 boulevard de Sébastopol (a counter of the real file), 08:00 on the day after the file's last
# day: a day-ahead forecast from the counts up to 2021-08-09, as a client would ask for tomorrow.
TIDY_EXAMPLE = [
    {"counter_id": "100057445-104057445", "timestamp": "2021-08-10T08:00:00+02:00"},
    {"counter_id": "100057445-103057445", "date": "2021-08-10 06:00:00", "temperature_c": 18.5, "rain_mm": 0.0},
    {"counter_id": "999999999-1", "counter_name": "a new counter", "timestamp": "2021-08-10T08:00:00",
     "latitude": 48.8566, "longitude": 2.3522},
]
OPENDATA_EXAMPLE = [
    {"Identifiant du compteur": "100057445-104057445", "Nom du compteur": "Totem 73 boulevard de Sébastopol S-N",
     "Identifiant du site de comptage": "100057445", "Nom du site de comptage": "Totem 73 boulevard de Sébastopol",
     "Date et heure de comptage": "2021-08-10T09:00:00+02:00", "Coordonnées géographiques": "48.86377,2.35096",
     "mois_annee_comptage": "2021-08"},
]
# labelled rows (/train's current_data, /monitor): a real count of the file
LABELLED_EXAMPLE = [
    {"counter_id": "100057445-104057445", "date": "2021-08-09 06:00:00", "bike_count": 187.0},
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"records": TIDY_EXAMPLE, "model_type": "lgbm"},
        {"records": OPENDATA_EXAMPLE, "model_type": "lgbm", "horizon": "day-ahead"},
    ]})

    records: list[PredictRecord] = Field(min_length=1, description="Counter-hours to predict (at least one; at "
                                         "most VELOCAST_API_MAX_RECORDS, 20,000 by default).")
    model_type: ModelType | None = Field(None, description="Default: the server's default model type (lgbm).")
    horizon: Horizon | None = Field(None, description="Serve the latest model of this horizon when the champion "
                                    "has another one.")
    coverage: float | None = Field(None, ge=0.5, le=0.99, description="Central coverage of the prediction interval "
                                   "(`lower`, `upper`) of each record, between 0.5 and 0.99. Default: the server's "
                                   "VELOCAST_INTERVAL_COVERAGE (0.8: 80% of counts fall inside).")


class ErrorItem(BaseModel):
    """One problem of a request: which record (``index`` in the posted list) and which field."""

    index: int | None = Field(None, description="Position of the record in the posted list (None: the request).")
    field: str | None = Field(None, description="Field name as the client wrote it.")
    message: str
    reason: str | None = Field(None, description="Category (the ingest quarantine reasons, or pydantic's type).")
    loc: list[str | int] = Field(default_factory=list, description="Full location in the body.")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"index": 3, "field": "bike_count", "message": "negative bike_count: bike_count='-4.0': expected a count >= 0",
         "reason": "negative bike_count", "loc": ["records", 3, "bike_count"]}]})


class ValidationErrorResponse(BaseModel):
    detail: list[ErrorItem]


class ErrorResponse(BaseModel):
    detail: str = Field(examples=["no lgbm model is registered yet"])


class ModelUsed(BaseModel):
    model_type: str
    version: str | None
    uri: str
    run_id: str | None = None
    horizon: str
    champion: bool = Field(description="False when no champion exists and the latest version serves instead.")


class RecordPrediction(BaseModel):
    index: int = Field(description="Position of the record in the request.")
    counter_id: str
    timestamp: str = Field(description="The hour predicted, ISO 8601 in Europe/Paris time.")
    prediction: float = Field(description="Bikes in that hour (rf_class: 1 = busier than usual).")
    lower: float | None = Field(None, description="Lower bound of the prediction interval of the requested coverage "
                                "(never negative); None for rf_class and for a model without calibrated intervals.")
    upper: float | None = Field(None, description="Upper bound of the prediction interval of the requested coverage.")
    probability: float | None = Field(None, description="rf_class only: probability of a busy hour.")
    weather: str | None = Field(None, description="Where the hour's weather came from: `given` (in the record), "
                                "`forecast` (the latest weather forecast issued by the end of the day before) or "
                                "`missing` (predicted by the model's no-weather sibling).")
    warnings: list[str] = Field(default_factory=list, description="What the forecast could not know (history of "
                                "the day before, weather, a sensor outage), an unknown counter, an ambiguous hour.")


class PredictResponse(BaseModel):
    model: ModelUsed
    coverage: float | None = Field(None, description="Central coverage of every `lower`/`upper` of the answer "
                                   "(None when the model has no calibrated intervals).")
    predictions: list[RecordPrediction]
    warnings: list[str] = Field(default_factory=list, description="Warnings about the whole request.")
    metrics: dict[str, Any] | None = Field(None, description="Scores on the records that carried a count.")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": {"model_type": "lgbm", "version": "3", "uri": "models:/bike-traffic-lgbm/3",
                  "run_id": "0b5c...", "horizon": "day-ahead", "champion": True},
        "coverage": 0.8,
        "predictions": [{"index": 0, "counter_id": "100057445-104057445", "timestamp": "2021-08-10T08:00:00+02:00",
                         "prediction": 231.4, "lower": 178.0, "upper": 289.5, "probability": None,
                         "weather": "missing",
                         "warnings": ["no weather forecast for this hour: predicted by the model's no-weather "
                                      "sibling"]}],
        "warnings": [], "metrics": None}]})


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class ReadyResponse(BaseModel):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="ready (200); degraded (503: a dependency such as MLflow fails, the loaded model still "
                    "serves /predict); not_ready (503: no model can serve).")
    model_type: str
    model_version: str | None = None
    model_uri: str | None = None
    champion: bool | None = None
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)


class ModelVersionInfo(BaseModel):
    version: str
    run_id: str | None
    uri: str
    aliases: list[str] = Field(default_factory=list)
    created_at: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict, description="test_baseline_* (and test_current_*) "
                                      "metrics of the MLflow run.")


class ServedInfo(BaseModel):
    version: str | None
    uri: str
    champion: bool
    horizon: str
    loaded_at: str
    next_version: str | None = Field(
        default=None, description="A newer version this worker loaded, serving once its trees are compiled "
        "(VELOCAST_API_MODEL_COMPILE_WAIT_SECONDS at most); null when none waits.")


class ModelTypeInfo(BaseModel):
    model_type: str
    registered_name: str
    task: str
    description: str
    default_horizon: str
    champion: ModelVersionInfo | None
    previous_champion: str | None = None
    served: ServedInfo | None = Field(None, description="What /predict serves now for this type (if loaded).")
    versions: list[ModelVersionInfo] = Field(default_factory=list)


class ModelsResponse(BaseModel):
    models: dict[str, ModelTypeInfo]


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model_type": "lgbm", "data_source": "baseline", "env": "dev", "hyperparams": {"num_leaves": 31},
         "test_mode": True},
        {"model_type": "rf", "data_source": "reference", "env": "dev", "hyperparams": {"n_estimators": 50,
         "max_depth": 20}, "test_mode": False, "current_data": LABELLED_EXAMPLE},
    ]})

    model_type: ModelType = "lgbm"
    data_source: DataSource = Field(DEFAULT_DATA_SOURCE, description="What to train on: reference (default: "
                                    "train_baseline + train_current) | baseline | current; held-out test days "
                                    "never.")
    env: Env | None = Field(None, description="Environment recorded with the run and its audit row; default "
                            "the server's VELOCAST_ENV (dev).")
    hyperparams: dict[str, Any] = Field(default_factory=dict, description="Checked against the model type "
                                        "before the job is queued.")
    test_mode: bool = Field(False, description="Quick run on samples (1,000 training rows).")
    horizon: Horizon | None = None
    current_data: list[PredictRecord] | None = Field(None, min_length=1, description="Labelled recent rows: the first 80% "
                                                     "of their days join training, the latest 20% become "
                                                     "test_current.")


class TrainAccepted(BaseModel):
    job_id: str
    status: JobState
    model_type: str
    status_url: str
    runner: JobRunner = Field("api", description="Who trains: this API process, or an Airflow DAG "
                                              "run (VELOCAST_AIRFLOW_URL).")
    dag_run_id: str | None = None


class JobStatus(BaseModel):
    job_id: str
    status: JobState
    model_type: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    runner: JobRunner = "api"
    owner: str | None = Field(None, description="Host and pid of the process running the job (runner api).")
    heartbeat_at: str | None = None
    dag_id: str | None = None
    dag_run_id: str | None = None
    dag_run_state: str | None = Field(None, description="Last state read from Airflow (queued, running, success, "
                                      "failed).")
    dag_run_checked_at: str | None = None
    dag_run_error: str | None = Field(None, description="Why the DAG run's state could not be read just now "
                                      "(status then shows the last known state).")
    # when done (field names of the original system's summary)
    run_id: str | None = None
    model_uri: str | None = None
    registry_uri: str | None = None
    model_version: str | None = None
    metrics_train: dict[str, Any] | None = None
    metrics_baseline: dict[str, Any] | None = None
    metrics_current: dict[str, Any] | None = None
    double_evaluation_enabled: bool | None = None
    baseline_regression: bool | None = None
    deployment_decision: str | None = Field(None, description="double_eval policy: deploy | reject_regression | "
                                            "skip_no_improvement. The job never promotes.")
    decision_reasons: list[str] = Field(default_factory=list)
    decisions: dict[str, str] = Field(default_factory=dict, description="What every policy would decide.")
    compared_champion: str | None = Field(None, description="The champion version the job compared against "
                                          "(none: there was none): pass it as `expected_champion` to "
                                          "/promote_champion so the promotion is refused if the champion moved.")
    double_evaluation: dict[str, Any] | None = None
    hyperparams: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"model_type": "lgbm", "version": "2"}]})

    model_type: ModelType = "lgbm"
    version: IdText | None = Field(None, description="Registered version (default: the latest).")
    run_id: str | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> EvaluateRequest:
        if self.version is not None and self.run_id is not None:
            raise PydanticCustomError("conflicting_fields", "give version or run_id, not both", {"field": "run_id"})
        return self


class DecisionModel(BaseModel):
    kind: str
    policy: str
    reasons: list[str]
    baseline_regression: bool
    model_improvement: bool
    details: dict[str, Any] = Field(default_factory=dict)


class EvaluateResponse(BaseModel):
    double_evaluation: dict[str, Any]
    decisions: dict[str, DecisionModel]
    reports: dict[str, str] = Field(default_factory=dict, description="Report files, relative to the reports folder.")
    classifier_validation: dict[str, Any] | None = None


class MonitorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model_type": "lgbm", "window_days": 30},
        {"model_type": "lgbm", "records": LABELLED_EXAMPLE},
    ]})

    model_type: ModelType | None = None
    records: list[PredictRecord] | None = Field(None, min_length=1, description="Labelled rows (bike_count "
                                                "required) used as the current window.")
    window_days: int = Field(30, ge=1, le=366, description="Without records: the store's last N days.")


class MonitorResponse(BaseModel):
    model_type: str
    status: str
    drift_detected: bool | None
    drift_share: float | None
    verdict: dict[str, Any] = Field(description="The drift report (DriftReport.to_dict()).")
    report_name: str | None = None
    report_url: str | None = Field(None, description="The HTML report served by this API.")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model_type": "lgbm", "version": "3", "reason": "beats the champion on test_current"}]})

    model_type: ModelType
    version: IdText | None = None
    run_id: str | None = None
    reason: str = Field("", max_length=1000)
    force: bool = Field(False, description="Promote a test-mode or gate-failing version anyway (needs a reason; "
                                           "audited as an override).")
    expected_champion: IdText | None = Field(
        None, description="The champion version you compared against (`none`: no champion): the promotion is "
                          "refused with a 409 if the champion changed since (compare-and-swap).")

    @model_validator(mode="after")
    def _exactly_one_reference(self) -> PromoteRequest:
        if (self.version is None) == (self.run_id is None):
            raise PydanticCustomError("version_or_run_id", "give exactly one of version or run_id",
                                      {"field": "version"})
        return self


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model_type": "lgbm", "reason": "the new champion misbehaves"}]})

    model_type: ModelType
    reason: str = Field("", max_length=1000)
    force: bool = Field(False, description="Bring back a test-mode or gate-failing version anyway (needs a reason; "
                                           "audited as an override), as /promote_champion does.")


def model_of(cls: type, name: str, *, types: dict[str, Any] | None = None,
             descriptions: dict[str, str] | None = None, first: tuple[str, ...] = ()) -> type[BaseModel]:
    """A response model with the fields of the dataclass ``cls`` (the one declaration of that result).

    ``types``: a field's JSON type when it differs (a ``datetime`` sent as ISO text); ``first``: the
    fields listed first. A field without a plain default is required; lists and dicts default empty.
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    spec: dict[str, Any] = {}
    for field_name in [*first, *(n for n in by_name if n not in first)]:
        f, described = by_name[field_name], {"description": (descriptions or {}).get(field_name)}
        if f.default is not dataclasses.MISSING:
            default = Field(f.default, **described)
        elif f.default_factory in (list, dict):
            default = Field(default_factory=f.default_factory, **described)
        else:
            default = Field(..., **described)
        spec[field_name] = ((types or {}).get(field_name, hints[field_name]), default)
    return create_model(name, **spec)


PromotionResponse = model_of(Promotion, "PromotionResponse",
                             descriptions={"overridden": "What a forced promotion overrode."})
AuditEventModel = model_of(AuditEvent, "AuditEventModel", types={"timestamp": str}, first=AuditEvent.KEY_FIELDS)


class AuditResponse(BaseModel):
    count: int
    events: list[AuditEventModel]


class CounterInfo(BaseModel):
    counter_id: str
    counter_name: str | None = None
    site_id: str | None = None
    site_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    hours: int | None = None


class CountersResponse(BaseModel):
    count: int
    latest: str | None = Field(None, description="Latest stored hour (Europe/Paris)")
    counters: list[CounterInfo]


class CountValue(BaseModel):
    timestamp: str
    bike_count: float


class CountsResponse(BaseModel):
    counter_id: str
    start: str
    end: str
    counts: list[CountValue]


class DriftLatestResponse(BaseModel):
    model_type: str = Field(description="The model type whose latest drift check this is.")
    report: dict[str, Any] | None = Field(None, description="The latest drift verdict of that model type (null "
                                          "before any check)")
    checked_at: str | None = Field(None, description="When it was checked (ISO 8601, UTC).")
    report_url: str | None = Field(None, description="Its HTML report (relative to the API).")


class ChampionHealthResponse(BaseModel):
    model_type: str
    state: str = Field(description="ok | degraded | critical | unknown")
    rmse: float | None = None
    r2: float | None = None
    baseline_rmse: float | None = None
    baseline_r2: float | None = None
    drop: float | None = None
    rows: int
    period: str | None = None
    reasons: list[str]
    coverage: float | None = Field(None, description="Empirical coverage of the champion's prediction intervals on "
                                   "the recent days (outside nominal ± VELOCAST_COVERAGE_TOLERANCE: degraded).")
    nominal_coverage: float | None = None
    interval_width: float | None = Field(None, description="Mean width of those intervals (bikes per hour).")
