"""The bridge on a 3-node RabbitMQ cluster: an address down, a node killed, nothing lost."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from bridge.config import Settings, load_settings
from bridge.outbox import Outbox
from bridge.transport import Broker
from tests.cluster import LocalCluster
from tests.conftest import (
    FakeAssistant,
    Service,
    desk_queue,
    run_cli,
    run_notify,
    start_service,
    wait_until,
)
from tests.test_consumers_integration import analytics_rows

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CLOSED = "amqp://guest:guest@127.0.0.1:1/%2F"  # an address where no node answers


def local(cluster: LocalCluster | list[str]) -> LocalCluster:
    if not isinstance(cluster, LocalCluster):
        pytest.skip("TCX_BRIDGE_TEST_CLUSTER_URLS names a cluster this test cannot kill nodes of")
    return cluster


def urls_of(cluster: LocalCluster | list[str]) -> list[str]:
    return cluster.urls if isinstance(cluster, LocalCluster) else cluster


@pytest.fixture
def cluster_env(env: dict[str, str], cluster: LocalCluster | list[str]) -> dict[str, str]:
    """A desk configured with the cluster's addresses, the first one down; quorum queues."""
    return {**env, "TCX_BRIDGE_AMQP_URL": ",".join([CLOSED, *urls_of(cluster)]), "TCX_BRIDGE_QUORUM": "true"}


@pytest.fixture
def cluster_settings(cluster_env: dict[str, str]) -> Settings:
    return load_settings(environ=cluster_env).settings


@pytest.fixture
def cluster_broker(cluster_settings: Settings) -> Iterator[Broker]:
    with Broker(cluster_settings.amqp_url) as broker:
        yield broker


def healthy(cluster: LocalCluster | list[str]) -> None:
    """Every node back up before the next test."""
    if isinstance(cluster, LocalCluster):
        for n in range(cluster.size):
            if not cluster.answers(n):
                cluster.restart(n)


def start_analytics(
    services: list[Service], env: dict[str, str], settings: Settings, watch_url: str
) -> Service:
    """The analytics consumer, seen consuming from watch_url (a node other than the one to be killed)."""
    with Broker(watch_url) as watcher:
        return start_service(services, env, watcher, settings.queue("analytics"), "consume", "analytics")


def calls_of(calls: int, tag: str) -> list[list[list[str]]]:
    """The launches of each call, in order: half answered (S, C, E), half missed (S, E)."""
    found = []
    for n in range(calls):
        call = f"/I:{tag}-{n}"
        middle = [["/N:C", "/T:I", call]] if n % 2 == 0 else []
        found.append([["/N:S", "/C:0791234567", "/T:I", call], *middle, ["/N:E", "/T:I", call]])
    return found


def launches(calls: int, tag: str) -> list[list[str]]:
    return [argv for call in calls_of(calls, tag) for argv in call]


def test_notify_consumers_and_agent_work_with_the_first_address_down(
    cluster: LocalCluster | list[str],
    cluster_env: dict[str, str],
    cluster_settings: Settings,
    cluster_broker: Broker,
    services: list[Service],
    fake_assistant: FakeAssistant,
) -> None:
    healthy(cluster)
    start_service(
        services, cluster_env, cluster_broker, cluster_settings.queue("analytics"), "consume", "analytics"
    )
    agent_env = {
        **cluster_env,
        "TCX_BRIDGE_ASSISTANT": str(fake_assistant.path),
        "TCX_BRIDGE_DIAL_CONFIRM_TIMEOUT": "0",
    }
    start_service(services, agent_env, cluster_broker, desk_queue(cluster_settings), "agent")
    for argv in launches(4, "down"):
        started = time.monotonic()
        done = run_notify(cluster_env, *argv)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 3
    # published, not left waiting: by each launch, or by the agent it handed its event to (the desk fast
    # path stores an event in the outbox, answers, then publishes it at once)
    wait_until(lambda: Outbox(cluster_settings.outbox_dir).paths() == [], 5)
    wait_until(lambda: len(analytics_rows(cluster_settings)) == 4)
    done = run_cli(agent_env, "dial", "0441234567", "--wait", "dialed")
    assert done.returncode == 0, done.stderr
    assert fake_assistant.calls() == [["-cmd", "makecall:0441234567"]]


