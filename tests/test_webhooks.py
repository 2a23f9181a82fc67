"""Webhooks without a broker: targets, signatures (checked by the standardwebhooks library), formats, policy."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.access import service_rights
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.events import CallEvent, DialResult
from consumers.webhooks.delivery import retry_after, verdict_of
from consumers.webhooks.formats import Formatter
from consumers.webhooks.guard import RefusedAddressError, check_url, refused_address
from consumers.webhooks.policy import Breaker, Order, retry_delay
from consumers.webhooks.settings import WEBHOOKS, Target, parse_agents, parse_targets, secrets_of
from consumers.webhooks.signing import key_of, new_secret, signature_headers


def call(kind: str = "started", direction: str = "inbound", call_id: str = "c1", **more: Any) -> CallEvent:
    fields: dict[str, Any] = {
        "event_id": f"e-{kind}-{call_id}",
        "kind": kind,
        "direction": direction,
        "call_id": call_id,
        "caller_id": "+4930123456",
        "desk": "DESK-07",
        "extension": "107",
        "occurred_at": "2026-11-27T16:32:28.123456Z",
        "argv": ("/N:S",),
        **more,
    }
    return CallEvent(**fields)


def test_targets_are_read_from_toml_tables_with_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'webhook_agents = { "DESK-07" = "Alice Martin" }\n\n'  # top-level keys before the tables (TOML)
        '[[webhooks]]\nname = "helpdesk"\nurl = "https://zammad.example/api/v1/cti/TOKEN"\n'
        'events = ["call.*.inbound.*", "dial.*.*"]\nformat = "zammad"\ntimeout = 2.5\n'
        'headers = { "X-Tenant" = "north" }\n\n'
        '[[webhooks]]\nname = "bi"\nurl = "http://10.0.0.5/hook"\nallow_private = true\n'
    )
    settings = load_settings(environ={"TCX_BRIDGE_CONFIG": str(config)}).settings
    options = WEBHOOKS.of(settings)
    helpdesk, bi = options.webhooks
    assert helpdesk.format == "zammad"
    assert helpdesk.timeout == 2.5
    assert helpdesk.events == ("call.*.inbound.*", "dial.*.*")
    assert helpdesk.headers == {"X-Tenant": "north"}
    assert bi.events == ("call.#",)
    assert bi.retry_for == 4 * 3600
    assert bi.disable_after == 6
    assert bi.allow_private is True
    assert options.webhook_agents == {"DESK-07": "Alice Martin"}


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"name": "Help Desk", "url": "https://x.example/"}, "name 'Help Desk' is not a target name"),
        (
            {"name": "a", "url": "ftp://x.example/"},
            "url 'ftp://x.example/' is not an http:// or https:// URL",
        ),
        (
            {"name": "a", "url": "https://x.example/", "format": "xml"},
            "webhook 'a': Invalid enum value 'xml' - at `$.format`",
        ),
        ({"name": "a", "url": "https://x.example/", "events": ["call..x"]}, "event pattern 'call..x'"),
        (
            {"name": "a", "url": "https://x.example/", "timeout": 0},
            "timeout = 0.0 is too small; give at least 0.01",
        ),
        (
            {"name": "a", "url": "https://x.example/", "headers": {"webhook-id": "x"}},
            "header 'webhook-id' may not",
        ),
        ({"name": "a", "url": "https://x.example/", "colour": "red"}, "unknown field `colour`"),  # a typo
    ],
)
def test_a_bad_target_is_one_line_naming_the_value(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        parse_targets("webhooks in config.toml", [table])
    assert error in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_target_name_given_twice_is_refused() -> None:
    table = {"name": "a", "url": "https://x.example/"}
    with pytest.raises(ConfigError, match="webhook name 'a' is given twice"):
        parse_targets("webhooks", [table, table])


def test_targets_and_agents_from_the_environment() -> None:
    (target,) = parse_targets("TCX_BRIDGE_WEBHOOKS", '[{"name": "a", "url": "https://x.example/"}]')
    assert target.name == "a"
    assert parse_agents("TCX_BRIDGE_WEBHOOK_AGENTS", "D1=Alice, D2=Bob Smith") == {
        "D1": "Alice",
        "D2": "Bob Smith",
    }
    with pytest.raises(ConfigError, match="'D1' is not DESK=Agent Name"):
        parse_agents("TCX_BRIDGE_WEBHOOK_AGENTS", "D1")


def test_the_secret_comes_from_the_environment_first_then_the_table_then_the_file(tmp_path: Path) -> None:
    one, two, three = new_secret(), new_secret(), new_secret()
    path = tmp_path / "helpdesk.secret"
    path.write_text(f"{three}\n")
    target = Target(name="help-desk", url="https://x.example/", secret=two, secret_file=str(path))
    assert secrets_of(target, {"TCX_BRIDGE_WEBHOOK_HELP_DESK_SECRET": f"{one} {two}"}) == (one, two)
    assert secrets_of(target, {}) == (two,)
    assert secrets_of(msgspec.structs.replace(target, secret=None), {}) == (three,)
    assert secrets_of(Target(name="a", url="https://x.example/"), {}) == ()
    with pytest.raises(ConfigError, match="TCX_BRIDGE_WEBHOOK_HELP_DESK_SECRET: not a whsec_ secret"):
        secrets_of(target, {"TCX_BRIDGE_WEBHOOK_HELP_DESK_SECRET": "hunter2"})


def test_signatures_verify_with_the_standardwebhooks_library_for_either_secret_while_rotating() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type":"call","event_id":"e1"}'
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers((key_of(old), key_of(new)), "e1", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "call", "event_id": "e1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # the body changed on the way
        Webhook(old).verify(body.replace(b"e1", b"e2"), headers)
    assert len(base64.b64decode(new.removeprefix("whsec_"))) == 24


def test_cloudevents_parse_with_the_sdk() -> None:
    formatter = Formatter("cloudevents", "tcx", {})
    for message, kind in (
        (call("ended"), "com.3cx.assistant.call.ended"),
        (
            DialResult(
                request_id="r1", desk="DESK-07", number="+4930", status="dialed", reason=None,
                occurred_at="2026-11-27T16:32:28.123456Z",
            ),
            "com.3cx.assistant.dial.dialed",
        ),
    ):  # fmt: skip
        rendered = formatter.render(message)
        assert rendered is not None
        event = from_http({"content-type": rendered.content_type}, rendered.body)
        assert event["specversion"] == "1.0"
        assert event["type"] == kind
        assert event["source"] == "/tcx-bridge/tcx"
        assert event["subject"] == "DESK-07"
        assert event["time"] == "2026-11-27T16:32:28.123456Z"
        assert event.get_data() == json.loads(msgspec.json.encode(message))
    assert from_http({"content-type": "application/cloudevents+json"}, formatter.render(call()).body)[
        "id"
    ] == (  # type: ignore[union-attr]
        "e-started-c1"
    )


def test_zammad_fields_follow_the_generic_cti_docs() -> None:
    formatter = Formatter("zammad", "tcx", {"DESK-07": "Alice Martin"})

    def fields(message: CallEvent) -> dict[str, Any] | None:
        rendered = formatter.render(message)
        return None if rendered is None else json.loads(rendered.body)

    inbound = {
        "from": "+4930123456",
        "to": "107",
        "direction": "in",
        "callId": "c1",
        "user": ["Alice Martin"],
    }
    assert fields(call("started")) == {"event": "newCall", **inbound}
    assert fields(call("connected")) == {"event": "answer", **inbound, "answeringNumber": "107"}
    answered = {"event": "hangup", **inbound, "answeringNumber": "107", "cause": "normalClearing"}
    assert fields(call("ended")) == answered
    assert fields(call("ended")) == answered  # a retried hangup says the same
    missed = {**inbound, "callId": "c2"}
    assert fields(call("started", call_id="c2")) == {"event": "newCall", **missed}
    assert fields(call("ended", call_id="c2")) == {"event": "hangup", **missed, "cause": "cancel"}
    out = call("started", "outbound", "c3", caller_id="+4989555")
    assert fields(out) == {
        "event": "newCall", "from": "107", "to": "+4989555", "direction": "out", "callId": "c3", "user": ["Alice Martin"]
    }  # fmt: skip
    anonymous = fields(call("started", call_id="c4", caller_id=None, anonymous=True))
    assert anonymous is not None
    assert anonymous["from"] == "anonymous"
    assert fields(call("started", "unknown", "c5")) is None  # Zammad has no direction for it: skipped
    assert Formatter("zammad", "tcx", {}).render(call("started")) is not None
    assert "user" not in json.loads(Formatter("zammad", "tcx", {}).render(call("started")).body)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("::ffff:10.0.0.1", "private"),  # an IPv4 address in IPv6 clothing
        ("0.0.0.0", "unspecified"),
        ("93.184.215.14", None),
    ],
)
def test_the_ssrf_guard_knows_the_refused_ranges(address: str, kind: str | None) -> None:
    assert refused_address(address) == kind


def test_the_ssrf_guard_refuses_a_local_url_unless_allowed() -> None:
    with pytest.raises(
        RefusedAddressError,
        match=r"'http://localhost:18100/' resolves to .*, a loopback address; set allow_private = true",
    ):
        check_url("local", "http://localhost:18100/", allow_private=False)
    check_url("local", "http://localhost:18100/", allow_private=True)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, "delivered"), (204, "delivered"), (301, "dead"), (400, "dead"), (404, "dead"), (408, "retry"),
     (410, "dead"), (429, "retry"), (500, "retry"), (503, "retry")],
)  # fmt: skip
def test_what_each_status_means(status: int, verdict: str) -> None:
    assert verdict_of(status) == verdict


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_retry_delays_grow_with_jitter_up_to_the_maximum_and_honour_retry_after() -> None:
    target = Target(name="a", url="https://x.example/", retry_base=1.0, retry_max=30.0)
    assert retry_delay(target, 1, None, draw=1.0) == 1.0
    assert retry_delay(target, 3, None, draw=1.0) == 4.0
    assert retry_delay(target, 3, None, draw=0.0) == 2.0  # jitter: between half and all of it
    assert retry_delay(target, 20, None, draw=1.0) == 30.0
    assert retry_delay(target, 1, 12.0) == 12.0
    assert retry_delay(target, 1, 3600.0) == 30.0


def test_the_breaker_pauses_after_failures_in_a_row_and_a_delivery_resets_it() -> None:
    breaker = Breaker(Target(name="a", url="https://x.example/", disable_after=3, resume_after=60))
    assert not breaker.failed()
    assert not breaker.failed()
    breaker.succeeded()
    assert not breaker.failed()
    assert not breaker.failed()
    assert breaker.failed()
    assert breaker.paused
    breaker.resume()
    assert not breaker.paused


def test_a_calls_later_events_wait_behind_its_retry() -> None:
    order = Order()
    assert order.may_try("c1", "a")
    order.waits("c1", "a")
    assert not order.may_try("c1", "b")  # queued behind a
    assert order.may_try("c2", "x")  # another call goes on
    assert order.may_try("c1", "a")  # a, back from its retry, goes first
    order.done("c1", "a")
    assert order.may_try("c1", "b")


def test_the_webhooks_user_reads_and_writes_only_its_targets_routes() -> None:
    import re

    settings = load_settings(environ={}, read_file=False).settings
    rights = service_rights(settings, "tcx-webhooks")
    assert rights.configure == "^$"
    assert re.match(rights.read, "tcx.webhooks.helpdesk")
    assert re.match(rights.read, "tcx.dead.webhooks.helpdesk")
    assert not re.match(rights.read, "tcx.crm")
    assert not re.match(rights.read, "tcx.dead.crm")
    assert re.match(rights.write, "tcx.retry.webhooks.helpdesk")
    assert re.match(rights.write, "tcx.dead")
    for other in ("tcx.events", "tcx.again.webhooks.helpdesk", "tcx.retry.crm", "tcx.commands", ""):
        assert not re.match(rights.write, other), other
    dead_write, _ = rights.topics["tcx.dead"]
    assert re.match(dead_write, "webhooks.helpdesk")
    assert not re.match(dead_write, "crm")


def test_config_shows_the_targets_without_secrets_or_url_paths(tmp_path: Path) -> None:
    from bridge.config import describe

    secret = new_secret()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[webhooks]]\nname = "helpdesk"\nurl = "https://zammad.example/api/v1/cti/TOKEN"\nsecret = "{secret}"\n'
        'format = "zammad"\n'
    )
    rows = {row[0]: row for row in describe(load_settings(environ={"TCX_BRIDGE_CONFIG": str(config)}))}
    assert rows["webhooks"][2] == "helpdesk=https://zammad.example/… (zammad)"
    shown = " ".join(row[2] for row in rows.values())
    assert secret not in shown
    assert "/api/v1/cti/TOKEN" not in shown


def test_lanes_keep_each_calls_order_and_forget_drops_everything() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from typing import NamedTuple

    from consumers.webhooks.lanes import Lanes

    class Job(NamedTuple):
        call: str
        number: int

    seen: list[Job] = []
    gate = threading.Event()

    def deliver(job: Job) -> str:
        if job.call == "slow":
            gate.wait(5)
        seen.append(job)
        return "ok"

    with ThreadPoolExecutor(2) as pool:
        lanes = Lanes(pool, deliver)
        for number in range(3):
            lanes.add(Job("slow", number))
            lanes.add(Job("fast", number))
        deadline = 50
        while len(seen) < 3 and deadline:  # the fast call goes on while the slow one waits
            threading.Event().wait(0.02)
            deadline -= 1
        assert [job for job in seen if job.call == "fast"] == [Job("fast", 0), Job("fast", 1), Job("fast", 2)]
        gate.set()
        assert lanes.drained.wait(5)
        assert [job.number for job in seen if job.call == "slow"] == [0, 1, 2]
        assert len(lanes.finished()) == 6
        lanes.add(Job("again", 0))
        lanes.forget()
        assert lanes.drained.is_set()


def test_http2_without_the_h2_package_is_one_line() -> None:
    import importlib.util

    from consumers.webhooks.delivery import Sender

    if importlib.util.find_spec("h2") is not None:
        pytest.skip("h2 is installed here: HTTP/2 works")
    with pytest.raises(
        ConfigError, match=r"^webhook 'a': http2 = true needs the h2 package: pip install 'httpx\[http2\]'$"
    ):
        Sender(Target(name="a", url="https://x.example/", http2=True))
