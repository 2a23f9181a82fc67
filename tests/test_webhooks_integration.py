"""consume webhooks against the real broker and real local HTTP receivers (ports 18100-18199)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook

from bridge.config import Settings, load_settings
from bridge.events import CallbackOpened, CallEvent, utc_now
from bridge.inventory import declare_all, expected
from bridge.transport import Broker, OutgoingMessage
from consumers.webhooks.consumer import Supervisor
from consumers.webhooks.guard import RefusedAddressError
from consumers.webhooks.operations import replay
from consumers.webhooks.settings import target_named
from consumers.webhooks.signing import new_secret
from consumers.webhooks.state import read_state
from tests.conftest import run_cli, wait_until
from tests.webhook_receiver import Receiver, Request, statuses

pytestmark = pytest.mark.integration

FAST = {"retry_base": 0.05, "retry_max": 0.5, "resume_after": 30.0}  # seconds: tests run fast


class Hooks:
    """Runs consume webhooks in this process on the test's namespace, with the targets given."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self.settings: Settings | None = None
        self.supervisor: Supervisor | None = None
        self.thread: threading.Thread | None = None
        self.failure: list[BaseException] = []

    def configure(self, targets: list[dict[str, Any]], **environ: str) -> Settings:
        self.env["TCX_BRIDGE_WEBHOOKS"] = json.dumps([{**FAST, "allow_private": True, **t} for t in targets])
        self.env.update(environ)
        self.settings = load_settings(environ=self.env).settings
        with Broker(self.settings.amqp_url) as broker:
            declare_all(broker, self.settings, [])  # as tcx-admin's topology declare would
        return self.settings

    def start(self, targets: list[dict[str, Any]], **environ: str) -> Settings:
        settings = self.configure(targets, **environ)
        self.supervisor = Supervisor(settings, self.env)

        def run() -> None:
            try:
                assert self.supervisor is not None
                self.supervisor.run()
            except BaseException as error:  # noqa: BLE001  # reported by the test
                self.failure.append(error)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return settings

    def worker(self, name: str) -> Any:
        assert self.supervisor is not None
        return next(w for w in self.supervisor.workers if w.target.name == name)

    def publish(self, events: list[CallEvent]) -> None:
        assert self.settings is not None
        messages = [
            OutgoingMessage(
                routing_key=event.routing_key,
                body=msgspec.json.encode(event),
                message_id=event.event_id,
                type="call",
                timestamp=int(time.time()),
            )
            for event in events
        ]
        with Broker(self.settings.amqp_url) as broker:
            confirmed, error = broker.publish_many(self.settings.exchange, messages)
        assert error is None
        assert confirmed == len(messages)

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.thread is not None:
            self.thread.join(30)
        if self.settings is not None:
            entities = expected(self.settings, [])
            with Broker(self.settings.amqp_url) as broker:
                for entity in entities:
                    if entity.kind == "queue":
                        broker.delete_queue(entity.name)
                for entity in entities:
                    if entity.kind == "exchange":
                        broker.delete_exchange(entity.name)
        assert not self.failure, self.failure


@pytest.fixture
def hooks(env: dict[str, str]) -> Iterator[Hooks]:
    found = Hooks(env)
    yield found
    found.close()


def calls(count: int, desk: str, *, missed_every: int = 0, direction: str = "inbound") -> list[CallEvent]:
    """count calls of desk, S C E each (S E for every missed_every-th: never answered), in time order."""
    found = []
    for number in range(count):
        call_id = f"{number:05d}{uuid.uuid4().hex[:6]}"
        missed = bool(missed_every) and number % missed_every == 0
        for kind in ("started", "ended") if missed else ("started", "connected", "ended"):
            found.append(
                CallEvent(
                    event_id=str(uuid.uuid4()), kind=kind, direction=direction, call_id=call_id,  # type: ignore[arg-type]
                    caller_id=f"+4930{number:07d}", desk=desk, extension="101", occurred_at=utc_now(), argv=(),
                )
            )  # fmt: skip
    return found


def dead_letters(settings: Settings, target: str) -> list[Any]:
    with Broker(settings.amqp_url) as broker:
        return list(broker.follow(settings.dead_queue(f"webhooks.{target}"), timeout=0.5))


