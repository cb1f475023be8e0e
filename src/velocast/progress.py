"""Progress of long library work, reported through ``logging`` (library code never prints).

Library code calls :func:`step` when a stage of long work starts ("fitting lgbm on 307,385 rows",
"trial 3/20: rmse 24.91, best 24.50 …"). Each call is one INFO record of the logger
``velocast.progress``: the CLI shows these lines with the elapsed time while a command runs (see
``velocast.cli``), and elsewhere (the API, Airflow) they are ordinary log lines.

``done``/``total`` give a stage's count (trials, weeks) so a front end can draw a bar; ``scope``
prefixes every step of a nested piece of work ("week 2/4: training …").
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

LOGGER_NAME = "velocast.progress"
_log = logging.getLogger(LOGGER_NAME)
_prefix: contextvars.ContextVar[str] = contextvars.ContextVar("velocast_progress_prefix", default="")


def step(message: str, done: int | None = None, total: int | None = None) -> None:
    """Report that a stage starts (or that ``done`` of ``total`` items are finished)."""
    prefix = _prefix.get()
    _log.info("%s%s", prefix, message, extra={"progress_done": done, "progress_total": total})


@contextlib.contextmanager
def scope(label: str) -> Iterator[None]:
    """Prefix the steps reported inside the block with ``label: ``."""
    token = _prefix.set(f"{_prefix.get()}{label}: ")
    try:
        yield
    finally:
        _prefix.reset(token)


def duration(seconds: float) -> str:
    """A short human duration: ``8.2 s``, ``1 min 03 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


__all__ = ["LOGGER_NAME", "duration", "scope", "step"]
