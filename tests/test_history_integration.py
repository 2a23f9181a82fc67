"""The history stream against the real broker: topology, ``history``, ``consume --from`` (backfill, resume, switch-over)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge import events
from bridge.config import Settings, load_settings
from bridge.errors import BrokerRefusedError, BrokerUnreachableError
from bridge.topology import declare_events, declare_history, dial_results_queue, history_queue
from bridge.transport import Broker
from consumers.store.core import sqlite_path
from tests.conftest import Service, _cleanup, run_cli, wait_until
from tests.history import SEC, offsets, processed, send_calls, stored

pytestmark = pytest.mark.integration


@pytest.fixture
def history(broker: Broker, settings: Settings) -> str:
    """The events exchange and the history stream, and no consumer queue yet (a consumer joins late)."""
    declare_events(broker, settings)
    declare_history(broker, settings)
    return history_queue(settings)


def test_topology_declares_the_history_stream_bound_to_every_event(
    env: dict[str, str], broker: Broker
) -> None:
    from bridge.config import load_settings

    settings = load_settings(environ={**env, "TCX_BRIDGE_HISTORY_MAX_AGE": "2h"}).settings
    assert run_cli({**env, "TCX_BRIDGE_HISTORY_MAX_AGE": "2h"}, "topology", "declare").returncode == 0
    send_calls(broker, settings, range(2))
    queue = history_queue(settings)
    with Broker(settings.amqp_url) as other, pytest.raises(BrokerRefusedError):  # the setting's age, not 7D
        other.declare_queue(queue, arguments={"x-queue-type": "stream", "x-max-age": "7D"})
    rows = topology_rows(env)
    assert rows[queue] == "stream: offsets 0..5 (6 events kept)"  # not "0 ready"
    assert rows[dial_results_queue(settings)] == "stream: empty"
    assert rows[settings.queue("analytics")] == "6 ready, 0 consumer(s)"  # a queue: as before


def topology_rows(env: dict[str, str]) -> dict[str, str]:
    """``topology show``: each queue's and exchange's state by its name (columns: two spaces apart)."""
    shown = run_cli(env, "topology", "show")
    assert shown.returncode == 0, shown.stderr
    rows = {}
    for line in shown.stdout.splitlines():
        name, state, _ = re.split(r"\s{2,}", line.split(None, 1)[1])
        rows[name] = state
    return rows


def test_history_prints_a_range_a_desk_and_one_calls_story(
    env: dict[str, str], broker: Broker, settings: Settings, history: str
) -> None:
    send_calls(broker, settings, range(3))
    send_calls(broker, settings, range(3, 5), desk="other-desk")
    story = run_cli(env, "history", "--call", "c0001", "--since", "2026-11-02")
    assert story.returncode == 0, story.stderr
    lines = story.stdout.splitlines()
    assert lines[0].split() == ["offset", "occurred_at", "what", "desk", "call_id", "number", "detail"]
    assert [line.split()[2] for line in lines[1:]] == [
        "call.started.inbound",
        "call.connected.inbound",
        "call.ended.inbound",
    ]
    as_json = run_cli(env, "history", "--desk", "other-desk", "--format", "json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [row["event"]["call_id"] for row in rows] == ["c0003"] * 3 + ["c0004"] * 3
    assert {row["routing_key"].rsplit(".", 1)[1] for row in rows} == {"other-desk"}
    assert all(row["user_id"] == "guest" for row in rows)  # the broker-checked sender
    ranged = run_cli(
        env,
        "history",
        "--since",
        "2026-11-02T08:01:00Z",
        "--until",
        "2026-11-02T08:02:05Z",
        "--format",
        "json",
    )
    kept = [json.loads(line)["event"]["call_id"] for line in ranged.stdout.splitlines()]
    assert kept == ["c0001"] * 3 + ["c0002"] * 2  # its S and C; its E came at 08:02:10
    bad = run_cli(env, "history", "--since", "yesterday")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "Error: --since: 'yesterday' is not a time; give RFC 3339 (2026-11-02T09:00:00Z) or a day (2026-11-02)"
    )


def test_history_follow_prints_new_events(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    send_calls(broker, settings, range(1))
    follower = Service(env, "history", "--follow", "--format", "json")
    services.append(follower)
    wait_until(lambda: follower.output().count('"offset"') == 3)  # what was there
    send_calls(broker, settings, range(1, 2))
    wait_until(lambda: follower.output().count('"offset"') == 6)  # and what came after
    assert follower.process.poll() is None  # still following
    assert topology_rows(env)[history] == "stream: offsets 0..5 (6 events kept)"  # a reader changes nothing
    follower.stop()


def test_history_follow_alone_starts_with_the_last_ten_events_as_journalctl_does(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    send_calls(broker, settings, range(5))  # 15 events
    follower = Service(env, "history", "--follow", "--format", "json")
    services.append(follower)
    wait_until(lambda: follower.output().count('"offset"') == 10)
    send_calls(broker, settings, range(5, 6))
    wait_until(lambda: follower.output().count('"offset"') == 13)
    offsets_shown = [
        json.loads(line)["offset"] for line in follower.output().splitlines() if '"offset"' in line
    ]
    assert offsets_shown == list(range(5, 18))  # the last ten of 0..14, then the three new ones
    follower.stop()


def test_history_says_when_nothing_matched(
    env: dict[str, str], broker: Broker, settings: Settings, history: str
) -> None:
    send_calls(broker, settings, range(1))
    done = run_cli(env, "history", "--call", "no-such-call")
    assert done.returncode == 0
    assert done.stdout.split() == ["offset", "occurred_at", "what", "desk", "call_id", "number", "detail"]
    assert done.stderr.strip() == (
        "no event of call 'no-such-call' in the last 24 hours; give --since for an older call"
    )


def test_consumer_started_late_backfills_then_goes_on_live(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    """300 calls before it exists; more while it backfills and after: each counted once, none missed."""
    send_calls(broker, settings, range(300))

    def publish_live() -> None:
        with Broker(settings.amqp_url) as own:
            send_calls(own, settings, range(300, 340))

    live = threading.Thread(target=publish_live)
    consumer = Service({**env, "TCX_BRIDGE_PREFETCH": "50"}, "consume", "analytics", "--from", "first")
    services.append(consumer)
    live.start()  # while it backfills
    live.join()
    send_calls(broker, settings, range(340, 350))
    wait_until(lambda: processed(settings) == 3 * 350, timeout=60)
    rows = stored(settings, "SELECT * FROM calls")
    assert len(rows) == 350
    assert {(r["ring_seconds"], r["talk_seconds"], bool(r["answered"])) for r in rows} == {(2.0, 8.0, True)}
    assert [(row["origin"], bool(row["done"])) for row in offsets(settings)] == [("first", True)]
    wait_until(lambda: "backfill done" in consumer.output())  # logged after the last batch's commit
    log = consumer.output().splitlines()
    batches = [line for line in log if "consumer=analytics backfill offsets " in line]
    assert batches
    assert all(" read, " in line and " for it" in line for line in batches)
    counted = sum(int(n) for line in batches for n in re.findall(r"(?:recorded|duplicate)=(\d+)", line))
    assert counted >= 3 * 300  # the history's events, counted a batch at a time ...
    assert sum("outcome=" in line for line in log) <= 3 * 50 * 2  # ... not a line each: only the live ones


def test_sigkill_during_the_backfill_resumes_from_the_recorded_offset(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    send_calls(broker, settings, range(300))
    small = {**env, "TCX_BRIDGE_PREFETCH": "10"}
    first = Service(small, "consume", "analytics", "--from", "first")
    services.append(first)
    with closing(StoreWatch(sqlite_path(settings, "analytics"), "SELECT count(*) FROM processed")) as count:
        wait_until(lambda: count() >= 90, every=0.0005)
        os.kill(first.process.pid, signal.SIGSTOP)  # at once: the whole backfill takes a few tens of ms
    first.kill()
    recorded = offsets(settings)
    assert len(recorded) == 1
    assert not recorded[0]["done"]  # it really died during the backfill
    assert 0 < recorded[0]["next_offset"] < 900
    second = Service(env, "consume", "analytics", "--from", "first")
    services.append(second)
    wait_until(lambda: processed(settings) == 900, timeout=60)
    send_calls(broker, settings, range(300, 310))  # and then live
    wait_until(lambda: processed(settings) == 930, timeout=30)
    assert len(stored(settings, "SELECT * FROM calls")) == 310
    assert "up to offset" in second.output()


SWITCH_OVER_TRIES = 8  # fresh namespaces tried to catch the switch-over window before the test skips


class StoreWatch:
    """A number the consumer's SQLite file holds (sql's first column), polled at a ms pace: one read-only
    connection (a WAL reader sees each commit as soon as it returns); 0 until the file is migrated."""

    def __init__(self, database: Path, sql: str) -> None:
        self.database = database
        self.sql = sql
        self.connection: sqlite3.Connection | None = None

    def __call__(self) -> int:
        if self.connection is None:
            if not self.database.exists():
                return 0
            self.connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=1)
        try:
            return int(self.connection.execute(self.sql).fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _stop_at_the_switch_over(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> Service | None:
    """Start a late consumer of 200 calls and SIGSTOP it the moment its backfill commits done: the
    stopped Service if its live queue had no consumer then (the window between the backfill's last
    commit and the live consumer), else None (it went live first; killed)."""
    send_calls(broker, settings, range(200))
    first = Service(env, "consume", "analytics", "--from", "first")
    services.append(first)
    deadline = time.monotonic() + 30
    done_sql = "SELECT count(*) FROM stream_offsets WHERE done"
    with closing(StoreWatch(sqlite_path(settings, "analytics"), done_sql)) as done:
        while not done():
            assert first.process.poll() is None, first.output()
            assert time.monotonic() < deadline, "the backfill did not finish within 30 s"
            time.sleep(0.0005)
        os.kill(first.process.pid, signal.SIGSTOP)  # at once: the window is a few ms
    time.sleep(0.05)  # a frame it wrote before it stopped reaches the broker
    info = broker.queue_info(settings.queue("analytics"))
    assert info is not None  # declared before the backfill began
    if info[1] == 0:
        return first
    first.kill()
    return None


def test_sigkill_at_the_switch_over_loses_nothing_and_counts_nothing_twice(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    """Stopped between the backfill's done commit and its live consumer, live events published, killed:
    the next process goes live from the recorded done and counts each call once. The window is a few
    ms: each try is a fresh namespace, and the test skips only if no try caught it."""
    tried = [settings]
    try:
        caught = _stop_at_the_switch_over(env, broker, settings, services)
        while caught is None and len(tried) < SWITCH_OVER_TRIES:
            env = {
                **env,
                "TCX_BRIDGE_NAMESPACE": f"{tried[0].namespace}s{len(tried)}",
                "TCX_BRIDGE_DATA_DIR": f"{tried[0].data_dir}{len(tried)}",
            }
            settings = load_settings(environ=env).settings
            tried.append(settings)
            declare_events(broker, settings)
            declare_history(broker, settings)
            caught = _stop_at_the_switch_over(env, broker, settings, services)
        if caught is None:
            pytest.skip(
                f"the switch-over window (done committed, no live consumer yet) was not caught in "
                f"{SWITCH_OVER_TRIES} tries"
            )
        print(f"switch-over window caught on try {len(tried)} of {SWITCH_OVER_TRIES}")
        live = settings.queue("analytics")
        send_calls(broker, settings, range(200, 220))  # live, while it is stopped in the switch-over
        wait_until(lambda: broker.queue_info(live) == (60, 0))  # all in its live queue: no consumer took any
        caught.kill()  # SIGKILL, still stopped
        assert [bool(row["done"]) for row in offsets(settings)] == [True]
        second = Service(env, "consume", "analytics", "--from", "first")
        services.append(second)
        send_calls(broker, settings, range(220, 230))
        wait_until(lambda: processed(settings) == 690, timeout=60)
        rows = stored(settings, "SELECT * FROM calls")
        assert len(rows) == 230
        assert len({row["call_id"] for row in rows}) == 230
        assert {(r["ring_seconds"], r["talk_seconds"], bool(r["answered"])) for r in rows} == {
            (2.0, 8.0, True)
        }
        assert "was done before: live queue" in second.output()
    finally:
        for other in tried[1:]:
            _cleanup(other)


def test_from_a_time_reads_only_from_then(
    env: dict[str, str], broker: Broker, settings: Settings, history: str, services: list[Service]
) -> None:
    send_calls(broker, settings, range(5))
    now = datetime.now(UTC)
    moment = now.replace(microsecond=0) + SEC  # the stream's clock: whole seconds
    wait_until(lambda: datetime.now(UTC) > moment + SEC / 5, timeout=5)
    send_calls(broker, settings, range(5, 8))
    consumer = Service(env, "consume", "analytics", "--from", events.format_time(moment))
    services.append(consumer)
    wait_until(lambda: processed(settings) == 9, timeout=30)
    assert sorted(row["call_id"] for row in stored(settings, "SELECT call_id FROM calls")) == [
        "c0005",
        "c0006",
        "c0007",
    ]
    # the time as given (RFC 3339), never as a number the log's masking could take it for
    assert f"(offset {moment:%Y-%m-%dT%H:%M:%SZ}) up to offset" in consumer.output()


def test_bad_from_is_one_line(env: dict[str, str]) -> None:
    done = run_cli(env, "consume", "analytics", "--from", "yesterday")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for --from: 'yesterday' is not a stream offset; give first, last, next, "
        "a number or an RFC 3339 time (2026-11-02T09:00:00Z)"
    )


def test_retention_by_age_drops_what_is_older(env: dict[str, str], broker: Broker) -> None:
    """history_max_age 1s: once a segment rolls over, the segments older than that are gone (the size
    limit, 1 MB, is far away; it only makes the segments small enough to roll in a test)."""
    short = {**env, "TCX_BRIDGE_HISTORY_MAX_AGE": "1s", "TCX_BRIDGE_HISTORY_MAX_BYTES": "1000000"}
    assert run_cli(short, "topology", "declare").returncode == 0
    settings = load_settings(environ=short).settings
    send_calls(broker, settings, range(60))  # about 100 kB: a segment
    time.sleep(1.5)  # older than the age: the broker's clock decides, nothing to wait on
    send_calls(broker, settings, range(60, 120))  # rolls the segment over: retention runs

    def kept() -> list[str]:
        shown = run_cli(short, "history", "--format", "json")
        return [json.loads(line)["event"]["call_id"] for line in shown.stdout.splitlines()]

    wait_until(lambda: "c0000" not in kept(), timeout=15, every=0.5)
    remaining = kept()
    assert {f"c{n:04}" for n in range(60, 120)} <= set(remaining)  # the young ones are all there
    assert len(remaining) < 360
    shown = run_cli(short, "history", "--format", "json")
    held = [json.loads(line)["offset"] for line in shown.stdout.splitlines()]
    first, last = held[0], held[-1]
    assert first > 0  # what retention kept: the first offset a reader at first gets, not 0
    assert topology_rows(short)[history_queue(settings)] == (
        f"stream: offsets {first}..{last} ({last - first + 1} events kept)"
    )


def test_backfill_then_live_on_postgresql(
    env: dict[str, str],
    broker: Broker,
    settings: Settings,
    history: str,
    services: list[Service],
    pg_url: str,
) -> None:
    pg_env = {**env, "TCX_BRIDGE_STORE_URL": pg_url}
    pg = load_settings(environ=pg_env).settings
    send_calls(broker, settings, range(100))
    consumer = Service(pg_env, "consume", "analytics", "--from", "first")
    services.append(consumer)
    wait_until(lambda: processed(pg) == 300, timeout=60)
    send_calls(broker, settings, range(100, 110))
    wait_until(lambda: processed(pg) == 330, timeout=30)
    rows = stored(pg, "SELECT * FROM calls")
    assert len(rows) == 110
    assert {(r["ring_seconds"], r["talk_seconds"], r["answered"]) for r in rows} == {(2.0, 8.0, True)}
    assert [(row["origin"], row["done"]) for row in offsets(pg)] == [("first", True)]


def test_from_without_the_history_stream_is_one_line(env: dict[str, str], broker: Broker) -> None:
    done = run_cli(env, "consume", "analytics", "--from", "first", timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: the history stream '{env['TCX_BRIDGE_NAMESPACE']}.history' does not exist; "
        "run tcx-bridge topology declare"
    )


def test_an_empty_history_rebuilds_nothing(
    env: dict[str, str], broker: Broker, settings: Settings, history: str
) -> None:
    """Nothing to rebuild from must not swap in an empty table."""
    done = run_cli(env, "store", "rebuild", "analytics")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: the history stream '{settings.namespace}.history' holds no call event: nothing to rebuild "
        "from (the table is left as it is)"
    )


class FullOnce:
    """A SQLite connection whose COMMIT recording the backfill done fails once, as on a full disk."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.failed = False

    def execute(self, sql: str, *params: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            done = self.connection.execute("SELECT count(*) FROM stream_offsets WHERE done").fetchone()[0]
            if done:
                self.failed = True
                raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *params)

    def __getattr__(self, name: str) -> object:
        return getattr(self.connection, name)