def test_500_calls_fan_out_signed_in_order_as_native_cloudevents_and_zammad(hooks: Hooks, desk: str) -> None:
    """Every native request verifies with the standardwebhooks library under both rotating secrets."""
    old, new = new_secret(), new_secret()
    verifiers = [Webhook(old), Webhook(new)]

    def check(request: Request) -> None:
        if request.path == "/native":
            for verifier in verifiers:
                verifier.verify(request.body, request.headers)  # raises on a bad signature
        elif request.path == "/cloudevents":
            event = from_http(request.headers, request.body)
            assert event["type"] == "com.3cx.assistant.call.started"
            assert event["subject"] == desk
            assert event["id"] == request.headers["webhook-id"] == event.get_data()["event_id"]
        else:
            fields = json.loads(request.body)
            assert set(fields) <= {
                "event",
                "from",
                "to",
                "direction",
                "callId",
                "user",
                "cause",
                "answeringNumber",
            }
            assert fields["event"] in ("newCall", "answer", "hangup")
            assert fields["direction"] == "in"
            assert fields["to"] == "101"
            assert fields["user"] == ["Alice Martin"]
            assert ("cause" in fields) == (fields["event"] == "hangup")

    with Receiver(18101) as receiver:
        receiver.check = check
        hooks.start(
            [
                {"name": "native", "url": receiver.url("/native"), "events": ["call.#"], "concurrency": 8},
                {
                    "name": "ce",
                    "url": receiver.url("/cloudevents"),
                    "format": "cloudevents",
                    "events": ["call.started.*.*"],
                },
                {
                    "name": "helpdesk",
                    "url": receiver.url("/zammad"),
                    "format": "zammad",
                    "events": ["call.*.inbound.*"],
                    "concurrency": 8,
                },
            ],
            TCX_BRIDGE_WEBHOOK_NATIVE_SECRET=f"{old} {new}",
            TCX_BRIDGE_WEBHOOK_AGENTS=f"{desk}=Alice Martin",
        )
        events = calls(500, desk, missed_every=5)
        hooks.publish(events)
        wait_until(lambda: receiver.count("/native") >= len(events), timeout=60)
        wait_until(lambda: receiver.count("/cloudevents") >= 500 and receiver.count("/zammad") >= len(events))
        assert receiver.errors == []
        native = receiver.received["/native"]
        assert len(native) == len(events)  # each once: nothing retried, nothing lost
        assert {r.headers["webhook-id"] for r in native} == {e.event_id for e in events}
        seen: dict[str, list[str]] = {}
        for request in native:  # each call's events in the order they happened
            body = json.loads(request.body)
            seen.setdefault(body["call_id"], []).append(body["kind"])
        assert all(
            kinds in (["started", "connected", "ended"], ["started", "ended"]) for kinds in seen.values()
        )
        hangups = [json.loads(r.body) for r in receiver.received["/zammad"] if b'"hangup"' in r.body]
        missed = {e.call_id for e in events if e.kind == "started"} - {
            e.call_id for e in events if e.kind == "connected"
        }
        assert {h["callId"] for h in hangups if h["cause"] == "cancel"} == missed
        assert len([h for h in hangups if h["cause"] == "normalClearing"]) == 400
        assert all("answeringNumber" not in h for h in hangups if h["cause"] == "cancel")


def test_5xx_and_429_are_retried_a_404_is_dead_lettered_at_once(hooks: Hooks, desk: str) -> None:
    with Receiver(18102) as receiver:
        receiver.behaviours["/flaky"] = statuses(500, 502)
        receiver.behaviours["/busy"] = statuses((429, {"Retry-After": "1"}))
        receiver.behaviours["/gone"] = statuses(*[404] * 10)
        receiver.behaviours["/down"] = statuses(*[503] * 100)
        settings = hooks.start(
            [
                {"name": "flaky", "url": receiver.url("/flaky")},
                {
                    "name": "busy",
                    "url": receiver.url("/busy"),
                    "retry_max": 5.0,
                },  # Retry-After is capped by it
                {"name": "gone", "url": receiver.url("/gone")},
                {"name": "down", "url": receiver.url("/down"), "retry_for": 0.4},
            ]
        )
        (event,) = calls(1, desk)[:1]
        hooks.publish([event])
        wait_until(lambda: receiver.count("/flaky") == 3 and receiver.count("/busy") == 2, timeout=20)
        flaky, busy = receiver.received["/flaky"], receiver.received["/busy"]
        assert {r.headers["webhook-id"] for r in flaky + busy} == {event.event_id}  # stable across retries
        assert busy[1].at - busy[0].at >= 0.95  # Retry-After: 1 honoured
        wait_until(lambda: len(dead := dead_letters(settings, "gone")) == 1 and dead)
        wait_until(lambda: dead_letters(settings, "down") != [] or None, timeout=20)
        assert receiver.count("/gone") == 1  # not retried
        assert receiver.count("/down") >= 2
    gone = read_state(settings.data_dir)["targets"]
    assert gone["flaky"]["delivered"] == 1
    assert gone["flaky"]["failed"]["5xx"] == 2


