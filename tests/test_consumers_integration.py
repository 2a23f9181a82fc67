"""The CRM and analytics consumers against the real broker, run as their own processes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge import events
from bridge.config import Settings
from bridge.errors import BrokerRefusedError
from bridge.topology import declare_commands, publish_event
from bridge.transport import Broker, OutgoingMessage
from consumers.store.core import open_store, sqlite_path
from tests.conftest import Proxy, Service, Tap, run_cli, start_service, wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


def call_message(
    settings: Settings,
    kind: str,
    direction: str,
    call_id: str,
    at: datetime,
    caller_id: str | None = None,
    event_id: str | None = None,
    desk: str | None = None,
) -> OutgoingMessage:
    event = events.CallEvent(
        event_id=event_id or events.new_event_id(),
        kind=kind,
        direction=direction,
        call_id=call_id,  # type: ignore[arg-type]
        caller_id=caller_id,
        desk=desk or settings.desk,
        extension="101",
        occurred_at=events.format_time(at),
        argv=(),
    )
    return OutgoingMessage(event.routing_key, events.ENCODER.encode(event), event.event_id, f"call.{kind}", 0)


def send(broker: Broker, settings: Settings, *messages: OutgoingMessage) -> None:
    for message in messages:
        publish_event(broker, settings, message)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """Every test here runs on both stores: the SQLite files, and PostgreSQL (a schema of its own)."""
    if request.param == "postgresql":
        return {**env, "TCX_BRIDGE_STORE_URL": request.getfixturevalue("pg_url")}
    return env


def stored(settings: Settings, consumer: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows a consumer's store holds (none while its SQLite file does not exist yet)."""
    if not settings.store_url and not sqlite_path(settings, consumer).exists():
        return []
    store = open_store(settings, consumer)
    try:
        return [dict(row) for row in store.execute(sql.format(calls=store.calls_table), params)]
    finally:
        store.close()


def analytics_rows(settings: Settings) -> list[dict[str, Any]]:
    return stored(settings, "analytics", "SELECT * FROM {calls} ORDER BY call_id")


def processed_count(settings: Settings, name: str) -> int:
    where = " WHERE consumer = ?" if settings.store_url else ""
    rows = stored(settings, name, f"SELECT count(*) AS n FROM processed{where}", (name,) if where else ())
    return int(rows[0]["n"]) if rows else 0


@pytest.fixture
def contacts_csv(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "name,phone,company,email,url,segment\n"
        "Anna Muster,079 123 45 67,Muster AG,anna@muster.ch,https://crm.example.com/c/1,gold\n"
        "Bad Number,call me maybe,,,,\n"
    )
    return path


@pytest.fixture
def crm(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service], contacts_csv: Path
) -> Service:
    done = run_cli(env, "contacts", "import", str(contacts_csv))
    assert done.returncode == 0, done.stderr
    service = start_service(services, env, broker, settings.queue("crm"), "consume", "crm")
    return service


@pytest.fixture
def pops(broker: Broker, settings: Settings) -> Tap:
    declare_commands(broker, settings)
    return Tap(broker, settings, settings.commands_exchange, "desk.*.popup")


def test_pop_for_a_known_caller_carries_the_contact(
    crm: Service, broker: Broker, settings: Settings, pops: Tap
) -> None:
    send(
        broker, settings, call_message(settings, "started", "inbound", "c1", datetime.now(UTC), "0791234567")
    )
    delivery = pops.get(timeout=15)
    assert delivery is not None
    assert delivery.routing_key == f"desk.{settings.desk}.popup"
    assert delivery.expiration == "30000"
    pop = json.loads(delivery.body)
    assert pop["call_id"] == "c1"
    assert pop["desk"] == settings.desk
    assert pop["caller_id"] == "0791234567"
    assert pop["number_e164"] == "+41791234567"
    assert pop["contact"] == {
        "name": "Anna Muster",
        "company": "Muster AG",
        "email": "anna@muster.ch",
        "url": "https://crm.example.com/c/1",
    }


def test_pop_for_an_unknown_caller_has_contact_null(
    crm: Service, broker: Broker, settings: Settings, pops: Tap
) -> None:
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "c2", datetime.now(UTC), "+41 44 999 99 99"),
    )
    delivery = pops.get(timeout=15)
    assert delivery is not None
    pop = json.loads(delivery.body)
    assert pop["number_e164"] == "+41449999999"
    assert pop["contact"] is None


def test_crm_journals_the_ended_call(crm: Service, broker: Broker, settings: Settings, pops: Tap) -> None:
    now = datetime.now(UTC)
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "j1", now, "0791234567"),
        call_message(settings, "ended", "inbound", "j1", now + timedelta(seconds=20)),
        call_message(settings, "connected", "inbound", "j1", now + timedelta(seconds=4)),
    )

    def journaled() -> dict[str, Any] | None:
        if processed_count(settings, "crm") < 3:
            return None
        rows = stored(settings, "crm", "SELECT * FROM journal WHERE call_id = 'j1'")
        return rows[0] if rows else None

    wait_until(journaled)
    entry = journaled()
    assert entry is not None
    assert entry["contact_name"] == "Anna Muster"
    assert entry["answered"] == 1
    assert entry["ring_seconds"] == pytest.approx(4)
    assert entry["talk_seconds"] == pytest.approx(16)


def test_analytics_ring_and_talk_times_in_any_order(
    analytics: Service, broker: Broker, settings: Settings
) -> None:
    sec = timedelta(seconds=1)
    send(
        broker,
        settings,
        # answered inbound: rings 5 s, talks 60 s
        call_message(settings, "started", "inbound", "a-answered", T0, "0791234567"),
        call_message(settings, "connected", "inbound", "a-answered", T0 + 5 * sec),
        call_message(settings, "ended", "inbound", "a-answered", T0 + 65 * sec),
        # missed: S then E
        call_message(settings, "started", "inbound", "b-missed", T0, "0441234567"),
        call_message(settings, "ended", "inbound", "b-missed", T0 + 12 * sec),
        # outbound: dialing 8 s, talks 30 s
        call_message(settings, "started", "outbound", "c-outbound", T0),
        call_message(settings, "connected", "outbound", "c-outbound", T0 + 8 * sec),
        call_message(settings, "ended", "outbound", "c-outbound", T0 + 38 * sec),
        # out of order: E, then S, then C
        call_message(settings, "ended", "inbound", "d-shuffled", T0 + 100 * sec),
        call_message(settings, "started", "inbound", "d-shuffled", T0, "0791234567"),
        call_message(settings, "connected", "inbound", "d-shuffled", T0 + 3 * sec),
    )
    wait_until(lambda: processed_count(settings, "analytics") == 11)
    rows = {row["call_id"]: row for row in analytics_rows(settings)}
    assert set(rows) == {"a-answered", "b-missed", "c-outbound", "d-shuffled"}
    got = {k: (r["answered"], r["ring_seconds"], r["talk_seconds"], r["direction"]) for k, r in rows.items()}
    assert got == {
        "a-answered": (1, 5.0, 60.0, "inbound"),
        "b-missed": (0, None, None, "inbound"),
        "c-outbound": (1, 8.0, 30.0, "outbound"),
        "d-shuffled": (1, 3.0, 97.0, "inbound"),
    }
    assert rows["b-missed"]["ended_at"] == events.format_time(T0 + 12 * sec)
    assert rows["a-answered"]["caller_id"] == "0791234567"


def test_duplicate_event_changes_nothing(analytics: Service, broker: Broker, settings: Settings) -> None:
    started = call_message(settings, "started", "inbound", "dup", T0, "1", event_id="same-id")
    ended = call_message(settings, "ended", "inbound", "dup", T0 + timedelta(seconds=9))
    send(broker, settings, started, ended)
    wait_until(lambda: processed_count(settings, "analytics") == 2)
    before = analytics_rows(settings)
    later = call_message(
        settings, "started", "inbound", "dup", T0 + timedelta(seconds=5), "1", event_id="same-id"
    )
    send(broker, settings, started, later)
    wait_until(lambda: analytics.output().count("outcome=duplicate") == 2)
    assert analytics_rows(settings) == before
    assert len(before) == 1


