"""``summary.json``: an append-only list of every training run, readable without MLflow.

Each entry says what was trained, where the model lives (``model_uri``: an artifact location a
consumer can load directly, no tracking server needed) and how it scored. ``rmse``, ``mae`` and
``r2`` are **test_baseline** metrics (never training metrics, which sit in ``train_metrics``);
``r2_current``/``rmse_current`` are on ``test_current`` when the run had one.

Entries are never removed; only ``is_champion`` flags move on promotion and rollback. Every write
is a read-modify-write under an inter-process lock, published atomically (a temporary file then a
rename), so concurrent writers never lose an entry and a crash leaves the previous file intact.
The location may be a local path or any fsspec URI (``s3://bucket/models/summary.json``). On
``s3://`` the endpoint is the standard ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, else MLflow's
``MLFLOW_S3_ENDPOINT_URL`` (one variable points MLflow's artifacts and summary.json at the same
S3-compatible store: MinIO, moto, Ceph...). The lock of a remote location is a local file: it
serialises the writers of one machine, not of several.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import fsspec

from velocast.config import Settings, get_settings, redact
from velocast.errors import DependencyUnavailable
from velocast.evaluation.metrics import lower_is_better
from velocast.fileio import atomic_write_bytes, file_lock

log = logging.getLogger(__name__)


@dataclass
class SummaryEntry:
    timestamp: str
    model_type: str
    env: str
    test_mode: bool
    run_id: str
    model_uri: str
    registered_model: str | None = None
    model_version: str | None = None
    horizon: str | None = None
    data_source: str | None = None
    split_version: int | None = None
    metrics_scope: str = "test_baseline"
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None
    double_evaluation_enabled: bool = False
    r2_baseline: float | None = None
    rmse_baseline: float | None = None
    r2_current: float | None = None
    rmse_current: float | None = None
    baseline_regression: bool | None = None
    is_champion: bool = False
    train_metrics: dict[str, Any] = field(default_factory=dict)
    extra_metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SummaryEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def _remote_fs(uri: str, timeout: float) -> tuple[Any, str]:
    """The fsspec filesystem and path of a remote ``uri`` (S3: MLflow's endpoint variable honoured too).

    S3 calls get connect and read timeouts of ``timeout`` seconds and one retry (botocore's defaults,
    60 s and 5 attempts each, would hang a request for minutes on a silent endpoint).
    """
    options: dict[str, Any] = {}
    if uri.startswith(("s3://", "s3a://")):
        options["config_kwargs"] = {"connect_timeout": timeout, "read_timeout": timeout,
                                    "retries": {"max_attempts": 2, "mode": "standard"}}
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        if endpoint and not (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")):
            options["client_kwargs"] = {"endpoint_url": endpoint}
    return fsspec.core.url_to_fs(uri, **options)


@contextmanager
def _object_store(uri: str) -> Iterator[None]:
    """Failures of a remote summary.json (not "does not exist") as ``DependencyUnavailable``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise DependencyUnavailable("object store", f"{redact(uri)}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "aiobotocore", "s3fs", "aiohttp")):
            raise DependencyUnavailable("object store", f"{redact(uri)}: {type(exc).__name__}: {exc}") from exc
        raise


def _lock_path(uri: str, settings: Settings) -> Path:
    if _is_local(uri):
        path = _local_path(uri)
        return path.with_name(path.name + ".lock")
    digest = hashlib.sha1(uri.encode(), usedforsecurity=False).hexdigest()[:12]  # a file name, not a secret
    return settings.locks_dir / f"summary-{digest}.lock"


class SummaryStore:
    """Read and write one summary.json location."""

    def __init__(self, uri: str | None = None, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.uri = uri or self.settings.summary_location

    # ------------------------------------------------------------------ reading
    def read(self) -> list[SummaryEntry]:
        return [SummaryEntry.from_dict(d) for d in self._read_raw()]

    def _read_raw(self) -> list[dict[str, Any]]:
        try:
            if _is_local(self.uri):
                path = _local_path(self.uri)
                if not path.exists():
                    return []
                text = path.read_text(encoding="utf-8")
            else:
                with _object_store(self.uri):
                    fs, path = _remote_fs(self.uri, self.settings.dependency_timeout_seconds)
                    fs.invalidate_cache(path)  # another process may have written it since our last look
                    if not fs.exists(path):
                        return []
                    with fs.open(path, "r", encoding="utf-8") as handle:
                        text = handle.read()
        except FileNotFoundError:
            return []
        data = json.loads(text) if text.strip() else []
        if not isinstance(data, list):
            raise ValueError(f"{self.uri}: expected a JSON list of runs")
        return data

    # ------------------------------------------------------------------ writing
    def _write_raw(self, data: list[dict[str, Any]]) -> None:
        payload = json.dumps(data, indent=2, default=str).encode("utf-8")
        if _is_local(self.uri):
            atomic_write_bytes(_local_path(self.uri), payload)
            return
        with _object_store(self.uri):
            fs, path = _remote_fs(self.uri, self.settings.dependency_timeout_seconds)
            tmp = f"{path}.tmp"
            with fs.open(tmp, "wb") as handle:  # object stores publish a whole object at once
                handle.write(payload)
            fs.mv(tmp, path)

    @contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        with file_lock(_lock_path(self.uri, self.settings)):
            self._remove_dead_temporaries()
            data = self._read_raw()
            yield data
            self._write_raw(data)

    def _remove_dead_temporaries(self) -> None:
        """Temporary files of writers killed mid-write (kill -9 skips their clean-up).

        Every writer of a local summary.json writes its temporary file while holding the lock we
        hold now, so any temporary file found here belongs to a dead process.
        """
        if not _is_local(self.uri):
            return
        path = _local_path(self.uri)
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def append(self, entry: SummaryEntry) -> None:
        with self._locked() as data:
            data.append(entry.to_dict())
        log.info("summary.json: appended run %s (%s)", entry.run_id, entry.model_type)

    def update(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Apply ``change`` to the list under the lock (used to move champion flags)."""
        with self._locked() as data:
            before = len(data)
            change(data)
            if len(data) < before:
                raise RuntimeError("summary.json is append-only: an update may not remove entries")

    def set_champion(self, model_type: str, run_id: str | None) -> None:
        """Flag ``run_id`` as the champion of ``model_type`` (None: no champion) and clear the others."""
        def change(data: list[dict[str, Any]]) -> None:
            if run_id is not None and not any(
                    d.get("run_id") == run_id and d.get("model_type") == model_type for d in data):
                raise KeyError(f"run {run_id} of {model_type} is not in {self.uri}")
            for d in data:
                if d.get("model_type") == model_type:
                    d["is_champion"] = d.get("run_id") == run_id
        self.update(change)

    # ------------------------------------------------------------------ lookups
    def champion(self, model_type: str) -> SummaryEntry | None:
        matches = [e for e in self.read() if e.model_type == model_type and e.is_champion]
        return matches[-1] if matches else None

    def find(self, run_id: str) -> SummaryEntry | None:
        matches = [e for e in self.read() if e.run_id == run_id]
        return matches[-1] if matches else None

    def best_model(self, model_type: str, metric: str = "rmse", env: str | None = None,
                   test_mode: bool | None = None) -> SummaryEntry | None:
        """The champion of ``model_type`` if there is one, else the best run by ``metric``."""
        champion = self.champion(model_type)
        if champion is not None:
            return champion
        candidates = [e for e in self.read() if e.model_type == model_type
                      and (env is None or e.env == env) and (test_mode is None or e.test_mode == test_mode)]
        scored = [e for e in candidates if _metric(e, metric) is not None]
        if not scored:
            return None
        reverse = not lower_is_better(metric)
        return sorted(scored, key=lambda e: _metric(e, metric), reverse=reverse)[0]


def _metric(entry: SummaryEntry, metric: str) -> float | None:
    value = getattr(entry, metric, None)
    if value is None:
        value = entry.extra_metrics.get(metric)
    return None if value is None else float(value)


def load_best_model(model_type: str, metric: str = "rmse", env: str | None = None,
                    test_mode: bool | None = None, uri: str | None = None) -> Any:
    """Load the best model straight from its artifact location (no MLflow server needed)."""
    from velocast.tracking.mlflow_runs import load_sklearn_model

    entry = SummaryStore(uri).best_model(model_type, metric, env, test_mode)
    if entry is None:
        raise LookupError(f"no {model_type} model in summary.json")
    return load_sklearn_model(entry.model_uri)
