"""tcx-bridge access definitions: the document's shape, its secrets, its determinism."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.access import password_hash
from bridge.cli import cli


def generate(tmp_path: Path, *argv: str, name: str = "run") -> tuple[Any, dict[str, str], str]:
    secrets_file, document = tmp_path / f"{name}.tsv", tmp_path / f"{name}.json"
    result = CliRunner().invoke(
        cli,
        ["--namespace", "cc", "access", "definitions", "--password-file", str(secrets_file), "-o", str(document),
         *argv],
        env={"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    passwords = dict(line.split("\t") for line in secrets_file.read_text().splitlines())
    return json.loads(document.read_text()), passwords, result.output


@pytest.fixture(autouse=True)
def config(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")


def test_users_rights_and_no_admin(tmp_path: Path) -> None:
    desks = tmp_path / "desks.txt"
    desks.write_text("\ufeff# our floor\nD-1,101\nD-2\n\n")  # a BOM, a comment, a blank
    document, passwords, _ = generate(
        tmp_path, "--desks-file", str(desks), "--desk", "D-3", "--vhost", "calls"
    )
    users = [user["name"] for user in document["users"]]
    assert users == [
        "tcx-admin",
        "tcx-crm",
        "tcx-analytics",
        "tcx-wallboard",
        "tcx-webhooks",
        "tcx-dialer",
        "tcx-callbacks",
        "tcx-privacy",
        "tcx-history",
        "desk-D-1",
        "desk-D-2",
        "desk-D-3",
    ]
    assert set(passwords) == set(users)
    assert all(user["tags"] == [] for user in document["users"])  # no administrator, no management
    rights = {p["user"]: p for p in document["permissions"]}
    topics = {(t["user"], t["exchange"]): t for t in document["topic_permissions"]}
    for permission in document["permissions"]:
        assert permission["vhost"] == "calls"
        assert not re.fullmatch(permission["write"], "amq.default")  # which reaches every queue by name
        for exchange in ("cc.again.crm", "cc.again.desk.D-1"):  # the broker's way back: nobody writes
            assert not re.fullmatch(permission["write"], exchange) or permission["user"] == "tcx-admin"
        own_retries = {"tcx-crm": "cc.retry.crm", "desk-D-1": "cc.retry.desk.D-1"}
        for exchange in ("cc.retry.crm", "cc.retry.desk.D-1"):  # each its own retries, nobody another's
            mine = own_retries.get(permission["user"]) == exchange or permission["user"] == "tcx-admin"
            assert bool(re.fullmatch(permission["write"], exchange)) == mine, (permission["user"], exchange)
        if permission["user"] != "tcx-admin":  # nobody but the admin configures anything
            assert permission["configure"] == "^$"
    admin = rights["tcx-admin"]
    for name in ("cc.events", "cc.desk.D-1", "cc.retry.crm", "cc.dial-results"):
        assert re.fullmatch(admin["configure"], name), name
    assert not re.fullmatch(admin["configure"], "other.events")  # the namespace only
    desk = rights["desk-D-1"]
    assert re.fullmatch(desk["read"], "cc.desk.D-1")
    for queue in ("cc.desk.D-2", "cc.crm", "cc.desk.D-1.retry", "cc.dead.desk.D-1"):
        assert not re.fullmatch(desk["read"], queue), queue
    assert not re.fullmatch(desk["write"], "cc.commands")  # a desk queues no dial requests
    events = topics[("desk-D-1", "cc.events")]
    for key in (
        "call.started.inbound.D-1",
        "call.ended.outbound.D-1",
        "call.invalid.D-1",
        "dial.confirmed.D-1",
    ):
        assert re.fullmatch(events["write"], key), key
    for key in ("call.started.inbound.D-2", "dial.confirmed.D-2", "call.started.inbound.D-1.x"):
        assert not re.fullmatch(events["write"], key), key
    dead = topics[("desk-D-1", "cc.dead")]
    assert re.fullmatch(dead["write"], "desk.D-1")  # its own dead letters
    for key in ("desk.D-1.retry", "desk.D-1.again", "desk.D-2", "crm"):
        assert not re.fullmatch(dead["write"], key), key
    dialer = topics[("tcx-dialer", "cc.commands")]
    assert re.fullmatch(dialer["write"], "desk.D-2.dial")
    assert re.fullmatch(dialer["write"], "ext.101.dial")
    assert not re.fullmatch(dialer["write"], "desk.D-2.popup")
    assert re.fullmatch(rights["tcx-dialer"]["read"], "cc.dial-results")
    assert re.fullmatch(topics[("tcx-crm", "cc.commands")]["write"], "desk.D-2.popup")
    callbacks = topics[("tcx-callbacks", "cc.events")]
    for key in ("callback.opened", "callback.assigned", "callback.closed"):
        assert re.fullmatch(callbacks["write"], key), key
    for key in ("callback.opened.x", "callback.reached", "call.started.inbound.D-1", "dial.confirmed.D-1"):
        assert not re.fullmatch(callbacks["write"], key), key
    assert not re.fullmatch(
        rights["tcx-callbacks"]["write"], "cc.commands"
    )  # dials go with the dialer's user
    assert re.fullmatch(rights["tcx-callbacks"]["read"], "cc.callbacks")
    for user in ("tcx-crm", "tcx-analytics", "tcx-wallboard", "tcx-history"):  # they backfill, or read it
        assert re.fullmatch(rights[user]["read"], "cc.history"), user
    for user, permission in rights.items():  # only the broker copies events into the history
        assert not re.fullmatch(permission["write"], "cc.history") or user == "tcx-admin", user
    assert not re.fullmatch(desk["read"], "cc.history")  # a desk reads its own queue alone
    history = rights["tcx-history"]
    assert (history["configure"], history["write"]) == ("^$", "^$")
    assert not re.fullmatch(history["read"], "cc.crm")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--desk", "A,101", "--desk", "B,101"],
            "Error: extension '101' is given to desk 'A' and desk 'B'; an extension belongs to one desk",
        ),
        (["--desk", "A,101", "--desk", "A"], "Error: desk 'A' is given twice; give each desk once"),
        (["--desk", "A", "--desk", "A"], "Error: desk 'A' is given twice; give each desk once"),
    ],
)
def test_a_desk_or_extension_given_twice_is_refused(tmp_path: Path, argv: list[str], message: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["access", "definitions", "--password-file", str(tmp_path / "p.tsv"), *argv],
        env={"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")},
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]
    assert not (tmp_path / "p.tsv").exists()


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    salt = bytes.fromhex("908dc60a")  # RabbitMQ's documented example: password "test12"
    expected = base64.b64encode(salt + hashlib.sha256(salt + b"test12").digest()).decode()
    assert password_hash("test12", salt) == expected == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"


def test_secrets_only_in_the_password_file(tmp_path: Path) -> None:
    document, passwords, output = generate(tmp_path, "--desk", "D-1")
    for password in passwords.values():
        assert len(password) >= 24
        assert password not in output  # neither on stdout nor on stderr
    mode = stat.S_IMODE((tmp_path / "run.tsv").stat().st_mode)
    assert mode == 0o600
    for user in document["users"]:
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert hashlib.sha256(salt + passwords[user["name"]].encode()).digest() == digest


def test_keep_passwords_gives_the_same_document_but_the_salts(tmp_path: Path) -> None:
    first, passwords, _ = generate(tmp_path, "--desk", "D-1", "--desk", "D-2", name="first")
    second, again, _ = generate(
        tmp_path,
        "--desk",
        "D-2",
        "--desk",
        "D-1",
        "--keep-passwords",
        str(tmp_path / "first.tsv"),
        name="second",
    )
    assert again == passwords

    def without_hashes(document: Any) -> Any:
        return {**document, "users": [{**u, "password_hash": None} for u in document["users"]]}

    assert without_hashes(second) == without_hashes(first)
    _third, renewed, _ = generate(tmp_path, "--desk", "D-1", "--desk", "D-2", name="third")
    assert set(renewed.values()).isdisjoint(passwords.values())  # without --keep-passwords: new ones


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--desk", "D 1 x"], "Error: --desk: 'D 1 x' is not a desk id ([A-Za-z0-9_-], up to 64)"),
        (["--desk", "D.1"], "Error: --desk: 'D.1' is not a desk id"),
        ([], "Error: no desks: give --desk DESK (repeatable) or --desks-file FILE"),
    ],
)
def test_bad_desks_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["access", "definitions", "--password-file", str(tmp_path / "p.tsv"), *argv],
        env={"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")},
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1
