"""Nothing accepted that a consumer will refuse: each edge input, from where it enters to a consumer.

A launch ends recorded by the analytics consumer, or as one ``LOST`` line (exit 1);
a setting the consumers would refuse is refused where it enters, with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.outbox import Outbox
from bridge.transport import Broker
from tests.conftest import Service, Tap, run_cli, run_notify, wait_until
from tests.test_consumers_integration import analytics_rows

pytestmark = pytest.mark.integration

LONG_DESK = "d" * 65


def notify_log(settings: Settings) -> str:
    return (Path(settings.log_dir) / "notify.log").read_text(encoding="utf-8")


def dead(broker: Broker, settings: Settings, name: str) -> int:
    info = broker.queue_info(settings.dead_queue(name))
    return info[0] if info else 0


@pytest.mark.parametrize(
    ("bad_desk", "problem", "kept_for"),
    [
        (
            LONG_DESK,
            f"'{LONG_DESK}' has 65 characters, over the maximum of 64; give a shorter desk id",
            "d" * 64,
        ),
        (
            "desk 7.corp",
            "'desk 7.corp' holds ' .', not allowed in a desk id; use only A-Za-z0-9_- (e.g. 'desk7corp')",
            "desk7corp",
        ),
    ],
)
def test_a_desk_id_the_consumers_would_refuse_is_refused_where_it_enters(
    env: dict[str, str], settings: Settings, bad_desk: str, problem: str, kept_for: str
) -> None:
    bad = {**env, "TCX_BRIDGE_DESK": bad_desk}
    line = f"TCX_BRIDGE_DESK: {problem}"
    for command in (["config"], ["doctor"], ["agent"]):
        done = run_cli(bad, *command, timeout=30)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [f"Error: {line}"], command
    launch = run_notify(bad, "/N:S", "/C:0791234567", "/T:I", "/I:desk")
    assert launch.returncode == 0  # the event is safe in the outbox, not published to be dead-lettered
    assert launch.stderr.strip().splitlines() == [
        f"tcx-bridge-notify: configuration error: {line}; the event is kept in the outbox until that is fixed"
    ]
    outbox = Outbox(settings.outbox_dir)
    [path] = outbox.paths()
    kept = outbox.load(path)
    assert kept.routing_key == f"call.started.inbound.{kept_for}"  # the desk meant, reduced as before
    assert json.loads(kept.body)["desk"] == kept_for


def test_a_launch_with_a_120kb_stray_argument_is_recorded(
    env: dict[str, str], settings: Settings, analytics: Service, broker: Broker, events_tap: Tap
) -> None:
    """The stray argument is dropped (a warning in the log) so that the consumers take the event."""
    done = run_notify(env, "/N:S", "/C:0791234567", "/T:I", "/I:stray", "x" * 120_000, "/X:unknown")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    delivery = events_tap.get()
    assert delivery is not None
    assert len(delivery.body) < 1000
    assert json.loads(delivery.body)["argv"] == ["/N:S", "/C:0791234567", "/T:I", "/I:stray"]
    wait_until(lambda: [row["call_id"] for row in analytics_rows(settings)] == ["stray"])
    assert analytics_rows(settings)[0]["caller_id"] == "0791234567"
    assert dead(broker, settings, "analytics") == 0
    assert (
        "dropped 2 stray argument(s) of 120010 characters (beyond /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId) "
        "to keep the event within the 65536 bytes a consumer takes"
    ) in notify_log(settings)


def test_a_launch_too_big_even_without_stray_arguments_is_one_lost_line(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    """A 100 KB call id: an invalid launch that no consumer would take, so neither published nor stored."""
    done = run_notify(env, "/N:S", "/T:I", "/I:" + "9" * 100_000)
    assert done.returncode == 1
    lost = [line for line in done.stderr.splitlines() if line.startswith("LOST ")]
    assert len(lost) == 1
    assert f"(call.invalid.{settings.desk}: the event has 200" in lost[0]  # the call id is in it twice
    assert lost[0].endswith(" bytes, over the 65536 a consumer takes, even without stray arguments)")
    assert "Traceback" not in done.stderr
    assert Outbox(settings.outbox_dir).paths() == []
    assert events_tap.get(timeout=0.5) is None


def test_bytes_that_are_not_utf8_are_recorded_escaped(
    env: dict[str, str], settings: Settings, analytics: Service, broker: Broker
) -> None:
    """$'/C:\\xff' and a call id with a stray byte: stored as the text \\xff, no traceback."""
    # subprocess passes a lone surrogate as the byte it stands for (os.fsencode), as a shell would pass \xff
    done = run_notify(env, "/N:S", "/C:\udcff", "/T:I", "/I:utf8-\udcfe", "stray\udc80")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    wait_until(lambda: len(analytics_rows(settings)) == 1)
    row = analytics_rows(settings)[0]
    assert (row["call_id"], row["caller_id"]) == ("utf8-\\xfe", "\\xff")
    log = notify_log(settings)
    assert "argument 2 '/C:\\\\xff' holds bytes that are not UTF-8; kept escaped" in log
    assert "argument 5 'stray\\\\x80' holds bytes that are not UTF-8; kept escaped" in log
    assert dead(broker, settings, "analytics") == 0


def test_a_zero_width_character_is_recorded_and_shown_visibly(
    env: dict[str, str], settings: Settings, analytics: Service
) -> None:
    done = run_notify(env, "/N:S", "/C:079 123\u200b45 67", "/T:I", "/I:zw")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(analytics_rows(settings)) == 1)
    assert analytics_rows(settings)[0]["caller_id"] == "079 123\u200b45 67"  # stored as given
    report = run_cli(env, "report", "--calls", "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert "079 123\\u200b45 67" in report.stdout
    assert "\u200b" not in report.stdout


def test_a_right_to_left_override_in_a_caller_id_is_an_invalid_launch_shown_visibly(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    """Control characters in an id make the launch invalid (the audit trail keeps it); never shown raw."""
    done = run_notify(env, "/N:S", "/C:\u202e7654321970", "/T:I", "/I:rtl")
    assert done.returncode == 2
    assert "caller id /C: '\\u202e7654321970' holds control characters" in done.stderr
    assert "\u202e" not in done.stderr
    assert "\u202e" not in notify_log(settings)
    delivery = events_tap.get()
    assert delivery is not None
    assert delivery.routing_key == f"call.invalid.{settings.desk}"
    assert json.loads(delivery.body)["caller_id"] == "\u202e7654321970"


def test_a_ca_file_that_is_not_pem_is_one_line_for_notify_and_consumers(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.der"
    ca.write_bytes(bytes(range(256)))
    tls = {
        **env,
        "TCX_BRIDGE_AMQP_URL": "amqps://guest:guest@127.0.0.1:5671/%2F",
        "TCX_BRIDGE_CA_FILE": str(ca),
    }
    line = (
        f"CA file {str(ca)!r} is not a PEM CA bundle (NO_CERTIFICATE_OR_CRL_FOUND); set ca_file to a file of "
        "-----BEGIN CERTIFICATE----- blocks (convert DER with openssl x509 -inform der)"
    )
    launch = run_notify(tls, "/N:S", "/C:0791234567", "/T:I", "/I:ca")
    assert launch.returncode == 0
    assert launch.stderr.strip().splitlines() == [
        f"tcx-bridge-notify: {line}; the event is kept in the outbox until that is fixed"
    ]
    assert len(Outbox(settings.outbox_dir).paths()) == 1
    for command in (["consume", "analytics"], ["agent"]):
        done = run_cli(tls, *command, timeout=30)
        assert done.returncode == 1, command
        assert done.stderr.strip().splitlines()[-1] == f"Error: {line}", command
        assert "Traceback" not in done.stderr
