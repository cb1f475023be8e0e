"""Dynamic micro-batching of ``/predict``: concurrent requests share one validation and prediction.

A prediction has a fixed cost (validating rows, reading their history, building features, calling
the model) that barely grows with the number of rows. Under load, one worker thread takes every
request waiting in the queue (up to ``max_records`` records), predicts together those of the same
model type, horizon and interval coverage, and hands each request its own slice. A request alone
is served at once (no waiting window), so latency only improves with concurrency.

If any record of a batch is invalid, the batch is split back into its requests, each handled on
its own, so every request gets exactly its own 422 with its own record indices.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


# (model type, horizon, interval coverage): requests are batched only with requests of the same key
PredictKey = tuple[str, str | None, float]


@dataclass
class Job:
    key: PredictKey
    records: list[Any]
    future: Future = field(default_factory=Future)


class PredictBatcher:
    """Queue of prediction jobs served by one worker thread, batched by (model type, horizon, coverage).

    ``run_batch(key, records)`` predicts records of several requests at once and returns one
    result per record-owning request via ``split``; ``run_single(key, records)`` serves one request.
    """

    def __init__(self, run_batch: Callable[[PredictKey, list[list[Any]]], list[Any]],
                 run_single: Callable[[PredictKey, list[Any]], Any], max_records: int = 5000):
        self._run_batch, self._run_single = run_batch, run_single
        self.max_records = max_records
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="velocast-predict-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.batched_requests = 0

    def submit(self, key: PredictKey, records: list[Any]) -> Any:
        """Predict ``records`` (blocking the calling thread until its batch is done)."""
        job = Job(key, records)
        self._queue.put(job)
        return job.future.result()

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, size = [first], len(first.records)
        while size < self.max_records:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            size += len(job.records)
        return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            groups: dict[PredictKey, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._serve(key, group)

    def _serve(self, key: PredictKey, group: list[Job]) -> None:
        if len(group) > 1:
            try:
                results = self._run_batch(key, [job.records for job in group])
            except Exception as exc:  # an invalid record somewhere: serve each request on its own
                log.debug("batch of %d requests split: %s", len(group), exc)
            else:
                self.batches += 1
                self.batched_requests += len(group)
                for job, result in zip(group, results):
                    job.future.set_result(result)
                return
        for job in group:
            try:
                job.future.set_result(self._run_single(key, job.records))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                job.future.set_exception(exc)
