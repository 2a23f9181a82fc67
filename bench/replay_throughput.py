"""Outbox replay on one connection, against the pika floor for confirmed publishing.

An outbox of N events (2,000 by default) is replayed the way `tcx-bridge spool flush`
does it: a window of events published, then all their confirms awaited, then
their files deleted (pipelined). Beside it, in the same run and on the same broker:
the same replay one event at a time (publish, wait for its confirm, delete), and
the floor, a minimal pika loop publishing the same bodies with confirms
(BlockingChannel.confirm_delivery, one confirm per publish). Target: >= 2,000 events/s.

    python bench/replay_throughput.py [--events 2000] [--amqp-url URL]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import load_settings
from bridge.notify import build_event, to_message
from bridge.outbox import Outbox
from bridge.topology import declare_events, publish_event, publish_events
from bridge.transport import Broker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("TCX_BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tcx-replay-"))
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    environ = {"TCX_BRIDGE_AMQP_URL": args.amqp_url, "TCX_BRIDGE_NAMESPACE": namespace,
               "TCX_BRIDGE_DATA_DIR": str(work), "TCX_BRIDGE_DESK": "bench"}  # fmt: skip
    settings = load_settings(environ=environ, read_file=False).settings
    messages = [to_message(build_event(["/N:S", "/C:0791234567", "/T:I", f"/I:{n}"], settings)[0])
                for n in range(args.events)]  # fmt: skip
    try:
        with Broker(settings.amqp_url) as broker:
            declare_events(broker, settings)
            broker.declare_queue(f"{namespace}.sink")
            broker.bind_queue(f"{namespace}.sink", settings.exchange, "#")

        connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
        channel = connection.channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for message in messages:
            properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            channel.basic_publish(settings.exchange, message.routing_key, message.body, properties)
        floor = time.perf_counter() - started
        connection.close()

        rates = {}
        for name, pipelined in (("one at a time", False), ("pipelined", True)):
            outbox = Outbox(work / f"outbox-{name.replace(' ', '-')}")
            for message in messages:
                outbox.put(message)
            with Broker(settings.amqp_url) as broker:
                started = time.perf_counter()
                if pipelined:
                    result = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings))
                else:
                    result = outbox.replay(
                        lambda message, broker=broker: publish_event(broker, settings, message)
                    )
                rates[name] = time.perf_counter() - started
            assert (result.published, result.remaining) == (args.events, 0), result
    finally:
        with Broker(settings.amqp_url) as broker:
            broker.delete_queue(f"{namespace}.sink")
            broker.delete_queue(settings.unrouted_exchange)
            broker.delete_exchange(settings.exchange)
            broker.delete_exchange(settings.unrouted_exchange)
        shutil.rmtree(work, ignore_errors=True)
    n = args.events
    print(f"{n} events, broker {args.amqp_url.rsplit('@', 1)[-1]}")
    print(f"floor (pika, one confirm per publish)  {floor:6.2f} s  {n / floor:8.0f} events/s")
    for name, seconds in rates.items():
        print(f"replay {name:<31} {seconds:6.2f} s  {n / seconds:8.0f} events/s")
    rate = n / rates["pipelined"]
    print(f"pipelined replay: {rate:.0f} events/s (target >= 2000): {'OK' if rate >= 2000 else 'UNDER'}; "
          f"{rate / (n / floor):.1f}x the floor")  # fmt: skip


if __name__ == "__main__":
    main()
