"""Prometheus metrics of the API, in a ``CollectorRegistry`` of its own (one per app).

Request counts and latencies per route template and status are counted by ``MetricsMiddleware``;
predictions served by the predict route. The lifecycle state is read at scrape time from where it
lives, so a promotion, a drift check or a cycle run by the CLI or Airflow shows up too:

=================  =======================================================================
source             metrics
=================  =======================================================================
``champions``      ``velocast_champion_version``, ``velocast_champion_test_metric`` (MLflow)
``served``         ``velocast_served_model_version`` (this server's model cache)
``readiness``      ``velocast_ready`` (what ``/ready`` answers)
``audit``          ``velocast_audit_events_total``, ``velocast_last_decision_info``,
                   ``velocast_last_decision_timestamp_seconds``, ``velocast_last_cycle_error``,
                   ``velocast_last_cycle_timestamp_seconds``, ``velocast_drift_detected_streak``
``drift``          ``velocast_drift_share``, ``velocast_drift_detected``, ``velocast_drift_status``,
                   ``velocast_drift_report_timestamp_seconds``, ``velocast_drift_new_counters``,
                   ``velocast_drift_feature_*`` (one series per feature of the latest report)
``health``         ``velocast_champion_health_*`` (the weekly cycle's latest health check)
``store``          ``velocast_store_latest_count_timestamp_seconds``
``jobs``           ``velocast_training_jobs`` (every stored job, all replicas)
=================  =======================================================================

A scrape never waits on a dead dependency: each source is read in its own thread, all within
``SCRAPE_BUDGET_SECONDS``. A source still reading at the deadline keeps its previous values (it
goes on in the background; no second read starts meanwhile); a source that raises is left out of
that scrape. Both count in ``velocast_metrics_source_failures_total{source, kind}``, and
``velocast_metrics_source_last_success_timestamp_seconds`` tells how fresh each source is.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from velocast.config import Settings, redact_secrets
from velocast.data import store
from velocast.lifecycle.audit import AuditLog
from velocast.lifecycle.decisions.monitor import latest_drifts, latest_health
from velocast.models import MODEL_TYPES
from velocast.monitoring.drift import STATUSES as DRIFT_STATUSES

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SCRAPE_BUDGET_SECONDS = 3.0  # Prometheus' default scrape timeout is 10 s
HEALTH_STATES = ("ok", "degraded", "critical", "unknown")
CYCLE_ROWS = 200  # newest cycle rows read for the last cycle and the drift streak of each model type
_TEST_METRIC = re.compile(r"^(test_baseline|test_current)_(.+)$")

Read = Callable[[], list[Metric]]
SERVED_HELP = "Version /predict serves now."


def served_series(snapshot: dict[Any, Any]) -> dict[tuple[str, str, str], float]:
    """``velocast_served_model_version``'s series of a champion cache's snapshot: labels (model type,
    the served model's own horizon, champion or stand-in) -> version. The champion asked for without
    a horizon and asked for by its horizon are one model: one series."""
    return {(model_type, served.model.horizon, str(served.champion).lower()): _version_number(served.version)
            for (model_type, _asked), served in snapshot.items()}


def _version_number(version: str | None) -> float:
    try:
        return float(version) if version is not None else float("nan")
    except ValueError:
        return float("nan")


def _epoch(value: str | None) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _Reading:
    """One read of a source in its own daemon thread (a hung read never blocks the interpreter's exit)."""

    def __init__(self, read: Read):
        self.done = threading.Event()
        self.metrics: list[Metric] | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(read,), name="velocast-metrics-read", daemon=True).start()

    def _run(self, read: Read) -> None:
        try:
            self.metrics = list(read())
        except BaseException as exc:  # noqa: BLE001 - reported by the collector
            self.error = exc
        finally:
            self.done.set()


class LifecycleCollector(Collector):
    """The lifecycle gauges, each source read concurrently within a time budget (see the module doc)."""

    def __init__(self, settings: Settings, cache: Any, jobs: Any, ready: Callable[[], Any] | None = None,
                 budget_seconds: float = SCRAPE_BUDGET_SECONDS, served: bool = True):
        self.settings, self.cache, self.jobs, self.ready = settings, cache, jobs, ready
        self.budget = budget_seconds
        self.sources: dict[str, Read] = {
            "champions": self._champions, "served": self._served, "readiness": self._readiness,
            "audit": self._audit, "drift": self._drift, "health": self._health, "store": self._store,
            "jobs": self._jobs,
        }
        if ready is None:
            del self.sources["readiness"]
        if not served:  # several workers: each writes its own (ApiMetrics.served)
            del self.sources["served"]
        self._reading: dict[str, _Reading] = {}
        self._last: dict[str, list[Metric]] = {}
        self._last_ok: dict[str, float] = {}
        self._failures: Tally[tuple[str, str]] = Tally()
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the data: no eager collect at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for name, read in self.sources.items():
                if name not in self._reading:
                    self._reading[name] = _Reading(read)
            deadline = time.monotonic() + self.budget
            for reading in self._reading.values():
                reading.done.wait(max(0.0, deadline - time.monotonic()))
            for name in list(self._reading):
                reading = self._reading[name]
                if not reading.done.is_set():
                    self._failures[(name, "timeout")] += 1
                    log.warning("metrics: %s did not answer within %g s: its previous values are served", name,
                                self.budget)
                    continue
                del self._reading[name]
                if reading.error is not None:
                    self._failures[(name, "error")] += 1
                    self._last.pop(name, None)
                    log.error("metrics: reading %s failed: %s", name,
                              redact_secrets(f"{type(reading.error).__name__}: {reading.error}", self.settings))
                else:
                    self._last[name] = reading.metrics or []
                    self._last_ok[name] = time.time()
            out = [metric for name in self.sources for metric in self._last.get(name, [])]
            failures = CounterMetricFamily("velocast_metrics_source_failures",
                                           "Scrape-time reads of a lifecycle source that failed (error) or were "
                                           "still running at the scrape's deadline (timeout).",
                                           labels=["source", "kind"])
            for name in self.sources:
                for kind in ("error", "timeout"):
                    failures.add_metric([name, kind], self._failures[(name, kind)])
            fresh = GaugeMetricFamily("velocast_metrics_source_last_success_timestamp_seconds",
                                      "When each lifecycle source was last read successfully.", labels=["source"])
            for name, when in self._last_ok.items():
                fresh.add_metric([name], when)
        yield from out
        yield failures
        yield fresh

    # ----- sources
    def _champions(self) -> list[Metric]:
        version = GaugeMetricFamily("velocast_champion_version", "Registered version holding the champion alias.",
                                    labels=["model_type"])
        scores = GaugeMetricFamily("velocast_champion_test_metric", "Test metrics of the champion recorded at "
                                   "training (split test_baseline or test_current).",
                                   labels=["model_type", "split", "metric"])
        for model_type in MODEL_TYPES:
            ref = self.cache.registry.champion(model_type, with_metrics=True)
            if ref is None:
                continue
            version.add_metric([model_type], _version_number(ref.version))
            for key, value in sorted(ref.metrics.items()):
                match = _TEST_METRIC.match(key)
                if match and _number(value) is not None:
                    scores.add_metric([model_type, match[1], match[2]], float(value))
        return [version, scores]

    def _served(self) -> list[Metric]:
        gauge = GaugeMetricFamily("velocast_served_model_version", SERVED_HELP,
                                  labels=["model_type", "horizon", "champion"])
        for labels, version in served_series(self.cache.snapshot()).items():
            gauge.add_metric(list(labels), version)
        return [gauge]

    def _readiness(self) -> list[Metric]:
        answer = self.ready()
        gauge = GaugeMetricFamily("velocast_ready", "1 when /ready answers 200 (a model of the default type can "
                                  "serve), else 0.", labels=["model_type"])
        gauge.add_metric([answer.model_type], 1.0 if answer.status == "ready" else 0.0)
        return [gauge]

    def _audit(self) -> list[Metric]:
        audit = AuditLog(settings=self.settings)
        events = CounterMetricFamily("velocast_audit_events", "Rows of the audit log by event, decision and model "
                                     "type (the log is append-only: a counter).",
                                     labels=["event", "decision", "model_type"])
        for event, decision, model_type, n in audit.counts():
            events.add_metric([event, decision or "", model_type or ""], n)
        info = InfoMetricFamily("velocast_last_decision", "Latest lifecycle decision per model type (audit log).",
                                labels=["model_type"])
        when = GaugeMetricFamily("velocast_last_decision_timestamp_seconds", "When the latest decision was made.",
                                 labels=["model_type", "decision"])
        seen: set[str] = set()
        for event in audit.list(limit=500):
            if event.deployment_decision and event.model_type and event.model_type not in seen:
                seen.add(event.model_type)
                info.add_metric([event.model_type], {"decision": event.deployment_decision, "event": event.event,
                                                     "to_version": event.to_version or ""})
                when.add_metric([event.model_type, event.deployment_decision], event.timestamp.timestamp())
        return [events, info, when, *self._cycles(audit)]

    def _cycles(self, audit: AuditLog) -> list[Metric]:
        """The last weekly cycle of each model type, and how many checked cycles in a row found drift
        (test-mode cycles, smoke tests on a sample, are left out)."""
        error = GaugeMetricFamily("velocast_last_cycle_error", "1 when the latest weekly cycle of the model type "
                                  "was audited as error, else 0.", labels=["model_type"])
        when = GaugeMetricFamily("velocast_last_cycle_timestamp_seconds", "When the latest weekly cycle was "
                                 "audited.", labels=["model_type"])
        streak = GaugeMetricFamily("velocast_drift_detected_streak", "Latest weekly cycles in a row whose drift "
                                   "check found drift (cycles that checked nothing are skipped).",
                                   labels=["model_type"])
        rows: dict[str, list[Any]] = {}
        for event in audit.list(limit=CYCLE_ROWS, events=("cycle", "error")):
            if event.details.get("test_mode"):
                continue
            if event.model_type and (event.event == "cycle" or event.details.get("cycle_id")):
                rows.setdefault(event.model_type, []).append(event)  # newest first
        for model_type, cycles in sorted(rows.items()):
            error.add_metric([model_type], 1.0 if cycles[0].event == "error" else 0.0)
            when.add_metric([model_type], cycles[0].timestamp.timestamp())
            count = 0
            for cycle in cycles:
                if cycle.event != "cycle" or cycle.drift_detected is None:
                    continue
                if not cycle.drift_detected:
                    break
                count += 1
            streak.add_metric([model_type], count)
        return [error, when, streak]

    def _drift(self) -> list[Metric]:
        by_type = ["model_type"]
        share = GaugeMetricFamily("velocast_drift_share", "Share of drifted features in the model type's latest drift "
                                  "report.", labels=by_type)
        detected = GaugeMetricFamily("velocast_drift_detected", "1 if the model type's latest drift report found "
                                     "drift.", labels=by_type)
        state = GaugeMetricFamily("velocast_drift_status", "Status of the latest drift report (1 for its status).",
                                  labels=[*by_type, "status"])
        when = GaugeMetricFamily("velocast_drift_report_timestamp_seconds", "When the latest drift report was made.",
                                 labels=by_type)
        counters = GaugeMetricFamily("velocast_drift_new_counters", "Counters of the latest drift window unknown to "
                                     "the champion.", labels=by_type)
        labels = [*by_type, "feature", "role"]
        drifted = GaugeMetricFamily("velocast_drift_feature_drifted", "1 when the feature drifted in the latest "
                                    "report (tested features only).", labels=labels)
        tested = GaugeMetricFamily("velocast_drift_feature_tested", "1 when the feature had enough rows to be "
                                   "tested.", labels=labels)
        statistic = GaugeMetricFamily("velocast_drift_feature_statistic", "Test statistic (KS or chi-squared) of the "
                                      "feature.", labels=[*labels, "test"])
        p_value = GaugeMetricFamily("velocast_drift_feature_p_value", "p-value of the feature's test.", labels=labels)
        effect = GaugeMetricFamily("velocast_drift_feature_effect", "Effect size (normalised Wasserstein or "
                                   "Jensen-Shannon distance).", labels=labels)
        threshold = GaugeMetricFamily("velocast_drift_feature_effect_threshold", "Effect size above which a "
                                      "significant difference is drift.", labels=labels)
        for model_type, latest in latest_drifts(self.settings).items():
            report = latest.get("report") or {}
            if not report:
                continue
            if _number(report.get("drift_share")) is not None:
                share.add_metric([model_type], float(report["drift_share"]))
            if report.get("drift_detected") is not None:
                detected.add_metric([model_type], float(bool(report["drift_detected"])))
            for status in DRIFT_STATUSES:
                state.add_metric([model_type, status], 1.0 if report.get("status") == status else 0.0)
            counters.add_metric([model_type], float(len(report.get("new_counters") or [])))
            checked = _epoch(latest.get("checked_at"))
            if checked is not None:
                when.add_metric([model_type], checked)
            features = [(f, "input") for f in report.get("features") or []]
            features += [(report[key], role) for key, role in (("target_drift", "target"),
                                                               ("prediction_drift", "prediction")) if report.get(key)]
            for feature, role in features:
                names = [model_type, str(feature["name"]), role]
                tested.add_metric(names, 1.0 if feature.get("tested") else 0.0)
                if feature.get("tested"):
                    drifted.add_metric(names, 1.0 if feature.get("drifted") else 0.0)
                for family, key in ((p_value, "p_value"), (effect, "effect"), (threshold, "threshold")):
                    if _number(feature.get(key)) is not None:
                        family.add_metric(names, float(feature[key]))
                if _number(feature.get("statistic")) is not None:
                    statistic.add_metric([*names, str(feature.get("test") or "")], float(feature["statistic"]))
        return [share, detected, state, when, counters, drifted, tested, statistic, p_value, effect, threshold]

    def _health(self) -> list[Metric]:
        state = GaugeMetricFamily("velocast_champion_health_state", "Champion health of the latest weekly check "
                                  "(1 for its state: ok, degraded, critical, unknown).", labels=["model_type", "state"])
        values = {key: GaugeMetricFamily(f"velocast_champion_health_{key}", text, labels=["model_type"])
                  for key, text in (("rmse", "Champion RMSE on the latest labelled days."),
                                    ("r2", "Champion R² on the latest labelled days."),
                                    ("baseline_rmse", "Champion RMSE on test_baseline, recorded at training."),
                                    ("rmse_increase", "Relative RMSE increase over its test_baseline RMSE."),
                                    ("rows", "Labelled rows the latest health check used."),
                                    ("interval_coverage", "Empirical coverage of the champion's prediction "
                                                          "intervals on the latest labelled days."),
                                    ("interval_nominal_coverage", "The coverage those intervals were made for."))}
        when = GaugeMetricFamily("velocast_champion_health_timestamp_seconds", "When the champion's health was last "
                                 "checked.", labels=["model_type"])
        for model_type, report in sorted(latest_health(self.settings).items()):
            for name in HEALTH_STATES:
                state.add_metric([model_type, name], 1.0 if report.get("state") == name else 0.0)
            for key, source in (("rmse", "rmse"), ("r2", "r2"), ("baseline_rmse", "baseline_rmse"),
                                ("rmse_increase", "drop"), ("rows", "rows"), ("interval_coverage", "coverage"),
                                ("interval_nominal_coverage", "nominal_coverage")):
                if _number(report.get(source)) is not None:
                    values[key].add_metric([model_type], float(report[source]))
            checked = _epoch(report.get("checked_at"))
            if checked is not None:
                when.add_metric([model_type], checked)
        return [state, *values.values(), when]

    def _store(self) -> list[Metric]:
        gauge = GaugeMetricFamily("velocast_store_latest_count_timestamp_seconds", "Time of the latest stored count "
                                  "(absent while the store is empty).")
        latest = store.latest_timestamp(self.settings)
        if latest is not None:
            gauge.add_metric([], latest.timestamp())
        return [gauge]

    def _jobs(self) -> list[Metric]:
        gauge = GaugeMetricFamily("velocast_training_jobs", "Stored training jobs by status (every replica's).",
                                  labels=["status"])
        for status, n in self.jobs.counts().items():
            gauge.add_metric([status], n)
        return [gauge]


class ApiMetrics:
    """The API's metrics; with ``PROMETHEUS_MULTIPROC_DIR`` set (``velocast serve --workers N``), those of
    every worker process: traffic counters and histograms are summed over the workers (prometheus_client's
    multiprocess mode), ``velocast_served_model_version`` has one series per live worker (label ``pid``),
    and the lifecycle gauges are read at scrape time by the worker that answers (they are the same in all).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, settings: Settings, cache: Any, jobs: Any, ready: Callable[[], Any] | None = None,
                 budget_seconds: float = SCRAPE_BUDGET_SECONDS):
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        self.requests = Counter("velocast_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("velocast_http_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("velocast_predictions", "Records predicted.", ["model_type"],
                                   registry=self.registry)
        self.lifecycle = LifecycleCollector(settings, cache, jobs, ready, budget_seconds,
                                            served=self.multiprocess_dir is None)
        if self.multiprocess_dir is None:
            self.registry.register(self.lifecycle)
            return
        # each worker writes the version its cache serves; dead workers' series go with mark_dead()
        self.served = Gauge("velocast_served_model_version", SERVED_HELP, ["model_type", "horizon", "champion"],
                            registry=self.registry, multiprocess_mode="liveall")
        self._served_series: set[tuple[str, str, str]] = set()
        cache.listeners.append(self._served_changed)
        self._served_changed(cache.snapshot())

    def _served_changed(self, snapshot: dict[Any, Any]) -> None:
        current = served_series(snapshot)
        for labels in self._served_series - current.keys():  # a file-backed series cannot be removed: NaN
            self.served.labels(*labels).set(float("nan"))
        for labels, version in current.items():
            self.served.labels(*labels).set(version)
        self._served_series |= current.keys()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.lifecycle)
        return generate_latest(registry)

    def mark_dead(self) -> None:
        """Drop this worker's live series (at its shutdown)."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode when it is on (``PROMETHEUS_MULTIPROC_DIR``)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


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
