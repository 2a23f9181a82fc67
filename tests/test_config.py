"""Settings precedence, validation and credential masking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import Loaded, describe, load_settings, redact_url, reduce_desk
from bridge.errors import ConfigError
from bridge.events import MAX_DESK
from consumers.crm.settings import CRM
from consumers.wallboard.settings import WALLBOARD


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('desk = "from-file"\nnamespace = "filens"\nreplay_batch = 7\n')
    return path


def test_precedence_defaults_file_environment_flags(config_file: Path, tmp_path: Path) -> None:
    environ = {
        "TCX_BRIDGE_CONFIG": str(config_file),
        "TCX_BRIDGE_DESK": "from-env",
        "TCX_BRIDGE_DATA_DIR": str(tmp_path),
    }
    loaded = load_settings({"desk": "from-flag"}, environ)
    assert loaded.settings.desk == "from-flag"
    assert loaded.sources["desk"] == "flag"
    loaded = load_settings({}, environ)
    assert loaded.settings.desk == "from-env"
    assert loaded.settings.namespace == "filens"
    assert loaded.settings.replay_batch == 7
    assert loaded.sources["namespace"] == f"file {config_file}"
    assert loaded.settings.publish_budget == 3.0
    assert loaded.sources["publish_budget"] == "default"


def test_exchange_follows_namespace_unless_set(tmp_path: Path) -> None:
    base = {"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"), "TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    (tmp_path / "none.toml").write_text("")
    settings = load_settings({}, {**base, "TCX_BRIDGE_NAMESPACE": "acme"}).settings
    assert settings.exchange == "acme.events"
    assert settings.unrouted_exchange == "acme.unrouted"
    assert settings.queue("crm") == "acme.crm"
    assert settings.dead_queue("crm") == "acme.dead.crm"
    settings = load_settings({}, {**base, "TCX_BRIDGE_EXCHANGE": "calls"}).settings
    assert settings.exchange == "calls"


def test_default_amqp_url(tmp_path: Path) -> None:
    settings = load_settings({}, {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings
    assert settings.amqp_url == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.exchange == "tcx.events"


BAD = [
    (
        "TCX_BRIDGE_AMQP_URL",
        "http://example.com",
        "TCX_BRIDGE_AMQP_URL: 'http://example.com' is not an AMQP URL; use amqp://user:password@host:5672/%2F or amqps://..., comma-separated for a cluster",
    ),
    # the password is masked even in the error
    (
        "TCX_BRIDGE_AMQP_URL",
        "ftp://u:secret@h/",
        "TCX_BRIDGE_AMQP_URL: 'ftp://u:****@h/' is not an AMQP URL; use amqp://user:password@host:5672/%2F or amqps://..., comma-separated for a cluster",
    ),
    ("TCX_BRIDGE_PUBLISH_BUDGET", "soon", "TCX_BRIDGE_PUBLISH_BUDGET: 'soon' is not a number; give e.g. 1.1"),
    ("TCX_BRIDGE_PUBLISH_BUDGET", "0", "TCX_BRIDGE_PUBLISH_BUDGET: '0' is too small; give at least 0.1"),
    # a desk id the consumers would refuse (bridge.events' limits) is refused where it enters, not reduced
    (
        "TCX_BRIDGE_DESK",
        "d" * 65,
        f"TCX_BRIDGE_DESK: '{'d' * 65}' has 65 characters, over the maximum of 64; give a shorter desk id",
    ),
    (
        "TCX_BRIDGE_DESK",
        "desk 7.corp",
        "TCX_BRIDGE_DESK: 'desk 7.corp' holds ' .', not allowed in a desk id; use only A-Za-z0-9_- "
        "(e.g. 'desk7corp')",
    ),
    # no usable character: no suggestion
    (
        "TCX_BRIDGE_DESK",
        "...",
        "TCX_BRIDGE_DESK: '...' holds '.', not allowed in a desk id; use only A-Za-z0-9_-",
    ),
    (
        "TCX_BRIDGE_DESK",
        "Zoë\u202e",
        "TCX_BRIDGE_DESK: 'Zoë\\u202e' holds 'ë\\u202e', not allowed in a desk id; use only A-Za-z0-9_- "
        "(e.g. 'Zo')",
    ),
    ("TCX_BRIDGE_DESK", " ", "TCX_BRIDGE_DESK: '' is empty; give a desk id of 1 to 64 of A-Za-z0-9_-"),
    (
        "TCX_BRIDGE_EXCHANGE",
        "bad name",
        "TCX_BRIDGE_EXCHANGE: 'bad name' is not a valid name; use 1 to 200 of A-Z a-z 0-9 _ . : -",
    ),
    ("TCX_BRIDGE_QUORUM", "maybe", "TCX_BRIDGE_QUORUM: 'maybe' is not a boolean; use true or false"),
    ("TCX_BRIDGE_REGION", "Swiss", "TCX_BRIDGE_REGION: 'Swiss' is not a two-letter region code; use e.g. CH"),
    (
        "TCX_BRIDGE_CA_FILE",
        "/nonexistent/ca.pem",
        "TCX_BRIDGE_CA_FILE: '/nonexistent/ca.pem' is not a file; give the path of a PEM CA bundle",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD)
def test_bad_value_names_key_and_value(variable: str, value: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {variable: value, "TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False)
    assert str(caught.value) == message


def test_unknown_file_key_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('dsek = "typo"\n')
    with pytest.raises(ConfigError, match="unknown key 'dsek'"):
        load_settings({}, {"TCX_BRIDGE_CONFIG": str(path), "TCX_BRIDGE_DATA_DIR": str(tmp_path)})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"TCX_BRIDGE_CONFIG": str(missing)})
    assert str(caught.value) == f"TCX_BRIDGE_CONFIG: config file {str(missing)!r} does not exist"


def test_bad_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('prefetch = "lots"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"TCX_BRIDGE_CONFIG": str(path), "TCX_BRIDGE_DATA_DIR": str(tmp_path)})
    assert str(caught.value) == f"prefetch in {path}: 'lots' is not a number; give e.g. 2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@localhost:5672/%2F", "amqp://guest:****@localhost:5672/%2F"),
        ("amqps://u:p%40ss@mq.example.com/vh", "amqps://u:****@mq.example.com/vh"),
        # no password: unchanged
        ("amqp://mq.example.com/", "amqp://mq.example.com/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_describe_never_shows_the_password(tmp_path: Path) -> None:
    loaded = load_settings(
        {"amqp_url": "amqp://bob:hunter2@mq/%2F"}, {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False
    )
    rows = describe(loaded)
    assert all("hunter2" not in value for _, _, value, _ in rows)
    assert ("amqp_url", "TCX_BRIDGE_AMQP_URL", "amqp://bob:****@mq/%2F", "flag") in rows


@pytest.mark.parametrize(
    ("raw", "reduced"),
    [("DESK-07", "DESK-07"), ("desk 7.corp", "desk7corp"), ("Zoë_1", "Zo_1")],
)
def test_reduce_desk(raw: str, reduced: str) -> None:
    assert reduce_desk(raw) == reduced


def test_a_desk_id_at_the_wire_limit_is_taken(tmp_path: Path) -> None:
    desk = "D" * MAX_DESK
    environ = {"TCX_BRIDGE_DESK": f" {desk} ", "TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    assert load_settings({}, environ, read_file=False).settings.desk == desk


def test_the_host_name_is_reduced_to_a_desk_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default comes from the host name: reduced and cut to what the consumers take, never refused."""
    monkeypatch.setattr("socket.gethostname", lambda: "Büro 7" + "x" * 100 + ".corp.example")
    desk = load_settings({}, {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings.desk
    assert desk == ("Bro7" + "x" * 100)[:MAX_DESK]


@pytest.mark.parametrize(
    ("raw", "rescued"), [("desk 7.corp", "desk7corp"), ("d" * 70, "d" * 64), ("...", None)]
)
def test_lenient_load_reduces_a_bad_desk_id(tmp_path: Path, raw: str, rescued: str | None) -> None:
    """notify's rescue keeps the event for the desk meant (as reduced before), else the host name's."""
    environ = {"TCX_BRIDGE_DESK": raw, "TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    loaded = load_settings({}, environ, read_file=False, lenient=True)
    default = load_settings({}, {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings.desk
    assert loaded.settings.desk == (rescued or default)
    assert loaded.sources["desk"] == (
        "TCX_BRIDGE_DESK reduced, it is bad" if rescued else "default, TCX_BRIDGE_DESK is bad"
    )


def test_lenient_load_keeps_good_values_and_defaults_bad_ones(tmp_path: Path) -> None:
    environ = {
        "TCX_BRIDGE_DESK": "desk-9",
        "TCX_BRIDGE_PREFETCH": "lots",
        "TCX_BRIDGE_DATA_DIR": str(tmp_path),
    }
    loaded = load_settings({}, environ, read_file=False, lenient=True)
    assert loaded.settings.desk == "desk-9"
    assert loaded.settings.prefetch == 500
    assert loaded.sources["prefetch"] == "default, TCX_BRIDGE_PREFETCH is bad"


@pytest.mark.parametrize(
    ("given", "urls"),
    [
        (
            "amqp://u:p@mq1:5672/%2F,amqp://u:q@mq2:5672/%2F",
            "amqp://u:p@mq1:5672/%2F,amqp://u:q@mq2:5672/%2F",
        ),
        # later addresses as host:port take the first one's scheme, user, password and vhost
        (
            "amqp://u:p@mq1:5672/v, mq2:5673 ,mq3",
            "amqp://u:p@mq1:5672/v,amqp://u:p@mq2:5673/v,amqp://u:p@mq3/v",
        ),
    ],
)
def test_several_broker_addresses(given: str, urls: str, tmp_path: Path) -> None:
    environ = {"TCX_BRIDGE_AMQP_URL": given, "TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    assert load_settings({}, environ, read_file=False).settings.amqp_url == urls


def test_broker_addresses_as_a_toml_array(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('amqp_url = ["amqp://u:secret@mq1:5672/%2F", "amqp://u:other@mq2:5672/%2F"]\n')
    loaded = load_settings({}, {"TCX_BRIDGE_CONFIG": str(path), "TCX_BRIDGE_DATA_DIR": str(tmp_path)})
    assert loaded.settings.amqp_url == "amqp://u:secret@mq1:5672/%2F,amqp://u:other@mq2:5672/%2F"
    shown = dict((row[0], row[2]) for row in describe(loaded))["amqp_url"]
    assert shown == "amqp://u:****@mq1:5672/%2F,amqp://u:****@mq2:5672/%2F"  # every password masked


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "amqp://u:p@mq1:5672/%2F,amqp://u:s3cret@mq2:abc/%2F",
            "TCX_BRIDGE_AMQP_URL: 'amqp://u:****@mq2:abc/%2F' (address 2 of 2) is not usable "
            "(Port could not be cast to integer value as 'abc')",
        ),
        (
            "amqp://u:p@mq1:5672/%2F,http://mq2",
            "TCX_BRIDGE_AMQP_URL: 'http://mq2' (address 2 of 2) is not an AMQP URL",
        ),
        (
            "amqp://u:p@mq1:5672/%2F,:5672",
            "TCX_BRIDGE_AMQP_URL: 'amqp://u:****@:5672/%2F' (address 2 of 2) has no host",
        ),
    ],
)
def test_a_bad_broker_address_is_named_alone(given: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {}, {"TCX_BRIDGE_AMQP_URL": given, "TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False
        )
    assert str(caught.value).startswith(message)
    assert "s3cret" not in str(caught.value)


def shown(loaded: Loaded, name: str) -> str:
    """The value `tcx-bridge config` shows for one key."""
    return next(row[2] for row in describe(loaded) if row[0] == name)


def test_wallboard_thresholds_are_parsed_at_load(tmp_path: Path) -> None:
    """The wallboard reads the levels as numbers; config shows them as text (issue 21)."""
    base = {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    loaded = load_settings({}, base, read_file=False)
    assert WALLBOARD.of(loaded.settings).wallboard_thresholds.as_dict() == {
        "waiting": [2.0, 5.0],
        "wait": [30.0, 60.0],
        "missed": [5.0, 10.0],
    }
    assert shown(loaded, "wallboard_thresholds") == "waiting=2/5,wait=30/60,missed=5/10"
    given = {**base, "TCX_BRIDGE_WALLBOARD_THRESHOLDS": " wait = 10/20.5, missed=3/4,wait=15/25 "}
    loaded = load_settings({}, given, read_file=False)
    # a measure named twice takes its last levels, in its first place
    assert WALLBOARD.of(loaded.settings).wallboard_thresholds.as_dict() == {
        "wait": [15.0, 25.0],
        "missed": [3.0, 4.0],
    }
    assert shown(loaded, "wallboard_thresholds") == "wait=15/25,missed=3/4"
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {**base, "TCX_BRIDGE_WALLBOARD_THRESHOLDS": "wait=60/30"}, read_file=False)
    assert str(caught.value) == (
        "TCX_BRIDGE_WALLBOARD_THRESHOLDS: 'wait=60/30' is not name=amber/red with name waiting, wait or "
        "missed (e.g. wait=30/60)"
    )


def test_crm_fields_are_parsed_at_load(tmp_path: Path) -> None:
    """A bad field map fails where it is read, not when the CRM first starts (issue 21)."""
    base = {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}
    loaded = load_settings({}, base, read_file=False)
    assert CRM.of(loaded.settings).crm_fields.paths == (
        ("name", "name"),
        ("company", "company"),
        ("email", "email"),
        ("url", "url"),
    )
    path = tmp_path / "c.toml"
    path.write_text('crm_fields = "name=fullName, company=org.name"\n')
    loaded = load_settings({}, {**base, "TCX_BRIDGE_CONFIG": str(path)})
    assert CRM.of(loaded.settings).crm_fields.paths == (("name", "fullName"), ("company", "org.name"))
    assert shown(loaded, "crm_fields") == "name=fullName,company=org.name"
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {**base, "TCX_BRIDGE_CRM_FIELDS": "name=fullName,phone=tel"}, read_file=False)
    assert str(caught.value) == (
        "TCX_BRIDGE_CRM_FIELDS: 'phone=tel' is not field=path with field one of name, company, email, url"
    )


def test_region_is_checked_against_phonenumbers_only_when_asked(tmp_path: Path) -> None:
    """The CLI asks (every command, once); the notify executable does not load phonenumbers for it."""
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_REGION": "xx"}
    assert load_settings({}, environ, read_file=False).settings.region == "XX"
    with pytest.raises(ConfigError) as caught:
        load_settings({}, environ, read_file=False, checks=True)
    assert str(caught.value) == (
        "region: 'XX' is not a region phonenumbers knows; use a two-letter country code such as "
        "CH, DE, AT, FR, IT or GB (TCX_BRIDGE_REGION)"
    )
    loaded = load_settings({}, {**environ, "TCX_BRIDGE_REGION": "de"}, read_file=False, checks=True)
    assert loaded.settings.region == "DE"


def test_loading_the_settings_keeps_phonenumbers_off_the_notify_path(tmp_path: Path) -> None:
    code = (
        "import sys, bridge.notify\n"
        "from bridge.config import load_settings\n"
        "load_settings({'region': 'DE', 'crm_fields': 'name=n', 'wallboard_thresholds': 'wait=1/2'})\n"
        "print('phonenumbers' in sys.modules)\n"
        "load_settings({}, checks=True)  # the default region is ours: not checked, no import\n"
        "print('phonenumbers' in sys.modules)\n"
    )
    environ = {**os.environ, "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False"]