def test_dead_letters_say_why_and_replay_delivers_them(hooks: Hooks, desk: str) -> None:
    with Receiver(18103) as receiver:
        receiver.behaviours["/gone"] = statuses(404, 410)
        settings = hooks.start([{"name": "gone", "url": receiver.url("/gone")}])
        events = calls(1, desk)[:2]
        hooks.publish(events)
        wait_until(lambda: receiver.count("/gone") == 2)
        with Broker(settings.amqp_url) as broker:
            wait_until(lambda: (broker.queue_info(settings.dead_queue("webhooks.gone")) or (0,))[0] == 2)
            letters = list(broker.follow(settings.dead_queue("webhooks.gone"), timeout=0.5))
            assert [d.headers["x-tcx-reason"] for d in letters] == [
                "HTTP 404 Not Found (attempt 1)",
                "HTTP 410 Gone (attempt 1)",
            ]
            for letter in letters:  # back where they were, for replay
                broker.publish(settings.dead_exchange, OutgoingMessage(
                    routing_key=letter.routing_key, body=letter.body, message_id=letter.message_id or "",
                    type=letter.type or "", timestamp=letter.timestamp or 0, headers=letter.headers,
                ))  # fmt: skip
            wait_until(lambda: (broker.queue_info(settings.dead_queue("webhooks.gone")) or (0,))[0] == 2)
            assert replay(broker, settings, target_named(settings, "gone")) == 2
        wait_until(lambda: receiver.count("/gone") == 4)
        replayed = receiver.received["/gone"][2:]
        assert [r.headers["webhook-id"] for r in replayed] == [e.event_id for e in events]
        assert dead_letters(settings, "gone") == []


def test_a_hanging_target_does_not_slow_the_others(hooks: Hooks, desk: str) -> None:
    with Receiver(18104) as receiver:
        receiver.behaviours["/hang"] = lambda _: None
        hooks.start(
            [
                {"name": "hang", "url": receiver.url("/hang"), "timeout": 20.0, "concurrency": 2},
                {"name": "fast", "url": receiver.url("/fast")},
            ]
        )
        events = calls(100, desk)
        started = time.monotonic()
        hooks.publish(events)
        wait_until(lambda: receiver.count("/fast") == len(events), timeout=15)
        assert (
            time.monotonic() - started < 10
        )  # all 300 while the hanging target's first requests wait (20 s)
        wait_until(lambda: receiver.count("/hang") >= 2)
        time.sleep(0.3)  # time for a third request, which must not come
        assert receiver.count("/hang") == 2  # concurrency 2: never more in flight


def test_a_failing_target_pauses_keeps_its_backlog_and_resumes_on_enable(hooks: Hooks, desk: str) -> None:
    with Receiver(18105) as receiver:
        receiver.behaviours["/pausing"] = statuses(*[503] * 3)
        receiver.behaviours["/resuming"] = statuses(*[503] * 3)
        settings = hooks.start(
            [
                {
                    "name": "pausing",
                    "url": receiver.url("/pausing"),
                    "disable_after": 3,
                    "max_backlog": 5,
                    "concurrency": 1,
                    "events": ["call.#"],
                },
                {
                    "name": "resuming",
                    "url": receiver.url("/resuming"),
                    "disable_after": 3,
                    "resume_after": 1.0,
                    "concurrency": 1,
                    "events": ["call.#"],
                },
            ]
        )
        first = calls(1, desk)
        hooks.publish(first)  # 3 events, 3 failures: paused
        wait_until(lambda: hooks.worker("pausing").breaker.paused_until is not None)
        wait_until(
            lambda: (
                read_state(settings.data_dir).get("targets", {}).get("pausing", {}).get("state") == "paused"
            )
        )
        listed = run_cli({**hooks.env}, "webhooks", "list")
        assert listed.returncode == 0, listed.stderr
        assert "paused (" in next(line for line in listed.stdout.splitlines() if line.startswith("pausing"))
        more = calls(3, desk)  # 9 more: the backlog keeps 5, the oldest are dead-lettered
        hooks.publish(more)
        wait_until(lambda: len(dead_letters(settings, "pausing")) >= 4, timeout=20)
        assert receiver.count("/pausing") == 3  # nothing tried while paused
        enabled = run_cli({**hooks.env}, "webhooks", "enable", "pausing")
        assert enabled.returncode == 0, enabled.stderr
        assert enabled.stdout.startswith("asked consume webhooks to resume pausing")
        wait_until(lambda: receiver.count("/pausing") >= 3 + 5)
        # resume_after: the other resumed by itself and delivered everything, in order
        wait_until(lambda: receiver.count("/resuming") >= 3 + 12, timeout=20)
        ids = [r.headers["webhook-id"] for r in receiver.received["/resuming"][3:]]
        assert sorted(ids, key=[e.event_id for e in first + more].index) == ids
        assert hooks.worker("resuming").stats.counts["paused"] == 1


