"""Per-target figures: what ``webhooks list`` shows and the Prometheus metrics say.

Counted in memory (thread-safe) and, with ``metrics_port``, in the process's
Prometheus registry (docs/metrics.md)::

    tcx_webhook_delivered{target}                  requests the target took (2xx)
    tcx_webhook_failed{target,status_class}        attempts that failed: 3xx, 4xx, 5xx, network
    tcx_webhook_retried{target}                    events sent to the retry queue after a failure
    tcx_webhook_dead_lettered{target}              events given up on
    tcx_webhook_paused{target}                     times the target was paused
    tcx_webhook_state{target}                      1 delivering, 0 paused
    tcx_webhook_backlog{target}                    events waiting in its queue (sampled)
    tcx_webhook_request_seconds{target}            one request's duration
    tcx_webhook_latency_seconds{target}            from the event's occurred_at to its delivery
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from bridge.events import parse_time
from consumers.webhooks.delivery import Result

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
STATUS_CLASSES = ("3xx", "4xx", "5xx", "network")
BACKLOG_EVERY = 2.0  # seconds between samples of the queue's depth
_prometheus: dict[str, Any] = {}
_prometheus_lock = threading.Lock()


def use_registry(registry: Any) -> None:
    """Report to this Prometheus registry from now on (consume's metrics_port)."""
    import prometheus_client as prom

    target = ["target"]
    counters = {
        "delivered": ("tcx_webhook_delivered", "Requests a target took (2xx)"),
        "retried": ("tcx_webhook_retried", "Events sent to retry"),
        "dead": ("tcx_webhook_dead_lettered", "Events given up on"),
        "paused": ("tcx_webhook_paused", "Times the target was paused"),
    }
    gauges = {
        "state": ("tcx_webhook_state", "1 delivering, 0 paused"),
        "backlog": ("tcx_webhook_backlog", "Events waiting in its queue (sampled)"),
    }
    histograms = {
        "request": ("tcx_webhook_request_seconds", "One request's duration"),
        "latency": ("tcx_webhook_latency_seconds", "From the event's occurred_at to its delivery"),
    }
    with _prometheus_lock:
        _prometheus.clear()
        for key, (name, about) in counters.items():
            _prometheus[key] = prom.Counter(name, about, target, registry=registry)
        for key, (name, about) in gauges.items():
            _prometheus[key] = prom.Gauge(name, about, target, registry=registry)
        for key, (name, about) in histograms.items():
            _prometheus[key] = prom.Histogram(name, about, target, registry=registry, buckets=LATENCY_BUCKETS)
        _prometheus["failed"] = prom.Counter(
            "tcx_webhook_failed",
            "Failed attempts, by status class",
            [*target, "status_class"],
            registry=registry,
        )


def _metric(name: str, target: str, *extra: str) -> Any:
    found = _prometheus.get(name)
    return None if found is None else found.labels(target, *extra)


class Stats:
    """One target's counters, state and last status."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: dict[str, int] = {"delivered": 0, "retried": 0, "dead_lettered": 0, "paused": 0}
        self.failed: dict[str, int] = dict.fromkeys(STATUS_CLASSES, 0)
        self.state = "starting"
        self.paused_until: float | None = None  # time.time() when it resumes by itself
        self.last_status = ""
        self.last_backlog = 0
        self.latencies: list[float] = []  # the last 10 000 delivery latencies (seconds), for the bench
        self._next_backlog = 0.0
        self._lock = threading.Lock()
        for status_class in STATUS_CLASSES:
            _metric("failed", target, status_class)
        for name in ("delivered", "retried", "dead", "paused"):
            _metric(name, target)

    def _count(self, key: str, metric: str) -> None:
        with self._lock:
            self.counts[key] += 1
        counter = _metric(metric, self.target)
        if counter is not None:
            counter.inc()

    def attempted(self, result: Result) -> None:
        with self._lock:
            self.last_status = str(result.status) if result.status else (result.reason or "network")[:80]
            if result.verdict != "delivered":
                self.failed[result.status_class] = self.failed.get(result.status_class, 0) + 1
        if result.verdict != "delivered" and (counter := _metric("failed", self.target, result.status_class)):
            counter.inc()
        if histogram := _metric("request", self.target):
            histogram.observe(result.seconds)

    def delivered(self, occurred_at: str) -> None:
        self._count("delivered", "delivered")
        try:
            latency = max(0.0, (datetime.now(UTC) - parse_time(occurred_at)).total_seconds())
        except ValueError:
            return
        with self._lock:
            self.latencies.append(latency)
            if len(self.latencies) > 10_000:
                del self.latencies[:5_000]
        if histogram := _metric("latency", self.target):
            histogram.observe(latency)

    def retried(self) -> None:
        self._count("retried", "retried")

    def dead_lettered(self, reason: str) -> None:
        self._count("dead_lettered", "dead")

    def paused(self) -> None:
        self._count("paused", "paused")

    def set_state(self, state: str, resumes_in: float | None = None) -> None:
        with self._lock:
            self.state = state
            self.paused_until = (
                None if resumes_in is None else time.time() + max(resumes_in - time.monotonic(), 0)
            )
        if gauge := _metric("state", self.target):
            gauge.set(0 if state == "paused" else 1)

    def backlog_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_backlog:
            return False
        self._next_backlog = now + BACKLOG_EVERY
        return True

    def backlog(self, messages: int) -> None:
        with self._lock:
            self.last_backlog = messages
        if gauge := _metric("backlog", self.target):
            gauge.set(messages)

    def snapshot(self) -> dict[str, Any]:
        """What ``webhooks list`` reads (the state file)."""
        with self._lock:
            return {
                "state": self.state,
                "paused_until": self.paused_until,
                "last_status": self.last_status,
                "backlog": self.last_backlog,
                **self.counts,
                "failed": dict(self.failed),
            }
