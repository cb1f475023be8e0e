"""One Settings object for the whole of velocast.

Every field can be set by an environment variable (``VELOCAST_<FIELD>``, plus the standard
``MLFLOW_TRACKING_URI``). Everything velocast writes lives under ``VELOCAST_HOME`` unless a
field points elsewhere, so a laptop needs no server at all.
"""

from __future__ import annotations

import logging
import os
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from velocast.choices import ENVS

PARIS_TZ = "Europe/Paris"
# Paris (Hôtel de Ville), the five variables velocast maps to its weather columns, three days ahead
DEFAULT_WEATHER_FORECAST_URL = (
    "https://api.open-meteo.com/v1/forecast?latitude=48.8566&longitude=2.3522"
    "&hourly=temperature_2m,precipitation,wind_speed_10m,cloud_cover,relative_humidity_2m"
    "&timezone=Europe%2FParis&forecast_days=3"
)

MASK = "***"
# query parameters that carry credentials (database URLs, pre-signed URLs, webhooks...)
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)


def redact(url: str | None, keep_path: bool = True) -> str | None:
    """``url`` fit for a log line: its password (and credential-like query values) replaced by ``***``.

    ``postgresql://velocast:s3cret@db:5432/audit`` -> ``postgresql://velocast:***@db:5432/audit``.
    ``keep_path=False`` also hides the path, for URLs whose path is the secret (Discord/Slack
    webhooks): ``https://discord.com/api/webhooks/1/abc`` -> ``https://discord.com/***``. Text that
    is not a URL (a file path, ``sqlite:///...``) comes back unchanged.
    """
    if not url or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        if not parts.netloc:  # sqlite:////path, file:///path: a local file, nothing secret
            return url
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
        query = urlencode([(k, MASK if _SECRET_PARAMS.search(k) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        path = parts.path if keep_path or not parts.path.strip("/") else f"/{MASK}"
        if (netloc, path) == (parts.netloc, parts.path) and query == parts.query:
            return url  # nothing to hide: exactly as given
        return urlunsplit((parts.scheme, netloc, path, query, "" if not keep_path else parts.fragment))
    except ValueError:  # not parseable as a URL: show nothing of it
        return f"{url.split('://', 1)[0]}://{MASK}"


# a password in any URL of a text: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
# credentials velocast never gets as a Settings field but libraries read from the environment
_SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "PGPASSWORD")


def secrets_of(settings: Settings | None) -> list[str]:
    """The secret strings of ``settings`` and of the environment (longest first)."""
    found: set[str] = {os.environ[name] for name in _SECRET_ENV if os.environ.get(name)}
    if settings is not None:
        for name in _SECRET_FIELDS:
            if getattr(settings, name, None):
                found.add(getattr(settings, name))
        for name in _URL_FIELDS:
            url = getattr(settings, name, None)
            if not url or "://" not in url:
                continue
            try:
                parts = urlsplit(url)
                if parts.password:
                    found.add(parts.password)
                found.update(v for k, v in parse_qsl(parts.query) if _SECRET_PARAMS.search(k) and v)
            except ValueError:
                found.add(url)
            if name == "webhook_url" and urlsplit(url).path.strip("/"):
                found.add(urlsplit(url).path)  # a webhook's path is its token
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def redact_secrets(text: str, settings: Settings | None = None) -> str:
    """``text`` (an error message, a log line) without URL passwords and without the configured secrets."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    for secret in secrets_of(settings):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in every record it lets through (message and traceback)."""

    def __init__(self, settings: Settings | None = None):
        super().__init__("velocast-redaction")
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_secrets(message, self.settings)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text, self.settings)
            record.exc_info = None  # the redacted text is what handlers print
        return True


def install_log_redaction(settings: Settings | None = None,
                          loggers: tuple[str, ...] = ("", "velocast", "uvicorn", "uvicorn.error")) -> Callable[[], None]:
    """Add a ``RedactingFilter`` to the handlers of ``loggers``; return a function that removes it."""
    redacting = RedactingFilter(settings)
    handlers = {h for name in loggers for h in logging.getLogger(name).handlers}
    for handler in handlers:
        handler.addFilter(redacting)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(redacting)
    return remove


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _database_url_problem(url: str | None) -> str | None:
    """``url`` if velocast can open a database there: a SQLAlchemy URL whose driver is installed and, for
    SQLite, whose folder exists (a typo must not start a second, empty audit log elsewhere)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except Exception as exc:  # noqa: BLE001 - any parse or driver error is the same answer
        raise ValueError(f"a SQLAlchemy database URL with an installed driver (sqlite:///path, "
                         f"postgresql+psycopg://...): {type(exc).__name__}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise ValueError(f"a SQLite file in an existing folder ({folder} does not exist)")
    return url


def _level_name(value: Any) -> Any:
    """A logging level in any case (``info``); anything else as given, for the error to show."""
    return value.upper() if isinstance(value, str) and value.upper() in LOG_LEVELS else value


class Settings(BaseSettings):
    """velocast configuration, read from the environment each time it is built."""

    model_config = SettingsConfigDict(env_prefix="VELOCAST_", extra="ignore")

    home: Path = Field(default=Path(".velocast"), description="Root folder of everything velocast writes.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "VELOCAST_MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; default: a SQLite file in the velocast home.",
    )
    summary_uri: str | None = Field(
        default=None,
        description="Location of summary.json (local path or fsspec URI such as s3://bucket/summary.json).",
    )
    store_uri: str | None = Field(
        default=None,
        description="Where the counts live: unset = Parquet by month under the velocast home; "
        "'delta:<path or s3://bucket/prefix>' = a Delta Lake table (transactional, for writers on several hosts).",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Dask scheduler address (tcp://host:8786) that `velocast train --backend dask` and the DAGs' "
        "training use; unset = train in the calling process.",
    )
    audit_url: Annotated[str | None, AfterValidator(_database_url_problem)] = Field(
        default=None, description="SQLAlchemy URL of the audit log; default: SQLite in the velocast home."
    )
    events_file: Path | None = Field(
        default=None, description="Events calendar (YAML); default: the one shipped with velocast."
    )
    api_key: str | None = Field(default=None, description="Key required in X-API-Key by mutating API routes.")
    api_url: str | None = Field(default=None, description="When set, the web UI calls this API instead of the library.")
    webhook_url: str | None = Field(default=None, description="Discord/Slack-compatible webhook for decisions.")
    experiment_name: str = Field(default="velocast", description="MLflow experiment used by training runs.")
    env: Literal[ENVS] = Field(
        default="dev", description="Environment recorded with every run and decision (summary.json, the audit log): "
        "train, cycle, retrain, simulate and API jobs use it unless told otherwise.")
    r2_baseline_threshold: float = Field(
        default=0.60, le=1.0, description="Minimum challenger R² on test_baseline before any deployment (R² is at most 1)."
    )
    health_rmse_threshold: float = Field(
        default=50.0, gt=0, description="Champion RMSE above which its health is critical."
    )
    outage_min_zero_hours: int = Field(
        default=24, ge=2, description="Consecutive zero hours of one counter that make a sensor outage: left out "
        "of training and scores, read as unknown history.")
    degraded_day_share: float = Field(
        default=0.2, ge=0, lt=1, description="A counter-day whose total is below this share of what the counter "
        "usually counts given the city that day is a degraded sensor day, left out of training (0: never).")
    decision_weather: Literal["auto", "with", "without"] = Field(
        default="auto", description="Weather a champion decision is judged with: 'with' (forecasts, else observed "
        "weather as a perfect forecast), 'without', or 'auto' ('with' once weather forecasts are stored).")
    interval_coverage: float = Field(
        default=0.8, ge=0.5, le=0.99, description="Central coverage of the prediction intervals served and scored "
        "when a request names none (0.8: 80% of counts fall between lower and upper).")
    coverage_tolerance: float = Field(
        default=0.10, gt=0, lt=0.5, description="Band around the nominal coverage an empirical coverage should stay "
        "in (0.8 ± 0.10); outside it, champion health is degraded.")
    interval_calibration_days: int = Field(
        default=28, ge=1, le=366, description="Latest whole days the prediction intervals are calibrated on: of "
        "the training period at training (the point model is fitted on the days before them), the newest "
        "labelled days unseen by the champion at recalibration.")
    interval_adapt_days: int = Field(
        default=14, ge=0, le=366, description="Labelled days before a forecast day, after the model's calibration, "
        "whose errors (as served) adapt each counter's interval for that day; 0: intervals as calibrated.")
    bias_correction_days: int = Field(
        default=3, ge=0, le=366, description="Labelled days before a forecast day, after the model's calibration, "
        "whose errors (as served) correct each counter's day-ahead prediction for that day (its recent level bias); "
        "0: predictions as the model makes them.")
    log_level: Annotated[Literal[LOG_LEVELS], BeforeValidator(_level_name)] = \
        Field(default="WARNING", description="Logging level of the CLI and servers (-v: INFO).")
    api_max_body_mb: float = Field(default=20.0, gt=0, description="Larger API request bodies get a 413.")
    api_cors_origins: str = Field(default="", description="Comma-separated CORS origins; CORS is off when empty.")
    api_model_refresh_seconds: float = Field(default=2.0, ge=0, description="How often the API re-reads the champion alias.")
    api_model_compile_wait_seconds: float = Field(
        default=300.0, ge=0,
        description="Longest the API keeps serving the old champion while the new one's trees compile with lleaves.")
    api_max_records: int = Field(default=20_000, ge=1, description="Most records in one /predict, /monitor or /train request.")
    api_default_model_type: str = Field(default="lgbm", description="Model type of /ready and of requests naming none.")
    weather_forecast_url: str = Field(
        default=DEFAULT_WEATHER_FORECAST_URL,
        description="Open-Meteo forecast request (URL with its query) fetched by `velocast data fetch-weather-forecast`.",
    )
    weather_forecast_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect/read timeout of one weather-forecast request.")
    opendata_url: str = Field(default="https://opendata.paris.fr/api/explore/v2.1",
                              description="Base URL of the Opendatasoft Explore API v2.1 of the open-data portal.")
    opendata_dataset: str = Field(default="comptage-velo-donnees-compteurs",
                                  description="Dataset of hourly counts on the open-data portal.")
    opendata_overlap_hours: float = Field(
        default=48.0, ge=0, description="`velocast data fetch` re-reads this many hours before the last stored count.")
    opendata_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Connect/read timeout of the portal's export (a large export starts slowly).")
    http_retries: int = Field(default=3, ge=0, description="Retries of a failed HTTP fetch (429, 5xx, network).")
    http_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First wait before a retry; doubled at each retry (Retry-After wins).")
    http_retry_after_max_seconds: float = Field(
        default=120.0, ge=0, description="Longest Retry-After velocast waits; a longer one fails the fetch.")
    job_lease_seconds: float = Field(
        default=300.0, gt=0, description="A training job whose server sent no heartbeat for this long is failed."
    )
    airflow_url: str | None = Field(
        default=None, description="Airflow API server (http://host:8080): POST /train then runs the training DAG there."
    )
    airflow_username: str | None = Field(default=None, description="Airflow user whose JWT (POST /auth/token) triggers DAG runs.")
    airflow_password: str | None = Field(default=None, description="Password of airflow_username.")
    airflow_token: str | None = Field(default=None, description="A static Airflow API token (instead of username/password).")
    airflow_train_dag: str = Field(default="train_model", description="DAG run by POST /train when airflow_url is set.")
    airflow_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each call to the Airflow API.")
    dependency_timeout_seconds: float = Field(
        default=5.0, gt=0, le=600,
        description="Longest wait for one call to MLflow, the audit database or S3 (and for the Dask scheduler "
        "and its first worker) before it counts as unreachable.")
    cycle_lease_seconds: float = Field(
        default=6 * 3600.0, gt=0,
        description="How long a weekly cycle (or a retrain) may hold its model type's lock before another may take it.")

    # ----- derived locations (not settable on their own: they follow `home`) -----
    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def counts_dir(self) -> Path:
        return self.store_dir / "counts"

    @property
    def weather_path(self) -> Path:
        return self.store_dir / "weather" / "weather_hourly.parquet"

    @property
    def weather_forecasts_path(self) -> Path:
        return self.store_dir / "weather" / "forecasts.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def splits_dir(self) -> Path:
        return self.home / "splits"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def summary_location(self) -> str:
        return self.summary_uri or str((self.home / "summary.json").resolve())

    @property
    def audit_location(self) -> str:
        return self.audit_url or f"sqlite:///{(self.home / 'audit.db').resolve()}"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """``repr(settings)`` (a log line, a traceback's locals) shows no key and no password."""
        for name, value in super().__repr_args__():
            if name in _SECRET_FIELDS and value:
                yield name, MASK
            elif name in _URL_FIELDS and isinstance(value, str):
                yield name, redact(value, keep_path=name != "webhook_url")
            else:
                yield name, value


_SECRET_FIELDS = frozenset({"api_key", "airflow_password", "airflow_token"})
_URL_FIELDS = frozenset({"mlflow_tracking_uri", "summary_uri", "store_uri", "dask_scheduler", "audit_url", "api_url", "webhook_url",
                         "weather_forecast_url", "opendata_url", "airflow_url"})


def database_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed when it names none (``postgresql://…``).

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, earlier versions as psycopg2;
    velocast's ``postgres`` extra installs psycopg2. A URL naming its driver is left as it is.
    """
    if not url.startswith("postgresql://"):
        return url
    from importlib.util import find_spec

    if find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


class SettingsError(ValueError):
    """An environment variable velocast cannot use; the message names it and what it expects, on one line."""


def _expected(name: str) -> str:
    """What the Settings field ``name`` accepts, in words: ``a number from 0.5 to 0.99``, ``one of dev, prod``."""
    field = Settings.model_fields.get(name)
    if field is None:
        return "a valid value"
    if typing.get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(field.annotation)))
    kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(field.annotation, "a valid value")
    bounds = {op: getattr(m, op) for m in field.metadata for op in ("ge", "gt", "le", "lt") if hasattr(m, op)}
    if "ge" in bounds and "le" in bounds:
        return f"{kind} from {bounds['ge']:g} to {bounds['le']:g}"
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " ".join([kind, " and ".join(f"{signs[op]} {v:g}" for op, v in bounds.items())]).strip()


def settings_error(exc: ValidationError) -> SettingsError:
    """The one-line error of a ``Settings`` that cannot be built: ``VELOCAST_ENV='staging': expected one of dev, prod``."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else ""
        variable = name if name.isupper() else f"VELOCAST_{name.upper()}"
        value = "***" if "key" in name.lower() else (redact(str(error.get("input", ""))) or "")  # never a secret
        shown = repr(value if len(value) <= 60 else f"{value[:60]}...")
        expected = str(error.get("msg", "")).removeprefix("Value error, ") if error.get("type") == "value_error" \
            else _expected(name)
        problems.append(f"{variable}={shown}: expected {expected}")
    return SettingsError("; ".join(problems) or str(exc).splitlines()[0])


_built: dict[tuple[tuple[Any, Any], ...], Settings] = {}


def _settings_key() -> tuple[tuple[Any, Any], ...]:
    """The ``VELOCAST_*`` and MLflow variables of the environment. Read from the encoded mapping behind
    ``os.environ`` where there is one (CPython on POSIX: 5 us against 32 us decoding every variable;
    the serving path asks for the settings on every request)."""
    encoded = getattr(os.environ, "_data", None)
    if isinstance(encoded, dict):
        return tuple(sorted((k, v) for k, v in encoded.items()
                            if isinstance(k, bytes) and k.startswith((b"VELOCAST_", b"MLFLOW_"))))
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("VELOCAST_", "MLFLOW_"))))


def get_settings() -> Settings:
    """The settings of the current environment: re-read whenever a ``VELOCAST_*`` or MLflow variable changes.

    Building them costs ~3 ms (pydantic-settings scans the environment), so they are kept per set of
    relevant variables; each caller gets its own copy. A variable that cannot be read raises
    :class:`SettingsError` (a ``ValueError``) naming it and what it expects.
    """
    key = _settings_key()
    settings = _built.get(key)
    if settings is None:
        try:
            settings = Settings()
        except ValidationError as exc:
            raise settings_error(exc) from exc
        if len(_built) > 64:
            _built.clear()
        _built[key] = settings
    return settings.model_copy()
