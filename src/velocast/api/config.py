"""Settings of the HTTP API that are not (yet) fields of ``velocast.config.Settings``.

Read from optional environment variables with defaults, once per ``create_app``:

- ``VELOCAST_API_MAX_BODY_MB`` (20): larger request bodies get a 413;
- ``VELOCAST_API_CORS_ORIGINS`` (unset): comma-separated origins; CORS stays off when unset;
- ``VELOCAST_API_MODEL_REFRESH_SECONDS`` (2): how often the champion alias is re-read;
- ``VELOCAST_API_MAX_RECORDS`` (20000): most records in one ``/predict``, ``/monitor`` or
  ``/train`` (``current_data``) request;
- ``VELOCAST_API_DEFAULT_MODEL_TYPE`` (lgbm): the model type of ``/ready`` and of requests that
  name none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from velocast.models import MODEL_TYPES


def _env_float(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: expected a number >= {minimum}")
    return value


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 20 * 1024 * 1024
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    model_refresh_seconds: float = 2.0
    max_records: int = 20_000
    default_model_type: str = "lgbm"

    def __post_init__(self) -> None:
        if self.default_model_type not in MODEL_TYPES:
            raise ValueError(f"default model type {self.default_model_type!r}: expected one of "
                             f"{', '.join(MODEL_TYPES)}")
        if self.max_records < 1 or self.max_body_bytes < 1 or self.model_refresh_seconds < 0:
            raise ValueError("max_records and max_body_bytes must be positive, model_refresh_seconds >= 0")

    @classmethod
    def from_env(cls) -> ApiConfig:
        origins = tuple(o.strip() for o in os.environ.get("VELOCAST_API_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            max_body_bytes=int(_env_float("VELOCAST_API_MAX_BODY_MB", 20.0, 0.001) * 1024 * 1024),
            cors_origins=origins,
            model_refresh_seconds=_env_float("VELOCAST_API_MODEL_REFRESH_SECONDS", 2.0, 0.0),
            max_records=int(_env_float("VELOCAST_API_MAX_RECORDS", 20_000, 1)),
            default_model_type=os.environ.get("VELOCAST_API_DEFAULT_MODEL_TYPE", "lgbm").strip() or "lgbm",
        )
