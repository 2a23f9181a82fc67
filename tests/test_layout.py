"""The house plan: imports run one way, and commands are found like consumers (issue 21)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import script

ROOT = Path(__file__).parent.parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, lazily or not, with its line: absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_the_wire_imports_nothing_of_the_consumers() -> None:
    """bridge/ (the wire, notify's lean path, the root CLI) never imports consumers/, not even lazily."""
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "bridge").rglob("*.py"))
        for line, name in imported_modules(path)
        if name == "consumers" or name.startswith("consumers.")
    ]
    assert upward == []


LOWER = {  # a part -> the parts of consumers/ it may import (besides bridge/ and consumers.numbers)
    "runtime": {"runtime", "privacy", "store"},
    "privacy": {"privacy", "store"},
    "store": {"store"},
    "analytics": {"analytics", "privacy", "runtime", "store"},
    "crm": {"crm", "analytics", "runtime", "store"},
    "wallboard": {"wallboard", "analytics", "crm", "runtime", "store"},  # crm: the contacts' names
    "agent": {"agent", "analytics", "privacy", "runtime", "store"},
    "callbacks": {
        "callbacks",
        "wallboard",
        "analytics",
        "runtime",
        "store",
    },  # wallboard: desk states, its page
    "webhooks": {"webhooks", "runtime"},
}


def test_lower_floors_know_nothing_of_upper_ones() -> None:
    """The runtime knows no consumer, the store no consumer's module; consumers not the tools nor the CLI."""
    wrong = []
    for part, allowed in LOWER.items():
        for path in sorted((ROOT / "consumers" / part).rglob("*.py")):
            for line, name in imported_modules(path):
                pieces = name.split(".")
                if pieces[0] != "consumers" or len(pieces) < 2 or pieces[1] in ("numbers", ""):
                    continue
                if pieces[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert wrong == []


def test_help_lists_the_commands_registered_by_entry_points(tmp_path: Path) -> None:
    """A third-party package adds a command the way consumers/ does; a broken one is one line."""
    site = tmp_path / "site"
    info = site / "tcx_extra-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tcx-extra\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tcx_bridge.commands]\nhello = tcx_extra_cmd:hello\nbroken = tcx_extra_missing:nothing\n"
    )
    (site / "tcx_extra_cmd.py").write_text(
        "import click\n\n"
        "@click.command('hello')\n"
        "@click.argument('who')\n"
        "def hello(who):\n"
        "    '''Say hello (an example command of a plugin package).'''\n"
        "    click.echo(f'hello {who}')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*script("tcx-bridge"), *argv], env=env, capture_output=True, text=True, timeout=60
        )

    listed = run("--help")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.split("Commands:")[1].splitlines() if line.strip()]
    for name in ("consume", "agent", "wallboard", "contacts", "report", "journal", "store", "doctor", "demo"):
        assert name in names, name  # registered by this project's own pyproject.toml
    assert {"hello", "broken", "config", "dial", "spool", "topology", "access"} <= set(names)
    assert "BROKEN: command 'broken' from tcx-extra 1.0" in listed.stdout
    assert run("hello", "world").stdout == "hello world\n"
    broken = run("broken", "--anything")
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines() == [
        "Error: command 'broken' from tcx-extra 1.0 cannot be loaded: ModuleNotFoundError: "
        "No module named 'tcx_extra_missing'"
    ]
    assert run("config").returncode == 0  # the rest still work


def python_files() -> list[Path]:
    return sorted(path for part in ("bridge", "consumers") for path in (ROOT / part).rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in python_files() if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_no_function_over_60_lines_without_a_reason() -> None:
    """A longer function says why in its docstring (the word "long")."""
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60 and "long" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []
