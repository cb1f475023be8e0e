"""``summary.json``: every training run, readable without MLflow — a view derived from the registry.

Each entry says what was trained, where the model lives (``model_uri``: an artifact location a
consumer can load directly, no tracking server needed) and how it scored. ``rmse``, ``mae`` and
``r2`` are **test_baseline** metrics (never training metrics, which sit in ``train_metrics``);
``r2_current``/``rmse_current`` are on ``test_current`` when the run had one.

**The registry is the one truth.** The MLflow alias ``champion`` decides who is champion; the
``is_champion`` flags here follow it (:meth:`velocast.tracking.registry.Registry.sync_summary`, run
after every promotion and by every recovery), and ``velocast summary rebuild`` regenerates the whole
file from the registry (each run logs its entry as ``summary/entry.json``), so deleting or losing
the file loses nothing.

Entries are never removed by an update; writes are compare-and-swap, never a lock shared by hosts:

- ``s3://``: the object is read with its ETag and written back with ``If-Match: <etag>`` (or
  ``If-None-Match: *`` when there is none yet); a writer that lost the race (HTTP 412, or 409 while
  another conditional write is in flight) reads again and re-applies its change. Writers on any
  number of hosts never lose an entry. The endpoint is the standard ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL``, else MLflow's ``MLFLOW_S3_ENDPOINT_URL`` (:mod:`velocast.objectstore`).
- a local path: a read-modify-write under a lock file *beside summary.json* (so every process that
  can write the file shares it), published atomically (a temporary file then a rename).
- another fsspec URI (``gs://``…): a lock in the local ``VELOCAST_HOME/locks``, which serialises the
  writers of one machine only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import fsspec

from velocast.config import Settings, get_settings, redact
from velocast.evaluation.metrics import lower_is_better
from velocast.fileio import atomic_write_bytes, file_lock
from velocast.objectstore import is_s3, object_store_calls, s3_client, split_s3

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50  # conditional writes lost to other writers before an update gives up


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


def _remote_fs(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem and path of a remote, non-S3 ``uri``."""
    return fsspec.core.url_to_fs(uri)


def _lock_path(uri: str, settings: Settings) -> Path:
    if _is_local(uri):
        path = _local_path(uri)
        return path.with_name(path.name + ".lock")
    digest = hashlib.sha1(uri.encode(), usedforsecurity=False).hexdigest()[:12]  # a file name, not a secret
    return settings.locks_dir / f"summary-{digest}.lock"


class _Lost(Exception):
    """A conditional write lost to another writer: read again and re-apply."""


