"""A fitted model predicting a feature matrix directly: what the serving path calls.

``CompiledModel(pipeline, plan)`` takes the pipeline's estimator as it is and predicts the float32
matrix of ``FeaturePlan.matrix`` with the same semantics as ``predict_frame``:

- ``WeatherFallback``: each row goes to the with-weather model when its ``REQUIRED_WEATHER`` are
  known, else to the no-weather sibling on the columns without weather (as ``WeatherFallback``);
- ``LGBMCountRegressor``: the LightGBM booster on the matrix itself (no DataFrame; one thread for
  small batches, where OpenMP's start-up costs more than it saves), ``expm1`` and clipped at 0;
  once ``compile_lleaves`` has run, the same trees compiled to machine code by ``lleaves``
  (predictions equal LightGBM's within 1e-9 on the log scale, tested);
- any other estimator: ``predict``/``predict_proba`` of the frame ``FeaturePlan.frame`` rebuilds.

Compiling is slow (seconds per booster), so it runs off the request path, once per model and in a
low-priority process of its own (``velocast.models.lleaves_build``): ``compile_lleaves`` has the
compiled object written to ``cache_dir``, keyed by the model text's hash, loads it and swaps it in
when done; until then LightGBM serves (the API's champion cache keeps the model it replaces serving
meanwhile: ``velocast.lifecycle.decisions.champion``).

``ServingModel(pipeline)``: a loaded pipeline's ``FeaturePlan`` and ``CompiledModel``, made once per
loaded model (``LoadedModel.serving``), with the lleaves compilation run in a background thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from velocast.data.weather import WEATHER_COLUMNS
from velocast.features import FeaturePlan
from velocast.fileio import atomic_write_bytes, file_lock
from velocast.models import lleaves_build
from velocast.models.intervals import STATIC, ConformalRegressor, OnlineRule, RecentErrors
from velocast.models.lgbm import LGBMCountRegressor
from velocast.models.weather_fallback import REQUIRED_WEATHER, WeatherFallback

log = logging.getLogger(__name__)

SMALL_BATCH = 2048  # rows predicted on one thread


def lleaves_available() -> bool:
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


class _Booster:
    """One LightGBM regressor on the log1p scale, predicting matrices (LightGBM, then lleaves when compiled)."""

    def __init__(self, estimator: LGBMCountRegressor, columns: np.ndarray, categorical: int | None):
        self.booster = estimator.booster_model_.booster_
        self.n_jobs = max(int(getattr(estimator, "n_jobs", 1) or 1), 1)
        self.columns = columns  # the matrix's columns this booster reads, in its feature order
        self.categorical = categorical  # position (in ``columns``) of the counter code, if categorical
        self.compiled: Any = None

    def raw(self, X: np.ndarray) -> np.ndarray:
        data = np.take(X, self.columns, axis=1) if len(self.columns) != X.shape[1] else X
        threads = 1 if len(data) <= SMALL_BATCH else min(self.n_jobs, os.cpu_count() or 1)
        compiled = self.compiled
        if compiled is not None:
            # lleaves reads row-major doubles: one copy (``FeaturePlan.matrix`` is column-major)
            data = data.astype(np.float64, order="C")
            if self.categorical is not None:  # an unknown counter (-1) is missing, as LightGBM reads it
                column = data[:, self.categorical]
                column[column < 0] = np.nan
            return compiled.predict(data, n_jobs=threads)
        return self.booster.predict(data, num_threads=threads)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.clip(np.expm1(self.raw(X)), 0, None)

    def model_text(self) -> str:
        return self.booster.model_to_string()


class CompiledModel:
    """The estimator of a fitted pipeline, over ``FeaturePlan`` matrices (see the module docstring)."""

    def __init__(self, pipeline: Any, plan: FeaturePlan):
        self.plan = plan
        model = pipeline.named_steps["model"]
        # a regressor with prediction intervals: its point model here, its bounds from ``bounds``
        self.conformal = model if isinstance(model, ConformalRegressor) else None
        self.estimator = model.estimator_ if self.conformal is not None else model
        self.classifier = hasattr(self.estimator, "predict_proba")
        names = plan.names
        self._weather = isinstance(self.estimator, WeatherFallback)
        self._boosters: list[_Booster] = []
        if self._weather:
            kept = [i for i, name in enumerate(names) if name not in self.estimator.weather_columns]
            self._required = [names.index(c) for c in REQUIRED_WEATHER if c in names]
            self._with = self._part(self.estimator.with_weather_, np.arange(len(names)))
            self._without = self._part(self.estimator.without_weather_, np.asarray(kept))
        else:
            self._with = self._part(self.estimator, np.arange(len(names)))

    def _part(self, estimator: Any, columns: np.ndarray) -> Any:
        if isinstance(estimator, LGBMCountRegressor):
            categorical = 0 if self.plan.builder.counter_as_category and columns[0] == 0 else None
            booster = _Booster(estimator, columns, categorical)
            self._boosters.append(booster)
            return booster
        return _Frame(estimator, self.plan, columns)

    def _known(self, X: np.ndarray) -> np.ndarray:
        """Rows the with-weather model predicts (its required weather present)."""
        if not self._required or not self.estimator.learned_weather:
            return np.zeros(len(X), bool)
        return ~np.isnan(X[:, self._required]).any(axis=1)

    def groups(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``ConformalRegressor.bounds``' ``variant`` and ``counter`` of each row of ``X``."""
        variant = self._known(X).astype(np.int64) if self._weather else np.zeros(len(X), np.int64)
        counter = X[:, 0] if self.plan.names[0] == "counter_code" else np.full(len(X), -1.0)
        return variant, np.where(np.isfinite(counter), counter, -1).astype(np.int64)

    def predict(self, X: np.ndarray, coverage: float | None = None, day: np.ndarray | None = None,
                hour: np.ndarray | None = None, recent: RecentErrors | None = None, rule: OnlineRule = STATIC,
                cache: dict[int, Any] | None = None) -> dict[str, np.ndarray]:
        """``predict_frame``'s columns for each row of ``X``: ``prediction``, and ``probability`` for
        classifiers, ``lower``/``upper`` (the interval of central ``coverage``) for regressors.

        ``day``, ``hour`` (Paris day numbers and hours), ``recent``, ``rule`` and ``cache``: as
        ``predict_frame``'s, each day following the recent errors before it."""
        method = "predict_proba" if self.classifier else "predict"
        if not self._weather:
            values = getattr(self._with, method)(X)
        else:
            known = self._known(X)
            if known.all():
                values = getattr(self._with, method)(X)
            elif not known.any():
                values = getattr(self._without, method)(X)
            else:
                first = np.asarray(getattr(self._with, method)(X[known]))
                second = np.asarray(getattr(self._without, method)(X[~known]))
                values = np.empty((len(X), *first.shape[1:]), dtype=np.result_type(first, second))
                values[known], values[~known] = first, second
        values = np.asarray(values)
        if self.classifier:
            proba = values[:, 1]
            return {"probability": proba, "prediction": (proba >= 0.5).astype(int)}
        values = values.astype(float)
        if self.conformal is None or not self.conformal.calibrated:
            nan = np.full(len(X), np.nan)
            return {"prediction": values, "lower": nan, "upper": nan.copy()}
        variant, counter = self.groups(X)
        if not self.plan.day_ahead:
            rule = rule.without_bias()  # a calendar forecast reads no count
        if rule.window > 0 and day is not None and hour is not None and recent is not None:
            values, lower, upper = self.conformal.day_by_day(values, variant, counter, day, hour, recent, rule,
                                                             coverage, cache)
        else:
            lower, upper = self.conformal.bounds(values, variant, counter, coverage)
        return {"prediction": values, "lower": lower, "upper": upper}

    # ------------------------------------------------------------------ lleaves
    @property
    def compiled(self) -> bool:
        return bool(self._boosters) and all(b.compiled is not None for b in self._boosters)

    def compile_lleaves(self, cache_dir: Path) -> bool:
        """Compile every LightGBM booster with lleaves (cached on disk by model hash); False if unavailable."""
        if not self._boosters or not lleaves_available():
            return False
        import lleaves

        cache_dir.mkdir(parents=True, exist_ok=True)
        for booster in self._boosters:
            text = booster.model_text()
            # the compiled object of that text for this machine's CPU (lleaves targets the host)
            chosen = lleaves_build.options(text)
            name = f"{hashlib.sha256(text.encode()).hexdigest()[:32]}-{_cpu_tag()}-{lleaves_build.options_tag(chosen)}"
            target = cache_dir / f"{name}.so"
            with file_lock(cache_dir / f"{name}.lock"):  # one process compiles, the others load its object
                model_file = cache_dir / f"{name}.txt"
                if not model_file.exists():
                    atomic_write_bytes(model_file, text.encode())
                if not target.exists():
                    lleaves_build.build(model_file, target, chosen)  # in a low-priority process of its own
                model = lleaves.Model(model_file=str(model_file))
                model.compile(cache=str(target), **chosen)  # loads the compiled object
            booster.compiled = model
        return True


