"""The champion service: what serves each model type, and the overview of every type's champion.

One place for "which version serves, and reload it when the alias moves", used by the API
(``velocast serve``), the web UI (its library client) and the CLI:

- ``overview(registry)`` / ``champion_overview(registry, model_type)``: champion (with its test
  metrics), previous champion and registered versions of a type — what ``GET /models``, the UI's
  models page and ``velocast champion`` show.
- ``ChampionCache``: the served models, hot-swapped when the registry's ``champion`` alias moves.

``ChampionCache.get`` returns the loaded model of a type at once. A background thread (``start``)
re-reads the alias of every loaded type every ``refresh_seconds`` (and warms the default type); when
the version changed it loads the new model and swaps it in, while every request keeps being served
by the old model, so no request fails or waits during a swap. When the new model's trees are compiled
with lleaves (``compile_models``), the thread swaps it in only once they are, or after
``compile_wait_seconds``: the old, compiled model serves meanwhile (``pending`` names the version that
waits). Without the thread (a cache used on its own, as the UI does), the request that finds the check
too old runs it. A promotion made by the API invalidates the type, and the next request waits for the
new check and swaps at once (LightGBM serves until the compiled trees land).

What serves is ``Registry.serving``: the champion, or — only when the registry positively says
there is none — the latest version that is neither a test-mode model nor failed the baseline gate
(with a warning); nothing of the kind: ``NoModelError`` (503). While an interrupted promotion
awaits its undo (its journal is there), the champion it was moving away from keeps serving.

A registry that does not answer never changes what serves: the loaded model keeps serving, the
failure is remembered (``ServedModel.last_error``, which ``/ready`` reports as degraded) and the
next check tries again. Reads never write: no promotion recovery runs here (the API runs it at
start-up, and every promotion runs it first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from velocast.config import Settings, redact_secrets
from velocast.errors import DependencyUnavailable
from velocast.lifecycle.decisions import promotion
from velocast.lifecycle.serving.adaptation import adapts, warm_adaptation
from velocast.lifecycle.serving.predict import load_model
from velocast.models import MODEL_TYPES
from velocast.tracking.registry import PREVIOUS, LoadedModel, ModelRef, NoServableModel, Registry

log = logging.getLogger(__name__)


class NoModelError(LookupError):
    """No registered version of that model type may serve (or none with that horizon)."""


@dataclass
class ChampionOverview:
    """A model type's champion (with its MLflow metrics), the champion before it and its versions."""

    model_type: str
    champion: ModelRef | None
    previous_champion: str | None  # the version holding ``previous-champion``
    versions: list[ModelRef] = field(default_factory=list)


def champion_overview(registry: Registry, model_type: str, all_metrics: bool = False) -> ChampionOverview:
    """The overview of one type; ``all_metrics`` also reads every version's metrics (one query each).

    A read: an interrupted promotion is only reported elsewhere, undone by the next write.
    """
    champion = registry.champion(model_type, with_metrics=True)
    previous = registry.by_alias(model_type, PREVIOUS)
    return ChampionOverview(model_type, champion, previous.version if previous else None,
                            registry.versions(model_type, with_metrics=all_metrics))


def overview(registry: Registry, all_metrics: bool = False) -> dict[str, ChampionOverview]:
    """``champion_overview`` of every model type of the catalogue."""
    return {model_type: champion_overview(registry, model_type, all_metrics) for model_type in MODEL_TYPES}


@dataclass
class ServedModel:
    model: LoadedModel
    source_version: str  # the champion (or stand-in) version seen when this model was chosen
    champion: bool
    loaded_at: datetime
    checked_at: float  # time.monotonic() of the last registry check
    warnings: list[str] = field(default_factory=list)
    generation: int = 0  # the type's invalidation count when that check started
    last_error: str | None = None  # why the last check failed (the model kept serving); None when it worked

    @property
    def version(self) -> str | None:
        return self.model.version


Key = tuple[str, str | None]  # (model type, requested horizon)


