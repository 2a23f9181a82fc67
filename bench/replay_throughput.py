"""Outbox replay on one connection, against the pika floor for confirmed publishing.

An outbox of N events (4,000 by default) is replayed the way `tcx-bridge spool flush`
does it: a window of events published, all their confirms awaited, the window
recorded as sent (one fsync'd append to `.sent`), the next window (pipelined); the
files are removed on a thread once the replay returned. Beside it, in the same run
and on the same broker: the same replay one event at a time (publish, wait for its
confirm, remove), and two floors, minimal pika loops publishing the same bodies
with confirms: one confirm per publish (BlockingChannel.confirm_delivery), and
pipelined (a window of publishes on the channel, then wait for that window's
confirms; the same window as the replay). The pipelined floor and replay are run
--rounds times, interleaved, and their medians compared. Two times for the
replay: until it returned (every event confirmed and durably recorded as sent:
what the ratio is about), and until its files are all gone from the directory.
Targets: >= 2,000 events/s, and >= 0.8x the pipelined floor.

    python bench/replay_throughput.py [--events 4000] [--rounds 3] [--amqp-url URL]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import Settings, load_settings
from bridge.notify import build_event, to_message
from bridge.outbox import WINDOW, Outbox
from bridge.topology import declare_events, publish_event, publish_events
from bridge.transport import Broker, OutgoingMessage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3, help="pipelined floor and replay, interleaved")
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
    floors: list[float] = []
    replays: list[tuple[float, float]] = []  # (returned, files gone)
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
        one_at_a_time = replay_one_at_a_time(work / "outbox-one", settings, messages)
        for round_ in range(args.rounds):
            floors.append(pipelined_pika(args.amqp_url, settings.exchange, messages))
            replays.append(replay_pipelined(work / f"outbox-{round_}", settings, messages))
    finally:
        with Broker(settings.amqp_url) as broker:
            broker.delete_queue(f"{namespace}.sink")
            broker.delete_queue(settings.unrouted_exchange)
            broker.delete_exchange(settings.exchange)
            broker.delete_exchange(settings.unrouted_exchange)
        shutil.rmtree(work, ignore_errors=True)
    n = args.events
    pipelined_floor = statistics.median(floors)
    returned = statistics.median(seconds for seconds, _ in replays)
    gone = statistics.median(seconds for _, seconds in replays)
    print(f"{n} events, broker {args.amqp_url.rsplit('@', 1)[-1]}, {time.strftime('%Y-%m-%d')}")
    line("floor (pika, one confirm per publish)", n, floor)
    line("replay one at a time", n, one_at_a_time)
    print(f"pipelined, median of {args.rounds} interleaved round(s):")
    line(f"floor (pika, a window of {WINDOW}, its confirms)", n, pipelined_floor, floors)
    line("replay, confirmed and recorded as sent", n, returned, [r for r, _ in replays])
    line("replay, until its files are all gone", n, gone, [g for _, g in replays])
    rate = n / returned
    print(f"pipelined replay: {rate:.0f} events/s (target >= 2000): {'OK' if rate >= 2000 else 'UNDER'}; "
          f"{rate / (n / floor):.1f}x the one-confirm floor")  # fmt: skip
    ratio = pipelined_floor / returned
    verdict = "OK" if ratio >= 0.8 else "UNDER"
    print(f"pipelined replay: {ratio:.2f}x the pipelined floor (target >= 0.8x): {verdict}; "
          f"files all gone: {pipelined_floor / gone:.2f}x")  # fmt: skip


def line(what: str, n: int, seconds: float, rounds: list[float] | None = None) -> None:
    each = f"   rounds: {' '.join(f'{s:.2f}' for s in rounds)}" if rounds else ""
    print(f"{what:<48} {seconds:6.2f} s  {n / seconds:8.0f} events/s{each}")


def filled(directory: Path, messages: list[OutgoingMessage]) -> Outbox:
    outbox = Outbox(directory)
    for message in messages:
        outbox.put(message)
    return outbox


def replay_one_at_a_time(directory: Path, settings: Settings, messages: list[OutgoingMessage]) -> float:
    """Seconds to replay the outbox one event at a time: publish, its confirm, remove."""
    outbox = filled(directory, messages)
    with Broker(settings.amqp_url) as broker:
        started = time.perf_counter()
        result = outbox.replay(lambda message: publish_event(broker, settings, message))
        seconds = time.perf_counter() - started
    assert (result.published, result.remaining) == (len(messages), 0), result
    return seconds


def replay_pipelined(
    directory: Path, settings: Settings, messages: list[OutgoingMessage]
) -> tuple[float, float]:
    """Seconds until the pipelined replay returned, and until its files were all gone."""
    outbox = filled(directory, messages)
    with Broker(settings.amqp_url) as broker:
        started = time.perf_counter()
        result = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings))
        returned = time.perf_counter() - started
        outbox.join_cleanup()
        gone = time.perf_counter() - started
    assert (result.published, result.remaining) == (len(messages), 0), result
    left = [name for name in os.listdir(directory) if name.endswith(".json")]
    assert not left, f"{len(left)} file(s) left"
    assert not outbox.has_sent(), ".sent not emptied"
    return returned, gone


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
