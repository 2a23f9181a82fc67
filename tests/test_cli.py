"""The tcx-bridge command group: config, spool, error lines."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bridge.cli import cli
from bridge.outbox import Outbox
from bridge.transport import OutgoingMessage


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
