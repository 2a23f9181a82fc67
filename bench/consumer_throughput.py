"""Consumer throughput draining a backlog, against a minimal pika consume-and-ack loop.

Both queues get the same backlog (20,000 call events by default) on the same
broker in the same run; the floor drains its queue with basic_consume + one
basic_ack per message at the same prefetch; ours is the analytics consumer
(decode, merge the call record in SQLite with fsync'd commits, dedupe, ack).
With --store-url, also the PostgreSQL store with one and with two replicas
(separate processes on one queue), each variant on a backlog of its own.
Target: at least 0.8x the floor, for SQLite and for two PostgreSQL replicas. The log line
per message is written as the CLI writes it (bridge.clikit.configure_logging), to a file.

    python bench/consumer_throughput.py [--events 20000] [--rounds 2] [--prefetch N] [--store-url postgresql://…]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import events
from bridge.config import Settings, load_settings
from bridge.topology import declare_events
from bridge.transport import Broker
from consumers.analytics.consumer import Analytics
from consumers.runtime.runner import Runner, declare_consumer_queues
from tests.postgres import with_schema


def backlog(settings: Settings, count: int) -> list[tuple[str, bytes]]:
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    out = []
    for n in range(count):
        call, step = divmod(n, 3)
        kind = ("started", "connected", "ended")[step]
        event = events.CallEvent(
            event_id=events.new_event_id(),
            kind=kind,
            direction="inbound",
            call_id=f"b{call}",
            caller_id="0791234567" if step == 0 else None,
            desk=f"desk{call % 20}",
            extension=None,
            occurred_at=events.format_time(start + timedelta(seconds=call * 30 + step * 5)),
            argv=(),
        )
        out.append((event.routing_key, events.ENCODER.encode(event)))
    return out


def fill(url: str, exchange: str, messages: list[tuple[str, bytes]]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    user = pika.URLParameters(url).credentials.username  # user_id, as every publisher sets it (trust_user_id)
    properties = pika.BasicProperties(
        content_type="application/json", delivery_mode=2, type="call", user_id=user
    )
    for routing_key, body in messages:
        channel.basic_publish(exchange, routing_key, body, properties)
    connection.close()


def floor(url: str, queue: str, count: int, prefetch: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    seen = 0
    started = time.perf_counter()

    def on_message(ch, method, properties, body):  # type: ignore[no-untyped-def]
        nonlocal seen
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def ours(settings: Settings, count: int) -> float:
    runner = Runner(Analytics(settings), settings, max_messages=count)
    started = time.perf_counter()
    runner.run()
    return time.perf_counter() - started


def _replica(settings: Settings) -> None:
    import logging

    logging.getLogger().setLevel(logging.INFO)
    Runner(Analytics(settings), settings, idle_exit=3.0).run()


def replicas(settings: Settings, count: int, processes: int) -> float:
    """processes analytics replicas (each its own process) on one queue and one PostgreSQL store."""
    import multiprocessing

    import psycopg

    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    workers = [context.Process(target=_replica, args=(settings,)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    assert settings.store_url is not None
    with psycopg.connect(settings.store_url, autocommit=True) as connection:
        while True:
            try:
                done = connection.execute("SELECT count(*) FROM processed").fetchone()[0]  # type: ignore[index]
            except psycopg.errors.UndefinedTable:
                done = 0  # the replicas have not migrated the schema yet
            if done >= count:
                break
            time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(30)
    return elapsed


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def cleanup(url: str, settings: Settings, floor_queue: str) -> None:
    with Broker(url) as broker:
        for queue in (
            floor_queue,
            settings.queue("analytics"),
            f"{settings.queue('analytics')}.retry",
            settings.dead_queue("analytics"),
            settings.unrouted_exchange,
        ):
            broker.delete_queue(queue)
        for exchange in (settings.exchange, settings.unrouted_exchange, settings.dead_exchange):
            broker.delete_exchange(exchange)


def measure(name: str, args: argparse.Namespace) -> float:
    """Fill a backlog of its own for one variant and drain it; seconds."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    data_dir = tempfile.mkdtemp(prefix="tcx-bench-")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    env = {
        "TCX_BRIDGE_AMQP_URL": args.amqp_url,
        "TCX_BRIDGE_NAMESPACE": namespace,
        "TCX_BRIDGE_DATA_DIR": data_dir,
        "TCX_BRIDGE_DESK": "bench",
    }
    if args.prefetch:
        env["TCX_BRIDGE_PREFETCH"] = str(args.prefetch)
    if name.startswith("pg"):
        env["TCX_BRIDGE_STORE_URL"] = with_schema(args.store_url, schema)
    settings = load_settings(environ=env, read_file=False).settings
    floor_queue = f"{namespace}.floor"
    try:
        with Broker(args.amqp_url) as broker:
            declare_events(broker, settings)
            if name == "floor":
                broker.declare_queue(floor_queue)
                broker.bind_queue(floor_queue, settings.exchange, "call.#")
                queue = floor_queue
            else:
                declare_consumer_queues(broker, settings, Analytics)
                queue = settings.queue("analytics")
            fill(args.amqp_url, settings.exchange, backlog(settings, args.events))
            assert broker.queue_info(queue) == (args.events, 0)
        if name == "floor":
            return floor(args.amqp_url, floor_queue, args.events, settings.prefetch)
        if name == "sqlite":
            return ours(settings, args.events)
        return replicas(settings, args.events, int(name[-1]))
    finally:
        cleanup(args.amqp_url, settings, floor_queue)
        shutil.rmtree(data_dir, ignore_errors=True)
        if name.startswith("pg"):
            drop_schema(args.store_url, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--prefetch", type=int, default=None, help="both sides' prefetch (default: the setting's)"
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TCX_BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    parser.add_argument(
        "--store-url",
        help="also measure the PostgreSQL store with 1 and 2 replicas (a schema of its own is created "
        "in this database and dropped), e.g. postgresql://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args()
    from bridge.clikit import configure_logging

    # the canonical log line per message is part of the cost: logged as the CLI logs it (redacted,
    # numbers masked), at INFO, to a file
    log_file = tempfile.NamedTemporaryFile(prefix="tcx-bench-", suffix=".log", mode="w", delete=False)
    configure_logging(stream=log_file)
    names = ["floor", "sqlite", *(["pg x1", "pg x2"] if args.store_url else [])]
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(measure(name, args))

    os.unlink(log_file.name)
    prefetch = args.prefetch or load_settings(environ={}, read_file=False).settings.prefetch
    print(f"{args.events} events, prefetch {prefetch}, {args.rounds} round(s), best of each")
    best = {name: min(times) for name, times in results.items()}
    for name in names:
        ratio = best["floor"] / best[name]
        print(
            f"{name:<7} {best[name]:6.2f} s  {args.events / best[name]:8.0f} events/s  {ratio:.2f}x the floor"
        )
    ratio = best["floor"] / best["sqlite"]
    print(f"sqlite: {ratio:.2f}x the floor's rate (target >= 0.8x): {'OK' if ratio >= 0.8 else 'UNDER'}")
    if args.store_url:
        ratio = best["floor"] / best["pg x2"]
        print(f"pg x2:  {ratio:.2f}x the floor's rate (target >= 0.8x): {'OK' if ratio >= 0.8 else 'UNDER'}")


if __name__ == "__main__":
    main()