class ChampionCache:
    def __init__(self, settings: Settings, refresh_seconds: float = 2.0, wait_seconds: float = 30.0,
                 compile_models: bool = True, compile_wait_seconds: float = 300.0):
        self.settings = settings
        self.compile_models = compile_models
        self.compile_wait_seconds = compile_wait_seconds  # longest the old model serves while the new compiles
        self._pending: dict[Key, ServedModel] = {}  # loaded by the background check, waiting for its compiled trees
        self.refresh_seconds = refresh_seconds
        self.wait_seconds = wait_seconds  # longest a request waits for another's first load of a type
        self._entries: dict[Key, ServedModel] = {}
        self._errors: dict[Key, tuple[DependencyUnavailable, float]] = {}  # why (and when) a first load failed
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

    def pending(self, model_type: str, horizon: str | None = None) -> str | None:
        """The version loaded to replace the served one, waiting for its compiled trees (None: none)."""
        waiting = self._pending.get((model_type, horizon))
        return waiting.version if waiting is not None else None

    def last_error(self, model_type: str, horizon: str | None = None) -> str | None:
        error = self._errors.get((model_type, horizon))
        return str(error[0]) if error else None

    def get(self, model_type: str, horizon: str | None = None, wait: float | None = None) -> ServedModel:
        """The model serving ``model_type`` now (see the module docstring).

        ``wait``: the longest this call waits for another caller's first load (default ``wait_seconds``);
        past it, "still loading" is raised. If the load it waited for failed, its error is raised at
        once (no second attempt: a dead registry is not asked twice per request).
        """
        key = (model_type, horizon)
        asked = time.monotonic()
        entry = self._entries.get(key)
        if self._at_once(entry, model_type):
            return entry  # the background check keeps it current; a failing registry never blocks a request
        current = entry is not None and entry.generation == self._generations.get(model_type, 0)
        lock = self._lock(key)
        if current:
            if not lock.acquire(blocking=False):
                return entry  # someone else is checking or loading: the current model keeps serving
        elif not lock.acquire(timeout=self.wait_seconds if wait is None else wait):
            if entry is not None:
                return entry
            raise DependencyUnavailable("model registry", f"the {model_type} model is still loading; try again shortly")
        try:
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, model_type):
                return entry
            failed = self._errors.get(key)
            if entry is None and failed is not None and failed[1] >= asked:  # the load waited for just failed
                raise DependencyUnavailable(failed[0].dependency, failed[0].detail)
            return self._refresh(key, entry)
        finally:
            lock.release()

    def at_once(self, model_type: str, horizon: str | None = None) -> ServedModel | None:
        """What ``get`` would return without touching the registry (a current model, checked recently or
        by the background thread), else None. The API predicts on its event loop only then."""
        entry = self._entries.get((model_type, horizon))
        return entry if self._at_once(entry, model_type) else None

    def _at_once(self, entry: ServedModel | None, model_type: str) -> bool:
        return (entry is not None and entry.generation == self._generations.get(model_type, 0)
                and (self._fresh(entry, model_type) or self._background()))

    def invalidate(self, model_type: str) -> None:
        """Make the next ``get`` of this type re-read the registry (after a promotion by the API)."""
        with self._guard:
            self._generations[model_type] = self._generations.get(model_type, 0) + 1

    def _fresh(self, entry: ServedModel, model_type: str) -> bool:
        return (entry.generation == self._generations.get(model_type, 0)
                and time.monotonic() - entry.checked_at < self.refresh_seconds)

    def _background(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ refreshing
    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _source(self, model_type: str) -> tuple[ModelRef, bool, list[str]]:
        """The version that should serve, whether it is the champion, and warnings."""
        registry = self.registry
        undo = promotion.pending(model_type, self.settings)
        if undo is not None:  # a promotion did not commit: what it was moving away from serves
            note = (f"an interrupted {model_type} promotion to version {undo.from_version} awaits its undo "
                    "(at the next promotion or API start)")
            if undo.to_version is not None:
                return registry.get(model_type, undo.to_version), True, [f"{note}: serving version {undo.to_version}"]
            ref, _ = registry.serving(model_type, ignore_champion=True)
            return ref, False, [note]
        ref, is_champion = registry.serving(model_type)
        return ref, is_champion, []

    def _refresh(self, key: Key, entry: ServedModel | None, background: bool = False) -> ServedModel:
        """Re-read what should serve and swap it in. ``background`` (the refresh thread): a new model whose
        trees are being compiled waits in ``_pending`` while ``entry`` keeps serving (module docstring)."""
        model_type, horizon = key
        now = time.monotonic()
        generation = self._generations.get(model_type, 0)
        try:
            ref, is_champion, notes = self._source(model_type)
        except NoServableModel as exc:  # the registry answered: nothing may serve
            if self._entries.pop(key, None) is not None:
                self._changed()
            self._errors.pop(key, None)
            raise NoModelError(str(exc)) from exc
        except Exception as exc:
            return self._failed(key, entry, now, generation, exc, "cannot read the registry")
        if entry is not None and entry.source_version == ref.version and entry.champion == is_champion:
            self._pending.pop(key, None)
            entry.checked_at, entry.generation, entry.last_error = now, generation, None
            return entry
        waiting = self._pending.pop(key, None)
        if waiting is not None and waiting.source_version == ref.version and waiting.champion == is_champion:
            return self._swap(key, entry, waiting, now, generation, background)
        started = time.perf_counter()
        try:
            if horizon and ref.tags.get("horizon") != horizon:
                model = load_model(model_type, horizon=horizon, settings=self.settings)
            else:
                model = self.registry.load_model(ref)
        except LookupError as exc:
            raise NoModelError(str(exc)) from exc
        except Exception as exc:
            return self._failed(key, entry, now, generation, exc, f"loading version {ref.version} failed")
        loaded = time.perf_counter()
        warnings = list(notes)
        if not is_champion:
            warnings.append(f"no {model_type} champion yet: serving the latest registered version {ref.version}; "
                            f"promote one with `velocast promote --model-type {model_type} --version {ref.version}`")
        if model.version != ref.version:
            warnings.append(f"the {model_type} {'champion' if is_champion else 'latest version'} ({ref.version}) "
                            f"has another horizon: serving version {model.version}, the latest {horizon} model")
        served = ServedModel(model, ref.version, is_champion, datetime.now(timezone.utc), now, warnings, generation)
        serving = model.serving
        if serving is not None and self.compile_models:
            serving.compile_in_background(self.settings.home / "cache" / "lleaves")
        log.info("loaded %s version %s (%s) in %.0f ms", model_type, model.version, model.uri,
                 (loaded - started) * 1000)
        return self._swap(key, entry, served, now, generation, background)

    def _swap(self, key: Key, entry: ServedModel | None, served: ServedModel, now: float, generation: int,
              background: bool) -> ServedModel:
        """Serve ``served`` instead of ``entry``; or, from the refresh thread while ``served``'s trees are
        still compiling (for less than ``compile_wait_seconds``), keep ``entry`` serving."""
        compiling = self._compiling(served)
        if background and entry is not None and compiling is not None:
            # a waiting model is never re-checked: its checked_at is when it was loaded
            if time.monotonic() - served.checked_at < self.compile_wait_seconds:
                if key not in self._pending:
                    log.info("%s version %s waits for its compiled trees; version %s serves meanwhile", key[0],
                             served.version, entry.version)
                self._pending[key] = served
                return entry
            if self.compile_wait_seconds > 0:
                log.warning("%s version %s still compiling after %.0f s: it serves through LightGBM until then",
                            key[0], served.version, self.compile_wait_seconds)
        started = time.perf_counter()
        if adapts(served.model, self.settings):  # before it serves: requests never compute it themselves
            warm_adaptation(served.model, self.settings)
        served.checked_at, served.generation = now, generation
        self._entries[key] = served
        self._errors.pop(key, None)
        self._changed()
        if entry is not None:
            log.warning("hot swap: %s now served by version %s (was %s; prepared in %.0f ms%s)", key[0],
                        served.version, entry.version, (time.perf_counter() - started) * 1000,
                        "; its trees still compiling" if compiling is not None else "")
        return served

    def _changed(self) -> None:
        snapshot = self.snapshot()
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:  # noqa: BLE001 - a metric must never break serving
                log.exception("a model-cache listener failed")

    def _compiling(self, served: ServedModel) -> threading.Thread | None:
        """The thread compiling ``served``'s trees with lleaves, while it runs (None: done or not compiling)."""
        serving = served.model.serving
        thread = serving.compiling if serving is not None and self.compile_models else None
        return thread if thread is not None and thread.is_alive() else None

    def _failed(self, key: Key, entry: ServedModel | None, now: float, generation: int, exc: Exception,
                what: str) -> ServedModel:
        failure = exc if isinstance(exc, DependencyUnavailable) else \
            DependencyUnavailable("model registry", f"{what}: {type(exc).__name__}: {exc}")
        message = redact_secrets(str(failure), self.settings)
        if entry is None:
            self._errors[key] = (failure, time.monotonic())
            raise exc
        log.warning("%s: the loaded %s version %s keeps serving (%s)", what, key[0], entry.version, message)
        entry.checked_at, entry.generation, entry.last_error = now, generation, message
        return entry

    # ------------------------------------------------------------------ background checks
    def start(self, warm: tuple[str, ...] = ()) -> None:
        """Check the loaded types (and load ``warm`` ones) every ``refresh_seconds`` in a thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(warm,), name="velocast-model-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the background checks; a check blocked on the registry is left to finish alone (daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _loop(self, warm: tuple[str, ...]) -> None:
        interval = max(self.refresh_seconds, 0.1)
        while not self._stop.is_set():
            for key in {*self._entries, *((t, None) for t in warm)}:
                if self._stop.is_set():
                    break
                try:
                    self._check(key)
                except NoModelError:
                    pass
                except Exception as exc:  # never let the thread die; requests report errors themselves
                    log.warning("background check of %s failed: %s", key[0], redact_secrets(str(exc), self.settings))
            for task in self.background:
                try:
                    task()
                except Exception:  # noqa: BLE001 - the request that needs it will report it
                    log.exception("background task %s failed", getattr(task, "__name__", task))
            self._stop.wait(interval)

    def _check(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is not None and self._fresh(entry, key[0]):
            return
        lock = self._lock(key)
        if not lock.acquire(blocking=False):
            return  # a request is loading it
        try:
            self._refresh(key, self._entries.get(key), background=True)
        finally:
            lock.release()
