"""Metrics, health and JSON logs of the long-running processes, against the real broker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Settings
from bridge.transport import Broker, OutgoingMessage
from tests.cluster import LocalCluster
from tests.conftest import Service, free_port, start_service, wait_until
from tests.test_consumers_integration import T0, call_message, processed_count, send

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed with prometheus_client's own parser."""
    status, text = get(port, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_counters_are_exact_after_known_messages(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    service = start_service(
        services, env, broker, settings.queue("analytics"),
        "--metrics-port", str(port), "--log-format", "json", "consume", "analytics",
    )  # fmt: skip
    event = call_message(settings, "started", "inbound", "m1", T0, "1")
    garbage = OutgoingMessage(f"call.started.inbound.{settings.desk}", b"{nope", "g1", "call.started", 0)
    send(broker, settings, event, event, call_message(settings, "ended", "inbound", "m1", T0), garbage)
    wait_until(lambda: processed_count(settings, "analytics") == 2)
    consumer = (("consumer", "analytics"),)

    def counted() -> bool:
        found = samples(port)
        return (
            found.get(("tcx_messages_total", (("consumer", "analytics"), ("outcome", "dead_lettered")))) == 1
        )

    wait_until(counted)
    found = samples(port)
    assert found[("tcx_messages_total", (("consumer", "analytics"), ("outcome", "handled")))] == 2
    assert found[("tcx_messages_total", (("consumer", "analytics"), ("outcome", "duplicate")))] == 1
    assert (
        found[("tcx_dead_lettered_total", (("consumer", "analytics"), ("reason_kind", "undecodable")))] == 1
    )
    assert found[("tcx_handle_seconds_count", consumer)] == 4
    assert found[("tcx_connected", (("consumer", "analytics"), ("node", "127.0.0.1:5672")))] == 1
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")

    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    handled = [line for line in lines if line.get("outcome") == "recorded"]
    assert len(handled) == 2
    assert {"consumer", "message_id", "routing_key", "outcome", "attempt", "ms", "time", "level"} <= set(
        handled[0]
    )
    assert handled[0]["routing_key"] == f"call.started.inbound.{settings.desk}"


def test_readyz_follows_the_broker(
    cluster: LocalCluster | list[str], env: dict[str, str], services: list[Service]
) -> None:
    """A node of the tests' own (never the shared one): stopped, /readyz says 503; back, 200."""
    if not isinstance(cluster, LocalCluster):
        pytest.skip("needs a node this test may kill")
    port = free_port()
    own = {**env, "TCX_BRIDGE_AMQP_URL": cluster.url(2), "TCX_BRIDGE_METRICS_PORT": str(port)}
    from bridge.config import load_settings

    settings = load_settings(environ=own).settings
    with Broker(cluster.url(2)) as watcher:
        start_service(services, own, watcher, settings.queue("analytics"), "consume", "analytics")
    assert get(port, "/readyz") == (200, "ready\n")
    cluster.kill(2)
    try:
        wait_until(lambda: get(port, "/readyz")[0] == 503, timeout=15)
        _, text = get(port, "/readyz")
        assert text.startswith("not connected to a broker")
        assert get(port, "/healthz")[0] == 200  # the process runs
    finally:
        cluster.restart(2)
    wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60)
    found = samples(port)
    assert found[("tcx_reconnects_total", (("consumer", "analytics"),))] >= 1


def test_every_counter_has_a_zero_sample_for_each_label_before_anything_happened(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    """Grafana's dead-letter, retry and reconnect panels show 0 on a healthy system, not "No data"."""
    from consumers.runtime.metrics import OUTCOME_KINDS, REASON_KINDS

    port = free_port()
    start_service(
        services,
        env,
        broker,
        settings.queue("analytics"),
        "consume",
        "analytics",
        "--metrics-port",
        str(port),
    )
    found = samples(port)
    consumer = ("consumer", "analytics")
    for outcome in OUTCOME_KINDS:
        assert found[("tcx_messages_total", (consumer, ("outcome", outcome)))] == 0
    for reason in REASON_KINDS:
        assert found[("tcx_dead_lettered_total", (consumer, ("reason_kind", reason)))] == 0
    assert found[("tcx_retries_total", (consumer,))] == 0
    assert found[("tcx_reconnects_total", (consumer,))] == 0
    for status in ("dialed", "confirmed", "unconfirmed", "rejected", "expired", "failed"):
        assert found[("tcx_dial_results_total", (("status", status),))] == 0
    assert found[("tcx_contact_lookups_total", (("found", "false"),))] == 0


def test_metrics_serve_on_an_ipv6_host(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    start_service(
        services, {**env, "TCX_BRIDGE_METRICS_HOST": "::1"}, broker, settings.queue("analytics"),
        "consume", "analytics", "--metrics-port", str(port),
    )  # fmt: skip
    with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=5) as answer:
        assert answer.status == 200
