"""The model catalogue: every family's ``SPEC``, looked up by name.

The families are the modules named in ``velocast.models.MODEL_TYPES``; each exports its own
``ModelSpec`` (``velocast.models.spec``): estimator factory, default and search-space
hyper-parameters, how it continues training. Nothing here knows a family by name.
"""

from __future__ import annotations

import importlib
from typing import Any

from velocast.features import HORIZONS
from velocast.models import MODEL_TYPES, check_model_type
from velocast.models.spec import ModelSpec, Param

CATALOGUE: dict[str, ModelSpec] = {name: importlib.import_module(f"velocast.models.{name}").SPEC
                                   for name in MODEL_TYPES}
_misnamed = [name for name, spec in CATALOGUE.items() if spec.name != name]
if _misnamed:
    raise ImportError(f"a family's SPEC.name must be its module's name: {', '.join(_misnamed)}")


def get_spec(model_type: str) -> ModelSpec:
    return CATALOGUE[check_model_type(model_type)]


def validate_hyperparams(model_type: str, hyperparams: dict[str, Any] | None) -> dict[str, Any]:
    """Check names, types and ranges; return the values converted to their types."""
    spec = get_spec(model_type)
    hyperparams = hyperparams or {}
    unknown = sorted(set(hyperparams) - set(spec.params))
    if unknown:
        allowed = ", ".join(sorted(spec.params)) or "none"
        raise ValueError(f"unknown hyperparameters for {model_type}: {unknown}; allowed: {allowed}")
    return {name: spec.params[name].check(name, value) for name, value in hyperparams.items()}


def resolve_horizon(model_type: str, horizon: str | None) -> str:
    spec = get_spec(model_type)
    horizon = horizon or spec.default_horizon
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}: expected one of {', '.join(HORIZONS)}")
    return horizon


__all__ = ["CATALOGUE", "ModelSpec", "Param", "get_spec", "resolve_horizon",
           "validate_hyperparams"]
