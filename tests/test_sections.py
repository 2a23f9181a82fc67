"""Settings sections: keys a consumer declares in its own room, loaded like the wire's."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bridge.config import describe, load_settings
from bridge.errors import ConfigError
from bridge.keys import Key
from bridge.sections import Section, check, registered_sections
from bridge.values import at_least, parse_optional_text


class Options(msgspec.Struct, frozen=True, kw_only=True):
    sample_timeout: float
    sample_token: str | None


SAMPLE = Section(
    "sample",
    (
        Key("sample_timeout", lambda _, __: 5.0, at_least(float, 0.1), "seconds"),
        Key("sample_token", lambda _, __: None, parse_optional_text, "a token", secret=True),
    ),
    Options,
)


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return {"TCX_BRIDGE_CONFIG": str(path)}


def test_a_section_is_read_from_the_file_the_environment_and_flags_and_parsed_once(tmp_path: Path) -> None:
    environ = _config(tmp_path, 'sample_timeout = 2.5\nnamespace = "north"\n')
    loaded = load_settings(environ=environ, sections=(SAMPLE,))
    assert SAMPLE.of(loaded.settings) == Options(sample_timeout=2.5, sample_token=None)
    assert loaded.settings.namespace == "north"
    assert loaded.sources["sample_timeout"].startswith("file ")
    environ["TCX_BRIDGE_SAMPLE_TIMEOUT"] = "7"
    assert SAMPLE.of(load_settings(environ=environ, sections=(SAMPLE,)).settings).sample_timeout == 7.0
    flagged = load_settings({"sample_timeout": "9"}, environ=environ, sections=(SAMPLE,))
    assert SAMPLE.of(flagged.settings).sample_timeout == 9.0
    assert flagged.sources["sample_timeout"] == "flag"


def test_a_bad_section_value_is_one_line_naming_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sample_timeout.*0\.01|0\.01.*sample_timeout"):
        load_settings(environ=_config(tmp_path, "sample_timeout = 0.01\n"), sections=(SAMPLE,))


def test_notify_loads_no_section_and_ignores_their_keys_in_the_file(tmp_path: Path) -> None:
    environ = _config(tmp_path, 'sample_timeout = 2.5\ndesk = "d7"\n')
    settings = load_settings(environ=environ, sections=()).settings
    assert settings.desk == "d7"
    assert settings.options == {}
    with pytest.raises(ConfigError, match="without the 'sample' section"):
        SAMPLE.of(settings)


def test_with_every_section_loaded_an_unknown_key_is_still_an_error(tmp_path: Path) -> None:
    environ = _config(tmp_path, "sampel_timeout = 2.5\n")
    with pytest.raises(ConfigError, match="unknown key 'sampel_timeout'"):
        load_settings(environ=environ)
    with pytest.raises(ConfigError, match="unknown setting 'sampel_timeout'"):
        load_settings({"sampel_timeout": 1}, environ={}, read_file=False)


def test_config_lists_section_keys_with_sources_and_masks_their_secrets(tmp_path: Path) -> None:
    loaded = load_settings(environ=_config(tmp_path, 'sample_token = "s3cret"\n'), sections=(SAMPLE,))
    rows = {row[0]: row for row in describe(loaded)}
    assert rows["sample_token"][1:] == ("TCX_BRIDGE_SAMPLE_TOKEN", "****", f"file {tmp_path / 'config.toml'}")
    assert rows["sample_timeout"][2:] == ("5.0", "default")
    assert "s3cret" not in repr(rows)
    assert list(rows).index("sample_timeout") > list(rows).index("trust_user_id")  # the wire's keys first


def test_two_parts_cannot_declare_the_same_key() -> None:
    clash = Section("other", (Key("namespace", lambda _, __: "x", parse_optional_text, "h"),), Options)
    with pytest.raises(ConfigError, match="'namespace' of section 'other' is already declared by the wire"):
        check((clash,))
    with pytest.raises(ConfigError, match="registered twice"):
        check((SAMPLE, SAMPLE._replace(keys=())))


def test_the_registered_sections_load() -> None:
    found = registered_sections()
    assert found.broken == ()
    check(found.sections)
