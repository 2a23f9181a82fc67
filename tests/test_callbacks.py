"""The callbacks consumer's handler and tasks on a real store (SQLite and PostgreSQL): open, add, close, attempts, auto-assign."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge import events
from bridge.config import Settings, load_settings
from bridge.transport import Delivery
from consumers.callbacks import assign, tasks
from consumers.callbacks.consumer import Callbacks
from consumers.callbacks.settings import CallbackOptions
from consumers.runtime.consumer import Batch, Context

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CALLER = "0791234567"
E164 = "+41791234567"
_tags = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def local_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    (tmp_path / "none.toml").write_text("")
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "data"), "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"),
               "TCX_BRIDGE_TIMEZONE": "Europe/Zurich"}  # fmt: skip
    if request.param == "postgresql":
        environ["TCX_BRIDGE_STORE_URL"] = request.getfixturevalue("pg_url")
    return load_settings(environ=environ).settings


@pytest.fixture
def consumer(local_settings: Settings) -> Iterator[Callbacks]:
    found = Callbacks(local_settings, CallbackOptions(callback_ignore=("+41800",), callback_max_attempts=2))
    found.store.ensure()
    yield found
    found.close()


def at(minutes: float) -> str:
    return events.format_time(T0 + timedelta(minutes=minutes))


def call(
    kind: str, direction: str, call_id: str, minutes: float, desk: str = "D1", caller: str | None = None
) -> events.CallEvent:
    return events.CallEvent(
        event_id=events.new_event_id(), kind=kind, direction=direction, call_id=call_id,  # type: ignore[arg-type]
        caller_id=caller, desk=desk, extension=None, occurred_at=at(minutes), argv=(),
    )  # fmt: skip


def missed_call(
    call_id: str, minutes: float, caller: str = CALLER, desk: str = "D1"
) -> list[events.CallEvent]:
    return [
        call("started", "inbound", call_id, minutes, desk, caller),
        call("ended", "inbound", call_id, minutes + 0.5, desk),
    ]


def feed(consumer: Callbacks, *messages: events.CallEvent | events.DialResult) -> list[str]:
    """One batch through prepare and handle, in one transaction, as the runner does it."""
    deliveries = []
    for message in messages:
        desk = message.desk
        deliveries.append(Delivery(events.ENCODER.encode(message), message.routing_key, "tcx.events", next(_tags),
                                   False, None, None, {}, user_id=f"desk-{desk}"))  # fmt: skip
    outcomes = []
    with consumer.store.transaction():
        batch = Batch(deliveries, {d.delivery_tag: m for d, m in zip(deliveries, messages, strict=True)})
        consumer.prepare(batch)
        for delivery, message in zip(deliveries, messages, strict=True):
            context = Context(consumer.settings, delivery, delivery.routing_key, lambda *_: True)
            outcomes.append(consumer.handle(message, context))
    return outcomes


def outbox(consumer: Callbacks) -> list[dict[str, Any]]:
    rows = consumer.store.execute("SELECT routing_key, body FROM callback_outbox ORDER BY id").fetchall()
    return [{"key": row["routing_key"], **json.loads(bytes(row["body"]))} for row in rows]


def only_task(consumer: Callbacks) -> dict[str, Any]:
    rows = tasks.listing(consumer.store, "all")
    assert len(rows) == 1
    return rows[0]


def test_a_missed_external_call_opens_one_task_and_a_second_adds_to_it(consumer: Callbacks) -> None:
    assert feed(consumer, *missed_call("c1", 0))[-1] == "task 1 opened"
    assert (
        feed(consumer, *missed_call("c2", 5, caller="+41 79 123 45 67", desk="D2"))[-1]
        == "task 1 missed again"
    )
    task = only_task(consumer)
    assert (task["number_e164"], task["missed_count"], task["status"]) == (E164, 2, "open")
    assert (task["first_missed_at"], task["last_missed_at"], task["missed_desk"]) == (at(0), at(5), "D2")
    assert task["due_at"] == at(15)  # no business hours: missed_at + 15 minutes
    opened = outbox(consumer)
    assert [event["key"] for event in opened] == ["callback.opened"]
    assert events.CALLBACK_DECODER.decode(json.dumps(opened[0]).encode()) == events.CallbackOpened(
        event_id=opened[0]["event_id"], task_id=1, number=CALLER, number_e164=E164, desk="D1",
        missed_at=at(0), due_at=at(15), occurred_at=opened[0]["occurred_at"],
    )  # fmt: skip


@pytest.mark.parametrize(
    "caller",
    [
        "",  # anonymous
        "anonymous",
        "123",  # an internal extension
        "0800 123 456",  # callback_ignore +41800
    ],
)
def test_anonymous_internal_and_ignored_callers_get_no_task(consumer: Callbacks, caller: str) -> None:
    assert feed(consumer, *missed_call("c1", 0, caller=caller))[-1] == "no task"
    assert tasks.listing(consumer.store, "all") == []


def test_a_miss_that_arrives_after_the_caller_got_through_opens_its_task_reached(consumer: Callbacks) -> None:
    """The events of other launches arrive in any order: the answered call's C came first."""
    feed(
        consumer,
        call("started", "inbound", "c2", 3, "D2", CALLER),
        call("connected", "inbound", "c2", 3.2, "D2"),
    )
    assert feed(consumer, *missed_call("c1", 0))[-1] == "task 1 opened, reached already"
    task = only_task(consumer)
    assert (task["outcome"], task["reached_by"], task["reached_at"]) == ("reached", "D2", at(3.2))
    assert [event["key"] for event in outbox(consumer)] == ["callback.opened", "callback.closed"]


