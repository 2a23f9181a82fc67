"""What a new desk and a new admin run into: file-system problems, hand-run notify, config as people write it."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, run_notify

DATA = Path(__file__).parent / "data"
PROBLEM = "is (or lies under) a file where a directory must be; fix it or point TCX_BRIDGE_DATA_DIR at a writable directory"


@pytest.fixture
def broken_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A data dir under a regular file: every store and the outbox are impossible."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return {**env, "TCX_BRIDGE_DATA_DIR": str(blocker / "data")}


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [
        ["spool", "list"],
        ["spool", "flush"],
        ["report"],
        ["report", "--calls"],
        ["journal"],
        ["contacts", "import", str(DATA / "two-phones.csv")],
        ["contacts", "list"],
        ["consume", "analytics"],
        ["consume", "crm"],
        ["agent"],
    ],
)
def test_a_data_dir_that_cannot_be_used_is_one_line_per_command(
    broken_env: dict[str, str], command: list[str]
) -> None:
    done = run_cli(broken_env, *command, timeout=30)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: '"), done.stderr
    assert last.endswith(PROBLEM), done.stderr


@pytest.mark.parametrize("flag", ["--help", "-h", "/?"])
def test_notify_help_prints_usage_and_publishes_nothing(
    env: dict[str, str], flag: str, tmp_path: Path
) -> None:
    done = run_notify({**env, "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}, flag)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tcx-bridge-notify /N:S|C|E")
    assert not (Path(env["TCX_BRIDGE_DATA_DIR"]) / "outbox").exists()  # nothing kept either


@pytest.mark.integration
def test_a_hand_run_notify_with_a_wrong_password_says_so_and_keeps_the_event(
    env: dict[str, str], broker_url: str
) -> None:
    wrong = {**env, "TCX_BRIDGE_AMQP_URL": broker_url.replace("guest:guest", "guest:wrong")}
    done = run_notify(wrong, "/N:S", "/C:0791234567", "/T:I", "/I:1")
    assert done.returncode == 0  # the event is safe in the outbox
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "the broker refused the login (ACCESS_REFUSED)" in lines[0]
    assert lines[0].endswith("the event is kept in the outbox until that is fixed")
    assert len(list((Path(env["TCX_BRIDGE_DATA_DIR"]) / "outbox").glob("*.json"))) == 1


def test_a_config_file_saved_by_notepad_with_a_bom_is_read(env: dict[str, str]) -> None:
    Path(env["TCX_BRIDGE_CONFIG"]).write_bytes('\ufeffdesk = "DESK-07"\n'.encode())
    done = run_cli({k: v for k, v in env.items() if k != "TCX_BRIDGE_DESK"}, "config")
    assert done.returncode == 0, done.stderr
    assert "DESK-07" in done.stdout


def test_an_unknown_region_fails_config(env: dict[str, str]) -> None:
    done = run_cli({**env, "TCX_BRIDGE_REGION": "XX"}, "config")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: region: 'XX' is not a region phonenumbers knows; use a two-letter country code such as "
        "CH, DE, AT, FR, IT or GB (TCX_BRIDGE_REGION)"
    )


@pytest.mark.integration
def test_root_desk_flag_counts_for_dial(env: dict[str, str], settings: object) -> None:
    from bridge.config import Settings

    assert isinstance(settings, Settings)
    environ = {k: v for k, v in env.items() if k != "TCX_BRIDGE_DESK"}
    done = run_cli(environ, "--desk", "nobody-here", "dial", "123")
    assert "give exactly one" not in done.stderr
    assert done.stderr.strip().startswith("Error: no desk agent listens for 'desk.nobody-here.dial'")


def test_contacts_lookup_shows_the_normalisation_and_the_contact(env: dict[str, str]) -> None:
    assert run_cli(env, "contacts", "import", str(DATA / "german-cp1252.csv")).returncode == 0
    done = run_cli(env, "contacts", "lookup", "044 111 22 33")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        "number   '044 111 22 33' -> external +41441112233",
        "name     Jürg Müller",
    ]
    unknown = run_cli(env, "contacts", "lookup", "079 000 00 00")
    assert unknown.returncode == 1
    assert "no contact for +41790000000" in unknown.stderr
    listed = run_cli(env, "contacts", "list", "--format", "csv")
    assert listed.stdout.splitlines()[0] == "key,name,phone,e164,company,email,url"
    assert len(listed.stdout.splitlines()) == 3


@pytest.fixture
def desk_env(env: dict[str, str], fake_assistant: object, broker: object) -> dict[str, str]:
    """A desk set up right: the topology declared, an Assistant executable."""
    from tests.conftest import FakeAssistant

    assert isinstance(fake_assistant, FakeAssistant)
    ready = {**env, "TCX_BRIDGE_ASSISTANT": str(fake_assistant.path)}
    assert run_cli(ready, "topology", "declare").returncode == 0
    return ready


@pytest.mark.integration
def test_doctor_on_a_good_desk_passes(desk_env: dict[str, str]) -> None:
    done = run_cli(desk_env, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(line.startswith("\u2713 ") for line in lines), lines
    assert any('"Call CRM Executable" box: ' in line and "tcx-bridge-notifyw" in line for line in lines)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"TCX_BRIDGE_AMQP_URL": "wrong-password"}, "the broker refused the login (ACCESS_REFUSED)"),
        (
            {"TCX_BRIDGE_EXCHANGE": "no-such-exchange"},
            "the events exchange 'no-such-exchange' does not exist",
        ),
        ({"TCX_BRIDGE_DATA_DIR": "under-a-file"}, "is not usable"),
        (
            {"TCX_BRIDGE_ASSISTANT_PROCESS": "no-such-assistant.exe"},
            "process no-such-assistant.exe is not running",
        ),
        # named even while amqp_url does not use TLS yet
        ({"TCX_BRIDGE_CA_FILE": "not-pem"}, "is not a PEM CA bundle (NO_CERTIFICATE_OR_CRL_FOUND)"),
    ],
)
def test_doctor_names_what_is_wrong(
    desk_env: dict[str, str], broker_url: str, tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    environ = dict(desk_env)
    for key, value in change.items():
        if value == "wrong-password":
            value = broker_url.replace("guest:guest", "guest:wrong")
        if value == "not-pem":
            (tmp_path / "ca.der").write_bytes(bytes(range(256)))
            value = str(tmp_path / "ca.der")
        if value == "under-a-file":
            (tmp_path / "blocker").write_text("x")
            value = str(tmp_path / "blocker" / "data")
        environ[key] = value
    done = run_cli(environ, "doctor")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("\u2717 ")]
    assert len(failed) == 1, done.stdout
    assert expected in failed[0]
    assert " -> " in failed[0]  # with the fix
    assert done.stderr.strip().endswith("Error: 1 check(s) failed")


@pytest.mark.integration
@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_doctor_fails_each_directory_other_users_may_write_to(desk_env: dict[str, str]) -> None:
    data = Path(desk_env["TCX_BRIDGE_DATA_DIR"])
    for name, mode in (("outbox", 0o733), ("agent", 0o775)):  # anyone may drop a file in them
        (data / name).mkdir(parents=True, exist_ok=True)
        os.chmod(data / name, mode)
    done = run_cli(desk_env, "doctor")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("\u2717 ")]
    assert failed == [
        f"\u2717 other users may write to {data / 'outbox'} (mode 733): they could put files there that "
        f"this desk takes as its own -> chmod go-w {data / 'outbox'}",
        f"\u2717 other users may write to {data / 'agent'} (mode 775): they could put files there that "
        f"this desk takes as its own -> chmod go-w {data / 'agent'}",
    ], done.stdout
    for name in ("outbox", "agent"):
        os.chmod(data / name, 0o700)
    done = run_cli(desk_env, "doctor")
    assert done.returncode == 0, done.stdout
    assert f"\u2713 only this user may write to {data}, its outbox and its agent directory" in done.stdout


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="gives a file to another user")
def test_doctor_fails_an_outbox_file_another_user_left(desk_env: dict[str, str]) -> None:
    data = Path(desk_env["TCX_BRIDGE_DATA_DIR"])
    (data / "outbox").mkdir(parents=True, exist_ok=True)
    planted = data / "outbox" / "20261201T070000.000000Z-planted.json"
    planted.write_text("{}")
    os.chown(planted, 65534, 65534)  # nobody's, left while the outbox was open to all
    done = run_cli(desk_env, "doctor")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("\u2717 ")]
    assert len(failed) == 1, done.stdout
    assert f"1 file(s) in the outbox belong to another user (the first: {planted.name})" in failed[0]


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A TLS server of the test's own on 127.0.0.1 with a certificate for localhost: (port, its CA, another CA).

    The handshake is all doctor reaches: the certificate is refused before any AMQP is spoken.
    """
    from tests.test_access_integration import make_ca, make_server_cert

    ca = make_ca(tmp_path / "ca", "tcx test CA")
    other = make_ca(tmp_path / "other", "someone else's CA")
    cert, key = make_server_cert(ca, tmp_path / "ca", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(client, server_side=True):
                pass  # the client refuses the certificate during the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], ca, other
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize(
    ("case", "fix"),
    [
        ("wrong host", "put the host name the broker's certificate was issued for in amqp_url"),
        ("unknown CA", "set ca_file (TCX_BRIDGE_CA_FILE) to the CA that issued the broker's certificate"),
    ],
)
def test_doctor_hints_at_the_tls_host_or_ca_not_the_login(
    env: dict[str, str], tls_listener: tuple[int, Path, Path], case: str, fix: str
) -> None:
    port, ca, other = tls_listener
    environ = {
        **env,
        "TCX_BRIDGE_AMQP_URL": f"amqps://guest:guest@127.0.0.1:{port}/%2F",  # the certificate says localhost
        "TCX_BRIDGE_CA_FILE": str(ca if case == "wrong host" else other),
    }
    done = run_cli(environ, "doctor")
    line = next(line for line in done.stdout.splitlines() if line.startswith("\u2717 broker "))
    assert "TLS certificate" in line
    assert line.endswith(f" -> {fix}")
    assert "user, password or vhost" not in line
