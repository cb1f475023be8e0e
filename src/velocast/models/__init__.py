"""velocast's models: one module per family, a catalogue of their specs, and their pipelines.

- ``velocast.models.<family>`` (``lgbm``, ``rf``, ``nn``, ``rf_class``, ``baseline``): the family's
  estimator and its ``SPEC`` (``velocast.models.spec.ModelSpec``: estimator factory, default and
  search-space hyper-parameters, how it continues training);
- ``velocast.models.catalogue``: the specs by name (``get_spec``, ``validate_hyperparams``...);
- ``velocast.models.pipeline``: a family's ``Pipeline`` (``FeatureBuilder`` then the estimator) built,
  continued, calibrated and asked for predictions (``build_pipeline``, ``predict_frame``...).

This package itself imports nothing heavy: ``MODEL_TYPES`` is read by ``velocast --help`` (its
``--model-type`` choices); every other name below is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# the family modules, in the order they are listed (velocast.choices, which imports nothing); a new
# family is a module here with its ``SPEC`` and its name there
from velocast.choices import MODEL_TYPES as MODEL_TYPES  # noqa: E402 - re-exported

REGISTERED_NAME = "bike-traffic-{model_type}"


def check_model_type(model_type: str) -> str:
    """``model_type`` if it is one of ``MODEL_TYPES``, else ValueError (without importing any model)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}: expected one of {', '.join(MODEL_TYPES)}")
    return model_type


def registered_name(model_type: str) -> str:
    """The MLflow registered model of a type."""
    return REGISTERED_NAME.format(model_type=check_model_type(model_type))


_LAZY = {
    **dict.fromkeys(("CATALOGUE", "ModelSpec", "Param", "get_spec", "resolve_horizon",
                     "validate_hyperparams"), "velocast.models.catalogue"),
    **dict.fromkeys(("build_estimator", "build_features", "build_pipeline", "calibrate", "calibration_info",
                     "classification_labels", "continue_training", "feature_importance", "is_calibrated",
                     "learned_weather", "predict_frame", "task_of"), "velocast.models.pipeline"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