def test_an_answered_call_opens_nothing_and_a_duplicate_changes_nothing(consumer: Callbacks) -> None:
    events_ = [call("started", "inbound", "c1", 0, caller=CALLER), call("connected", "inbound", "c1", 0.2)]
    feed(consumer, *events_, call("ended", "inbound", "c1", 3))
    assert tasks.listing(consumer.store, "all") == []
    missed = missed_call("c2", 10)
    feed(consumer, *missed)
    assert feed(consumer, *missed) == ["duplicate", "duplicate"]
    assert only_task(consumer)["missed_count"] == 1


def test_the_caller_calling_again_and_answered_closes_the_task_reached(consumer: Callbacks) -> None:
    feed(consumer, *missed_call("c1", 0))
    outcomes = feed(
        consumer,
        call("started", "inbound", "c2", 30, "D3", CALLER),
        call("connected", "inbound", "c2", 30.5, "D3"),
    )
    assert outcomes == ["recorded", "reached"]
    task = only_task(consumer)
    assert (task["status"], task["outcome"], task["reached_by"], task["reached_at"]) == (
        "closed",
        "reached",
        "D3",
        at(30.5),
    )
    closed = outbox(consumer)[-1]
    assert (closed["key"], closed["outcome"], closed["seconds"], closed["desk"]) == (
        "callback.closed",
        "reached",
        1830.0,
        "D3",
    )


def test_an_outbound_call_to_the_number_connected_on_any_desk_closes_it(consumer: Callbacks) -> None:
    feed(consumer, *missed_call("c1", 0))
    dialed = "+41 79 123 45 67"  # 3CX's call id of an outbound call is the number as dialed
    assert feed(
        consumer,
        call("started", "outbound", dialed, 2, "D9"),
        call("connected", "outbound", dialed, 2.3, "D9"),
    ) == ["recorded", "reached"]
    assert only_task(consumer)["outcome"] == "reached"
    feed(consumer, *missed_call("c3", 60))  # a new miss after that: a new task
    assert [t["status"] for t in tasks.listing(consumer.store, "all")] == ["closed", "open"]


