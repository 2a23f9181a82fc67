"""Secrets in URLs are masked everywhere they are shown: config, errors, logs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.redact import RedactingFilter, redact_text, redact_url
from tests.conftest import Service, run_notify, wait_until

SECRETS = ("hunter2", "s3cretpw", "other22", "k3yk3y", "t0k3n", "tok3ntok3ntok3ntok3n", "sig9sig9")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@localhost:5672/%2F", "amqp://guest:****@localhost:5672/%2F"),
        ("amqps://u:p%40ss@mq.example.com/vh", "amqps://u:****@mq.example.com/vh"),
        ("amqp://u:p@ss@mq/%2F", "amqp://u:****@mq/%2F"),  # an unencoded @ in the password
        ("amqp://u:pa/ss@mq/%2F", "amqp://u:****@mq/%2F"),  # an unencoded / in the password
        ("amqp://:hunter2@mq", "amqp://:****@mq"),  # no user, a password
        ("amqp://u:p@mq1/%2F,amqp://v:q@mq2/%2F", "amqp://u:****@mq1/%2F,amqp://v:****@mq2/%2F"),
        (
            "postgresql://app@db:5432/calls?password=s3cretpw&sslmode=require&sslpassword=other22",
            "postgresql://app@db:5432/calls?password=****&sslmode=require&sslpassword=****",
        ),
        (
            "postgresql://db/calls?PassWord=x;sslkey=/k.pem",
            "postgresql://db/calls?PassWord=****;sslkey=/k.pem",
        ),
        (
            "https://crm.example.com/api?phone={e164}&api_key=k3yk3y&token=t0k3n",
            "https://crm.example.com/api?phone={e164}&api_key=****&token=****",
        ),
        (
            "https://crm/j?client_secret=x&access-key=y&sig=z",
            "https://crm/j?client_secret=****&access-key=****&sig=****",
        ),
        ("https://crm/cb#access_token=t0k3n&state=1", "https://crm/cb#access_token=****&state=1"),
        ("https://crm/users/@me?x=1", "https://crm/users/@me?x=1"),  # an @ in the path is no userinfo
        ("https://crm:8443/users/@me", "https://crm:8443/users/@me"),
        ("amqp://mq.example.com/", "amqp://mq.example.com/"),  # nothing secret: unchanged
        ("https://crm/api?token=", "https://crm/api?token="),  # an empty value hides nothing
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_masks_every_url_and_quoted_secrets() -> None:
    text = "cannot reach 'amqp://u:hunter2@mq/%2F' nor postgresql://db/x?password=s3cretpw (pw s3cretpw)"
    assert redact_text(text, "postgresql://db/x?password=s3cretpw") == (
        "cannot reach 'amqp://u:****@mq/%2F' nor postgresql://db/x?password=**** (pw ****)"
    )


def test_redacting_filter_masks_the_message_and_its_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.redact")
    caplog.handler.addFilter(RedactingFilter())
    try:
        logger.warning("store %s: down", "postgresql://db/x?sslpassword=other22")
        try:
            raise RuntimeError("amqp://u:hunter2@mq")
        except RuntimeError:
            logger.exception("failed")
    finally:
        caplog.handler.filters.clear()
    assert caplog.records[0].getMessage() == "store postgresql://db/x?sslpassword=****: down"
    assert "hunter2" not in caplog.text
    assert "amqp://u:****@mq" in caplog.text


@pytest.fixture
def secret_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text("")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    return {
        **environ,
        "TCX_BRIDGE_CONFIG": str(tmp_path / "config.toml"),
        "TCX_BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "TCX_BRIDGE_AMQP_URL": "amqp://bob:hunter2@127.0.0.1:1/%2F",
        "TCX_BRIDGE_STORE_URL": "postgresql://app@db/calls?password=s3cretpw&sslpassword=other22",
        "TCX_BRIDGE_CRM_LOOKUP_URL": "https://crm.example.com/api?phone={e164}&api_key=k3yk3y",
        "TCX_BRIDGE_CRM_JOURNAL_URL": "https://crm.example.com/journal?token=t0k3n",
        "TCX_BRIDGE_POPUP_COMMAND": "crm-open https://crm.example.com/pop?sig=sig9sig9 -- {e164}",
        "TCX_BRIDGE_WALLBOARD_TOKEN": "tok3ntok3ntok3ntok3n",
    }


def test_config_masks_every_secret_of_every_url(secret_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["config"], env=secret_env)
    assert result.exit_code == 0, result.output
    assert not [secret for secret in SECRETS if secret in result.output]
    shown = {line.split()[0]: line.split()[2] for line in result.output.splitlines()}
    assert shown["amqp_url"] == "amqp://bob:****@127.0.0.1:1/%2F"
    assert shown["store_url"] == "postgresql://app@db/calls?password=****&sslpassword=****"
    assert shown["crm_lookup_url"] == "https://crm.example.com/api?phone={e164}&api_key=****"
    assert shown["crm_journal_url"] == "https://crm.example.com/journal?token=****"
    assert shown["wallboard_token"] == "****"
    assert "crm-open https://crm.example.com/pop?sig=**** -- {e164}" in result.output


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        (
            "TCX_BRIDGE_STORE_URL",
            "mysql://u:hunter2@db/x?password=s3cretpw",
            "Error: TCX_BRIDGE_STORE_URL: 'mysql://u:****@db/x?password=****' is not a PostgreSQL URL; "
            "use postgresql://user@host:5432/dbname, or leave it unset for the SQLite files in the data dir",
        ),
        (
            "TCX_BRIDGE_CRM_LOOKUP_URL",
            "ftp://crm/api?token=t0k3n",
            "Error: TCX_BRIDGE_CRM_LOOKUP_URL: 'ftp://crm/api?token=****' is not an http(s) URL template",
        ),
        (
            "TCX_BRIDGE_AMQP_URL",
            "amqp://u:pa/hunter2@mq/%2F",
            "Error: TCX_BRIDGE_AMQP_URL: 'amqp://u:****@mq/%2F' has a password with / ? or # in it; "
            "percent-encode them (%2F %3F %23); "
            "use amqp://user:password@host:5672/%2F or amqps://..., comma-separated for a cluster",
        ),
    ],
)
def test_config_errors_mask_the_secrets(secret_env: dict[str, str], key: str, value: str, error: str) -> None:
    result = CliRunner().invoke(cli, ["config"], env={**secret_env, key: value})
    assert result.exit_code == 1
    assert result.output.strip() == error


def test_notify_log_and_stderr_mask_the_secrets(secret_env: dict[str, str]) -> None:
    """A bad setting in the notify executable: one log line and stderr name it, with no secret.

    (notify reads only the wire's settings: a bad CRM setting is none of its business.)
    """
    env = {
        **secret_env,
        "TCX_BRIDGE_STORE_URL": "mysql://u:t0k3n@db/x",
        "TCX_BRIDGE_CRM_JOURNAL_URL": "ftp://crm.example.com/journal?token=t0k3n",
    }
    done = run_notify(env, "/N:S", "/C:0791234567", "/T:I", "/I:masked")
    assert done.returncode == 0  # the event is kept in the outbox
    log = (Path(env["TCX_BRIDGE_DATA_DIR"]) / "logs" / "notify.log").read_text()
    assert "'mysql://u:****@db/x' is not a PostgreSQL URL" in log
    assert "crm_journal_url" not in log.lower()
    assert "t0k3n" not in log
    assert "t0k3n" not in done.stderr
    assert "u:****@db" in done.stderr


@pytest.mark.integration
def test_consumer_log_masks_the_store_password(env: dict[str, str], services: list[Service]) -> None:
    """consume with an unreachable store_url whose password is in the query string: the log line masks it."""
    store_url = "postgresql://app@127.0.0.1:1/calls?password=s3cretpw&sslpassword=other22"
    service = Service({**env, "TCX_BRIDGE_STORE_URL": store_url}, "consume", "analytics")
    services.append(service)
    wait_until(lambda: "reconnecting" in service.output())
    assert "postgresql://app@127.0.0.1:1/calls?password=****&sslpassword=****" in service.output()
    assert "s3cretpw" not in service.output()
    assert "other22" not in service.output()
