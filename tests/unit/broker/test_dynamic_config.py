"""Dynamic broker configs (broker/dynamic_config.py): IncrementalAlterConfigs on this broker's
BROKER resource changes the dynamic keys at once for every topic that follows the default,
DescribeConfigs shows them as DYNAMIC_BROKER_CONFIG, and they survive a restart."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ackly.broker.dynamic_config import DYNAMIC_CONFIG_FILE
from ackly.broker.node import BrokerNode
from ackly.errors import ConfigError, ErrorCode, StorageError

from .test_admin_apis import (
    BROKER,
    DELETE,
    NOW_MS,
    SET,
    SOURCE_STATIC,
    SOURCE_TOPIC,
    TOPIC,
    WEEK_MS,
    create_topic,
    decode_answer,
    describe,
    entity,
    incremental,
    make_node,
    send,
    source_of,
)

SOURCE_DYNAMIC = 2


def test_a_dynamic_default_applies_at_once_to_topics_without_an_override(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data", {"log.retention.ms": "5000"})
    create_topic(node, "follows")
    create_topic(node, "own", configs={"retention.ms": "1000"})
    p = node.partition("follows", 0)
    assert p.config.retention_ms == 5000

    ((code, _),) = incremental(node, 1, (BROKER, "0", [("log.retention.ms", SET, "7000"),
                                                       ("message.max.bytes", SET, "2000")]))
    assert code == ErrorCode.none
    assert node.partition("follows", 0).config.retention_ms == 7000
    assert node.partition("follows", 0).config.max_message_bytes == 2000
    assert node.partition("own", 0).config.retention_ms == 1000  # its override wins
    assert source_of(node, "follows", "retention.ms") == ("7000", SOURCE_DYNAMIC)
    assert source_of(node, "own", "retention.ms") == ("1000", SOURCE_TOPIC)

    (entry,) = describe(node, 4, BROKER, "0", keys=("log.retention.ms",), synonyms=True).configs
    assert (entry.value, entry.config_source, entry.read_only) == ("7000", SOURCE_DYNAMIC, False)
    assert [(s.value, s.source) for s in entry.synonyms] == [
        ("7000", SOURCE_DYNAMIC), ("5000", SOURCE_STATIC), (str(WEEK_MS), 5)]

    ((code, _),) = incremental(node, 1, (BROKER, "0", [("log.retention.ms", DELETE, None)]))
    assert code == ErrorCode.none
    assert node.partition("follows", 0).config.retention_ms == 5000  # the static value again
    assert node.partition("follows", 0).config.max_message_bytes == 2000  # untouched
    node.close()


def test_dynamic_configs_survive_a_restart(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data")
    create_topic(node, "t")
    ((code, _),) = incremental(node, 0, (BROKER, "0", [("log.retention.bytes", SET, "123456")]))
    assert code == ErrorCode.none
    node.close()
    again = make_node(tmp_path / "data")
    assert again.config.get("log.retention.bytes") == 123456
    assert again.partition("t", 0).config.retention_bytes == 123456
    assert source_of(again, "t", "retention.bytes") == ("123456", SOURCE_DYNAMIC)
    again.close()


def test_a_bad_stored_dynamic_value_refuses_the_start_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_node(data).close()
    (data / DYNAMIC_CONFIG_FILE).write_text("log.retention.ms=soon\n")
    with pytest.raises(ConfigError, match=f"log.retention.ms.*{DYNAMIC_CONFIG_FILE}"):
        make_node(data)


@pytest.mark.parametrize(("name", "ops", "code", "words"), [
    ("0", [("log.segment.bytes", SET, "1048576")], ErrorCode.invalid_request,
     ["Cannot update these configs dynamically: log.segment.bytes"]),
    ("0", [("no.such.key", SET, "1")], ErrorCode.invalid_config, ["no.such.key", "unknown"]),
    ("0", [("log.retention.ms", SET, "soon")], ErrorCode.invalid_config, ["'soon'"]),
    ("0", [("log.retention.ms", 2, "1")], ErrorCode.invalid_config, ["APPEND"]),
    ("0", [("log.retention.ms", SET, None)], ErrorCode.invalid_request, ["null"]),
    ("0", [("log.retention.ms", SET, "1"), ("log.retention.ms", DELETE, None)],
     ErrorCode.invalid_request, ["more than once"]),
    ("", [("log.retention.ms", SET, "1")], ErrorCode.invalid_request, ["cluster-wide"]),
    ("7", [("log.retention.ms", SET, "1")], ErrorCode.invalid_request, ["'7'"]),
])
def test_refusals_change_nothing(tmp_path: Path, name: str, ops: list[tuple[str, int, str | None]],
                                 code: ErrorCode, words: list[str]) -> None:
    node: BrokerNode = make_node(tmp_path / "data")
    ((got, message),) = incremental(node, 1, (BROKER, name, ops))
    assert got == code, message
    for word in words:
        assert word in message
    assert node.config.dynamic == {}
    assert not (tmp_path / "data" / DYNAMIC_CONFIG_FILE).exists()
    node.close()


def test_topics_and_the_broker_in_one_request(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data")
    create_topic(node, "t")
    results = incremental(node, 1, (TOPIC, "t", [("retention.ms", SET, "10")]),
                          (BROKER, "0", [("log.retention.bytes", SET, "99")]))
    assert [code for code, _ in results] == [ErrorCode.none, ErrorCode.none]
    config = node.partition("t", 0).config
    assert (config.retention_ms, config.retention_bytes) == (10, 99)
    node.close()


def test_a_failed_write_in_the_writer_thread_answers_a_storage_error_and_applies_nothing(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path / "data")
    node.file_writes_off_loop = True  # as a running broker's shell sets it
    resource = entity(44, 1, "AlterConfigsResource", resource_type=BROKER, resource_name="0",
                      configs=(entity(44, 1, "AlterableConfig", name="log.retention.bytes",
                                      config_operation=SET, value="4444"),))
    answers, correlation_id = send(node, 44, 1, validate_only=False, resources=(resource,))
    assert answers == []
    batch = node.take_file_writes()
    assert len(batch) == 1
    error = StorageError("write", batch[0].path, errno.EIO, "Input/output error")
    node.complete_file_writes(batch, error, NOW_MS)
    (r,) = decode_answer(44, 1, answers, correlation_id).responses
    assert r.error_code == ErrorCode.kafka_storage_error
    assert node.log_dir_failure is error
    assert node.config.get("log.retention.bytes") != 4444
    assert not (tmp_path / "data" / DYNAMIC_CONFIG_FILE).exists()
