"""``store rebuild``: a consumer's call records rebuilt from the history and swapped in, the live consumer running."""

from __future__ import annotations

import threading

import pytest

from bridge.config import Settings
from bridge.topology import declare_events, declare_history
from bridge.transport import Broker
from consumers.store.core import open_store
from tests.conftest import Service, run_cli, start_service, wait_until
from tests.history import processed, send_calls, stored

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    if request.param == "postgresql":
        return {**env, "TCX_BRIDGE_STORE_URL": request.getfixturevalue("pg_url")}
    return env


def report(env: dict[str, str]) -> str:
    done = run_cli(env, "report", "--format", "json")
    assert done.returncode == 0, done.stderr
    return done.stdout


def records(settings: Settings) -> list[tuple[object, ...]]:
    rows = stored(
        settings, "SELECT desk, direction, call_id, ring_seconds, talk_seconds, answered FROM calls"
    )
    return sorted((*list(row.values())[:5], bool(row["answered"])) for row in rows)


def test_rebuilt_records_equal_the_live_ones_and_the_live_consumer_goes_on(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    declare_events(broker, settings)
    declare_history(broker, settings)
    start_service(services, env, broker, settings.queue("analytics"), "consume", "analytics")
    send_calls(broker, settings, range(60))
    wait_until(lambda: processed(settings) == 180, timeout=30)
    live_report, live_records = report(env), records(settings)
    store = open_store(settings, "analytics")
    with store.transaction():  # a bug corrupted a record: the rebuild puts it right
        store.execute("UPDATE calls SET talk_seconds = 99 WHERE call_id = 'c0001'")
    store.close()
    assert report(env) != live_report
    quiet = run_cli(env, "store", "rebuild", "analytics")
    assert quiet.returncode == 0, quiet.stderr
    assert report(env) == live_report
    assert records(settings) == live_records

    def publish_live() -> None:
        with Broker(settings.amqp_url) as own:
            send_calls(own, settings, range(60, 90))

    live = threading.Thread(target=publish_live)
    live.start()  # while it rebuilds
    rebuilt = run_cli(env, "store", "rebuild", "analytics")
    live.join()
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("analytics: rebuilt from ")
    wait_until(lambda: processed(settings) == 270, timeout=30)
    wait_until(lambda: len(records(settings)) == 90, timeout=10)
    assert {row[3:] for row in records(settings)} == {(2.0, 8.0, True)}  # each call once, none twice
    send_calls(broker, settings, range(90, 91))  # the live consumer writes the swapped-in table
    wait_until(lambda: len(records(settings)) == 91, timeout=10)

    again = run_cli(env, "store", "rebuild", "analytics", "--since", "2026-11-02")
    assert again.returncode == 0, again.stderr
    assert records(settings)[:60] == live_records
    assert len(records(settings)) == 91


def test_rebuild_of_a_consumer_without_call_records_is_one_line(env: dict[str, str]) -> None:
    done = run_cli(env, "store", "rebuild", "nothing-here")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: 'nothing-here' is not a consumer; installed: ")
    )


def test_a_rebuilt_crm_keeps_its_journal_pointing_at_each_calls_record(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    declare_events(broker, settings)
    declare_history(broker, settings)
    start_service(services, env, broker, settings.queue("crm"), "consume", "crm")
    send_calls(broker, settings, range(10))
    journal = "SELECT j.call_id, c.id = j.call_key AS linked FROM journal j LEFT JOIN {calls} c ON c.id = j.call_key"

    def linked() -> list[tuple[str, bool]]:
        store = open_store(settings, "crm")
        try:
            rows = store.execute(journal.format(calls=store.calls_table)).fetchall()
        finally:
            store.close()
        return sorted((row["call_id"], bool(row["linked"])) for row in rows)

    wait_until(lambda: len(linked()) == 10, timeout=30)
    rebuilt = run_cli(env, "store", "rebuild", "crm")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert linked() == [(f"c{n:04}", True) for n in range(10)]
    send_calls(broker, settings, range(10, 11))  # the live consumer journals on the new records
    wait_until(lambda: len(linked()) == 11, timeout=30)
    assert all(is_linked for _, is_linked in linked())