def test_dials_confirmed_but_never_connected_count_attempts_then_unreached(consumer: Callbacks) -> None:
    feed(consumer, *missed_call("c1", 0))

    def dial_unanswered(desk: str, minutes: float) -> list[str]:
        row = tasks.task(consumer.store, 1)
        request_id = tasks.request_id_for(row)
        with consumer.store.transaction():
            tasks.dialing(consumer.store, tasks.assign(consumer.store, row, desk, "hand"), request_id, desk)
        result = events.DialResult(request_id=request_id, desk=desk, number=E164, status="confirmed", reason=None,
                                   occurred_at=at(minutes), call_id=E164)  # fmt: skip
        assert feed(consumer, result) == ["dial confirmed"]
        assert tasks.task(consumer.store, 1)["dial_state"] == "confirmed"
        return feed(
            consumer,
            call("started", "outbound", E164, minutes, desk),
            call("ended", "outbound", E164, minutes + 0.5, desk),
        )

    assert dial_unanswered("D1", 5) == ["recorded", "attempt"]
    task = tasks.task(consumer.store, 1)
    assert (task["attempts"], task["dial_state"], task["status"]) == (1, "no answer", "open")
    assert dial_unanswered("D2", 10) == ["recorded", "unreached"]
    task = tasks.task(consumer.store, 1)
    assert (task["status"], task["outcome"], task["attempts"]) == ("closed", "unreached", 2)
    assert outbox(consumer)[-1]["outcome"] == "unreached"


def test_an_outbound_call_that_fails_with_no_dial_out_counts_no_attempt(consumer: Callbacks) -> None:
    feed(consumer, *missed_call("c1", 0))
    assert (
        feed(
            consumer, call("started", "outbound", E164, 2, "D5"), call("ended", "outbound", E164, 2.5, "D5")
        )[-1]
        == "no task"
    )
    assert tasks.task(consumer.store, 1)["attempts"] == 0


def test_a_result_for_another_desks_dial_or_from_another_desks_user_is_not_believed(
    consumer: Callbacks,
) -> None:
    feed(consumer, *missed_call("c1", 0))
    row = tasks.task(consumer.store, 1)
    request_id = tasks.request_id_for(row)
    with consumer.store.transaction():
        tasks.dialing(consumer.store, tasks.assign(consumer.store, row, "D1", "hand"), request_id, "D1")
    other = events.DialResult(
        request_id=request_id, desk="D2", number=E164, status="failed", reason="x", occurred_at=at(1)
    )
    assert feed(consumer, other) == ["ignored"]  # the request went to D1
    assert tasks.task(consumer.store, 1)["dial_state"] == "dialing"


def test_auto_assign_gives_idle_desks_round_robin_never_the_same_desk_twice(consumer: Callbacks) -> None:
    now = T0 + timedelta(minutes=10)
    # D1 and D2 were busy with answered calls that ended; D3 is ringing now; D4 talks
    feed(consumer, call("started", "inbound", "a", 1, "D1", "0441112233"), call("connected", "inbound", "a", 1.1, "D1"),
         call("ended", "inbound", "a", 2, "D1"), call("started", "inbound", "b", 1, "D2", "0441112234"),
         call("connected", "inbound", "b", 1.1, "D2"), call("ended", "inbound", "b", 3, "D2"),
         call("started", "inbound", "r", 9.9, "D3", "0441112235"), call("started", "inbound", "t", 8, "D4", "0441112236"),
         call("connected", "inbound", "t", 8.5, "D4"))  # fmt: skip
    assert assign.desk_states(consumer.store, consumer.settings, now) == {
        "D1": "idle",
        "D2": "idle",
        "D3": "ringing",
        "D4": "talking",
    }
    feed(
        consumer,
        *missed_call("m1", 4, "0317654321", desk="D3"),
        *missed_call("m2", 5, "0611234567", desk="D3"),
    )
    feed(consumer, *missed_call("m3", 6, "0211234567", desk="D3"))
    with consumer.store.transaction():
        given = assign.auto_assign(consumer.store, consumer.settings, now)
    assert [(row["id"], row["desk"]) for row in given] == [
        (1, "D1"),
        (2, "D2"),
    ]  # one task per idle desk a round
    with consumer.store.transaction():
        store = consumer.store
        store.execute("UPDATE callbacks SET dial_state = 'no answer' WHERE id = 1")  # D1 tried task 1
        given = assign.auto_assign(store, consumer.settings, now)
    # task 1 goes to D2, never D1 again; task 3 to D1 (round robin went on after D2)
    assert sorted((row["id"], row["desk"]) for row in given) == [(1, "D2"), (3, "D1")]
    keys = [event["key"] for event in outbox(consumer)]
    assert keys.count("callback.assigned") == 4
    assert assign.pick(["D1"], None, "D1") is None


