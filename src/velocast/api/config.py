"""The HTTP API's view of ``velocast.config.Settings`` (fixed once per ``create_app``):

- ``VELOCAST_API_MAX_BODY_MB`` (20): larger request bodies get a 413;
- ``VELOCAST_API_CORS_ORIGINS`` (unset): comma-separated origins; CORS stays off when unset;
- ``VELOCAST_API_MODEL_REFRESH_SECONDS`` (2): how often the champion alias is re-read;
- ``VELOCAST_API_MODEL_COMPILE_WAIT_SECONDS`` (300): longest the old champion keeps serving while the
  new one's trees compile with lleaves (0: swap at once, LightGBM serving until they are compiled);
- ``VELOCAST_API_MAX_RECORDS`` (20000): most records in one ``/predict``, ``/monitor`` or
  ``/train`` (``current_data``) request;
- ``VELOCAST_API_DEFAULT_MODEL_TYPE`` (lgbm): the model type of ``/ready`` and of requests that
  name none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from velocast.config import Settings
from velocast.models import MODEL_TYPES


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 20 * 1024 * 1024
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    model_refresh_seconds: float = 2.0
    model_compile_wait_seconds: float = 300.0
    max_records: int = 20_000
    default_model_type: str = "lgbm"

    def __post_init__(self) -> None:
        if self.default_model_type not in MODEL_TYPES:
            raise ValueError(f"default model type {self.default_model_type!r}: expected one of "
                             f"{', '.join(MODEL_TYPES)}")
        if self.max_records < 1 or self.max_body_bytes < 1 or min(self.model_refresh_seconds,
                                                                     self.model_compile_wait_seconds) < 0:
            raise ValueError("max_records and max_body_bytes must be positive, model_refresh_seconds and "
                             "model_compile_wait_seconds >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiConfig:
        origins = tuple(o.strip() for o in settings.api_cors_origins.split(",") if o.strip())
        return cls(max_body_bytes=int(settings.api_max_body_mb * 1024 * 1024), cors_origins=origins,
                   model_refresh_seconds=settings.api_model_refresh_seconds,
                   model_compile_wait_seconds=settings.api_model_compile_wait_seconds, max_records=settings.api_max_records,
                   default_model_type=settings.api_default_model_type.strip() or "lgbm")
