"""Importing ``skops.io`` (how velocast models are saved and loaded): first, and without PyTorch.

Importing ``skops.io`` lists scikit-learn's estimators (``sklearn.utils.all_estimators``), whose
package walk imports every sub-package, and finds the module of each scipy ufunc by scanning
``sys.modules`` in import order. Two costs follow, both avoided here:

- scikit-learn's array-API shim for PyTorch is among those sub-packages and imports ``torch``
  (~3 s). No estimator lives there: while skops is imported, that shim is an empty placeholder
  module, removed afterwards (a later real import finds the real one).
- the ufunc scan reads every module imported before scipy's: after MLflow and pandas (~2,800
  modules) it takes ~0.9 s, before them ~0.1 s. A command that will save or load a model calls
  :func:`import_skops` before it imports MLflow (``velocast train --model-test``: 0.8 s less of
  imports, by ``python -X importtime``).

This module imports nothing heavy itself.
"""

from __future__ import annotations

import sys
import types

_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


def import_skops() -> None:
    """Import ``skops.io`` without importing PyTorch when nothing else needs it (see the module docstring)."""
    if "skops.io" in sys.modules or "torch" in sys.modules or _TORCH_SHIM in sys.modules:
        import skops.io  # noqa: F401
        return
    placeholder = types.ModuleType(_TORCH_SHIM)
    sys.modules[_TORCH_SHIM] = placeholder
    try:
        import skops.io  # noqa: F401
    finally:
        if sys.modules.get(_TORCH_SHIM) is placeholder:
            del sys.modules[_TORCH_SHIM]
        parent = sys.modules.get(_TORCH_SHIM.rsplit(".", 1)[0])
        if parent is not None and getattr(parent, "torch", None) is placeholder:
            delattr(parent, "torch")
