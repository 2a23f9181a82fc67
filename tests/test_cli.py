"""The tcx-bridge command group: config, spool, error lines."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.clikit import SettingOption
from bridge.outbox import Outbox
from bridge.transport import OutgoingMessage


@pytest.fixture(autouse=True)
def root_log_formatters() -> Iterator[None]:
    """CliRunner runs the group in this process: a --log-format json must not outlive its test
    (it sets the JsonFormatter on the root's handlers, pytest's capturing ones included)."""
    handlers = [(handler, handler.formatter) for handler in logging.getLogger().handlers]
    yield
    for handler, formatter in handlers:
        handler.setFormatter(formatter)


def runner_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text('desk = "file-desk"\n')
    return {"TCX_BRIDGE_CONFIG": str(config), "TCX_BRIDGE_DATA_DIR": str(tmp_path / "data"), **extra}


def test_config_shows_values_sources_and_masks_the_password(tmp_path: Path) -> None:
    env = runner_env(tmp_path, TCX_BRIDGE_AMQP_URL="amqp://bob:hunter2@mq:5672/%2F")
    result = CliRunner().invoke(cli, ["--extension", "204", "config"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["amqp_url"].split()[1:] == [
        "TCX_BRIDGE_AMQP_URL",
        "amqp://bob:****@mq:5672/%2F",
        "(env",
        "TCX_BRIDGE_AMQP_URL)",
    ]
    assert lines["desk"].endswith(f"file-desk  (file {tmp_path / 'config.toml'})")
    assert lines["extension"].endswith("204  (flag)")
    assert lines["publish_budget"].endswith("3.0  (default)")


def test_bad_setting_is_one_error_line(tmp_path: Path) -> None:
    env = runner_env(tmp_path, TCX_BRIDGE_PREFETCH="many")
    result = CliRunner().invoke(cli, ["config"], env=env)
    assert result.exit_code == 1
    assert result.output == "Error: TCX_BRIDGE_PREFETCH: 'many' is not a number; give e.g. 2\n"


def test_spool_list_shows_outboxed_events_oldest_first(tmp_path: Path) -> None:
    env = runner_env(tmp_path)
    outbox = Outbox(tmp_path / "data" / "outbox")
    for n in (1, 2):
        outbox.put(OutgoingMessage(f"call.ended.inbound.d{n}", b"{}", f"id-{n}", "call.ended", 0))
    result = CliRunner().invoke(cli, ["spool", "list"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["call.ended.inbound.d1", "call.ended.inbound.d2"]
    assert lines[2] == f"2 event(s) in {tmp_path / 'data' / 'outbox'}"


def test_spool_flush_with_the_broker_down_is_one_error_line(tmp_path: Path) -> None:
    env = runner_env(tmp_path, TCX_BRIDGE_AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F")
    Outbox(tmp_path / "data" / "outbox").put(
        OutgoingMessage("call.ended.inbound.d", b"{}", "id", "call.ended", 0)
    )
    result = CliRunner().invoke(cli, ["spool", "flush"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: connect to 127.0.0.1:1: the broker cannot be reached (")
    assert len(result.output.splitlines()) == 1
    assert len(Outbox(tmp_path / "data" / "outbox").paths()) == 1


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        assert command is not None
        if isinstance(command, click.Group):
            found += _leaves(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


SETTING_FLAGS = [
    opt
    for param in cli.params
    if isinstance(param, SettingOption)
    for opt in param.opts
    if opt.startswith("--")
]


def test_every_command_lists_the_root_setting_flags_in_its_help(tmp_path: Path) -> None:
    """Each root setting flag is in each command's --help, unless the command has its own of that name."""
    assert len(SETTING_FLAGS) == 9
    leaves = _leaves(cli)
    assert len(leaves) > 15
    for path, command in leaves:
        result = CliRunner().invoke(cli, [*path, "--help"], env=runner_env(tmp_path))
        assert result.exit_code == 0, result.output
        own = {
            opt for param in command.params if not param.name.startswith("setting__") for opt in param.opts
        }  # type: ignore[union-attr]
        if path == ("schema",):
            assert not any(flag in result.output for flag in SETTING_FLAGS)  # it reads no settings
            continue
        for flag in SETTING_FLAGS:
            assert f"  {flag} " in result.output or flag in own, (path, flag)


