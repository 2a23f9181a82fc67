"""The PostgreSQL store: replicas side by side, a server restart mid-drain, migrations, store copy."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from bridge import events
from bridge.config import Settings, load_settings
from bridge.transport import Broker, OutgoingMessage
from consumers.analytics.calls import apply_event
from consumers.analytics.consumer import Analytics
from consumers.runtime.runner import declare_consumer_queues
from consumers.store.core import Store, open_sqlite, open_store
from consumers.store.schema import LATEST
from tests.conftest import Service, free_port, run_cli, start_service, wait_until, wallboard_tiles
from tests.postgres import LocalPostgres, with_schema

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)
RECORD = ("desk", "direction", "call_id", "caller_id", "started_at", "connected_at", "ended_at",
          "ring_seconds", "talk_seconds", "answered")  # fmt: skip


def call_events(calls: int, seed: int = 7) -> list[events.CallEvent]:
    """Events of calls at 20 desks: 40% transferred (S, C, E at two desks), 40% answered, 20% missed."""
    rng = random.Random(seed)
    found = []

    def leg(desk: str, call_id: str, start: datetime, ring: float, talk: float | None, caller: str) -> None:
        moments = [("started", start), ("ended", start + timedelta(seconds=ring + (talk or 0)))]
        if talk is not None:
            moments.append(("connected", start + timedelta(seconds=ring)))
        for kind, moment in moments:
            found.append(
                events.CallEvent(
                    event_id=events.new_event_id(),
                    kind=kind,  # type: ignore[arg-type]
                    direction="inbound",
                    call_id=call_id,
                    caller_id=caller if kind == "started" else None,
                    desk=desk,
                    extension="101",
                    occurred_at=events.format_time(moment),
                    argv=(),
                )
            )

    for n in range(calls):
        start = T0 + timedelta(seconds=n * 7 + rng.random())
        desk, other = f"d{n % 20:02}", f"d{(n + 1) % 20:02}"
        caller = f"07912{n:05}"
        ring, talk = round(rng.uniform(1, 30), 3), round(rng.uniform(5, 600), 3)
        if n % 5 in (0, 1):
            leg(desk, f"{n}", start, ring, talk, caller)
            leg(other, f"{n}", start + timedelta(seconds=ring + talk), 2.0, talk / 2, caller)
        elif n % 5 in (2, 3):
            leg(desk, f"{n}", start, ring, talk, caller)
        else:
            leg(desk, f"{n}", start, ring, None, caller)
    return found


def shuffled_with_duplicates(found: list[events.CallEvent], share: float = 0.05) -> list[events.CallEvent]:
    rng = random.Random(11)
    copies = rng.sample(found, int(len(found) * share))
    mixed = found + copies
    rng.shuffle(mixed)
    return mixed


def message(event: events.CallEvent) -> OutgoingMessage:
    return OutgoingMessage(
        event.routing_key, events.ENCODER.encode(event), event.event_id, f"call.{event.kind}", 0
    )


def records(store: Store) -> set[tuple[Any, ...]]:
    rows = store.execute(f"SELECT {', '.join(RECORD)} FROM {store.calls_table}")
    return {tuple(bool(row[c]) if c == "answered" else row[c] for c in RECORD) for row in rows}


def single_sqlite_run(path: Path, mixed: list[events.CallEvent]) -> set[tuple[Any, ...]]:
    """What one analytics process with SQLite makes of these events, in this order."""
    store = open_sqlite(path, "analytics")
    with store.transaction():
        for event in mixed:
            if store.first_time(event.event_id):
                apply_event(store, event)
    found = records(store)
    store.close()
    return found


def processed(settings: Settings, consumer: str = "analytics") -> int:
    """How many event ids a consumer has recorded in its PostgreSQL store."""
    store = open_store(settings, consumer)
    try:
        row = store.execute("SELECT count(*) AS n FROM processed WHERE consumer = ?", (consumer,)).fetchone()
        return int(row["n"])
    finally:
        store.close()


@pytest.fixture
def pg_env(env: dict[str, str], pg_url: str) -> dict[str, str]:
    return {**env, "TCX_BRIDGE_STORE_URL": pg_url}


@pytest.fixture
def pg_settings(pg_env: dict[str, str]) -> Settings:
    return load_settings(environ=pg_env).settings


def test_two_replicas_one_killed_twice_give_what_one_sqlite_process_gives(
    pg_env: dict[str, str], pg_settings: Settings, broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    """20,000 events of 5,000 calls, shuffled, 5% duplicated, on two replicas; one SIGKILLed twice."""
    found = call_events(5000)
    assert len(found) == 20_000
    mixed = shuffled_with_duplicates(found)
    expected = single_sqlite_run(tmp_path / "single.sqlite3", mixed)

    declare_consumer_queues(broker, pg_settings, Analytics)
    confirmed, error = broker.publish_many(pg_settings.exchange, [message(e) for e in mixed], timeout=120)
    assert (confirmed, error) == (len(mixed), None)

    replicas = [Service(pg_env, "consume", "analytics") for _ in range(2)]
    services.extend(replicas)
    for mark in (5_000, 12_000):
        wait_until(lambda mark=mark: processed(pg_settings) >= mark, timeout=120, every=0.01)  # type: ignore[misc]
        replicas[0].kill()
        assert processed(pg_settings) < len(found)  # it died mid-drain
        replicas[0] = Service(pg_env, "consume", "analytics")
        services.append(replicas[0])
    wait_until(lambda: processed(pg_settings) == len(found), timeout=180)
    wait_until(lambda: broker.queue_info(pg_settings.queue("analytics"))[0] == 0, timeout=60)  # type: ignore[index]

    store = open_store(pg_settings, "analytics")
    try:
        got = records(store)
        daily = store.execute(
            "SELECT sum(calls) AS calls, sum(inbound_answered) AS answered FROM calls_daily"
        )
        totals = daily.fetchone()
    finally:
        store.close()
    assert len(expected) == 7000  # 2,000 transferred calls have two records
    assert got == expected
    assert (totals["calls"], totals["answered"]) == (7000, 6000)
    assert all(replica.process.poll() is None for replica in replicas)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this module's own, to restart (the machine's is never touched)."""
    from tests.postgres import local_postgres_available

    why = local_postgres_available()
    if why:
        pytest.skip(why)
    server = LocalPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


