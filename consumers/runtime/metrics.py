"""Prometheus metrics and health endpoints of the long-running processes (consume, agent).

With ``metrics_port`` set, one small HTTP server (a thread) serves:

    /metrics   Prometheus text format (prometheus_client, the ``metrics`` extra)
    /healthz   200 while the process runs
    /readyz    200 when connected to a broker and consuming, else 503 with the reason

Without it, :data:`NULL` stands in: every call is a no-op and prometheus_client is
never imported. docs/metrics.md lists every metric.

Every counter has a sample for each label value it can take from the start (0), once the
consumer is known: a panel of dead letters or reconnects shows 0 on a healthy system, not
"No data", and rate() sees the first increment.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, get_args

from bridge.config import Settings, host_port
from bridge.errors import ConfigError
from bridge.events import DialStatus

HANDLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
POP_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
CALLBACK_BUCKETS = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0)
CALLBACK_OUTCOMES = ("reached", "unreached", "closed")
OUTCOME_KINDS = ("handled", "duplicate", "ignored", "retried", "dead_lettered")
REASON_KINDS = ("undecodable", "oversize", "max_attempts", "spoofed", "permanent")


def outcome_kind(outcome: str) -> str:
    """A handler's outcome as a bounded label: handled, duplicate, ignored, retried or dead_lettered."""
    if outcome.startswith("retry"):
        return "retried"
    if outcome == "dead-lettered":
        return "dead_lettered"
    if outcome in ("duplicate", "ignored"):
        return outcome
    return "handled"


def reason_kind(reason: str) -> str:
    """A dead-letter reason as a bounded label."""
    for prefix, kind in (
        ("undecodable", "undecodable"),
        ("oversize", "oversize"),
        ("failed ", "max_attempts"),
        ("spoofed", "spoofed"),
    ):
        if reason.startswith(prefix):
            return kind
    return "permanent"


class Metrics:
    """What the runtime and the consumers report; this base does nothing (metrics off)."""

    ready_reason: str | None = "not connected to a broker yet"

    def message(self, consumer: str, outcome: str, seconds: float) -> None: ...
    def dead_lettered(self, consumer: str, reason: str) -> None: ...
    def retried(self, consumer: str) -> None: ...
    def reconnected(self, consumer: str) -> None: ...
    def connected(self, consumer: str, node: str | None) -> None: ...
    def queue_depth(self, queue: str, messages: int) -> None: ...
    def dial_result(self, status: str) -> None: ...
    def outbox(self, events: int, oldest_seconds: float, refused: int = 0) -> None: ...
    def pop_latency(self, seconds: float) -> None: ...
    def contact_lookup(self, found: bool) -> None: ...
    def callbacks_open(self, tasks: int) -> None: ...
    def callback_closed(self, outcome: str, seconds: float | None) -> None: ...

    def close(self) -> None: ...


NULL = Metrics()


