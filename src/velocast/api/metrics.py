"""Prometheus metrics of the API, in a ``CollectorRegistry`` of its own (one per app).

Request counts and latencies per route template and status are counted by ``MetricsMiddleware``;
predictions served by the predict route; the lifecycle state (champion versions, served versions,
last decision per model type, latest drift share, training jobs) is read at scrape time, so a
promotion or a drift check made by the CLI or Airflow shows up too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from velocast.config import Settings
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.monitor import latest_drift
from velocast.models import MODEL_TYPES

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _version_number(version: str | None) -> float:
    try:
        return float(version) if version is not None else float("nan")
    except ValueError:
        return float("nan")


class LifecycleCollector(Collector):
    """Gauges read at scrape time; a failing source is logged and left out, never fails the scrape."""

    def __init__(self, settings: Settings, cache: Any, jobs: Any):
        self.settings, self.cache, self.jobs = settings, cache, jobs

    def collect(self) -> Iterator[Metric]:
        for produce in (self._champions, self._served, self._decisions, self._drift, self._jobs):
            try:
                yield from produce()
            except Exception:
                log.exception("metrics: %s failed", produce.__name__)

    def _champions(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("velocast_champion_version", "Registered version holding the champion alias.",
                                  labels=["model_type"])
        for model_type in MODEL_TYPES:
            ref = self.cache.registry.champion(model_type)
            if ref is not None:
                gauge.add_metric([model_type], _version_number(ref.version))
        yield gauge

    def _served(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("velocast_served_model_version", "Version /predict serves now.",
                                  labels=["model_type", "horizon", "champion"])
        for (model_type, horizon), served in self.cache.snapshot().items():
            gauge.add_metric([model_type, horizon or "", str(served.champion).lower()], _version_number(served.version))
        yield gauge

    def _decisions(self) -> Iterator[Metric]:
        info = InfoMetricFamily("velocast_last_decision", "Latest lifecycle decision per model type (audit log).",
                                labels=["model_type"])
        when = GaugeMetricFamily("velocast_last_decision_timestamp_seconds", "When the latest decision was made.",
                                 labels=["model_type", "decision"])
        seen: set[str] = set()
        for event in AuditLog(settings=self.settings).list(limit=500):
            if event.deployment_decision and event.model_type and event.model_type not in seen:
                seen.add(event.model_type)
                info.add_metric([event.model_type], {"decision": event.deployment_decision, "event": event.event,
                                                     "to_version": event.to_version or ""})
                when.add_metric([event.model_type, event.deployment_decision], event.timestamp.timestamp())
        yield info
        yield when

    def _drift(self) -> Iterator[Metric]:
        latest = latest_drift(self.settings)
        report = (latest or {}).get("report") or {}
        share = GaugeMetricFamily("velocast_drift_share", "Share of drifted features in the latest drift report.")
        detected = GaugeMetricFamily("velocast_drift_detected", "1 if the latest drift report found drift.")
        if report.get("drift_share") is not None:
            share.add_metric([], float(report["drift_share"]))
        if report.get("drift_detected") is not None:
            detected.add_metric([], float(bool(report["drift_detected"])))
        yield share
        yield detected

    def _jobs(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("velocast_training_jobs", "Training jobs of this server by status.",
                                  labels=["status"])
        for status, n in self.jobs.counts().items():
            gauge.add_metric([status], n)
        yield gauge


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, settings: Settings, cache: Any, jobs: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter("velocast_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("velocast_http_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("velocast_predictions", "Records predicted.", ["model_type"],
                                   registry=self.registry)
        self.registry.register(LifecycleCollector(settings, cache, jobs))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: count and time every HTTP request by its route template."""

    def __init__(self, app: Any, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", ""), template, status, time.perf_counter() - started)