def test_postgres_restart_during_a_drain_loses_nothing_and_doubles_nothing(
    own_postgres: LocalPostgres, env: dict[str, str], broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    server_env = {**env, "TCX_BRIDGE_STORE_URL": with_schema(own_postgres.url, env["TCX_BRIDGE_NAMESPACE"])}
    settings = load_settings(environ=server_env).settings
    found = call_events(1500, seed=3)
    mixed = shuffled_with_duplicates(found)
    expected = single_sqlite_run(tmp_path / "single.sqlite3", mixed)
    declare_consumer_queues(broker, settings, Analytics)
    assert broker.publish_many(settings.exchange, [message(e) for e in mixed], timeout=120)[1] is None

    consumer = Service({**server_env, "TCX_BRIDGE_PREFETCH": "20"}, "consume", "analytics")
    services.append(consumer)
    wait_until(lambda: processed(settings) >= 1000, timeout=60, every=0.01)
    own_postgres.restart()
    wait_until(lambda: processed(settings) == len(found), timeout=120, every=0.2)
    wait_until(lambda: broker.queue_info(settings.queue("analytics"))[0] == 0, timeout=60)  # type: ignore[index]
    store = open_store(settings, "analytics")
    try:
        assert records(store) == expected
    finally:
        store.close()
    assert "store lost" in consumer.output()
    assert consumer.process.poll() is None


def test_migrate_is_idempotent_and_a_newer_schema_is_one_line(
    pg_env: dict[str, str], env: dict[str, str]
) -> None:
    for environ in (pg_env, env):
        first = run_cli(environ, "store", "migrate")
        if environ is env:  # no SQLite store yet: nothing to migrate
            assert first.stdout.startswith("no store in ")
            Path(environ["TCX_BRIDGE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
            open_sqlite(Path(environ["TCX_BRIDGE_DATA_DIR"]) / "analytics.sqlite3").close()
            first = run_cli(environ, "store", "migrate")
        assert first.returncode == 0, first.stderr
        again = run_cli(environ, "store", "migrate")
        assert again.returncode == 0
        assert again.stdout.strip().endswith(f"schema version {LATEST} (up to date)")

    settings = load_settings(environ=pg_env).settings
    store = open_store(settings, "analytics")
    store.execute("INSERT INTO tcx_schema (version) VALUES (99)")
    store.close()
    newer = run_cli(pg_env, "store", "migrate")
    assert newer.returncode == 1
    assert newer.stderr.strip().splitlines()[-1].startswith("Error: store 'postgresql://")
    assert (
        f"has schema version 99, newer than this tcx-bridge knows ({LATEST}); upgrade tcx-bridge"
        in newer.stderr
    )
    consumer = run_cli(pg_env, "consume", "analytics", timeout=30)
    assert consumer.returncode == 1
    assert "has schema version 99" in consumer.stderr


def test_store_copy_gives_the_same_report_and_journal(
    env: dict[str, str], pg_env: dict[str, str], settings: Settings
) -> None:
    data = Path(settings.data_dir)
    analytics = open_sqlite(data / "analytics.sqlite3", "analytics")
    with analytics.transaction():
        for event in shuffled_with_duplicates(call_events(300, seed=5)):
            if analytics.first_time(event.event_id):
                apply_event(analytics, event)
    analytics.close()
    crm = open_sqlite(data / "crm.sqlite3", "crm")
    crm.execute(
        "INSERT INTO journal (call_key, desk, direction, call_id, number, number_e164, contact_name, contact, "
        "answered, ring_seconds, talk_seconds, started_at, connected_at, ended_at) VALUES "
        "(1, 'd01', 'inbound', 'j1', '079 123 45 67', '+41791234567', 'Anna', '{\"name\": \"Anna\"}', 1, "
        "4.5, 60.25, '2026-11-02T09:00:00.000000Z', '2026-11-02T09:00:04.500000Z', '2026-11-02T09:01:04.750000Z')"
    )
    crm.close()
    contacts = data / "contacts.csv"
    contacts.write_text("name,phone\nAnna Muster,079 123 45 67\n")
    assert run_cli(env, "contacts", "import", str(contacts)).returncode == 0

    copied = run_cli(env, "store", "copy", "--to", pg_env["TCX_BRIDGE_STORE_URL"])
    assert copied.returncode == 0, copied.stderr
    assert "calls: 420 row(s)" in copied.stdout  # 300 calls, 120 of them at two desks
    for command in (
        ["report", "--format", "json"],
        ["report", "--calls", "--format", "json"],
        ["report", "--format", "json", "--since", "2026-11-02T08:10:00Z", "--desk", "d03"],
        ["journal", "--format", "json"],
        ["contacts", "list", "--format", "json"],
    ):
        before, after = run_cli(env, *command), run_cli(pg_env, *command)
        assert before.returncode == after.returncode == 0, after.stderr
        assert json.loads(after.stdout) == json.loads(before.stdout), command
        assert json.loads(after.stdout), command  # something was compared
    again = run_cli(env, "store", "copy", "--to", pg_env["TCX_BRIDGE_STORE_URL"])
    assert again.returncode == 1
    assert "already holds" in again.stderr
    lookup = run_cli(pg_env, "contacts", "lookup", "+41 79 123 45 67")
    assert "Anna Muster" in lookup.stdout


def test_a_reader_opens_only_a_store_that_was_written(settings: Settings) -> None:
    """open_store(existing=True): None (and no file made) before the consumer wrote its store."""
    path = Path(settings.data_dir) / "analytics.sqlite3"
    assert open_store(settings, "analytics", existing=True) is None
    assert not path.exists()
    open_store(settings, "analytics").close()
    opened = open_store(settings, "analytics", existing=True)
    assert opened is not None
    assert opened.name == str(path)
    opened.close()


def test_postgresql_url_without_the_driver_is_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.cli import cli

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "consumers.store.postgres", raising=False)
    result = CliRunner().invoke(
        cli,
        ["--store-url", "postgresql://tcx@db.example/tcx", "report"],
        env={**env, "TCX_BRIDGE_STORE_URL": ""},
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: store_url is a postgresql:// URL but the PostgreSQL driver is not installed; "
        "install it with: pip install 'tcx-bridge[postgres]'"
    )


def test_the_wallboard_keeps_its_records_in_postgresql(
    pg_env: dict[str, str], pg_settings: Settings, broker: Broker, services: list[Service]
) -> None:

    port = free_port()
    board_env = {**pg_env, "TCX_BRIDGE_TIMEZONE": "UTC"}
    start_service(
        services, board_env, broker, pg_settings.queue("wallboard"), "wallboard", "--port", str(port)
    )
    now = datetime.now(UTC)
    for kind, at in (("started", now), ("connected", now + timedelta(seconds=3))):
        event = events.CallEvent(
            event_id=events.new_event_id(),
            kind=kind,  # type: ignore[arg-type]
            direction="inbound",
            call_id="w1",
            caller_id="0791234567" if kind == "started" else None,
            desk=pg_settings.desk,
            extension="101",
            occurred_at=events.format_time(at),
            argv=(),
        )
        broker.publish(pg_settings.exchange, message(event))

    wait_until(lambda: wallboard_tiles(port)["talking"] == 1, timeout=15)
    store = open_store(pg_settings, "wallboard")
    try:
        rows = store.execute("SELECT call_id, ring_seconds FROM wallboard_calls").fetchall()
    finally:
        store.close()
    assert [(row["call_id"], row["ring_seconds"]) for row in rows] == [("w1", 3.0)]


def test_two_crm_replicas_journal_every_call_once(
    pg_env: dict[str, str], pg_settings: Settings, broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    """The CRM merges event by event (savepoints), under the same key locks: replicas agree too."""
    from consumers.crm.consumer import Crm

    mixed = shuffled_with_duplicates(call_events(300, seed=9))
    expected = {record[:3] + record[4:] for record in single_sqlite_run(tmp_path / "single.sqlite3", mixed)}
    declare_consumer_queues(broker, pg_settings, Crm)
    assert broker.publish_many(pg_settings.exchange, [message(e) for e in mixed], timeout=120)[1] is None
    for _ in range(2):
        services.append(Service({**pg_env, "TCX_BRIDGE_PREFETCH": "50"}, "consume", "crm"))
    columns = [c for c in RECORD if c != "caller_id"]

    def journal() -> set[tuple[Any, ...]]:
        store = open_store(pg_settings, "crm")
        try:
            rows = store.execute(f"SELECT {', '.join(columns)} FROM journal").fetchall()
        finally:
            store.close()
        return {tuple(row[c] for c in columns) for row in rows}

    unique = len({event.event_id for event in mixed})

    wait_until(
        lambda: processed(pg_settings, "crm") == unique, timeout=120, every=0.2
    )  # committed with the journal
    assert journal() == expected
    assert all(service.process.poll() is None for service in services)


def test_doctor_checks_the_store_and_changes_nothing(pg_env: dict[str, str]) -> None:
    def store_line(environ: dict[str, str]) -> str:
        done = run_cli(environ, "doctor")
        return next(line for line in done.stdout.splitlines() if " store " in line)

    fresh = store_line(pg_env)
    assert fresh.startswith("\u2713 store postgresql://")
    assert fresh.endswith("reachable, not created yet (the consumers create it at start)")
    assert store_line(pg_env) == fresh  # the check created nothing
    assert run_cli(pg_env, "store", "migrate").returncode == 0
    assert store_line(pg_env).endswith(f"reachable, schema version {LATEST}")
    away = {**pg_env, "TCX_BRIDGE_STORE_URL": "postgresql://postgres@127.0.0.1:9/none"}
    line = store_line(away)
    assert line.startswith("\u2717 store postgresql://postgres@127.0.0.1:9/none: PostgreSQL")
    assert "is not reachable" in line
    assert line.endswith("start PostgreSQL, or fix store_url")


def test_a_consumer_started_while_postgresql_is_down_waits_for_it(
    own_postgres: LocalPostgres, env: dict[str, str], broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    server_env = {**env, "TCX_BRIDGE_STORE_URL": with_schema(own_postgres.url, env["TCX_BRIDGE_NAMESPACE"])}
    settings = load_settings(environ=server_env).settings
    declare_consumer_queues(broker, settings, Analytics)
    mixed = shuffled_with_duplicates(call_events(50, seed=4))
    assert broker.publish_many(settings.exchange, [message(e) for e in mixed], timeout=60)[1] is None
    own_postgres.stop()
    try:
        consumer = Service(server_env, "consume", "analytics")
        services.append(consumer)
        wait_until(lambda: "waiting for it" in consumer.output(), timeout=20)
        wait_until(lambda: "store lost" in consumer.output(), timeout=20)
        assert consumer.process.poll() is None  # a database away is no reason to exit
        assert broker.queue_info(settings.queue("analytics"))[0] == len(mixed)  # type: ignore[index]  # none taken
    finally:
        own_postgres.resume()
    wait_until(lambda: processed(settings) == len({e.event_id for e in mixed}), timeout=60, every=0.2)
    store = open_store(settings, "analytics")
    try:
        assert records(store) == single_sqlite_run(tmp_path / "single.sqlite3", mixed)
    finally:
        store.close()


def test_a_missing_grant_holds_the_messages_instead_of_dead_lettering_them(
    pg_env: dict[str, str], pg_settings: Settings, broker: Broker, services: list[Service]
) -> None:
    """Every message would fail alike: none is dead-lettered; they wait until an operator grants the right."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    assert run_cli(pg_env, "store", "migrate").returncode == 0
    admin_url = pg_settings.store_url or ""
    schema = admin_url.rsplit("search_path%3D", 1)[1]
    role = f"tcx_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        connection.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
    parts = urlsplit(admin_url)
    reader_url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
    try:
        reader_env = {**pg_env, "TCX_BRIDGE_STORE_URL": reader_url}
        declare_consumer_queues(broker, pg_settings, Analytics)
        mixed = shuffled_with_duplicates(call_events(20, seed=2))
        assert broker.publish_many(pg_settings.exchange, [message(e) for e in mixed])[1] is None
        consumer = Service(reader_env, "consume", "analytics")
        services.append(consumer)
        wait_until(lambda: "cannot be written: permission denied" in consumer.output(), timeout=20)
        assert consumer.process.poll() is None
        assert broker.queue_info(pg_settings.dead_queue("analytics")) == (0, 0)  # nothing dead-lettered
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
        wait_until(lambda: processed(pg_settings) == len({e.event_id for e in mixed}), timeout=60, every=0.2)
    finally:
        for service in services:
            service.kill()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f"DROP OWNED BY {role}")
            connection.execute(f"DROP ROLE {role}")


def test_a_plugins_call_records_get_a_table_of_their_own(pg_settings: Settings) -> None:
    plugin = open_store(pg_settings, "missed-calls")
    try:
        assert plugin.calls_table == "missed_calls_calls"
        with plugin.transaction():
            for event in call_events(3):
                if plugin.first_time(event.event_id):
                    apply_event(plugin, event)
        assert len(records(plugin)) == 5  # calls 0 and 1 were transferred: two records each
        assert plugin.execute("SELECT count(*) AS n FROM calls").fetchone()["n"] == 0  # analytics' untouched
    finally:
        plugin.close()
    again = open_store(pg_settings, "missed-calls")  # the table is there already: kept as it is
    try:
        assert len(records(again)) == 5
    finally:
        again.close()


def test_a_spoofed_event_is_left_out_of_the_batch_merge(pg_settings: Settings) -> None:
    """On PostgreSQL the batch is merged before handle(): a spoofed event must not be in it."""
    from bridge.errors import HandlerError
    from bridge.transport import Delivery
    from consumers.runtime.consumer import Context

    analytics = Analytics(pg_settings)
    honest, forged = call_events(2)[0], call_events(2, seed=8)[0]
    forged_body = events.ENCODER.encode(msgspec.structs.replace(forged, desk="other-desk"))
    deliveries = [
        Delivery(
            events.ENCODER.encode(honest),
            honest.routing_key,
            "x",
            1,
            False,
            "a",
            "call",
            {},
            user_id=f"desk-{honest.desk}",
        ),
        Delivery(
            forged_body, forged.routing_key, "x", 2, False, "b", "call", {}, user_id=f"desk-{forged.desk}"
        ),
    ]
    try:
        with analytics.store.transaction():
            analytics.prepare(deliveries)
            outcomes = []
            for delivery in deliveries:
                context = Context(pg_settings, delivery, delivery.routing_key, lambda *_: True)
                try:
                    outcomes.append(
                        analytics.handle(analytics.decode(delivery.body, delivery.routing_key), context)
                    )
                except HandlerError as error:
                    outcomes.append(str(error))
        assert outcomes[0] == "recorded"
        assert outcomes[1].startswith(
            f"spoofed: the event is for desk 'other-desk' but user 'desk-{forged.desk}'"
        )
        assert {row[0] for row in records(analytics.store)} == {honest.desk}
    finally:
        analytics.close()
