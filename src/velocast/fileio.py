"""Atomic writes and inter-process locks: the one place velocast makes a write crash-safe.

A write goes to a temporary file in the same folder, is flushed to disk, then replaces the
target with ``os.replace`` (atomic on POSIX). A crash half-way leaves the previous file intact.
Locks are ``filelock`` files, so two processes on one machine serialise their updates.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An ``OSError`` without a file name (a full disk on ``write``/``fsync``) gets ``path`` as its name,
    so the error a user sees says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A temporary file beside ``path``, flushed to disk and renamed over ``path`` when the block succeeds."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    with _replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode("utf-8"))


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as Parquet atomically (temporary file + rename)."""
    with _replacing(path) as tmp:
        frame.to_parquet(tmp, index=False)


@contextlib.contextmanager
def file_lock(lock_path: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an inter-process lock (a ``.lock`` file) for the duration of the block."""
    lock_path = Path(lock_path)
    with naming(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=timeout)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def read_parquet_cached(path: Path, read: Callable[[str], pd.DataFrame]) -> pd.DataFrame | None:
    """``read(path)`` kept in memory per file version (modification time), or None when no file.

    Servers re-read a file only after a writer replaced it (atomic writes give a new mtime); each
    caller gets its own copy.
    """
    try:
        version = Path(path).stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _read_version(str(path), version, read).copy()


@functools.lru_cache(maxsize=8)
def _read_version(path: str, _version: int, read: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
    return read(path)
