"""Failures velocast tells apart from "not found", and the one-line messages they make.

- :class:`DependencyUnavailable`: MLflow, the audit database or the object store did not answer
  (or answered with an error that is not "does not exist"). A caller never reads it as "absent":
  the step fails, the API answers 503 naming the dependency, the champion stays as it was.
- :func:`write_failure`: an ``OSError`` of a write under the velocast home (read-only, permission,
  a path under a file, a full disk) as one line naming the path and what was being written.
"""

from __future__ import annotations

import errno
from pathlib import Path

# errno values of a write that cannot be done (as opposed to a bug)
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

# what lives where under the velocast home (first match wins)
_PARTS = (
    ("store/forecasts", "stored forecasts"), ("store/weather", "the weather store"), ("store", "the count store"),
    ("quarantine", "quarantined rows"), ("splits", "a split snapshot"), ("reports", "a report"),
    ("locks/promotion", "the promotion lock and journal"), ("locks/cycle", "the cycle lease"),
    ("locks/training", "a training's liveness lock"), ("locks/store", "the count store's lock"),
    ("locks/splits", "the split lock"), ("locks", "a lock file"), ("mlartifacts", "MLflow model artifacts"),
    ("mlflow.db", "the MLflow tracking database"), ("audit.db", "the audit log"), ("summary.json", "summary.json"),
    ("cycle_state.json", "the cycle state"), ("inbox", "the inbox"), ("simulations", "a simulation home"),
)


class DependencyUnavailable(RuntimeError):
    """A service velocast depends on failed to answer; ``str()`` is ``"<dependency> unreachable: <detail>"``."""

    def __init__(self, dependency: str, detail: str):
        self.dependency, self.detail = dependency, detail
        super().__init__(f"{dependency} unreachable: {detail}")


def what_is(path: str | Path | None, home: Path | None = None) -> str:
    """A name for what ``path`` holds (``"the audit log"``), from where it sits under the home."""
    if not path:
        return "a file"
    relative = None
    if home is not None:
        try:
            relative = Path(path).absolute().relative_to(Path(home).absolute()).as_posix()
        except ValueError:
            relative = None
    if relative is None:  # outside the home: only the file's own name says what it is
        relative = Path(path).name
    for part, name in _PARTS:
        if relative.startswith(part) and relative[len(part):len(part) + 1] in ("", "/", "-", "."):
            return name
    return "a file"


def is_write_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (READ_ONLY_ERRNOS | FULL_ERRNOS)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def write_failure(exc: BaseException, home: Path | None = None) -> str | None:
    """One line for a write that failed because of where it writes; None for any other error."""
    if not isinstance(exc, OSError) or not is_write_failure(exc):
        return None
    path = exc.filename
    why = {errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "it is a folder",
           errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
           errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}.get(exc.errno, exc.strerror)
    where = f" under VELOCAST_HOME={home}" if home is not None else ""
    return f"cannot write {what_is(path, home)} ({path or 'unknown path'}){where}: {why}"


def sqlite_write_failure(message: str, path: str | Path) -> OSError | None:
    """SQLite's own read-only / full-disk errors as the ``OSError`` a file write would have raised."""
    text = message.lower()
    if "readonly database" in text or "read-only" in text or "unable to open database file" in text:
        return OSError(errno.EROFS, "read-only database", str(path))
    if "database or disk is full" in text:
        return OSError(errno.ENOSPC, "database or disk is full", str(path))
    return None