def test_the_ssrf_guard_refuses_a_private_target_unless_allowed(env: dict[str, str]) -> None:
    settings = load_settings(
        environ={
            **env,
            "TCX_BRIDGE_WEBHOOKS": json.dumps([{"name": "meta", "url": "http://169.254.169.254/latest"}]),
        }
    ).settings
    with pytest.raises(RefusedAddressError, match=r"resolves to 169\.254\.169\.254, a link-local address"):
        Supervisor(settings, env)
    local = {**env, "TCX_BRIDGE_WEBHOOKS": json.dumps([{"name": "local", "url": "http://localhost:18106/"}])}
    refused = run_cli(local, "webhooks", "test", "local")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: webhook 'local': 'http://localhost:18106/' resolves to ")
    assert "a loopback address; set allow_private = true on that target if it is meant" in refused.stderr


def test_webhooks_test_sends_one_signed_sample_and_secret_makes_a_secret(env: dict[str, str]) -> None:
    secret = run_cli(env, "webhooks", "secret").stdout.strip()
    assert secret.startswith("whsec_")
    with Receiver(18107) as receiver:
        receiver.check = lambda request: Webhook(secret).verify(request.body, request.headers) and None
        targets = [{"name": "sample", "url": receiver.url("/s"), "allow_private": True, "secret": secret}]
        done = run_cli({**env, "TCX_BRIDGE_WEBHOOKS": json.dumps(targets)}, "webhooks", "test", "sample")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("sample: 200 in ")
        assert done.stdout.endswith(" ms\n")
        assert receiver.errors == []
        assert receiver.count("/s") == 1


def test_callback_events_reach_a_target_and_a_callback_body_under_a_call_key_is_spoofed(
    hooks: Hooks, desk: str
) -> None:
    """callback.* events go out like the rest; a desk cannot pass one off under its own call routing key."""
    with Receiver(18160) as receiver:
        settings = hooks.start(
            [{"name": "tasks", "url": receiver.url("/tasks"), "events": ["call.#", "callback.*"],
              "format": "cloudevents"}]
        )  # fmt: skip
        now = utc_now()
        opened = CallbackOpened(
            event_id=str(uuid.uuid4()), task_id=7, number="0791234567", number_e164="+41791234567",
            desk=desk, missed_at=now, due_at=now, occurred_at=now,
        )  # fmt: skip
        forged = msgspec.structs.replace(opened, event_id=str(uuid.uuid4()))
        with Broker(settings.amqp_url) as broker:
            for message, key in ((opened, "callback.opened"), (forged, f"call.started.inbound.{desk}")):
                broker.publish(settings.exchange, OutgoingMessage(
                    routing_key=key, body=msgspec.json.encode(message), message_id=message.event_id,
                    type="callback.opened", timestamp=int(time.time()),
                ))  # fmt: skip
        wait_until(lambda: receiver.count("/tasks") == 1)
        with Broker(settings.amqp_url) as broker:
            wait_until(lambda: (broker.queue_info(settings.dead_queue("webhooks.tasks")) or (0,))[0] == 1)
        [letter] = dead_letters(settings, "tasks")
        assert letter.message_id == forged.event_id
        assert str(letter.headers["x-tcx-reason"]).startswith("spoofed: a 'callback.opened' message")
        request = receiver.received["/tasks"][0]
        event = from_http(request.headers, request.body)
        assert event["type"] == "com.3cx.assistant.callback.opened"
        assert event["id"] == opened.event_id
        assert event["subject"] == desk
        assert receiver.count("/tasks") == 1  # the forged one was never sent
