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

import contextlib
import sys
import types
import warnings
from collections.abc import Iterator

_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


def import_skops() -> None:
    """Import ``skops.io`` without importing PyTorch when nothing else needs it (see the module docstring).

    Its module scan is quiet (``quiet_scan``)."""
    if "skops.io" in sys.modules:
        return
    with quiet_scan():
        _import_skops()


@contextlib.contextmanager
def quiet_scan() -> Iterator[None]:
    """skops finds a function's module by reading that name on every loaded module (on import, and on
    each save and load): in an Airflow task each read of a deprecated Airflow attribute is a
    ``DeprecatedImportWarning`` (a ``FutureWarning``), a thousand log lines per task. Within this
    block, those warnings (raised from skops' scan, about other packages) are ignored."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.io\._utils")
        yield


def _import_skops() -> None:
    if "torch" in sys.modules or _TORCH_SHIM in sys.modules:
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
