"""Consumer plugins: the example package installed and run end to end; a broken one beside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar, NamedTuple

import pytest

from bridge.config import Settings
from bridge.transport import Broker
from tests.conftest import Service, run_cli, start_service, wait_until
from tests.test_consumers_integration import call_message, send

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def pip(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def installed_here() -> str:
    """What this test environment has installed (pip's own view)."""
    return pip("list", "--format=freeze")


class Plugins(NamedTuple):
    target: Path  # where they are installed
    before: str  # pip list of this environment before they were


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Plugins:
    """The example plugin, and a broken one, pip-installed into a directory of their own (--target).

    Never into the environment the tests run in: the commands under test find them through
    PYTHONPATH (see plugin_env), and a user's own installed plugins are left alone.
    """
    broken = tmp_path_factory.mktemp("broken")
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tcx-broken-plugin"\nversion = "0.1.0"\n'
        '[project.entry-points."tcx_bridge.consumers"]\nbroken = "tcx_broken_plugin:Nope"\n'
        '[tool.setuptools]\npackages = ["tcx_broken_plugin"]\n'
    )
    (broken / "tcx_broken_plugin").mkdir()
    (broken / "tcx_broken_plugin" / "__init__.py").write_text("import missing_dependency_of_this_plugin\n")
    before = installed_here()
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    (build / "plugin").mkdir()
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT / "examples" / "plugin", build / "plugin", dirs_exist_ok=True)
    pip(
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(build / "plugin"),
        str(broken),
    )
    return Plugins(target, before)


@pytest.fixture
def plugin_env(plugins: Plugins, env: dict[str, str]) -> dict[str, str]:
    """The test's environment, with the plugins' directory on PYTHONPATH."""
    path = [str(plugins.target), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(part for part in path if part)}


def test_the_plugins_are_installed_beside_this_environment_not_into_it(
    plugins: Plugins, plugin_env: dict[str, str]
) -> None:
    assert installed_here() == plugins.before  # pip list unchanged
    assert {path.name.split("-")[0] for path in plugins.target.glob("*.dist-info")} >= {
        "tcx_missed_calls",
        "tcx_broken_plugin",
    }
    done = run_cli(plugin_env, "consume", "--list")
    assert "missed-calls" in done.stdout


class Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Webhook.received.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/missed"
    server.shutdown()


def test_consume_list_shows_plugins_with_their_package_and_a_broken_one_in_one_line(
    plugin_env: dict[str, str],
) -> None:
    done = run_cli(plugin_env, "consume", "--list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert {"crm", "analytics", "missed-calls", "broken"} <= set(lines)
    assert lines["missed-calls"].split()[1:3] == ["tcx-missed-calls", "1.0.0"]
    assert (
        "BROKEN: consumer 'broken' from tcx-broken-plugin 0.1.0 cannot be loaded: ModuleNotFoundError"
        in lines["broken"]
    )
    assert "Error" not in lines["crm"]
    failed = run_cli(plugin_env, "consume", "broken")
    assert failed.returncode == 1
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: consumer 'broken' from tcx-broken-plugin 0.1.0")
    )


def test_the_example_plugin_posts_missed_calls_only(
    plugin_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
    webhook: str,
) -> None:
    contacts = Path(plugin_env["TCX_BRIDGE_DATA_DIR"]).parent / "c.csv"
    contacts.write_text("Name;Telefon\nAnna Muster;079 123 45 67\n")
    assert run_cli(plugin_env, "contacts", "import", str(contacts)).returncode == 0
    hooked = {**plugin_env, "TCX_MISSED_CALLS_WEBHOOK": webhook}
    start_service(services, hooked, broker, settings.queue("missed-calls"), "consume", "missed-calls")
    t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    sec = timedelta(seconds=1)
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "known", t0, "0791234567"),
        call_message(settings, "ended", "inbound", "known", t0 + 20 * sec),
        call_message(settings, "started", "inbound", "talked", t0, "0441112233"),
        call_message(settings, "connected", "inbound", "talked", t0 + 5 * sec),
        call_message(settings, "ended", "inbound", "talked", t0 + 60 * sec),
        call_message(settings, "ended", "inbound", "stranger", t0 + 9 * sec),  # out of order: E before S
        call_message(settings, "started", "inbound", "stranger", t0, "0319876543"),
    )
    wait_until(lambda: len(Webhook.received) == 2)
    texts = sorted(message["text"] for message in Webhook.received)
    assert texts == [
        f"Missed call on {settings.desk} from +41319876543 at 2026-11-02T09:00:00.000000Z",
        f"Missed call on {settings.desk} from Anna Muster (+41791234567) at 2026-11-02T09:00:00.000000Z",
    ]
