"""One Settings object for the whole of velocast.

Every field can be set by an environment variable (``VELOCAST_<FIELD>``, plus the standard
``MLFLOW_TRACKING_URI``). Everything velocast writes lives under ``VELOCAST_HOME`` unless a
field points elsewhere, so a laptop needs no server at all.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PARIS_TZ = "Europe/Paris"


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
    audit_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the audit log; default: SQLite in the velocast home."
    )
    events_file: Path | None = Field(
        default=None, description="Events calendar (YAML); default: the one shipped with velocast."
    )
    api_key: str | None = Field(default=None, description="Key required in X-API-Key by mutating API routes.")
    api_url: str | None = Field(default=None, description="When set, the web UI calls this API instead of the library.")
    webhook_url: str | None = Field(default=None, description="Discord/Slack-compatible webhook for decisions.")
    experiment_name: str = Field(default="velocast", description="MLflow experiment used by training runs.")
    r2_baseline_threshold: float = Field(
        default=0.60, description="Minimum challenger R² on test_baseline before any deployment."
    )
    health_rmse_threshold: float = Field(
        default=50.0, description="Champion RMSE above which its health is critical."
    )
    log_level: str = Field(default="WARNING", description="Logging level of the CLI and servers (-v: INFO).")
    api_max_body_mb: float = Field(default=20.0, gt=0, description="Larger API request bodies get a 413.")
    api_cors_origins: str = Field(default="", description="Comma-separated CORS origins; CORS is off when empty.")
    api_model_refresh_seconds: float = Field(default=2.0, ge=0, description="How often the API re-reads the champion alias.")
    api_max_records: int = Field(default=20_000, ge=1, description="Most records in one /predict, /monitor or /train request.")
    api_default_model_type: str = Field(default="lgbm", description="Model type of /ready and of requests naming none.")

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


def get_settings() -> Settings:
    """Build the settings from the current environment (cheap; not cached so tests can vary it)."""
    return Settings()