class PrometheusMetrics(Metrics):
    """The metrics in a registry of their own, served with /healthz and /readyz."""

    def __init__(self, host: str, port: int) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(
                "metrics_port needs prometheus_client: pip install 'tcx-bridge[metrics]'"
            ) from None
        self.registry = registry = prom.CollectorRegistry()
        self._messages = prom.Counter(
            "tcx_messages", "Messages handled, by outcome", ["consumer", "outcome"], registry=registry
        )
        self._handle = prom.Histogram(
            "tcx_handle_seconds", "Time to handle one message", ["consumer"], buckets=HANDLE_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self._dead = prom.Counter(
            "tcx_dead_lettered",
            "Messages dead-lettered, by reason",
            ["consumer", "reason_kind"],
            registry=registry,
        )
        self._retries = prom.Counter("tcx_retries", "Messages sent to retry", ["consumer"], registry=registry)
        self._reconnects = prom.Counter(
            "tcx_reconnects", "Connections to the broker lost and retried", ["consumer"], registry=registry
        )
        self._connected = prom.Gauge(
            "tcx_connected", "1 when connected to this broker node", ["consumer", "node"], registry=registry
        )
        self._depth = prom.Gauge(
            "tcx_queue_messages", "Messages ready in the queue (sampled)", ["queue"], registry=registry
        )
        self._dials = prom.Counter(
            "tcx_dial_results", "Dial results published", ["status"], registry=registry
        )
        self._outbox = prom.Gauge("tcx_outbox_events", "Events waiting in the outbox", registry=registry)
        self._oldest = prom.Gauge(
            "tcx_outbox_oldest_seconds", "Age of the oldest outboxed event", registry=registry
        )
        self._refused = prom.Gauge(
            "tcx_outbox_refused", "Outboxed events the broker refused for good", registry=registry
        )
        self._pop = prom.Histogram(
            "tcx_pop_latency_seconds",
            "From the call event's occurred_at to the pop's publish",
            buckets=POP_BUCKETS,
            registry=registry,
        )
        self._lookups = prom.Counter(
            "tcx_contact_lookups", "Contact lookups, by found", ["found"], registry=registry
        )
        self._callback_metrics(prom, registry)
        self._nodes: dict[str, str] = {}
        self._known: set[str] = set()
        for status in get_args(DialStatus):
            self._dials.labels(status)
        for found in ("true", "false"):
            self._lookups.labels(found)
        self.ready_reason: str | None = "not connected to a broker yet"
        self._server = _serve(self, host, port)

    def _callback_metrics(self, prom: Any, registry: Any) -> None:
        """The callbacks consumer's metrics (no samples until it reports)."""
        self._callbacks = prom.Gauge("tcx_callbacks_open", "callbacks: open tasks", registry=registry)
        self._callback_time = prom.Histogram(
            "tcx_callback_seconds", "callbacks: from the missed call to the caller reached",
            buckets=CALLBACK_BUCKETS, registry=registry,
        )  # fmt: skip
        self._callbacks_closed = prom.Counter(
            "tcx_callbacks_closed", "callbacks: tasks closed, by outcome", ["outcome"], registry=registry
        )

    def _know(self, consumer: str) -> None:
        """A sample of 0 for every label value of the consumer's counters (once per consumer)."""
        if consumer in self._known:
            return
        self._known.add(consumer)
        for outcome in OUTCOME_KINDS:
            self._messages.labels(consumer, outcome)
        for reason in REASON_KINDS:
            self._dead.labels(consumer, reason)
        self._retries.labels(consumer)
        self._reconnects.labels(consumer)

    def message(self, consumer: str, outcome: str, seconds: float) -> None:
        self._know(consumer)
        self._messages.labels(consumer, outcome_kind(outcome)).inc()
        self._handle.labels(consumer).observe(seconds)

    def dead_lettered(self, consumer: str, reason: str) -> None:
        self._know(consumer)
        self._dead.labels(consumer, reason_kind(reason)).inc()

    def retried(self, consumer: str) -> None:
        self._know(consumer)
        self._retries.labels(consumer).inc()

    def reconnected(self, consumer: str) -> None:
        self._know(consumer)
        self._reconnects.labels(consumer).inc()

    def connected(self, consumer: str, node: str | None) -> None:
        self._know(consumer)
        previous = self._nodes.pop(consumer, None)
        if previous is not None:
            self._connected.labels(consumer, previous).set(0)
        if node is not None:
            self._nodes[consumer] = node
            self._connected.labels(consumer, node).set(1)
            self.ready_reason = None
        else:
            self.ready_reason = "not connected to a broker (reconnecting)"

    def queue_depth(self, queue: str, messages: int) -> None:
        self._depth.labels(queue).set(messages)

    def dial_result(self, status: str) -> None:
        self._dials.labels(status).inc()

    def outbox(self, events: int, oldest_seconds: float, refused: int = 0) -> None:
        self._outbox.set(events)
        self._oldest.set(oldest_seconds)
        self._refused.set(refused)

    def pop_latency(self, seconds: float) -> None:
        self._pop.observe(max(seconds, 0.0))

    def contact_lookup(self, found: bool) -> None:
        self._lookups.labels("true" if found else "false").inc()

    def callbacks_open(self, tasks: int) -> None:
        for outcome in CALLBACK_OUTCOMES:  # a sample of 0 for each, once the callbacks consumer reports
            self._callbacks_closed.labels(outcome)
        self._callbacks.set(tasks)

    def callback_closed(self, outcome: str, seconds: float | None) -> None:
        self._callbacks_closed.labels(outcome).inc()
        if seconds is not None:
            self._callback_time.observe(seconds)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _serve(metrics: PrometheusMetrics, host: str, port: int) -> ThreadingHTTPServer:
    from prometheus_client.exposition import MetricsHandler

    base: Any = MetricsHandler.factory(metrics.registry)

    class Handler(base):  # type: ignore[misc]  # prometheus_client builds the class at run time
        def do_GET(self) -> None:  # noqa: N802  # http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._answer(200, "ok\n")
            elif path == "/readyz":
                reason = metrics.ready_reason
                self._answer(503 if reason else 200, f"{reason}\n" if reason else "ready\n")
            elif path in ("/metrics", "/"):
                super().do_GET()
            else:
                self._answer(404, "not found: /metrics, /healthz, /readyz\n")

        def _answer(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Scrapes are not worth a log line."""

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET  # metrics_host = "::1" too

    try:
        server = Server((host, port), Handler)
    except OSError as error:
        raise ConfigError(
            f"metrics_port: cannot listen on {host_port(host, port)}: {error.strerror}"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def metrics_for(settings: Settings) -> Metrics:
    """The process's metrics: served when metrics_port is set, else the no-op NULL."""
    if settings.metrics_port is None:
        return NULL
    return PrometheusMetrics(settings.metrics_host, settings.metrics_port)