def test_a_backfill_whose_last_commit_fails_after_a_reconnect_reads_it_again_before_going_live(
    env: dict[str, str],
    broker: Broker,
    history: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker connection lost right after the last batch (the runner reconnects and runs the backfill
    again) while that batch's COMMIT, left to finish behind, fails (a full disk): the consumer waits as for
    a store that is away, reads that batch again from the offset before it, and only then goes live."""
    from consumers.analytics.consumer import Analytics
    from consumers.runtime.backfill import Backfill
    from consumers.runtime.runner import Runner
    from consumers.store.core import SqliteStore

    settings = load_settings(environ={**env, "TCX_BRIDGE_PREFETCH": "10"}).settings
    send_calls(broker, settings, range(20))
    runner = Runner(Analytics(settings), settings)
    store = runner.consumer.database
    assert isinstance(store, SqliteStore)
    full = FullOnce(store._connection)
    store._connection = full  # type: ignore[assignment]
    filling = Backfill(runner, "first", "first")
    handled = filling._on_batch

    def then_lost(deliveries: list[object]) -> None:
        handled(deliveries)  # type: ignore[arg-type]
        if filling.done and full.failed is False:
            raise BrokerUnreachableError("the connection was lost")  # the runner reconnects

    monkeypatch.setattr(filling, "_on_batch", then_lost)
    caplog.set_level("INFO", logger="consumers.runtime")
    worker = threading.Thread(target=runner.run)
    worker.start()
    try:
        wait_until(lambda: "consuming" in caplog.text, timeout=60)
    finally:
        runner.stop()
        worker.join(30)
    assert full.failed
    lines = caplog.text.splitlines()
    lost = next(n for n, line in enumerate(lines) if "could not commit: database or disk is full" in line)
    assert "store lost" in lines[lost]
    assert lost < next(n for n, line in enumerate(lines) if "consuming" in line)  # live only after it
    assert [bool(row["done"]) for row in offsets(settings)] == [True]
    assert processed(settings) == 60
    assert len(stored(settings, "SELECT * FROM calls")) == 20