def _cpu_tag() -> str:
    try:
        import llvmlite.binding as llvm

        return hashlib.sha256(f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}".encode()
                              ).hexdigest()[:12]
    except Exception:  # noqa: BLE001 - an unknown CPU only loses the cache's reuse
        return "host"


class _Frame:
    """A non-LightGBM estimator: its ``predict`` on the frame ``transform`` would have given it."""

    def __init__(self, estimator: Any, plan: FeaturePlan, columns: np.ndarray):
        self.estimator, self.plan, self.columns = estimator, plan, columns

    def _frame(self, X: np.ndarray) -> pd.DataFrame:
        frame = self.plan.frame(X)
        return frame if len(self.columns) == frame.shape[1] else frame.iloc[:, self.columns]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict(self._frame(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(self._frame(X))


class ServingModel:
    """A loaded pipeline compiled for serving: its ``FeaturePlan`` and ``CompiledModel``."""

    def __init__(self, pipeline: Any):
        features = pipeline.named_steps["features"]
        self.plan: FeaturePlan = features.plan()
        self.model = CompiledModel(pipeline, self.plan)
        self.uses_weather = any(c in self.plan.names for c in WEATHER_COLUMNS)
        self._compiling: threading.Thread | None = None

    @classmethod
    def of(cls, pipeline: Any) -> ServingModel | None:
        """The serving model of ``pipeline``, or None when it has no serving plan (``original`` features)."""
        features = pipeline.named_steps.get("features") if hasattr(pipeline, "named_steps") else None
        if features is None or getattr(features, "feature_set", None) != "full":
            return None
        return cls(pipeline)

    def predict_enriched(self, X: pd.DataFrame) -> dict[str, np.ndarray] | None:
        """``predict_frame`` of enriched rows (history and weather columns given) through arrays;
        None when their timestamps are not timezone-aware."""
        matrix = self.plan.matrix_of(X)
        return None if matrix is None else self.model.predict(matrix)

    @property
    def compiling(self) -> threading.Thread | None:
        """The thread of ``compile_in_background`` (None before it was called)."""
        return self._compiling

    def compile_in_background(self, cache_dir: Path) -> threading.Thread | None:
        """Compile the LightGBM boosters with lleaves in a thread (LightGBM serves meanwhile)."""
        if self._compiling is not None:
            return self._compiling

        def run() -> None:
            try:
                if self.model.compile_lleaves(cache_dir):
                    log.info("model compiled with lleaves: predictions no longer go through LightGBM")
            except Exception:
                log.exception("compiling the model with lleaves failed: LightGBM keeps serving")

        self._compiling = threading.Thread(target=run, name="velocast-lleaves-compile", daemon=True)
        self._compiling.start()
        return self._compiling


__all__ = ["SMALL_BATCH", "CompiledModel", "ServingModel", "lleaves_available"]
