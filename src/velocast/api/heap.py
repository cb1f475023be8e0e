"""Keep the garbage collector's full passes off the request path of a long-running server.

A served model, the store's counts held in memory and the imported libraries are millions of
objects that live as long as the process. CPython's full collections walk them all, holding the
GIL for tens of milliseconds: under load that was the p99 of ``/predict``. After each change of what
is served (a model loaded or swapped, the store's history rebuilt), the refresh thread collects once
and moves every live object to the permanent generation (``gc.freeze``); later collections walk
only what requests allocate. Unfreezing first lets a swapped-out model's reference cycles go.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class HeapSettler:
    """Called by the model cache's refresh thread: collect and freeze when ``state()`` changed."""

    def __init__(self, state: Callable[[], Hashable]):
        self.state = state
        self.settled: Hashable | None = None
        self.settles = 0  # collections made so far

    def __call__(self) -> None:
        now = self.state()
        if now == self.settled:
            return
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.settled = now
        self.settles += 1
        log.info("heap settled: %d long-lived objects frozen out of the collector's passes (%.0f ms)",
                 gc.get_freeze_count(), (time.perf_counter() - started) * 1000)

    @staticmethod
    def release() -> None:
        """Give the frozen objects back to the collector (the server stops)."""
        gc.unfreeze()


__all__ = ["HeapSettler"]