def test_commands_list_assign_and_close(consumer: Callbacks, local_settings: Settings) -> None:
    from bridge.cli import cli as main

    feed(consumer, *missed_call("c1", 0), *missed_call("c2", 1, "0449998877"))
    env = {"TCX_BRIDGE_DATA_DIR": local_settings.data_dir, "TCX_BRIDGE_TIMEZONE": "Europe/Zurich",
           "TCX_BRIDGE_CONFIG": str(Path(local_settings.data_dir).parent / "none.toml"), "TCX_BRIDGE_STORE_URL": local_settings.store_url or ""}  # fmt: skip
    runner = CliRunner()

    def run(*argv: str) -> Any:
        return runner.invoke(main, ["callbacks", *argv], env=env, catch_exceptions=False)

    listed = run("list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(row["id"], row["number"], row["state"], row["missed"]) for row in rows] == [
        (1, "079 123 45 67", "overdue", 1), (2, "044 999 88 77", "overdue", 1)]  # fmt: skip
    assert rows[0]["first_missed"] == "2026-11-25 10:00"  # Zurich time
    assert run("assign", "1", "--desk", "DESK-7").output == "callback task 1 assigned to desk DESK-7\n"
    bad = runner.invoke(main, ["callbacks", "assign", "1", "--desk", "no desk"], env=env)
    assert bad.exit_code == 1
    assert bad.output.splitlines()[-1].startswith("Error: desk 'no desk' holds ' ', not allowed in a desk id")
    assert run("close", "2", "--reason", "wrong number").output == "callback task 2 closed\n"
    again = runner.invoke(main, ["callbacks", "close", "2", "--reason", "again"], env=env)
    assert again.output.splitlines()[-1] == "Error: callback task 2 is already closed (closed)"
    missing = runner.invoke(main, ["callbacks", "dial", "9"], env=env)
    assert (
        missing.output.splitlines()[-1]
        == "Error: callback task 9 does not exist; see tcx-bridge callbacks list --all"
    )
    table = run("list", "--all").output
    assert "DESK-7" in table
    assert "closed" in table
    assert len(json.loads(run("list", "--due", "--format", "json").output)) == 1
    closed = outbox(consumer)[-1]
    assert (closed["key"], closed["outcome"], closed["reason"]) == (
        "callback.closed",
        "closed",
        "wrong number",
    )


