"""Numbers masked in logs, every form of a number, retention and erasure in the stores (issue 25)."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from bridge import events
from bridge.cli import cli
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.redact import RedactingFilter, log_numbers, mask_numbers
from bridge.topology import dead_queue_arguments
from consumers.analytics.calls import apply_event
from consumers.analytics.consumer import Analytics
from consumers.privacy import actions, stores
from consumers.privacy.forms import ERASED, find_in_text, forms_of, key_of
from consumers.privacy.settings import SECTION, options_of
from consumers.privacy.sweep import sweep_dials, sweep_store
from consumers.store.core import SqliteStore, open_sqlite, open_store

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("+41 79 123 35 35", "+41 •• ••• 35 35"),  # the example
        ("/C:0791233535", "/C:0•••••3535"),  # national: the trunk 0 and the last 4
        ("0041 79 123 35 35", "0041 •• ••• 35 35"),
        ("+1 212 555 0100", "+1 ••• ••• 0100"),  # a 1-digit country code
        ("+353 1 234 5678", "+353 • ••• 5678"),  # a 3-digit one
        ('"caller_id":"0791234567"', '"caller_id":"0•••••4567"'),
        ("ext 101, short code 112, 123456", "ext 101, short code 112, 123456"),  # 6 digits or fewer: kept
        ("id=0f3a1234-5678-9abc key=call.started", "id=0f3a1234-5678-9abc key=call.started"),  # an id
        ("at 2026-11-30T12:00:00Z from 192.168.100.200", "at 2026-11-30T12:00:00Z from 192.168.100.200"),
        ("desk-1234567 ms=12.3", "desk-1234567 ms=12.3"),  # part of a name
    ],
)
def test_numbers_are_masked_with_a_digit_rule(text: str, shown: str) -> None:
    assert mask_numbers(text) == shown


def test_the_log_filter_masks_unless_log_numbers_is_full() -> None:
    record = logging.LogRecord("t", logging.INFO, "", 0, "dialing %s for %s", ("+41791233535", "crm"), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "dialing +41•••••3535 for crm"
    log_numbers("full")
    try:
        record = logging.LogRecord("t", logging.INFO, "", 0, "dialing %s", ("+41791233535",), None)
        RedactingFilter().filter(record)
        assert record.getMessage() == "dialing +41791233535"
    finally:
        log_numbers("masked")


def test_settings_of_retention_and_log_numbers(tmp_path: Path) -> None:
    environ = {"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"), "TCX_BRIDGE_RETENTION_DEAD": "12h"}
    (tmp_path / "none.toml").write_text('retention_calls = "0"\nretention_journal = 30\n')
    settings = load_settings(environ=environ).settings
    assert (settings.log_numbers, settings.retention_logs, settings.retention_dead) == (
        "masked",
        30 * 86400,
        43200,
    )
    options = SECTION.of(settings)
    assert (options.retention_calls, options.retention_journal, options.retention_wallboard) == (
        None, 30 * 86400, 7 * 86400
    )  # fmt: skip
    assert dead_queue_arguments(settings) == {"x-message-ttl": 43_200_000}
    with pytest.raises(ConfigError, match=r"^TCX_BRIDGE_LOG_NUMBERS: 'some' is not a way to log numbers"):
        load_settings(environ={**environ, "TCX_BRIDGE_LOG_NUMBERS": "some"})
    with pytest.raises(ConfigError, match=r"^TCX_BRIDGE_RETENTION_LOGS: '-3' is not a retention; give days"):
        load_settings(environ={**environ, "TCX_BRIDGE_RETENTION_LOGS": "-3"})


def test_every_form_of_a_number_is_found_and_no_other() -> None:
    forms = forms_of("+41 (0)79 111 22 33", "CH", b"k" * 32)
    assert forms.e164 == "+41791112233"
    for written in (
        "0791112233",
        "+41 79 111 22 33",
        "0041791112233",
        "+41 (0)79 111 22 33",
        "/C:079 111 22 33",
    ):
        assert find_in_text(f'["/N:S", "{written}"]', forms), written
    assert forms_of("079 111 22 33", "CH", b"k" * 32).hashes == forms.hashes  # one caller, one hash
    for other in ("0791112234", "+49 79 111 22 33", "call 1001 at 12:00:00"):
        assert not find_in_text(other, forms), other
    with pytest.raises(ConfigError, match=r"^number '12' has fewer than 3 digits"):
        forms_of("12", "CH")


def event(kind: str, call_id: str, caller: str | None, at: datetime) -> events.CallEvent:
    return events.CallEvent(
        event_id=events.new_event_id(), kind=kind, direction="inbound", call_id=call_id,  # type: ignore[arg-type]
        caller_id=caller, desk="d1", extension=None, occurred_at=events.format_time(at),
        argv=("/N:S", f"/C:{caller}", f"/I:{call_id}"),
    )  # fmt: skip


def fill(store: SqliteStore | object, calls: list[tuple[str, str, datetime]]) -> None:
    assert hasattr(store, "transaction")
    with store.transaction():  # type: ignore[attr-defined]
        for call_id, caller, at in calls:
            for kind, offset in (("started", 0), ("connected", 5), ("ended", 65)):
                apply_event(store, event(kind, call_id, caller, at + timedelta(seconds=offset)))  # type: ignore[arg-type]


def test_retention_deletes_old_calls_and_keeps_calls_daily(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "analytics.sqlite3", "analytics")
    fill(store, [("old-1", "0791112233", NOW - timedelta(days=100)), ("old-2", "0791112233", NOW - timedelta(days=95)),
                 ("new-1", "0791112233", NOW - timedelta(days=2))])  # fmt: skip
    before = [dict(row) for row in store.execute("SELECT * FROM calls_daily ORDER BY day")]
    options = msgspec.structs.replace(options_of(None), retention_calls=90 * 86400.0)
    assert sweep_store(store, "analytics", options, NOW) == {"calls": 2}
    assert [row["call_id"] for row in store.execute("SELECT call_id FROM calls")] == ["new-1"]
    assert [dict(row) for row in store.execute("SELECT * FROM calls_daily ORDER BY day")] == before
    options = msgspec.structs.replace(options, retention_daily=97 * 86400.0)
    assert sweep_store(store, "analytics", options, NOW) == {"calls_daily_archive": 1}
    assert [row["day"] for row in store.execute("SELECT day FROM calls_daily ORDER BY day")] == [
        before[1]["day"], before[2]["day"]
    ]  # fmt: skip


def test_dials_and_rotated_logs_are_swept(tmp_path: Path) -> None:
    from consumers.agent.dials import Dials

    dials = Dials(tmp_path / "agent.sqlite3")
    for request_id, status, at in (("a", "confirmed", NOW - timedelta(days=40)), ("b", "dialing", NOW - timedelta(days=40)),
                                   ("c", "confirmed", NOW - timedelta(days=1))):  # fmt: skip
        dials.db.execute(
            "INSERT INTO dials (request_id, number, status, received_at) VALUES (?, '0791112233', ?, ?)",
            (request_id, status, events.format_time(at)),
        )
    assert sweep_dials(dials.db, options_of(None), NOW) == 1  # a dial still in flight stays
    assert [row[0] for row in dials.db.execute("SELECT request_id FROM dials ORDER BY 1")] == ["b", "c"]
    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_CONFIG": str(tmp_path / "x")},
                             read_file=False).settings  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    for name, age in (("notify.log", 90), ("notify.log.1", 40), ("crm.log.1", 2)):
        (logs / name).write_text("x")
        os.utime(logs / name, (time.time() - age * 86400,) * 2)
    from consumers.privacy.files import sweep_logs

    assert sweep_logs(settings, datetime.now(UTC)) == 1
    assert sorted(path.name for path in logs.iterdir()) == ["crm.log.1", "notify.log"]


def test_forget_keeps_rows_for_the_totals_and_vacuums(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "analytics.sqlite3", "analytics")
    fill(store, [("c1", "+41 (0)79 111 22 33", NOW), ("c2", "0447654321", NOW)])
    store.execute(
        "INSERT INTO contacts (e164, phone, name, key) VALUES ('+41791112233', '079 111 22 33', 'Anna', 'a')"
    )
    forms = forms_of("0791112233", "CH", key_of(tmp_path))
    daily = [dict(row) for row in store.execute("SELECT * FROM calls_daily")]
    assert {hit.table for hit in stores.find(store, forms)} == {"calls", "contacts"}
    assert stores.erase(store, forms) == {"calls": 1, "contacts": 1}
    assert [row["caller_id"] for row in store.execute("SELECT caller_id FROM calls ORDER BY call_id")] == [
        ERASED, "0447654321"
    ]  # fmt: skip
    assert [dict(row) for row in store.execute("SELECT * FROM calls_daily")] == daily
    assert store.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
    store.close()
    data = b"".join(path.read_bytes() for path in tmp_path.glob("analytics.sqlite3*"))
    assert b"791112233" not in data  # vacuumed: the old values are gone from the file


def test_hashed_analytics_numbers_count_repeat_callers(tmp_path: Path) -> None:
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_ANALYTICS_NUMBERS": "hashed"}
    settings = load_settings(environ=environ, read_file=False).settings
    analytics = Analytics(settings)
    try:
        seen = {
            analytics.decode(events.ENCODER.encode(event("started", call_id, caller, NOW)), "call.started.inbound.d1").caller_id
            for call_id, caller in (("1", "079 111 22 33"), ("2", "+41791112233"), ("3", "101"))
        }  # fmt: skip
    finally:
        analytics.close()
    hashed = forms_of("0791112233", "CH", key_of(tmp_path)).values[0]
    assert seen == {hashed, "101"}  # one caller, one hash; an extension as it was


def test_postgresql_rows_kept_with_a_marker(tmp_path: Path, pg_url: str) -> None:
    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_STORE_URL": pg_url},
                             read_file=False).settings  # fmt: skip
    store = open_store(settings, "crm")
    fill(store, [("c1", "+41 (0)79 111 22 33", NOW)])
    store.execute(
        "INSERT INTO journal (call_key, desk, direction, call_id, number, number_e164, contact_name, contact,"
        " answered) VALUES (1, 'd1', 'inbound', 'c1', '079 111 22 33', '+41791112233', 'Anna', ?::jsonb, true)",
        (json.dumps({"name": "Anna", "note": "mobile 079 111 22 33"}),),
    )
    store.close()
    forms = forms_of("0791112233", "CH", key_of(tmp_path))
    shown = actions.report(settings, forms)
    assert {place["place"] for place in shown} == {"postgresql/crm_calls", "postgresql/journal"}
    assert actions.forget(settings, forms) == {"postgresql/crm_calls": 1, "postgresql/journal": 1}
    store = open_store(settings, "crm")
    try:
        for table in ("crm_calls", "journal", "calls", "contacts"):
            rows = [row["t"] for row in store.execute(f"SELECT t::text AS t FROM {table} t")]
            assert not any(find_in_text(row, forms) for row in rows), table
        row = store.execute("SELECT number, number_e164, contact FROM journal").fetchone()
        assert (row["number"], row["number_e164"]) == (ERASED, ERASED)
        assert row["contact"] == {"name": "Anna", "note": f"mobile {ERASED}"}
    finally:
        store.close()


def test_privacy_cli_forget_dry_run_and_audit(tmp_path: Path) -> None:
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    store = open_sqlite(tmp_path / "crm.sqlite3", "crm")
    fill(store, [("c1", "0791112233", NOW)])
    store.close()
    runner = CliRunner()
    dry = runner.invoke(cli, ["privacy", "forget", "079 111 22 33", "--dry-run"], env=environ)
    assert dry.exit_code == 0, dry.output
    assert "would erase sqlite:crm.sqlite3/calls: 1" in dry.output
    bad = runner.invoke(cli, ["privacy", "report", "12", "--no-broker"], env=environ)
    assert bad.exit_code == 1
    assert (
        bad.output.strip().splitlines()[-1]
        == "Error: number '12' has fewer than 3 digits; give it as dialled or E.164"
    )
    audit = runner.invoke(cli, ["privacy", "audit", "--format", "json"], env=environ)
    entries = json.loads(audit.output)
    assert [entry["action"] for entry in entries] == ["forget-dry-run"]
    assert entries[0]["places"] == {"sqlite:crm.sqlite3/calls": 1}
    assert "791112233" not in (tmp_path / "privacy-audit.jsonl").read_text()
    swept = runner.invoke(cli, ["privacy", "sweep"], env=environ)
    assert swept.exit_code == 0, swept.output
    away = {**environ, "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}
    forgot = runner.invoke(cli, ["privacy", "forget", "+41791112233"], env=away)
    assert forgot.exit_code == 1  # the command could not be published: one error line
    assert forgot.output.startswith("erased sqlite:crm.sqlite3/calls: 1\n")
    assert forgot.output.strip().splitlines()[-1].startswith("Error: ")
    last = json.loads((tmp_path / "privacy-audit.jsonl").read_text().splitlines()[-1])
    assert (last["action"], last["places"], last["request_id"]) == (
        "forget",
        {"sqlite:crm.sqlite3/calls": 1},
        None,
    )


def test_postgresql_retention_keeps_calls_daily(tmp_path: Path, pg_url: str) -> None:
    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_STORE_URL": pg_url},
                             read_file=False).settings  # fmt: skip
    store = open_store(settings, "analytics")
    try:
        fill(store, [("old-1", "0791112233", NOW - timedelta(days=100)), ("new-1", "0791112233", NOW)])
        before = [dict(row) for row in store.execute("SELECT * FROM calls_daily ORDER BY day")]
        assert actions.sweep(settings, NOW) == {"postgresql/calls": 1}
        assert [row["call_id"] for row in store.execute("SELECT call_id FROM calls")] == ["new-1"]
        assert [dict(row) for row in store.execute("SELECT * FROM calls_daily ORDER BY day")] == before
    finally:
        store.close()


def test_a_consumer_forgets_in_its_postgresql_store_and_audits_the_requester(
    tmp_path: Path, pg_url: str
) -> None:
    from consumers.crm.consumer import Crm

    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_STORE_URL": pg_url},
                             read_file=False).settings  # fmt: skip
    crm = Crm(settings)
    try:
        fill(crm.store, [("c1", "079 111 22 33", NOW)])
        request = events.ForgetRequest(request_id="r-1", number="+41791112233", requested_at=events.utc_now())
        assert crm.forget(settings, request, "tcx-privacy") == {f"{crm.store.name}/crm_calls": 1}
        assert crm.store.execute("SELECT caller_id FROM crm_calls").fetchone()["caller_id"] == ERASED
    finally:
        crm.close()
    entry = json.loads((tmp_path / "privacy-audit.jsonl").read_text())
    assert (entry["action"], entry["broker_user"], entry["request_id"]) == (
        "forget-request",
        "tcx-privacy",
        "r-1",
    )
    assert entry["number_hash"] == forms_of("0791112233", "CH", key_of(tmp_path)).values[0]


def test_a_forget_from_a_desk_user_is_spoofed() -> None:
    from bridge.errors import HandlerError
    from consumers.privacy import command

    body = events.ENCODER.encode(
        events.ForgetRequest(request_id="r-2", number="0791112233", requested_at=events.utc_now())
    )
    assert command.decode(body, "tcx-privacy").number == "0791112233"
    with pytest.raises(HandlerError, match=r"^spoofed: a privacy.forget from desk user 'desk-7'"):
        command.decode(body, "desk-7")
