"""The cycle lock of a model type: a lease that holds across processes and Airflow tasks.

Two weekly cycles (or a cycle and a quarterly retrain) of one model type never run at once. The
in-process cycle (``velocast cycle``, ``velocast retrain``) holds the lease for its whole run; the
Airflow DAG takes it in its first task under the DAG run's id and gives it back in a last task that
runs whatever happened upstream, so the lock spans every task of the run.

The lease is a small JSON file ``locks/cycle-<type>.lease.json`` (owner, host, pid, when it was
taken, when it expires), read and replaced under a short inter-process lock. Another owner may take
it only once it is stale: expired (``VELOCAST_CYCLE_LEASE_SECONDS``, default 6 h — an Airflow run
whose clean-up never ran), or held by a process of this machine that is gone (a killed CLI cycle).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from velocast.config import Settings
from velocast.fileio import atomic_write_json, file_lock

log = logging.getLogger(__name__)


class CycleBusy(RuntimeError):
    """Another cycle (or retrain) of the same model type holds the lease."""


@dataclass
class Lease:
    model_type: str
    owner: str
    host: str
    pid: int
    process_bound: bool  # released by the death of its process (in-process cycles), else only by expiry
    acquired_at: str
    expires_at: float  # epoch seconds

    def stale(self) -> bool:
        if time.time() >= self.expires_at:
            return True
        return self.process_bound and self.host == socket.gethostname() and not _alive(self.pid)

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, timezone.utc).isoformat(timespec="seconds")
        return f"held by {self.owner} (host {self.host}, pid {self.pid}) since {self.acquired_at}, expires {until}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def lease_path(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"cycle-{model_type}.lease.json"


def _guard(settings: Settings, model_type: str) -> Path:
    return settings.locks_dir / f"cycle-{model_type}.lease.lock"


def current(model_type: str, settings: Settings) -> Lease | None:
    """The lease as recorded (stale or not), or None."""
    try:
        return Lease(**json.loads(lease_path(settings, model_type).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:  # a torn or foreign file: treat as free, say so
        log.warning("ignoring an unreadable cycle lease %s: %s", lease_path(settings, model_type), exc)
        return None


def acquire(model_type: str, owner: str, settings: Settings, seconds: float | None = None,
            process_bound: bool = False) -> Lease:
    """Take (or renew, for the same owner) the lease of ``model_type``; ``CycleBusy`` if another holds it."""
    seconds = settings.cycle_lease_seconds if seconds is None else seconds
    with file_lock(_guard(settings, model_type), timeout=30):
        held = current(model_type, settings)
        if held is not None and held.owner != owner:
            if not held.stale():
                raise CycleBusy(f"another {model_type} cycle is running ({held.describe()}; "
                                f"lease {lease_path(settings, model_type)}); try again when it ends")
            log.warning("taking over a stale %s cycle lease (%s)", model_type, held.describe())
        lease = Lease(model_type, owner, socket.gethostname(), os.getpid(), process_bound,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"), time.time() + seconds)
        atomic_write_json(lease_path(settings, model_type), asdict(lease))
    return lease


def release(model_type: str, owner: str, settings: Settings) -> bool:
    """Give the lease back if ``owner`` holds it (another owner's lease is left alone). True if released."""
    with file_lock(_guard(settings, model_type), timeout=30):
        held = current(model_type, settings)
        if held is None or held.owner != owner:
            return False
        lease_path(settings, model_type).unlink(missing_ok=True)
    return True


@contextmanager
def held(model_type: str, settings: Settings, owner: str | None = None) -> Iterator[Lease]:
    """Hold the lease for the block, bound to this process (a killed process frees it)."""
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    lease = acquire(model_type, owner, settings, process_bound=True)
    try:
        yield lease
    finally:
        release(model_type, owner, settings)