def test_killing_the_node_of_the_consumer_and_its_queue_loses_nothing(
    cluster: LocalCluster | list[str],
    cluster_env: dict[str, str],
    cluster_settings: Settings,
    services: list[Service],
) -> None:
    nodes = local(cluster)
    healthy(nodes)
    env = {**cluster_env, "TCX_BRIDGE_AMQP_URL": ",".join(nodes.urls)}  # the consumer starts on node 0
    analytics = start_analytics(services, env, cluster_settings, nodes.url(1))
    queue = cluster_settings.queue("analytics")
    victim = nodes.leader(queue)
    port = int(re.findall(r"consuming \S+ on node 127\.0\.0\.1:(\d+)", analytics.output())[-1])
    assert nodes.index_of_port(port) == victim  # the queue leads where it was declared: one kill hits both

    plan = calls_of(80, "kill")  # 200 launches; each call's in order, as the Assistant makes them
    results: list[tuple[int, float]] = []

    def call(argvs: list[list[str]]) -> None:
        for argv in argvs:
            started = time.monotonic()
            done = run_notify(env, *argv)
            results.append((done.returncode, time.monotonic() - started))

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(call, argvs) for argvs in plan]
        while len(results) < 60:
            time.sleep(0.05)
        killed_at = time.time()
        nodes.kill(victim)
        for future in futures:
            future.result()

    def back() -> bool:
        return len(re.findall(r"consuming \S+ on node", analytics.output())) >= 2

    wait_until(back, timeout=30)
    resumed = re.findall(
        r"^(\S+ \S+) INFO \S+ consumer=analytics consuming", analytics.output(), re.MULTILINE
    )[-1]
    gap = datetime.strptime(resumed, "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_at  # log times are local
    assert [code for code, _ in results] == [0] * 200
    assert Outbox(cluster_settings.outbox_dir).paths() == []  # every launch published, none outboxed
    try:
        wait_until(lambda: len(analytics_rows(cluster_settings)) == 80, timeout=60)
    except BaseException:
        print(analytics.output()[-6000:], len(analytics_rows(cluster_settings)))
        raise
    rows = analytics_rows(cluster_settings)
    assert sum(1 for row in rows if row["answered"]) == 40
    assert all(row["ended_at"] is not None for row in rows)
    assert analytics.process.poll() is None
    timeline = [line for line in analytics.output().splitlines() if "outcome=" not in line]
    assert gap < 5, f"the consumer took {gap:.1f}s to resume: " + "\n".join(timeline[-15:])
    print(f"consumer resumed {gap:.1f}s after the kill; slowest launch {max(s for _, s in results):.2f}s")
    nodes.restart(victim)


def test_killing_the_node_that_holds_the_retry_queue_keeps_the_consumer_going(
    cluster: LocalCluster | list[str],
    cluster_env: dict[str, str],
    cluster_settings: Settings,
    services: list[Service],
) -> None:
    nodes = local(cluster)
    healthy(nodes)
    declared = run_cli({**cluster_env, "TCX_BRIDGE_AMQP_URL": nodes.url(0)}, "topology", "declare")
    assert declared.returncode == 0, declared.stderr  # every queue leads on node 0
    assert nodes.leader(f"{cluster_settings.queue('analytics')}.retry") == 0
    env = {**cluster_env, "TCX_BRIDGE_AMQP_URL": ",".join([nodes.url(1), nodes.url(2)])}
    analytics = start_analytics(services, env, cluster_settings, nodes.url(1))
    nodes.kill(0)
    try:
        for argv in launches(6, "retry"):
            assert run_notify(env, *argv).returncode == 0
        wait_until(lambda: len(analytics_rows(cluster_settings)) == 6, timeout=60)
        assert analytics.process.poll() is None
        assert "reconnecting" not in analytics.output()
    finally:
        nodes.restart(0)


def test_several_addresses_show_masked_in_config(cluster_env: dict[str, str]) -> None:
    done = run_cli(cluster_env, "config")
    line = next(line for line in done.stdout.splitlines() if line.startswith("amqp_url"))
    assert "guest:guest" not in line
    assert line.count("guest:****@") == 4


@pytest.fixture(autouse=True)
def _cleanup_cluster_namespace(cluster: LocalCluster | list[str], namespace: str) -> Iterator[None]:
    yield
    if isinstance(cluster, LocalCluster):
        for n in range(cluster.size):
            if cluster.answers(n):
                with Broker(cluster.url(n)) as broker:
                    for line in cluster.ctl(n, "list_queues", "name", "--no-table-headers").splitlines():
                        if line.strip().startswith(namespace):
                            broker.delete_queue(line.strip())
                break


def test_the_cluster_example_config_boots_this_rabbitmq() -> None:
    """examples/cluster/rabbitmq.conf, as compose mounts it, on a node of the test's own (never the shared one).

    The node cannot reach rabbit@mq1..3 and boots alone; what matters is that it accepts every key,
    and that quorum queues start with 3 members (the initial group size the file relies on).
    """
    from pathlib import Path

    from tests.cluster import rabbitmq_available

    if not rabbitmq_available():
        pytest.skip("no rabbitmq-server here to start a node of the test's own")
    example = Path(__file__).parent.parent / "examples" / "cluster" / "rabbitmq.conf"
    node = LocalCluster(1, extra_config=example.read_text())
    try:
        node.start_node(0)
        assert node.ctl(0, "eval", "application:get_env(rabbit, quorum_cluster_size).").strip() == "{ok,3}"
        with Broker(node.url(0)) as broker:
            broker.declare_queue("tcx.example", arguments={"x-queue-type": "quorum"})
        assert node.ctl(0, "list_queues", "name", "type", "--no-table-headers").split() == [
            "tcx.example",
            "quorum",
        ]
    finally:
        node.close()


def test_the_history_survives_the_kill_of_its_leader(
    cluster: LocalCluster | list[str], cluster_env: dict[str, str], cluster_settings: Settings
) -> None:
    """The stream is replicated on every node: its leader killed, history still tells every event."""
    from bridge.topology import history_queue
    from tests.history import send_calls

    nodes = local(cluster)
    healthy(nodes)
    declared = run_cli({**cluster_env, "TCX_BRIDGE_AMQP_URL": nodes.url(0)}, "topology", "declare")
    assert declared.returncode == 0, declared.stderr
    queue = history_queue(cluster_settings)
    victim = nodes.leader(queue)
    with Broker(nodes.url(victim)) as broker:
        send_calls(broker, cluster_settings, range(10))
    nodes.kill(victim)
    others = [n for n in range(nodes.size) if n != victim]
    env = {**cluster_env, "TCX_BRIDGE_AMQP_URL": ",".join(nodes.url(n) for n in others)}

    def told(count: int) -> bool:
        done = run_cli(env, "history", "--format", "json", timeout=30)
        return done.returncode == 0 and len(done.stdout.splitlines()) == count

    try:
        wait_until(lambda: told(30), timeout=60, every=1.0)
        with Broker(nodes.url(others[0])) as broker:
            send_calls(broker, cluster_settings, range(10, 11))  # and it goes on taking events
        wait_until(lambda: told(33), timeout=30, every=1.0)
    finally:
        nodes.restart(victim)
