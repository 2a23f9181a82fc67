"""``tcx-bridge access definitions``: the broker users and rights of the whole bridge (bridge.access).

Registered on the group in cli.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from bridge.clikit import with_settings
from bridge.config import Settings
from bridge.errors import ConfigError, StoreError, path_problem


@click.group("access")
def access() -> None:
    """Least privilege on the broker: one user per desk and per service, each with only what it does."""


@access.command("definitions")
@click.option("--desk", "desks", multiple=True, help="A desk (repeatable): DESK, or DESK,EXTENSION.")
@click.option(
    "--desks-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Desks, one per line (DESK or DESK,EXTENSION; # comments).",
)
@click.option("--vhost", default="/", show_default=True, help="The virtual host the rights are for.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where the clear passwords go (mode 0600, lines user<TAB>password); never stdout.",
)
@click.option(
    "--keep-passwords",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A password file from an earlier run: its users keep their passwords.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the document here (default: stdout).",
)
@with_settings
def definitions_command(
    settings: Settings,
    desks: tuple[str, ...],
    desks_file: Path | None,
    vhost: str,
    password_file: Path,
    keep_passwords: Path | None,
    output: Path | None,
) -> None:
    """Write a RabbitMQ definitions document: a user per desk (desk-<desk>) and per service.

    Import it with `rabbitmqctl import_definitions FILE` or the management UI,
    then give each process its own user in amqp_url. Passwords are stored as
    salted SHA-256 hashes; the clear ones go to --password-file only.

    \b
    Example:
        tcx-bridge access definitions --desks-file desks.txt --password-file secrets.tsv -o rabbit.json
        rabbitmqctl import_definitions rabbit.json
    """
    from bridge.access import SERVICES, definitions, parse_desk, read_desks, read_passwords

    found = [parse_desk(text) for text in desks]
    if desks_file is not None:
        found += read_desks(_read(desks_file).splitlines(), str(desks_file))
    if not found:
        raise ConfigError("no desks: give --desk DESK (repeatable) or --desks-file FILE")
    kept = read_passwords(_read(keep_passwords).splitlines()) if keep_passwords else {}
    document, passwords = definitions(settings, found, vhost, kept)
    text = json.dumps(document, indent=2) + "\n"
    _write_secret(password_file, "".join(f"{user}\t{password}\n" for user, password in passwords.items()))
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as error:
            raise StoreError(path_problem(error, output)) from None
    click.echo(
        f"{len(passwords)} users ({len(passwords) - len(SERVICES)} desks); "
        f"passwords in {password_file} (keep it secret)",
        err=True,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise StoreError(path_problem(error, path)) from None


def _write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the start, not chmod'ed after)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    except OSError as error:
        raise StoreError(path_problem(error, path)) from None


COMMANDS = (access,)
