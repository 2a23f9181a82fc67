"""The runner in-process against the real broker: each delivery is decoded once, for prepare() and handle()."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import events
from bridge.config import Settings, load_settings
from bridge.topology import Binding, again_exchange, consumer_queues, publish_event, retry_exchange
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.analytics import calls
from consumers.analytics.consumer import Analytics
from consumers.runtime import Consumer, Context
from consumers.runtime.consumer import Batch
from consumers.runtime.runner import Runner, declare_consumer_queues
from consumers.store.core import open_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, env: dict[str, str]) -> Settings:
    """The test's settings on either store: the SQLite files, or PostgreSQL (a schema of its own)."""
    if request.param == "postgresql":
        env = {**env, "TCX_BRIDGE_STORE_URL": request.getfixturevalue("pg_url")}
    return load_settings(environ=env).settings


def one_call(settings: Settings) -> list[OutgoingMessage]:
    """Started, connected and ended of one inbound call, then a body that is no JSON."""
    found = []
    for n, kind in enumerate(("started", "connected", "ended")):
        event = events.CallEvent(
            event_id=events.new_event_id(),
            kind=kind,  # type: ignore[arg-type]
            direction="inbound",
            call_id="c1",
            caller_id="0791234567",
            desk=settings.desk,
            extension="101",
            occurred_at=events.format_time(T0 + timedelta(seconds=5 * n)),
            argv=(),
        )
        body = events.ENCODER.encode(event)
        found.append(OutgoingMessage(event.routing_key, body, event.event_id, f"call.{kind}", 0))
    return [*found, OutgoingMessage(f"call.ended.inbound.{settings.desk}", b"{not json", "bad", "call", 0)]


def run(
    broker: Broker, settings: Settings, consumer: Consumer, messages: list[OutgoingMessage], handled: int = 0
) -> None:
    """Queue the messages, then run the consumer in this thread until it handled them all (or handled)."""
    declare_consumer_queues(broker, settings, consumer)
    for message in messages:
        publish_event(broker, settings, message)
    Runner(consumer, settings, max_messages=handled or len(messages), idle_exit=20).run()


class Counting:
    """The call events' decoder, counting the bodies it decodes."""

    def __init__(self) -> None:
        self.bodies = 0

    def decode(self, body: bytes) -> events.CallEvent:
        self.bodies += 1
        return events.CALL_EVENT_DECODER.decode(body)


class Counted(Analytics):
    """Analytics that keeps what prepare() and handle() were given."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.batches: list[Sequence[Delivery]] = []
        self.handled: list[Any] = []

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        self.batches.append(deliveries)
        super().prepare(deliveries)

    def handle(self, message: Any, context: Context) -> str:
        self.handled.append(message)
        return super().handle(message, context)


def test_each_delivery_is_decoded_once_for_prepare_and_handle(
    broker: Broker, store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = Counting()
    monkeypatch.setattr(calls, "CALL_EVENT_DECODER", decoder)
    consumer = Counted(store_settings)
    run(broker, store_settings, consumer, one_call(store_settings))
    assert decoder.bodies == 4  # three events and the bad body: once each, on PostgreSQL too
    assert all(isinstance(batch, Batch) for batch in consumer.batches)
    assert sum(len(batch) for batch in consumer.batches) == 4
    prepared = [message for batch in consumer.batches for message in batch.decoded.values()]  # type: ignore[attr-defined]
    assert len(prepared) == 3  # the bad body is not prepared, nor handled
    assert len(consumer.handled) == 3
    assert all(any(message is seen for seen in prepared) for message in consumer.handled)  # the same objects
    store = open_store(store_settings, "analytics")
    try:
        rows = [dict(row) for row in store.execute(f"SELECT * FROM {store.calls_table}")]
    finally:
        store.close()
    assert [(row["call_id"], row["ring_seconds"], row["talk_seconds"]) for row in rows] == [("c1", 5.0, 5.0)]
    dead = broker.get(store_settings.dead_queue("analytics"), timeout=5)
    assert dead is not None
    assert dead.message_id == "bad"
    assert dead.headers["x-tcx-reason"].startswith("undecodable: JSON is malformed")


class Plain(Consumer):
    """A plugin written for the runtime before prepare() got decoded messages: decode and handle, a list."""

    name = "plain"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.prepared: list[str | None] = []
        self.handled: list[str] = []

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return [Binding(settings.exchange, "call.#")]

    def decode(self, body: bytes, routing_key: str) -> Any:
        return events.CALL_EVENT_DECODER.decode(body)

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        self.prepared += [delivery.message_id for delivery in deliveries]

    def handle(self, message: Any, context: Context) -> str:
        self.handled.append(message.kind)
        return "counted"


@pytest.fixture
def plain(broker: Broker, settings: Settings) -> Iterator[Plain]:
    """The plugin, and afterwards its queues and exchanges gone (they are not in the namespace's inventory)."""
    yield Plain(settings)
    for spec in consumer_queues(settings, Plain.name, Plain.bindings(settings)):
        broker.delete_queue(spec.name)
    broker.delete_exchange(retry_exchange(settings, Plain.name))
    broker.delete_exchange(again_exchange(settings, Plain.name))


def test_a_plugin_written_for_plain_deliveries_works_unchanged(
    broker: Broker, settings: Settings, plain: Plain
) -> None:
    consumer = plain
    messages = one_call(settings)
    run(broker, settings, consumer, messages)
    assert sorted(consumer.prepared) == sorted(message.message_id for message in messages)  # all of them
    assert consumer.handled == ["started", "connected", "ended"]
    dead = broker.get(settings.dead_queue("plain"), timeout=5)
    assert dead is not None
    assert dead.message_id == "bad"


def test_a_message_the_broker_does_not_vouch_for_is_not_prepared(
    broker: Broker, store_settings: Settings
) -> None:
    """Sent straight to the queue (the default exchange): dead-lettered, and never merged by prepare()."""
    honest, forged = one_call(store_settings)[:2]
    consumer = Analytics(store_settings)
    declare_consumer_queues(broker, store_settings, consumer)
    broker.publish("", forged._replace(routing_key=store_settings.queue("analytics")))
    run(broker, store_settings, consumer, [honest], handled=2)
    store = open_store(store_settings, "analytics")
    try:
        rows = [dict(row) for row in store.execute(f"SELECT * FROM {store.calls_table}")]
    finally:
        store.close()
    assert [(row["started_at"], row["connected_at"]) for row in rows] == [(events.format_time(T0), None)]
    dead = broker.get(store_settings.dead_queue("analytics"), timeout=5)
    assert dead is not None
    assert dead.headers["x-tcx-reason"].startswith("spoofed: delivered through exchange ''")
