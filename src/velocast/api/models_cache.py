"""The served models, hot-swapped when the registry's ``champion`` alias moves.

``ModelCache.get`` returns the loaded model of a type at once while its last check is younger than
``refresh_seconds``. Otherwise one caller re-reads the alias (cheap; after replaying any
interrupted promotion with ``promotion.recover``) and, when the version changed, loads the new
model and swaps it in; meanwhile every other request keeps being served by the old model, so no
request fails or waits during a swap. A background thread runs the same check for the loaded types
(so requests rarely pay for it) and warms the default type.

With no champion, the latest registered version serves, with a warning; with no version at all,
``NoModelError`` (the API answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from velocast.config import Settings
from velocast.lifecycle import promotion
from velocast.lifecycle.predict import LoadedModel, load_model
from velocast.tracking.registry import ModelRef, Registry

log = logging.getLogger(__name__)


class NoModelError(LookupError):
    """No registered version of that model type (or none with that horizon)."""


@dataclass
class ServedModel:
    model: LoadedModel
    source_version: str  # the champion (or latest) version seen when this model was chosen
    champion: bool
    loaded_at: datetime
    checked_at: float  # time.monotonic() of the last registry check
    warnings: list[str] = field(default_factory=list)
    generation: int = 0  # the type's invalidation count when that check started

    @property
    def version(self) -> str | None:
        return self.model.version


Key = tuple[str, str | None]  # (model type, requested horizon)


class ModelCache:
    def __init__(self, settings: Settings, refresh_seconds: float = 2.0, compile_models: bool = True):
        self.settings = settings
        self.compile_models = compile_models
        self.refresh_seconds = refresh_seconds
        self._entries: dict[Key, ServedModel] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._generations: dict[str, int] = {}
        self._guard = threading.Lock()
        self._registry: Registry | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Callable[[dict[Key, ServedModel]], None]] = []  # told of every change
        self.background: list[Callable[[], object]] = []  # also run by the refresh thread at each check

    # ------------------------------------------------------------------ reading
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.settings)
        return self._registry

    def snapshot(self) -> dict[Key, ServedModel]:
        return dict(self._entries)

    def get(self, model_type: str, horizon: str | None = None) -> ServedModel:
        """The model serving ``model_type`` now (see the module docstring)."""
        key = (model_type, horizon)
        entry = self._entries.get(key)
        if entry is not None and self._fresh(entry, model_type):
            return entry
        lock = self._lock(key)
        if entry is not None and entry.generation == self._generations.get(model_type, 0):
            if not lock.acquire(blocking=False):
                return entry  # someone else is checking or loading: the current model keeps serving
        else:  # nothing loaded yet, or invalidated by a promotion made here: wait for the check
            lock.acquire()
        try:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, model_type):
                return entry
            return self._refresh(key, entry)
        finally:
            lock.release()

    def invalidate(self, model_type: str) -> None:
        """Make the next ``get`` of this type re-read the registry (after a promotion by the API)."""
        with self._guard:
            self._generations[model_type] = self._generations.get(model_type, 0) + 1

    def _fresh(self, entry: ServedModel, model_type: str) -> bool:
        return (entry.generation == self._generations.get(model_type, 0)
                and time.monotonic() - entry.checked_at < self.refresh_seconds)

    # ------------------------------------------------------------------ refreshing
    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _source(self, model_type: str) -> tuple[ModelRef, bool]:
        """The version that should serve: the champion, else the latest version."""
        registry = self.registry
        promotion.recover(model_type, self.settings, registry)
        ref = registry.champion(model_type)
        if ref is not None:
            return ref, True
        ref = registry.latest(model_type)
        if ref is None:
            raise NoModelError(f"no {model_type} model is registered yet: train one (`velocast train "
                               f"--model-type {model_type}` or POST /train)")
        return ref, False

    def _refresh(self, key: Key, entry: ServedModel | None) -> ServedModel:
        model_type, horizon = key
        now = time.monotonic()
        generation = self._generations.get(model_type, 0)
        try:
            ref, is_champion = self._source(model_type)
        except NoModelError:
            if self._entries.pop(key, None) is not None:
                self._changed()
            raise
        except Exception:
            if entry is None:
                raise
            log.exception("cannot read the %s registry: the loaded model keeps serving", model_type)
            entry.checked_at, entry.generation = now, generation
            return entry
        if entry is not None and entry.source_version == ref.version and entry.champion == is_champion:
            entry.checked_at, entry.generation = now, generation
            return entry
        try:
            if horizon and ref.tags.get("horizon") != horizon:
                model = load_model(model_type, horizon=horizon, settings=self.settings)
            else:
                model = load_model(model_type, version=ref.version, settings=self.settings)
        except LookupError as exc:
            raise NoModelError(str(exc)) from exc
        except Exception:
            if entry is None:
                raise
            log.exception("loading %s version %s failed: the loaded model keeps serving", model_type, ref.version)
            entry.checked_at, entry.generation = now, generation
            return entry
        warnings = []
        if not is_champion:
            warnings.append(f"no {model_type} champion yet: serving the latest registered version {ref.version}")
        if model.version != ref.version:
            warnings.append(f"the {model_type} {'champion' if is_champion else 'latest version'} ({ref.version}) "
                            f"has another horizon: serving version {model.version}, the latest {horizon} model")
        served = ServedModel(model, ref.version, is_champion, datetime.now(timezone.utc), now, warnings, generation)
        self._entries[key] = served
        self._changed()
        self._prepare(served)
        if entry is None:
            log.info("loaded %s version %s (%s)", model_type, model.version, model.uri)
        else:
            log.warning("hot swap: %s now served by version %s (was %s)", model_type, model.version, entry.version)
        return served

    def _changed(self) -> None:
        snapshot = self.snapshot()
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:  # noqa: BLE001 - a metric must never break serving
                log.exception("a model-cache listener failed")

    def _prepare(self, served: ServedModel) -> None:
        """Compile the new model for the serving path; its trees with lleaves in the background (LightGBM
        serves meanwhile; the compiled object is cached on disk per model, so other workers load it)."""
        serving = served.model.serving
        if serving is not None and self.compile_models:
            serving.compile_in_background(self.settings.home / "cache" / "lleaves")

    # ------------------------------------------------------------------ background checks
    def start(self, warm: tuple[str, ...] = ()) -> None:
        """Check the loaded types (and load ``warm`` ones) every ``refresh_seconds`` in a thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(warm,), name="velocast-model-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self, warm: tuple[str, ...]) -> None:
        interval = max(self.refresh_seconds, 0.1)
        while not self._stop.is_set():
            for key in {*self._entries, *((t, None) for t in warm)}:
                if self._stop.is_set():
                    break
                try:
                    self.get(*key)
                except NoModelError:
                    pass
                except Exception:  # never let the thread die; requests report errors themselves
                    log.exception("background check of %s failed", key[0])
            for task in self.background:
                try:
                    task()
                except Exception:  # noqa: BLE001 - the request that needs it will report it
                    log.exception("background task %s failed", getattr(task, "__name__", task))
            self._stop.wait(interval)