def _s3_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class SummaryStore:
    """Read and write one summary.json location."""

    def __init__(self, uri: str | None = None, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.uri = uri or self.settings.summary_location

    # ------------------------------------------------------------------ reading
    def read(self) -> list[SummaryEntry]:
        return [SummaryEntry.from_dict(d) for d in self._read_raw()]

    def _read_raw(self) -> list[dict[str, Any]]:
        return self._read_versioned()[0]

    def _read_versioned(self) -> tuple[list[dict[str, Any]], str | None]:
        """The entries and the version they were read at (S3: the ETag; None: no file, or local)."""
        tag = None
        try:
            if _is_local(self.uri):
                path = _local_path(self.uri)
                if not path.exists():
                    return [], None
                text = path.read_text(encoding="utf-8")
            elif is_s3(self.uri):
                text, tag = self._s3_get()
                if text is None:
                    return [], None
            else:
                with object_store_calls(self.uri):
                    fs, path = _remote_fs(self.uri)
                    fs.invalidate_cache(path)  # another process may have written it since our last look
                    if not fs.exists(path):
                        return [], None
                    with fs.open(path, "r", encoding="utf-8") as handle:
                        text = handle.read()
        except FileNotFoundError:
            return [], None
        data = json.loads(text) if text.strip() else []
        if not isinstance(data, list):
            raise ValueError(f"{self.uri}: expected a JSON list of runs")
        return data, tag

    def _s3_get(self) -> tuple[str | None, str | None]:
        bucket, key = split_s3(self.uri)
        with object_store_calls(self.uri):
            client = s3_client(self.settings.dependency_timeout_seconds)
            try:
                answer = client.get_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if _s3_error_code(exc) in ("NoSuchKey", "404"):
                    return None, None
                raise
            return answer["Body"].read().decode("utf-8"), answer["ETag"]

    # ------------------------------------------------------------------ writing
    def _payload(self, data: list[dict[str, Any]]) -> bytes:
        return json.dumps(data, indent=2, default=str).encode("utf-8")

    def _s3_put(self, data: list[dict[str, Any]], tag: str | None) -> None:
        """Write ``data`` only if the object is still at ``tag`` (None: only if there is none)."""
        bucket, key = split_s3(self.uri)
        condition = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
        with object_store_calls(self.uri):
            client = s3_client(self.settings.dependency_timeout_seconds)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=self._payload(data),
                                  ContentType="application/json", **condition)
            except Exception as exc:
                if _s3_error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise _Lost() from exc
                raise

    def _update(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Apply ``change`` to the entries and publish the result without losing a concurrent write."""
        if is_s3(self.uri):
            for attempt in range(1, CAS_ATTEMPTS + 1):
                data, tag = self._read_versioned()
                change(data)
                try:
                    self._s3_put(data, tag)
                    return
                except _Lost:
                    wait = min(2.0, 0.02 * 2 ** min(attempt, 7)) * (0.5 + random.random())  # nosec B311 (jitter)
                    log.info("summary.json: another writer won (attempt %d); reading it again", attempt)
                    time.sleep(wait)
            raise RuntimeError(f"{redact(self.uri)}: {CAS_ATTEMPTS} conditional writes in a row lost to other "
                               "writers; try again")
        with file_lock(_lock_path(self.uri, self.settings)):
            self._remove_dead_temporaries()
            data = self._read_raw()
            change(data)
            self._write_unconditional(data)

    def _write_unconditional(self, data: list[dict[str, Any]]) -> None:
        payload = self._payload(data)
        if _is_local(self.uri):
            atomic_write_bytes(_local_path(self.uri), payload)
            return
        with object_store_calls(self.uri):
            fs, path = _remote_fs(self.uri)
            tmp = f"{path}.tmp"
            with fs.open(tmp, "wb") as handle:  # object stores publish a whole object at once
                handle.write(payload)
            fs.mv(tmp, path)

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
        self._update(lambda data: data.append(entry.to_dict()))
        log.info("summary.json: appended run %s (%s)", entry.run_id, entry.model_type)

    def update(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Apply ``change`` to the list (compare-and-swap on S3, under the lock elsewhere)."""
        def checked(data: list[dict[str, Any]]) -> None:
            before = len(data)
            change(data)
            if len(data) < before:
                raise RuntimeError("summary.json is append-only: an update may not remove entries")
        self._update(checked)

    def update_all(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Apply ``change``, which may also remove entries: ``velocast summary rebuild`` only."""
        self._update(change)

    def set_champion(self, model_type: str, run_id: str | None) -> bool:
        """Flag ``run_id`` as the champion of ``model_type`` (None: no champion) and clear the others.

        Writes only when a flag differs; True if it wrote. ``KeyError`` when the run has no entry.
        """
        current = self._read_raw()
        if all(bool(d.get("is_champion")) == (d.get("run_id") == run_id)
               for d in current if d.get("model_type") == model_type) \
                and (run_id is None or any(d.get("run_id") == run_id for d in current)):
            return False

        def change(data: list[dict[str, Any]]) -> None:
            if run_id is not None and not any(
                    d.get("run_id") == run_id and d.get("model_type") == model_type for d in data):
                raise KeyError(f"run {run_id} of {model_type} is not in {self.uri}")
            for d in data:
                if d.get("model_type") == model_type:
                    d["is_champion"] = d.get("run_id") == run_id
        self.update(change)
        return True

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
