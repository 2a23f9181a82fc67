"""The stand-in 3CX Assistant: its help, and what it records."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def fake_assistant(*argv: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    found = shutil.which("tcx-bridge-fake-assistant", path=str(Path(sys.executable).parent))
    command = [found] if found else [sys.executable, "-m", "bridge.fake_assistant"]
    config = data_dir / "config.toml"
    config.write_text("")
    return subprocess.run(
        [*command, *argv],
        env={
            "PATH": "/usr/bin:/bin",
            "TCX_BRIDGE_DATA_DIR": str(data_dir),
            "TCX_BRIDGE_CONFIG": str(config),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_records_nothing(tmp_path: Path, flag: str) -> None:
    done = fake_assistant(flag, data_dir=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0] == "usage: tcx-bridge-fake-assistant -cmd makecall:NUMBER"
    assert "TCX_FAKE_ASSISTANT_FAIL=1" in done.stdout
    assert not (tmp_path / "fake-assistant.log").exists()


def test_other_arguments_are_recorded(tmp_path: Path) -> None:
    done = fake_assistant("-popup", "x", data_dir=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (tmp_path / "fake-assistant.log").read_text() == '["-popup", "x"]\n'