def test_report_has_callback_columns_per_day_and_desk(consumer: Callbacks, local_settings: Settings) -> None:
    from bridge.cli import cli

    feed(consumer, *missed_call("c1", 0, desk="D1"), *missed_call("c2", 1, "0449998877", desk="D2"))
    feed(consumer, *missed_call("c3", 2, "0311112233", desk="D2"))
    feed(
        consumer,
        call("started", "inbound", "r1", 10, "D3", CALLER),
        call("connected", "inbound", "r1", 10.5, "D3"),
    )
    feed(
        consumer,
        call("started", "outbound", "0449998877", 40, "D3"),
        call("connected", "outbound", "0449998877", 41, "D3"),
    )
    with consumer.store.transaction():
        row = tasks.assign(consumer.store, tasks.task(consumer.store, 3), "D1", "hand")
        tasks.close(consumer.store, row, "unreached", reason="test")
    env = {"TCX_BRIDGE_DATA_DIR": local_settings.data_dir, "TCX_BRIDGE_STORE_URL": local_settings.store_url or "",
           "TCX_BRIDGE_CONFIG": str(Path(local_settings.data_dir).parent / "none.toml")}  # fmt: skip
    result = CliRunner().invoke(cli, ["report", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    (day,) = summary["by_day"]
    columns = (
        "day",
        "callbacks_opened",
        "callbacks_reached",
        "callbacks_unreached",
        "callback_median",
        "callback_p90",
    )
    assert tuple(day[c] for c in columns) == ("2026-11-25", 3, 2, 1, 1515.0, 2400.0)  # 630 s and 2400 s
    desks = {row["desk"]: tuple(row[c] for c in columns[1:]) for row in summary["by_desk"]}
    assert desks == {
        "D1": (1, 0, 1, None, None),
        "D2": (2, 0, 0, None, None),
        "D3": (0, 2, 0, 1515.0, 2400.0),
    }


def test_simulate_truth_says_who_was_missed_and_reached() -> None:
    from bridge.simulate import plan_traffic, truth_lines

    lines = truth_lines(plan_traffic(300, ["s1", "s2"], seed=7), {})
    kinds = Counter(line["number_kind"] for line in lines if line["direction"] == "inbound")
    assert set(kinds) == {"external", "anonymous", "internal"}
    seen: dict[str, str] = {}

    def moment(line: dict[str, Any]) -> float:  # a miss from its start, a reach at C
        return float(line["at"]["connected" if line["answered"] else "started"])

    for line in sorted(lines, key=moment):
        if line["callback"] in ("opens", "adds"):
            assert (line["direction"], line["answered"], line["number_kind"]) == (
                "inbound",
                False,
                "external",
            )
        if line["callback"] == "reaches":
            assert line["answered"]
            assert seen.get(line["number"]) in ("opens", "adds")  # a task was open for the number
        if line["callback"]:
            seen[line["number"]] = line["callback"]
    found = Counter(line["callback"] for line in lines)
    assert found["opens"] > 0
    assert found["adds"] > 0  # known contacts call more than once
    assert found["reaches"] > 0
    unanswered = [line for line in lines if line["number_kind"] != "external" and not line["answered"]]
    assert unanswered
    assert all(line["callback"] is None for line in unanswered)  # anonymous and internal: never a task


def test_a_forget_request_closes_and_erases_the_callers_task(
    consumer: Callbacks, local_settings: Settings
) -> None:
    feed(consumer, *missed_call("c1", 0), *missed_call("c2", 1, "0449998877"))
    request = events.ForgetRequest(request_id="f1", number="079 123 45 67", requested_at=at(5))
    consumer.forget(local_settings, request, "tcx-privacy")
    rows = {row["id"]: row for row in tasks.listing(consumer.store, "all")}
    assert (rows[1]["status"], rows[1]["reason"]) == ("closed", "forgotten")
    assert E164 not in (rows[1]["number"], rows[1]["number_e164"])  # erased in the row kept
    assert rows[2]["number_e164"] == "+41449998877"
    assert all(E164 not in json.dumps(event) for event in outbox(consumer))  # nothing left to publish it


def test_retention_sweeps_closed_tasks_only(consumer: Callbacks) -> None:
    from consumers.privacy.sweep import _sweep_callbacks

    feed(consumer, *missed_call("c1", 0), *missed_call("c2", 1, "0449998877"))
    with consumer.store.transaction():
        tasks.close(consumer.store, tasks.task(consumer.store, 1), "closed", reason="done")
        swept = _sweep_callbacks(consumer.store, "9999-01-01T00:00:00.000000Z")
    assert swept == {"callbacks": 1}
    assert [row["id"] for row in tasks.listing(consumer.store, "all")] == [2]


def test_the_wallboards_panel_looks_for_a_missing_store_twice_a_second_not_at_every_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.store.core as core
    from consumers.callbacks import panel

    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings
    opened = []
    real = core.open_store

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "open_store", counted)
    board = panel.Panel(settings)
    now = datetime.now(UTC)
    for _ in range(20):  # the wallboard's snapshots, many a second
        assert board.view(now, now, lambda _: None)["callbacks"] == []
    assert len(opened) == 1
    Callbacks(settings).close()  # the callbacks consumer creates its store
    time.sleep(panel.POLL)
    assert board.view(now, now, lambda _: None)["callback_tiles"]["callbacks_open"] == 0
    assert board._store is not None  # found once it exists
