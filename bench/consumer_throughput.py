"""Consumer throughput draining a backlog, against a minimal pika consume-and-ack loop.

Both queues get the same backlog (20,000 call events by default) on the same
broker in the same run; the floor drains its queue with basic_consume + one
basic_ack per message at the same prefetch; ours is the analytics consumer
(decode, merge the call record in SQLite with fsync'd commits, dedupe, ack).
Target: at least 0.5x the floor.

    python bench/consumer_throughput.py [--events 20000] [--rounds 2]
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
from consumers.analytics import Analytics
from consumers.runtime import Runner, declare_consumer_queues


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
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2, type="call")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TCX_BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    args = parser.parse_args()
    import logging

    # the canonical log line per message is part of the cost: log at INFO, to a file
    log_file = tempfile.NamedTemporaryFile(prefix="tcx-bench-", suffix=".log", delete=False)
    logging.basicConfig(level=logging.INFO, filename=log_file.name)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    results: dict[str, list[float]] = {"floor": [], "ours": []}
    for round_number in range(args.rounds):
        namespace = f"bench{uuid.uuid4().hex[:8]}"
        data_dir = tempfile.mkdtemp(prefix="tcx-bench-")
        env = {
            "TCX_BRIDGE_AMQP_URL": args.amqp_url,
            "TCX_BRIDGE_NAMESPACE": namespace,
            "TCX_BRIDGE_DATA_DIR": data_dir,
            "TCX_BRIDGE_DESK": "bench",
        }
        settings = load_settings(environ=env, read_file=False).settings
        floor_queue = f"{namespace}.floor"
        with Broker(args.amqp_url) as broker:
            declare_events(broker, settings)
            declare_consumer_queues(broker, settings, Analytics(settings))
            broker.declare_queue(floor_queue)
            broker.bind_queue(floor_queue, settings.exchange, "call.#")
            fill(args.amqp_url, settings.exchange, backlog(settings, args.events))
            assert broker.queue_info(floor_queue) == (args.events, 0)
        order = ["floor", "ours"] if round_number % 2 == 0 else ["ours", "floor"]
        for name in order:
            if name == "floor":
                seconds = floor(args.amqp_url, floor_queue, args.events, settings.prefetch)
            else:
                seconds = ours(settings, args.events)
            results[name].append(seconds)
        with Broker(args.amqp_url) as broker:
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
        shutil.rmtree(data_dir, ignore_errors=True)

    os.unlink(log_file.name)
    print(f"{args.events} events, prefetch {settings.prefetch}, {args.rounds} round(s), best of each")
    best = {name: min(times) for name, times in results.items()}
    for name in ("floor", "ours"):
        print(f"{name:<6} {best[name]:6.2f} s   {args.events / best[name]:8.0f} events/s")
    ratio = best["floor"] / best["ours"]
    print(f"ratio  {ratio:.2f}x the floor's rate (target >= 0.5x): {'OK' if ratio >= 0.5 else 'UNDER'}")


if __name__ == "__main__":
    main()