@pytest.mark.parametrize(
    ("flag", "value", "setting", "shown"),
    [
        ("--amqp-url", "amqp://u:secret@mq:5672/%2F", "amqp_url", "amqp://u:****@mq:5672/%2F"),
        ("--namespace", "acme", "namespace", "acme"),
        ("--exchange", "acme.events", "exchange", "acme.events"),
        ("--desk", "DESK-07", "desk", "DESK-07"),
        ("--extension", "107", "extension", "107"),
        ("--data-dir", "/srv/tcx", "data_dir", "/srv/tcx"),
        ("--store-url", "postgresql://app@db/tcx", "store_url", "postgresql://app@db/tcx"),
        ("--metrics-port", "9464", "metrics_port", "9464"),
        ("--log-format", "json", "log_format", "json"),
    ],
)
def test_a_setting_flag_after_the_command_sets_it(
    tmp_path: Path, flag: str, value: str, setting: str, shown: str
) -> None:
    env = runner_env(tmp_path)
    after = CliRunner().invoke(cli, ["config", flag, value], env=env)
    before = CliRunner().invoke(cli, [flag, value, "config"], env=env)
    assert after.exit_code == 0, after.output
    lines = {line.split()[0]: line for line in after.output.splitlines() if line[:1].isalpha()}
    assert lines[setting].endswith(f"  {shown}  (flag)")
    assert after.output == before.output
    both = CliRunner().invoke(cli, [flag, value, "config", flag, value], env=env)
    assert both.output == before.output  # the same value twice is fine


def test_a_setting_given_before_and_after_the_command_differently_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--namespace", "a", "spool", "list", "--namespace", "b"], env=runner_env(tmp_path)
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: --namespace is given twice: 'a' before 'list' and 'b' after it; give it once"
    )
    result = CliRunner().invoke(
        cli, ["--metrics-port", "9464", "agent", "--metrics-port", "9465"], env=runner_env(tmp_path)
    )
    assert result.output.splitlines()[-1] == (
        "Error: --metrics-port is given twice: 9464 before 'agent' and 9465 after it; give it once"
    )


def test_a_command_keeps_its_own_option_of_a_root_flags_name(tmp_path: Path) -> None:
    """dial --desk is the desk that dials; report --desk filters (repeatable): not the root's --desk."""
    result = CliRunner().invoke(cli, ["report", "--help"], env=runner_env(tmp_path))
    assert re.search(r"--desk TEXT +Only this desk \(repeatable\)\.", result.output)
    assert result.output.count("  --desk ") == 1


def test_access_definitions_takes_the_namespace_after_the_command(tmp_path: Path) -> None:
    """The issue's own example: `access definitions --namespace x` (before: No such option)."""
    document = tmp_path / "definitions.json"
    result = CliRunner().invoke(
        cli,
        ["access", "definitions", "--namespace", "acme", "--desk", "D-1", "--password-file",
         str(tmp_path / "pw.tsv"), "-o", str(document)],
        env=runner_env(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    permissions = json.loads(document.read_text())["permissions"]
    patterns = " ".join(permission["write"] + permission["read"] for permission in permissions)
    assert "acme" in patterns
    assert "tcx" not in patterns.replace("tcx-", "")  # user names keep their tcx- prefix; no tcx. namespace


def test_topology_refuses_a_desk_id_no_agent_could_have(tmp_path: Path) -> None:
    """Checked before any broker is reached: exit 2, the value named."""
    for command in ("declare", "show"):
        result = CliRunner().invoke(
            cli, ["topology", command, "--desk", "DESK-07", "--desk", "desk 7.corp"], env=runner_env(tmp_path)
        )
        assert result.exit_code == 2
        assert result.output.strip().splitlines()[-1] == (
            "Error: Invalid value for '--desk': 'desk 7.corp' holds ' .', not allowed in a desk id; "
            "use only A-Za-z0-9_-"
        )
