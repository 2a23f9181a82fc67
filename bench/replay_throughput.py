"""Outbox replay on one connection, against the pika floor for confirmed publishing.

An outbox of N events (2,000 by default) is replayed the way `tcx-bridge spool flush`
does it: a window of events published, then all their confirms awaited, then
their files deleted (pipelined). Beside it, in the same run and on the same broker:
the same replay one event at a time (publish, wait for its confirm, delete), and
two floors, minimal pika loops publishing the same bodies with confirms: one
confirm per publish (BlockingChannel.confirm_delivery), and pipelined (a window of
publishes on the channel, then wait for that window's confirms; the same window
as the replay). Targets: >= 2,000 events/s, and >= 0.8x the pipelined floor.

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
from bridge.outbox import WINDOW, Outbox
from bridge.topology import declare_events, publish_event, publish_events
from bridge.transport import Broker, OutgoingMessage


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
        pipelined_floor = pipelined_pika(args.amqp_url, settings.exchange, messages)

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
    pipelined = pipelined_floor
    print(
        f"floor (pika, a window of {WINDOW}, its confirms) {pipelined:5.2f} s  {n / pipelined:8.0f} events/s"
    )
    for name, seconds in rates.items():
        print(f"replay {name:<31} {seconds:6.2f} s  {n / seconds:8.0f} events/s")
    rate = n / rates["pipelined"]
    print(f"pipelined replay: {rate:.0f} events/s (target >= 2000): {'OK' if rate >= 2000 else 'UNDER'}; "
          f"{rate / (n / floor):.1f}x the one-confirm floor")  # fmt: skip
    ratio = rate / (n / pipelined_floor)
    verdict = "OK" if ratio >= 0.8 else "UNDER"
    print(f"pipelined replay: {ratio:.2f}x the pipelined floor (target >= 0.8x): {verdict}")


def pipelined_pika(url: str, exchange: str, messages: list[OutgoingMessage]) -> float:
    """Seconds a minimal pika publisher takes: a window of publishes, then that window's confirms, and on."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()._impl  # the async channel under the blocking one: publishes don't wait
    confirmed = [0]

    def on_confirm(frame: object) -> None:
        method = frame.method  # type: ignore[attr-defined]
        confirmed[0] = max(confirmed[0], method.delivery_tag)  # tags in publish order; acks come in order

    selected: list[object] = []
    channel.confirm_delivery(ack_nack_callback=on_confirm, callback=selected.append)
    while not selected:
        connection.process_data_events(time_limit=0.001)
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    started = time.perf_counter()
    for first in range(0, len(messages), WINDOW):
        window = messages[first : first + WINDOW]
        for message in window:
            channel.basic_publish(exchange, message.routing_key, message.body, properties)
        while confirmed[0] < first + len(window):
            connection.process_data_events(time_limit=0.001)
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


if __name__ == "__main__":
    main()