def test_garbage_and_missing_field_are_dead_lettered_and_the_consumer_goes_on(
    analytics: Service, broker: Broker, settings: Settings
) -> None:
    garbage = OutgoingMessage(
        f"call.started.inbound.{settings.desk}", b"\x00not json{", "g1", "call.started", 0
    )
    body = json.loads(call_message(settings, "ended", "inbound", "m", T0).body)
    del body["occurred_at"]
    missing = OutgoingMessage(
        f"call.ended.inbound.{settings.desk}", json.dumps(body).encode(), "m1", "call.ended", 0
    )
    good = call_message(settings, "started", "inbound", "after", T0, "1")
    send(broker, settings, garbage, missing, good)
    dead = [broker.get(settings.dead_queue("analytics"), timeout=15) for _ in range(2)]
    assert all(d is not None for d in dead)
    reasons = {d.message_id: d.headers["x-tcx-reason"] for d in dead if d is not None}
    assert reasons["g1"].startswith("undecodable: JSON is malformed")
    assert reasons["m1"] == "undecodable: Object missing required field `occurred_at`"
    assert all(d.headers["x-tcx-consumer"] == "analytics" for d in dead if d is not None)
    wait_until(lambda: [r["call_id"] for r in analytics_rows(settings)] == ["after"])


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    sec = timedelta(seconds=1)
    calls = 150
    messages = []
    for n in range(calls):
        start = T0 + n * 60 * sec
        messages += [
            call_message(settings, "started", "inbound", f"k{n:03}", start, "0791234567"),
            call_message(settings, "connected", "inbound", f"k{n:03}", start + 2 * sec),
            call_message(settings, "ended", "inbound", f"k{n:03}", start + 10 * sec),
        ]
    from consumers.analytics.consumer import Analytics
    from consumers.runtime.runner import declare_consumer_queues

    declare_consumer_queues(broker, settings, Analytics(settings))  # the backlog is queued first
    send(broker, settings, *messages)
    first = Service({**env, "TCX_BRIDGE_PREFETCH": "20"}, "consume", "analytics")
    services.append(first)
    wait_until(lambda: processed_count(settings, "analytics") >= 60, every=0.005)
    first.kill()
    assert processed_count(settings, "analytics") < 3 * calls  # it really died mid-stream

    second = Service(env, "consume", "analytics")
    services.append(second)
    wait_until(lambda: processed_count(settings, "analytics") == 3 * calls, timeout=60)
    rows = analytics_rows(settings)
    assert len(rows) == calls
    assert {(r["ring_seconds"], r["talk_seconds"], r["answered"]) for r in rows} == {(2.0, 8.0, 1)}


class FakeCrm(BaseHTTPRequestHandler):
    """A CRM's HTTP API: lookups by E.164 and journal POSTs."""

    journal: ClassVar[list[dict[str, Any]]] = []
    down = False

    def do_GET(self) -> None:  # the http.server API
        if self.down:
            self.send_response(503)
            self.end_headers()
            return
        found = (
            [{"fullName": "Bob CRM", "org": {"name": "Http AG"}, "link": "https://crm/b"}]
            if "%2B41791234567" in self.path
            else []
        )
        self._json(found)

    def do_POST(self) -> None:  # the http.server API
        length = int(self.headers["Content-Length"])
        FakeCrm.journal.append(
            {"key": self.headers["Idempotency-Key"], **json.loads(self.rfile.read(length))}
        )
        self._json({"ok": True})

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_crm() -> Iterator[str]:
    FakeCrm.journal = []
    FakeCrm.down = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCrm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_crm_lookup_and_journal(
    env: dict[str, str], broker: Broker, settings: Settings, pops: Tap, services: list[Service], fake_crm: str
) -> None:
    http_env = {
        **env,
        "TCX_BRIDGE_CRM_LOOKUP_URL": f"{fake_crm}/contacts?phone={{e164}}",
        "TCX_BRIDGE_CRM_FIELDS": "name=fullName,company=org.name,url=link",
        "TCX_BRIDGE_CRM_JOURNAL_URL": f"{fake_crm}/journal",
    }
    start_service(services, http_env, broker, settings.queue("crm"), "consume", "crm")
    now = datetime.now(UTC)
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "h1", now, "079 123 45 67"),
        call_message(settings, "ended", "inbound", "h1", now + timedelta(seconds=7)),
    )
    delivery = pops.get(timeout=15)
    assert delivery is not None
    assert json.loads(delivery.body)["contact"] == {
        "name": "Bob CRM",
        "company": "Http AG",
        "email": None,
        "url": "https://crm/b",
    }
    wait_until(lambda: FakeCrm.journal)
    entry = FakeCrm.journal[0]
    assert entry["call_id"] == "h1"
    assert entry["answered"] is False
    assert entry["contact_name"] == "Bob CRM"
    assert entry["key"].startswith(f"{settings.desk}/inbound/h1/")


def test_crm_down_delays_the_event_then_dead_letters_it_with_the_reason(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service], fake_crm: str
) -> None:
    FakeCrm.down = True
    http_env = {
        **env,
        "TCX_BRIDGE_CRM_LOOKUP_URL": f"{fake_crm}/contacts?phone={{e164}}",
        "TCX_BRIDGE_MAX_ATTEMPTS": "2",
    }
    service = start_service(services, http_env, broker, settings.queue("crm"), "consume", "crm")
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "down", datetime.now(UTC), "0791234567"),
    )
    dead = broker.get(settings.dead_queue("crm"), timeout=30)
    assert dead is not None
    assert dead.headers["x-tcx-attempts"] == 2
    assert "HTTP Error 503" in dead.headers["x-tcx-reason"]
    # the retry kept the routing key and the publisher's user_id
    assert dead.headers["x-tcx-routing-key"] == f"call.started.inbound.{settings.desk}"
    assert dead.headers["x-tcx-user-id"] == "guest"
    assert dead.exchange == settings.dead_exchange
    assert service.process.poll() is None
    assert "outcome=retry-in-500ms" in service.output()


