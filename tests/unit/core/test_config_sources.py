"""The properties file format, ACKLY_* variables, precedence, and refusals naming their origin."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.config_sources import (
    env_var_to_key,
    gather_properties,
    key_to_env_var,
    parse_properties_text,
    write_properties_text,
)
from ackly.errors import ConfigError


def _parsed(text: str) -> dict[str, str]:
    return {e.key: e.value for e in parse_properties_text(text)}


def test_separators_comments_and_blank_lines() -> None:
    text = (
        "# a comment\n"
        "! another comment\n"
        "\n"
        "   \t\n"
        "log.retention.ms=1000\n"
        "num.partitions: 3\n"
        "  broker.rack   east\n"
        "listeners = PLAINTEXT://:9092\n"
        "empty=\n"
        "bare\n"
    )
    assert _parsed(text) == {
        "log.retention.ms": "1000", "num.partitions": "3", "broker.rack": "east",
        "listeners": "PLAINTEXT://:9092", "empty": "", "bare": "",
    }


def test_continuation_lines_and_their_line_number() -> None:
    text = "a=1\nsuper.users=User:alice;\\\n    User:bob;\\\n\tUser:carol\nb=2\n"
    entries = parse_properties_text(text)
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("a", "1", 1), ("super.users", "User:alice;User:bob;User:carol", 2), ("b", "2", 5)]


def test_an_even_number_of_backslashes_does_not_continue() -> None:
    assert _parsed("path=C:\\\\dir\\\\\nnext=1\n") == {"path": "C:\\dir\\", "next": "1"}


def test_a_comment_line_ending_in_a_backslash_does_not_continue() -> None:
    assert _parsed("# comment \\\nkey=value\n") == {"key": "value"}


def test_escapes() -> None:
    text = "key\\ with\\=odd\\:chars=tab\\there\\nnewline \\u00e9\\uD83D\\uDE00 \\q\n"
    assert _parsed(text) == {"key with=odd:chars": "tab\there\nnewline \u00e9\U0001F600 q"}


def test_crlf_and_cr_line_ends() -> None:
    assert _parsed("a=1\r\nb=2\rc=3") == {"a": "1", "b": "2", "c": "3"}


def test_a_malformed_unicode_escape_names_its_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_properties_text("a=1\nb=\\u12x4\n")


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@given(st.dictionaries(_text, _text, max_size=8))
def test_written_properties_read_back_the_same(props: dict[str, str]) -> None:
    assert _parsed(write_properties_text(props)) == props


@pytest.mark.parametrize(("name", "key"), [
    ("ACKLY_LOG_RETENTION_MS", "log.retention.ms"),
    ("ACKLY_BROKER_ID", "broker.id"),
    ("ACKLY_LISTENER_NAME_INTERNAL__TLS_SSL_CLIENT_AUTH", "listener.name.internal_tls.ssl.client.auth"),
    ("ACKLY_LISTENER_NAME_MY___LISTENER_SSL_KEY_PASSWORD", "listener.name.my-listener.ssl.key.password"),
])
def test_env_var_names_map_to_keys_as_in_kafkas_images(name: str, key: str) -> None:
    assert env_var_to_key(name) == key
    assert key_to_env_var(key) == name


def test_other_variables_are_not_configs() -> None:
    assert env_var_to_key("PATH") is None
    assert env_var_to_key("ACKLY_ETCD") is None  # the etcd binary, not a config
    with pytest.raises(ConfigError, match="ACKLY_LOG____RETENTION"):
        env_var_to_key("ACKLY_LOG____RETENTION")


def test_precedence_command_line_then_environment_then_file(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("num.partitions=2\nlog.retention.ms=10\nbroker.rack=file\n")
    env = {"ACKLY_LOG_RETENTION_MS": "20", "ACKLY_BROKER_RACK": "env", "HOME": "/root"}
    props = gather_properties(file_path=str(path), env=env,
                              command_line=[("broker.rack", "cli")])
    config = props.broker_config()
    assert config.get("num.partitions") == 2
    assert config.get("log.retention.ms") == 20
    assert config.get("broker.rack") == "cli"
    assert config.get("default.replication.factor") == 1  # the default
    assert props.origins == {"num.partitions": f"{path} line 1",
                             "log.retention.ms": "environment variable ACKLY_LOG_RETENTION_MS",
                             "broker.rack": "the command line"}


def test_a_bad_value_in_the_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("# retention\n\nlog.retention.ms=soon\n")
    props = gather_properties(file_path=str(path), env={}, command_line=[])
    with pytest.raises(ConfigError) as caught:
        props.broker_config()
    assert caught.value.key == "log.retention.ms"
    assert "'soon'" in str(caught.value) and f"{path} line 3" in str(caught.value)


def test_an_unknown_key_in_the_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("log.retentoin.ms=1000\n")
    with pytest.raises(ConfigError, match=r"unknown broker config .*line 1"):
        gather_properties(file_path=str(path), env={}, command_line=[]).broker_config()


def test_a_bad_environment_value_names_the_variable() -> None:
    props = gather_properties(file_path=None, env={"ACKLY_NUM_PARTITIONS": "0"}, command_line=[])
    with pytest.raises(ConfigError, match="environment variable ACKLY_NUM_PARTITIONS"):
        props.broker_config()


def test_an_unknown_environment_key_is_refused() -> None:
    props = gather_properties(file_path=None, env={"ACKLY_NO_SUCH_KEY": "1"}, command_line=[])
    with pytest.raises(ConfigError, match=r"'no.such.key': unknown broker config.*ACKLY_NO_SUCH_KEY"):
        props.broker_config()


def test_a_bad_command_line_value_says_so() -> None:
    props = gather_properties(file_path=None, env={}, command_line=[("max.connections", "-1")])
    with pytest.raises(ConfigError, match="from the command line"):
        props.broker_config()


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        gather_properties(file_path=str(tmp_path / "nope"), env={}, command_line=[])
