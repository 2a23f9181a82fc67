"""The history stream: backfill into analytics vs a minimal pika stream reader; ``history --call`` on it.

One run, one broker, one stream of --events call events (100,000 by default)
in a namespace of its own (deleted at the end):

* floor   a minimal pika stream reader: basic_qos(prefetch), basic_consume from
          ``first``, one basic_ack per message, until it has read them all;
* sqlite  ``consume analytics --from first`` in-process (the runner's batches, the
          offset committed with each, fsync'd SQLite), stopped once the backfill is done;
* pg      the same on PostgreSQL (with --store-url; a schema of its own, dropped).

Targets: sqlite >= 0.8x the floor's rate, pg >= 0.5x. Then ``history --call`` (the
command, in a process of its own): once for a call published after a pause of
PAUSE seconds past the stream's last chunk, with --since just before it (the
timestamp offset skips the whole stream), and once with --since before the first
event (it reads the whole stream: the worst case). Also the stream's size on disk
per event, when the broker's data directory is readable.

    python bench/history.py [--events 100000] [--store-url postgresql://…] [--pause 62]
    python bench/history.py --history-only --events 1000000
    python bench/history.py --backfill-only --events 30000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import events
from bridge.clikit import configure_logging
from bridge.config import Settings, load_settings
from bridge.envelope import OutgoingMessage
from bridge.topology import declare_events, declare_history, history_queue
from bridge.transport import Broker
from consumers.analytics.consumer import Analytics
from consumers.runtime.backfill import Backfill
from consumers.runtime.runner import Runner
from tests.postgres import with_schema

STREAM_DIRS = Path("/var/lib/rabbitmq/mnesia")


def backlog(count: int, start: datetime, prefix: str = "b") -> Iterator[OutgoingMessage]:
    for n in range(count):
        call, step = divmod(n, 3)
        kind = ("started", "connected", "ended")[step]
        event = events.CallEvent(
            event_id=events.new_event_id(),
            kind=kind,
            direction="inbound",
            call_id=f"{prefix}{call}",
            caller_id="0791234567" if step == 0 else None,
            desk=f"desk{call % 20}",
            extension="101",
            occurred_at=events.format_time(start + timedelta(seconds=call * 30 + step * 5)),
            argv=(),
        )
        yield OutgoingMessage(event.routing_key, events.ENCODER.encode(event), event.event_id, "call", 0)


def fill(settings: Settings, messages: Iterator[OutgoingMessage]) -> None:
    with Broker(settings.amqp_url, sign=True) as broker:
        while window := list(itertools.islice(messages, 2000)):
            _, error = broker.publish_many(settings.exchange, window)
            if error is not None:
                raise error


def floor(settings: Settings, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=settings.prefetch)
    seen = 0
    started = time.perf_counter()

    def on_message(ch, method, properties, body):  # type: ignore[no-untyped-def]
        nonlocal seen
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            ch.stop_consuming()

    channel.basic_consume(history_queue(settings), on_message, arguments={"x-stream-offset": "first"})
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def backfill(settings: Settings) -> float:
    """consume analytics --from first, stopped once the backfill is done (the live queue is empty)."""
    runner = Runner(Analytics(settings), settings)
    filling = Backfill(runner, "first", "first")

    def then_stop(broker: Broker) -> None:
        filling.run(broker)
        runner.stop()

    runner.before_live = then_stop
    started = time.perf_counter()
    runner.run()
    assert filling.done
    return time.perf_counter() - started


def history_call(settings: Settings, call: str, since: datetime) -> tuple[float, int]:
    """Seconds ``tcx-bridge history --call`` takes (a process of its own), and the lines it printed."""
    env = {
        **os.environ,
        "TCX_BRIDGE_AMQP_URL": settings.amqp_url,
        "TCX_BRIDGE_NAMESPACE": settings.namespace,
        "TCX_BRIDGE_CONFIG": os.devnull,
    }
    command = [str(Path(sys.executable).parent / "tcx-bridge"), "history", "--call", call, "--format", "json"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--since", events.format_time(since)], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, len(done.stdout.splitlines())


def disk_bytes(settings: Settings) -> int | None:
    """The history's segment and index files, when the broker's data directory is readable."""
    prefix = "__" + history_queue(settings).replace(".", "_") + "_"
    try:
        dirs = [d for d in STREAM_DIRS.glob("*/stream/*") if d.name.startswith(prefix)]
    except OSError:
        return None
    if not dirs:
        return None
    return sum(f.stat().st_size for d in dirs for f in d.iterdir())


def settings_for(args: argparse.Namespace, namespace: str, data_dir: str, store_url: str | None) -> Settings:
    env = {
        "TCX_BRIDGE_AMQP_URL": args.amqp_url,
        "TCX_BRIDGE_NAMESPACE": namespace,
        "TCX_BRIDGE_DATA_DIR": data_dir,
        "TCX_BRIDGE_DESK": "bench",
        "TCX_BRIDGE_PREFETCH": str(args.prefetch),
    }
    if store_url:
        env["TCX_BRIDGE_STORE_URL"] = store_url
    return load_settings(environ=env, read_file=False).settings


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def cleanup(settings: Settings) -> None:
    with Broker(settings.amqp_url) as broker:
        for queue in (
            history_queue(settings),
            settings.queue("analytics"),
            f"{settings.queue('analytics')}.retry",
            settings.dead_queue("analytics"),
            settings.unrouted_exchange,
        ):
            broker.delete_queue(queue)
        for exchange in (settings.exchange, settings.unrouted_exchange, settings.dead_exchange):
            broker.delete_exchange(exchange)
        for exchange in ("retry", "again"):
            broker.delete_exchange(f"{settings.namespace}.{exchange}.analytics")


def main() -> None:  # one run, in order
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--prefetch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--pause", type=float, default=62.0, help="seconds between the stream and the last call"
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TCX_BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    parser.add_argument("--store-url", help="also PostgreSQL (a schema of its own here, dropped)")
    parser.add_argument("--history-only", action="store_true", help="only history --call (a big stream)")
    parser.add_argument("--backfill-only", action="store_true", help="only the backfill, no history --call")
    args = parser.parse_args()
    # the log line per message is part of the cost: written as the CLI writes it, to a file
    log_file = tempfile.NamedTemporaryFile(prefix="tcx-bench-", suffix=".log", mode="w", delete=False)
    configure_logging(stream=log_file)

    namespace = f"benchh{uuid.uuid4().hex[:8]}"
    data_dir = tempfile.mkdtemp(prefix="tcx-bench-")
    settings = settings_for(args, namespace, data_dir, None)
    schemas: list[str] = []
    try:
        with Broker(args.amqp_url) as broker:
            declare_events(broker, settings)
            declare_history(broker, settings)
        started = time.perf_counter()
        fill(settings, backlog(args.events, datetime(2026, 11, 2, 9, tzinfo=UTC)))
        print(f"filled {args.events} events in {time.perf_counter() - started:.1f} s")
        size = disk_bytes(settings)
        if size:
            print(f"history on disk: {size / 1e6:.1f} MB, {size / args.events:.0f} bytes per event")

        names = [] if args.history_only else ["floor", "sqlite", *(["pg"] if args.store_url else [])]
        results: dict[str, list[float]] = {name: [] for name in names}
        for round_number in range(args.rounds):
            for name in results:
                if name == "floor":
                    results[name].append(floor(settings, args.events))
                    continue
                store_url = None
                if name == "pg":
                    schema = f"benchh_{uuid.uuid4().hex[:8]}"
                    schemas.append(schema)
                    store_url = with_schema(args.store_url, schema)
                own = tempfile.mkdtemp(prefix="tcx-bench-", dir=data_dir)
                results[name].append(backfill(settings_for(args, namespace, own, store_url)))
                print(f"  round {round_number + 1} {name}: {results[name][-1]:.2f} s", flush=True)
        best = {name: min(times) for name, times in results.items()}
        if best:
            print(f"{args.events} events, prefetch {args.prefetch}, {args.rounds} round(s), best of each")
        for name, seconds in best.items():
            ratio = best["floor"] / seconds
            print(
                f"{name:<7} {seconds:6.2f} s  {args.events / seconds:8.0f} events/s  {ratio:.2f}x the floor"
            )
        for name, target in (("sqlite", 0.8), ("pg", 0.5)):
            if name in best:
                ratio = best["floor"] / best[name]
                verdict = "OK" if ratio >= target else "UNDER"
                print(f"{name}: {ratio:.2f}x the floor's rate (target >= {target}x): {verdict}")

        if args.backfill_only:
            return
        time.sleep(args.pause)  # the last call in chunks of its own, PAUSE seconds after the others
        before = datetime.now(UTC) - timedelta(seconds=1)
        fill(settings, backlog(3, datetime.now(UTC), prefix="last"))
        seconds, lines = history_call(settings, "last0", before)
        print(
            f"history --call (--since just before it, {args.events} events earlier): "
            f"{seconds:.2f} s, {lines} lines"
        )
        seconds, lines = history_call(settings, "last0", datetime(2026, 1, 1, tzinfo=UTC))
        print(f"history --call (--since before the stream: reads all of it): {seconds:.2f} s, {lines} lines")
        print(json.dumps({"events": args.events, "best": best}))
    finally:
        cleanup(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
        for schema in schemas:
            drop_schema(args.store_url, schema)
        os.unlink(log_file.name)


if __name__ == "__main__":
    main()