def test_report_prints_tables_and_json(
    analytics: Service, env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    sec = timedelta(seconds=1)
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "r1", T0, "1"),
        call_message(settings, "connected", "inbound", "r1", T0 + 4 * sec),
        call_message(settings, "ended", "inbound", "r1", T0 + 64 * sec),
        call_message(settings, "started", "inbound", "r2", T0, "2"),
        call_message(settings, "ended", "inbound", "r2", T0 + 9 * sec),
    )
    wait_until(lambda: processed_count(settings, "analytics") == 5)
    table = run_cli(env, "report")
    assert table.returncode == 0, table.stderr
    assert "Calls by day (UTC)" in table.stdout
    day_line = next(line for line in table.stdout.splitlines() if line.startswith("2026-11-02"))
    assert day_line.split() == ["2026-11-02", "2", "1", "1", "50.0%", "4.0", "4.0", "60.0", "0", "0", "-"]
    summary = json.loads(run_cli(env, "report", "--format", "json").stdout)
    assert summary["by_desk"] == [
        {
            "desk": settings.desk,
            "calls": 2,
            "answered": 1,
            "missed": 1,
            "answer_rate": 0.5,
            "ring_avg": 4.0,
            "ring_p90": 4.0,
            "talk_avg": 60.0,
            "dialed": 0,
            "connected": 0,
            "out_talk_avg": None,
        }
    ]
    records = json.loads(run_cli(env, "report", "--calls", "--format", "json").stdout)
    assert [(r["call_id"], r["answered"], r["talk_seconds"]) for r in records] == [
        ("r1", True, 60.0),
        ("r2", False, None),
    ]
    csv_out = run_cli(env, "report", "--format", "csv").stdout.splitlines()
    assert csv_out[0] == (
        "group,key,calls,answered,missed,answer_rate,ring_avg,ring_p90,talk_avg,dialed,connected,out_talk_avg"
    )
    assert csv_out[1] == "day,2026-11-02,2,1,1,0.5,4.0,4.0,60.0,0,0,"


def test_consume_list_names_both_consumers(env: dict[str, str]) -> None:
    done = run_cli(env, "consume", "--list")
    assert done.returncode == 0
    listed = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()}
    assert listed["crm"] == listed["analytics"] == "tcx-bridge"  # registered as entry points, by package


def test_consume_unknown_name_is_one_line(env: dict[str, str]) -> None:
    done = run_cli(env, "consume", "nope")
    assert done.returncode == 1
    assert "Error: 'nope' is not a consumer; installed: " in done.stderr


def test_sigterm_finishes_and_exits_cleanly(analytics: Service, broker: Broker, settings: Settings) -> None:
    send(broker, settings, call_message(settings, "started", "inbound", "t1", T0, "1"))
    wait_until(lambda: processed_count(settings, "analytics") == 1)
    assert analytics.stop() == 0
    assert broker.queue_info(settings.queue("analytics")) == (0, 0)


def test_reconnects_after_the_connection_drops_and_loses_nothing(
    broker_url: str, env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    proxy = Proxy(broker_url)
    try:
        service = start_service(
            services,
            {**env, "TCX_BRIDGE_AMQP_URL": proxy.url},
            broker,
            settings.queue("analytics"),
            "consume",
            "analytics",
        )
        before = [call_message(settings, "started", "inbound", f"r{n}", T0, "1") for n in range(3)]
        send(broker, settings, *before)
        wait_until(lambda: processed_count(settings, "analytics") == 3)
        proxy.cut()  # as when the broker restarts
        after = [call_message(settings, "started", "inbound", f"s{n}", T0, "1") for n in range(3)]
        send(broker, settings, *after, before[0])  # during the outage, and a duplicate
        wait_until(lambda: processed_count(settings, "analytics") == 6, timeout=30)
        wait_until(lambda: "outcome=duplicate" in service.output(), timeout=30)
    finally:
        proxy.close()
    assert "broker lost" in service.output()
    assert sorted(r["call_id"] for r in analytics_rows(settings)) == ["r0", "r1", "r2", "s0", "s1", "s2"]
    assert service.process.poll() is None


def test_quorum_queues_for_clustered_brokers(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    quorum_env = {**env, "TCX_BRIDGE_QUORUM": "true"}
    start_service(services, quorum_env, broker, settings.queue("analytics"), "consume", "analytics")
    send(broker, settings, call_message(settings, "started", "inbound", "q1", T0, "1"))
    wait_until(lambda: [r["call_id"] for r in analytics_rows(settings)] == ["q1"])
    with pytest.raises(
        BrokerRefusedError, match="exists as a quorum queue but the settings ask for a classic"
    ):
        # the same arguments but as a classic queue: refused, because it is a quorum queue
        broker.declare_queue(settings.queue("analytics"), arguments={})
