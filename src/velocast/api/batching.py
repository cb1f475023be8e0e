"""Dynamic micro-batching of ``/predict``: concurrent requests share one validation and prediction.

A prediction has a fixed cost (validating rows, reading their history, building features, calling
the model) that barely grows with the number of rows. Every request waiting when the event loop
gets to the batch (up to ``max_records`` records) is predicted together with those of the same
model type, horizon and interval coverage, and each request gets its own slice. A request alone is
served at once (no waiting window), so latency only improves with concurrency.

The batch runs on the event loop itself when it is small (``inline_records``): a single-record
prediction takes well under a millisecond, less than handing it to a thread and back (each handoff
is a thread wake-up and a wait for the GIL, which under load cost more than the prediction). A
larger batch runs in a worker thread, so the loop keeps answering meanwhile.

If any record of a batch is invalid, the batch is split back into its requests, each handled on
its own, so every request gets exactly its own 422 with its own record indices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


# (model type, horizon, interval coverage): requests are batched only with requests of the same key
PredictKey = tuple[str, str | None, float]


@dataclass
class Job:
    key: PredictKey
    records: list[Any]
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PredictBatcher:
    """Prediction jobs gathered on the event loop and served in batches by (model type, horizon, coverage).

    ``run_batch(key, groups)`` predicts the records of several requests at once and returns one
    result per request; ``run_single(key, records)`` serves one request.
    """

    def __init__(self, run_batch: Callable[[PredictKey, list[list[Any]]], list[Any]],
                 run_single: Callable[[PredictKey, list[Any]], Any], max_records: int = 5000,
                 inline_records: int = 1000):
        self._run_batch, self._run_single = run_batch, run_single
        self.max_records = max_records
        self.inline_records = inline_records  # larger batches go to a worker thread
        self._pending: list[Job] = []
        self._scheduled = False
        self.batches = 0
        self.batched_requests = 0

    async def submit(self, key: PredictKey, records: list[Any]) -> Any:
        """Predict ``records`` with whatever else is waiting (see the module docstring)."""
        job = Job(key, records)
        self._pending.append(job)
        if not self._scheduled:  # after the callbacks already due: requests that arrived together batch
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await job.future

    def _take(self) -> list[Job]:
        jobs, size = [], 0
        while self._pending and (not jobs or size + len(self._pending[0].records) <= self.max_records):
            job = self._pending.pop(0)
            jobs.append(job)
            size += len(job.records)
        return jobs

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending:
            jobs = self._take()
            groups: dict[PredictKey, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                if sum(len(job.records) for job in group) <= self.inline_records:
                    self._serve(key, group)
                else:
                    loop.run_in_executor(None, self._serve_threadsafe, loop, key, group)

    def _serve_threadsafe(self, loop: asyncio.AbstractEventLoop, key: PredictKey, group: list[Job]) -> None:
        outcomes = self._outcomes(key, group)
        loop.call_soon_threadsafe(self._settle, group, outcomes)

    def _serve(self, key: PredictKey, group: list[Job]) -> None:
        self._settle(group, self._outcomes(key, group))

    @staticmethod
    def _settle(group: list[Job], outcomes: list[tuple[bool, Any]]) -> None:
        for job, (ok, value) in zip(group, outcomes):
            if job.future.done():  # the request went away (client disconnected)
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _outcomes(self, key: PredictKey, group: list[Job]) -> list[tuple[bool, Any]]:
        """(True, result) or (False, exception) for each job of the group."""
        if len(group) > 1:
            try:
                results = self._run_batch(key, [job.records for job in group])
            except Exception as exc:  # noqa: BLE001 - an invalid record somewhere: each request on its own
                log.debug("batch of %d requests split: %s", len(group), exc)
            else:
                self.batches += 1
                self.batched_requests += len(group)
                return [(True, result) for result in results]
        outcomes: list[tuple[bool, Any]] = []
        for job in group:
            try:
                outcomes.append((True, self._run_single(key, job.records)))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                outcomes.append((False, exc))
        return outcomes
