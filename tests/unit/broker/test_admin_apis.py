"""Admin APIs against an in-process BrokerNode, through encoded request frames.

Every request is built as a kio request object, encoded into a frame (header + body) and
handed to `BrokerNode.handle_frame`, so decoding and dispatch are exercised too; the answer is
decoded with kio's response class for the same version.
"""

from __future__ import annotations

import datetime
import io
import random
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.dispatch import TABLE
from ackly.broker.file_writes import run_batch
from ackly.broker.handlers import (
    alter_configs,
    create_partitions,
    delete_records,
    describe_cluster,
    describe_configs,
    incremental_alter_configs,
)
from ackly.broker.node import BrokerNode
from ackly.config import BROKER_CONFIGS, DYNAMIC_BROKER_KEYS, TOPIC_CONFIG_DEFS, TOPIC_CONFIGS, BrokerConfig
from ackly.errors import ErrorCode, StorageError
from ackly.log.disk import RealDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import (
    header_version,
    is_flexible,
    known_versions,
    request_type,
    response_type,
)
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches

NOW_MS = 1_700_000_000_000
TOPIC, BROKER = 2, 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
SOURCE_TOPIC, SOURCE_STATIC, SOURCE_DEFAULT = 1, 4, 5
WEEK_MS = 7 * 24 * 3600 * 1000


# --- harness ------------------------------------------------------------------------------

def make_node(data_dir: Path, props: dict[str, str] | None = None) -> BrokerNode:
    return BrokerNode(
        config=BrokerConfig.from_properties(props or {}), disk=RealDisk(), data_dir=str(data_dir),
        host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0),
    )


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data", {"log.segment.bytes": "1048576"})
    yield n
    n.close()


def entity(api_key: int, version: int, class_name: str, /, **fields: Any) -> Any:
    """A nested request entity (e.g. DescribeConfigsResource) of this API version."""
    module = sys.modules[request_type(api_key, version).__module__]
    return getattr(module, class_name)(**fields)


_correlation = iter(range(1, 1_000_000))


def call(node: BrokerNode, api_key: int, version: int, *, sasl_session: Any = None, **fields: Any) -> Any:
    """Encode a request into a frame, run it through the node, decode the answer (on a
    connection with this SASL session, if one is given). A request that waits for a flush
    round (DeleteRecords: the new log start's fsyncs) gets it, as the shell runs it."""
    answers, correlation_id = send(node, api_key, version, sasl_session=sasl_session, **fields)
    if not answers and node.has_flush_work:
        flush_round(node)
    while not answers and node.has_file_writes:
        write_round(node)
    return decode_answer(api_key, version, answers, correlation_id)


def write_round(node: BrokerNode) -> None:
    """What the shell's writer thread does with the node's small-file writes (a node with
    `file_writes_off_loop`): run one batch, report."""
    batch = node.take_file_writes()
    error: BaseException | None = None
    try:
        run_batch(batch)
    except Exception as exc:
        error = exc
    node.complete_file_writes(batch, error, NOW_MS)


def flush_round(node: BrokerNode) -> None:
    """What the shell does with the node's flush work: run the jobs off the loop, report."""
    jobs = node.take_flush_jobs()
    for _, job in jobs:
        job.run()
    node.complete_flush(jobs, NOW_MS)


def send(node: BrokerNode, api_key: int, version: int, *, sasl_session: Any = None,
         **fields: Any) -> tuple[list[Any], int]:
    """Run one request through the node: the list its answer goes to (filled in later by a
    delayed one) and its correlation id."""
    request = request_type(api_key, version)(**fields)
    correlation_id = next(_correlation)
    client_id = b"unit-test"
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, len(client_id)))
    frame.write(client_id)
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")  # no tagged fields
    entity_writer(type(request))(frame, request)
    answers: list[Any] = []
    ctx = RequestContext(
        header=RequestHeader(api_key, version, correlation_id, "unit-test"), now_ms=NOW_MS,
        sink=answers.append, sasl=sasl_session,
    )
    node.handle_frame(ctx, frame.getvalue())
    return answers, correlation_id


def decode_answer(api_key: int, version: int, answers: list[Any], correlation_id: int) -> Any:
    assert len(answers) == 1 and answers[0] is not None, "exactly one answer"
    data = b"".join(bytes(piece) for piece in answers[0])
    (size,) = struct.unpack_from(">i", data, 0)
    assert size == len(data) - 4
    (got_correlation,) = struct.unpack_from(">i", data, 4)
    assert got_correlation == correlation_id
    offset = 8 + (1 if is_flexible(api_key, version) else 0)
    response, _ = entity_reader(response_type(api_key, version))(data, offset)
    return response


def create_topic(node: BrokerNode, name: str, partitions: int = 1,
                 configs: dict[str, str] | None = None) -> None:
    node.create_topic(name, partitions, configs or {}, NOW_MS)


def produce(node: BrokerNode, topic: str, partition: int, count: int) -> None:
    """Append `count` one-record batches and flush them, so HW covers them."""
    p = node.partition(topic, partition)
    for i in range(count):
        batch = encode_batch([Record(key=None, value=b"v%d" % i)], now_ms=NOW_MS)
        headers = validate_batches(batch, 1 << 20)
        p.append_as_leader(bytearray(batch), headers, -1, NOW_MS)
        node.after_append(p, NOW_MS)
    jobs = node.take_flush_jobs()
    for _, job in jobs:
        job.run()
    node.complete_flush(jobs, NOW_MS)
    assert p.high_watermark == p.log_end_offset


def versions(module: Any) -> list[int]:
    return list(range(module.MIN_VERSION, module.MAX_VERSION + 1))


def test_advertised_ranges_are_registered_and_known_to_kio() -> None:
    for module in (create_partitions, delete_records, describe_configs, alter_configs,
                   incremental_alter_configs, describe_cluster):
        spec = TABLE[module.API_KEY]
        assert (spec.min_version, spec.max_version) == (module.MIN_VERSION, module.MAX_VERSION)
        assert set(versions(module)) <= set(known_versions(module.API_KEY))
    # the ranges real clients pick (docs/clients.md); kio has no DescribeConfigs v0
    assert (TABLE[32].min_version, TABLE[32].max_version) == (1, 4)
    assert (TABLE[33].min_version, TABLE[33].max_version) == (0, 2)
    assert (TABLE[37].min_version, TABLE[37].max_version) == (0, 3)
    assert (TABLE[21].min_version, TABLE[21].max_version) == (0, 2)
    assert (TABLE[44].min_version, TABLE[44].max_version) == (0, 1)
    assert (TABLE[60].min_version, TABLE[60].max_version) == (0, 2)


# --- CreatePartitions ---------------------------------------------------------------------

def create_partitions_call(node: BrokerNode, version: int, *topics: tuple[str, int, Any],
                           validate_only: bool = False) -> dict[str, tuple[ErrorCode, Any]]:
    response = call(
        node, 37, version,
        topics=tuple(entity(37, version, "CreatePartitionsTopic", name=name, count=count,
                            assignments=assignments) for name, count, assignments in topics),
        timeout=datetime.timedelta(seconds=5), validate_only=validate_only,
    )
    return {r.name: (r.error_code, r.error_message) for r in response.results}


@pytest.mark.parametrize("version", versions(create_partitions))
def test_create_partitions_grows_the_topic_durably(tmp_path: Path, version: int) -> None:
    node = make_node(tmp_path / "data")
    create_topic(node, "grow", 1)
    produce(node, "grow", 0, 3)
    assert create_partitions_call(node, version, ("grow", 3, None)) == {
        "grow": (ErrorCode.none, None)
    }
    assert len(node.topics["grow"].partitions) == 3
    produce(node, "grow", 2, 2)
    assert node.partition("grow", 0).high_watermark == 3  # old data untouched
    node.close()
    reopened = make_node(tmp_path / "data")
    assert reopened.topics["grow"].meta.partitions == 3
    assert reopened.partition("grow", 2).high_watermark == 2
    reopened.close()


def test_create_partitions_refuses_a_count_that_is_not_larger(node: BrokerNode) -> None:
    create_topic(node, "three", 3)
    result = create_partitions_call(node, 3, ("three", 3, None))
    assert result["three"][0] == ErrorCode.invalid_partitions
    assert "already has 3 partitions" in result["three"][1]
    result = create_partitions_call(node, 0, ("three", 2, None))
    assert result["three"][0] == ErrorCode.invalid_partitions
    assert "cannot be removed" in result["three"][1]
    assert len(node.topics["three"].partitions) == 3


def test_create_partitions_errors_per_topic(node: BrokerNode) -> None:
    create_topic(node, "ok", 1)
    create_topic(node, "assigned", 1)
    create_topic(node, "twice", 1)
    assignment = (entity(37, 3, "CreatePartitionsAssignment", broker_ids=(0,)),)
    result = create_partitions_call(
        node, 3, ("ok", 2, None), ("missing", 2, None), ("assigned", 2, assignment),
        ("twice", 2, None), ("twice", 3, None),
    )
    assert result["ok"] == (ErrorCode.none, None)
    assert result["missing"][0] == ErrorCode.unknown_topic_or_partition
    assert "missing" in result["missing"][1]
    assert result["assigned"][0] == ErrorCode.invalid_replica_assignment
    assert "assignment" in result["assigned"][1]
    assert result["twice"][0] == ErrorCode.invalid_request
    assert len(node.topics["ok"].partitions) == 2
    assert len(node.topics["assigned"].partitions) == 1
    assert len(node.topics["twice"].partitions) == 1


def test_create_partitions_refuses_an_absurd_count(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    result = create_partitions_call(node, 1, ("t", 2**31 - 1, None))
    assert result["t"][0] == ErrorCode.invalid_partitions
    assert "limit" in result["t"][1]


def test_create_partitions_validate_only_changes_nothing(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    assert create_partitions_call(node, 2, ("t", 4, None), validate_only=True) == {
        "t": (ErrorCode.none, None)
    }
    assert len(node.topics["t"].partitions) == 1
    result = create_partitions_call(node, 2, ("t", 1, None), validate_only=True)
    assert result["t"][0] == ErrorCode.invalid_partitions


# --- DeleteRecords ------------------------------------------------------------------------

def delete_records_call(node: BrokerNode, version: int,
                        wanted: dict[str, list[tuple[int, int]]]) -> dict[tuple[str, int], Any]:
    response = call(
        node, 21, version,
        topics=tuple(
            entity(21, version, "DeleteRecordsTopic", name=name, partitions=tuple(
                entity(21, version, "DeleteRecordsPartition", partition_index=i, offset=o)
                for i, o in parts))
            for name, parts in wanted.items()
        ),
        timeout=datetime.timedelta(seconds=5),
    )
    return {(t.name, p.partition_index): (p.error_code, p.low_watermark)
            for t in response.topics for p in t.partitions}


@pytest.mark.parametrize("version", versions(delete_records))
def test_delete_records_moves_the_log_start(node: BrokerNode, version: int) -> None:
    create_topic(node, "t", 2)
    produce(node, "t", 0, 10)
    produce(node, "t", 1, 5)
    result = delete_records_call(node, version, {"t": [(0, 4), (1, -1)]})
    assert result == {("t", 0): (ErrorCode.none, 4), ("t", 1): (ErrorCode.none, 5)}
    assert node.partition("t", 0).log_start_offset == 4
    assert node.partition("t", 1).log_start_offset == 5
    # Below the current start: nothing moves back, the answer is the current start.
    assert delete_records_call(node, version, {"t": [(0, 2)]}) == {("t", 0): (ErrorCode.none, 4)}
    assert node.partition("t", 0).log_start_offset == 4


def test_delete_records_up_to_exactly_hw(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    produce(node, "t", 0, 3)
    assert delete_records_call(node, 2, {"t": [(0, 3)]}) == {("t", 0): (ErrorCode.none, 3)}
    produce(node, "t", 0, 2)  # appends continue after the new start
    assert node.partition("t", 0).high_watermark == 5


def delete_records_request(version: int, wanted: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    return {
        "topics": tuple(
            entity(21, version, "DeleteRecordsTopic", name=name, partitions=tuple(
                entity(21, version, "DeleteRecordsPartition", partition_index=i, offset=o)
                for i, o in parts))
            for name, parts in wanted.items()
        ),
        "timeout": datetime.timedelta(seconds=5),
    }


def test_delete_records_answers_once_the_log_start_is_durable(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    produce(node, "t", 0, 3)
    p = node.partition("t", 0)
    answers, correlation_id = send(node, 21, 2, **delete_records_request(2, {"t": [(0, 2)]}))
    # Visible at once; its fsyncs wait for the flush round, and so does the answer.
    assert p.log_start_offset == 2 and not p.log.changes_durable
    assert answers == [] and node.has_flush_work
    flush_round(node)
    assert p.log.changes_durable
    response = decode_answer(21, 2, answers, correlation_id)
    assert [(q.error_code, q.low_watermark) for q in response.topics[0].partitions] == [
        (ErrorCode.none, 2)
    ]


def test_delete_records_whose_flush_fails_answers_storage_error(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    produce(node, "t", 0, 3)
    answers, correlation_id = send(node, 21, 2, **delete_records_request(2, {"t": [(0, 2)]}))
    assert answers == []
    jobs = node.take_flush_jobs()
    assert jobs
    node.flush_failed(StorageError("fsync", "t-0/log-start-offset", 5, "EIO"), NOW_MS)
    response = decode_answer(21, 2, answers, correlation_id)
    assert [(q.error_code, q.low_watermark) for q in response.topics[0].partitions] == [
        (ErrorCode.kafka_storage_error, -1)
    ]


def test_delete_records_errors(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    create_topic(node, "compacted", 1, {"cleanup.policy": "compact"})
    produce(node, "t", 0, 3)
    result = delete_records_call(node, 1, {
        "t": [(0, 4)], "missing": [(0, 0)], "compacted": [(0, -1)],
    })
    assert result[("t", 0)] == (ErrorCode.offset_out_of_range, -1)
    assert result[("missing", 0)] == (ErrorCode.unknown_topic_or_partition, -1)
    assert result[("compacted", 0)] == (ErrorCode.policy_violation, -1)
    assert delete_records_call(node, 0, {"t": [(0, -2), (7, 0)]}) == {
        ("t", 0): (ErrorCode.offset_out_of_range, -1),
        ("t", 7): (ErrorCode.unknown_topic_or_partition, -1),
    }
    assert node.partition("t", 0).log_start_offset == 0


# --- DescribeConfigs ----------------------------------------------------------------------

def describe(node: BrokerNode, version: int, kind: int, name: str, *, keys: Any = None,
             synonyms: bool = False, documentation: bool = False) -> Any:
    fields: dict[str, Any] = {
        "resources": (entity(32, version, "DescribeConfigsResource", resource_type=kind,
                             resource_name=name, configuration_keys=keys),),
        "include_synonyms": synonyms,
    }
    if version >= 3:
        fields["include_documentation"] = documentation
    response = call(node, 32, version, **fields)
    assert len(response.results) == 1
    return response.results[0]


@pytest.mark.parametrize("version", versions(describe_configs))
def test_describe_topic_configs_sources_and_synonyms(node: BrokerNode, version: int) -> None:
    create_topic(node, "t", 1, {"retention.ms": "1000"})
    result = describe(node, version, TOPIC, "t", synonyms=True)
    assert result.error_code == ErrorCode.none and result.error_message is None
    assert (result.resource_type, result.resource_name) == (TOPIC, "t")
    configs = {c.name: c for c in result.configs}
    assert set(configs) == {d.name for d in TOPIC_CONFIG_DEFS}

    retention = configs["retention.ms"]
    assert (retention.value, retention.config_source, retention.read_only) == ("1000", 1, False)
    assert [(s.name, s.value, s.source) for s in retention.synonyms] == [
        ("retention.ms", "1000", SOURCE_TOPIC), ("log.retention.ms", str(WEEK_MS), SOURCE_DEFAULT),
    ]
    segment = configs["segment.bytes"]  # the fixture's broker sets log.segment.bytes
    assert (segment.value, segment.config_source) == ("1048576", SOURCE_STATIC)
    assert [(s.name, s.value, s.source) for s in segment.synonyms] == [
        ("log.segment.bytes", "1048576", SOURCE_STATIC),
        ("log.segment.bytes", str(1024**3), SOURCE_DEFAULT),
    ]
    policy = configs["cleanup.policy"]
    assert (policy.value, policy.config_source) == ("delete", SOURCE_DEFAULT)
    assert not any(c.is_sensitive for c in result.configs)
    if version >= 3:
        assert retention.config_type == 5  # LONG
        assert policy.config_type == 7  # LIST
        assert configs["unclean.leader.election.enable"].config_type == 1  # BOOLEAN
        assert configs["segment.bytes"].config_type == 3  # INT
        assert retention.documentation is None  # not asked for


@pytest.mark.parametrize("version", [3, 4])
def test_describe_configs_documentation_on_request(node: BrokerNode, version: int) -> None:
    create_topic(node, "t", 1)
    result = describe(node, version, TOPIC, "t", keys=("retention.ms",), documentation=True)
    (entry,) = result.configs
    assert entry.documentation == TOPIC_CONFIGS["retention.ms"].doc
    assert entry.synonyms == ()  # not asked for


def test_describe_configs_filters_by_key(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    result = describe(node, 4, TOPIC, "t", keys=("retention.ms", "no.such.key", "flush.policy"))
    assert [c.name for c in result.configs] == ["retention.ms", "flush.policy"]
    assert len(describe(node, 4, TOPIC, "t", keys=()).configs) == len(TOPIC_CONFIG_DEFS)


def test_describe_configs_unknown_topic(node: BrokerNode) -> None:
    result = describe(node, 1, TOPIC, "nope")
    assert result.error_code == ErrorCode.unknown_topic_or_partition
    assert "nope" in result.error_message
    assert result.configs == ()
    result = describe(node, 1, TOPIC, "bad name!")
    assert result.error_code == ErrorCode.invalid_topic_exception


@pytest.mark.parametrize("version", versions(describe_configs))
def test_describe_broker_configs(node: BrokerNode, version: int) -> None:
    result = describe(node, version, BROKER, "0", synonyms=True)
    assert result.error_code == ErrorCode.none
    configs = {c.name: c for c in result.configs}
    assert set(configs) == set(BROKER_CONFIGS)
    assert {c.name for c in result.configs if not c.read_only} == DYNAMIC_BROKER_KEYS
    segment = configs["log.segment.bytes"]
    assert (segment.value, segment.config_source) == ("1048576", SOURCE_STATIC)
    assert [s.source for s in segment.synonyms] == [SOURCE_STATIC, SOURCE_DEFAULT]
    broker_id = configs["broker.id"]
    assert (broker_id.value, broker_id.config_source) == ("0", SOURCE_DEFAULT)
    assert configs["log.retention.ms"].value == str(WEEK_MS)


def test_describe_broker_configs_names(node: BrokerNode) -> None:
    empty = describe(node, 2, BROKER, "")
    assert (empty.error_code, empty.configs) == (ErrorCode.none, ())  # no dynamic defaults
    for name in ("1", "broker-0", " 0"):
        result = describe(node, 2, BROKER, name)
        assert result.error_code == ErrorCode.invalid_request
        assert repr(name) in result.error_message


def test_describe_configs_unsupported_resource_type(node: BrokerNode) -> None:
    result = describe(node, 4, 8, "0")  # BROKER_LOGGER
    assert result.error_code == ErrorCode.invalid_request
    assert "BROKER_LOGGER" in result.error_message


def test_describe_configs_answers_each_resource(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    response = call(node, 32, 1, resources=tuple(
        entity(32, 1, "DescribeConfigsResource", resource_type=kind, resource_name=name,
               configuration_keys=None)
        for kind, name in ((TOPIC, "t"), (TOPIC, "gone"), (BROKER, "0"))
    ), include_synonyms=False)
    assert [r.error_code for r in response.results] == [
        ErrorCode.none, ErrorCode.unknown_topic_or_partition, ErrorCode.none,
    ]
    assert all(c.synonyms == () for r in response.results for c in r.configs)


# --- AlterConfigs -------------------------------------------------------------------------

def alter(node: BrokerNode, version: int, *resources: tuple[int, str, dict[str, str | None]],
          validate_only: bool = False) -> list[tuple[ErrorCode, Any]]:
    response = call(
        node, 33, version,
        resources=tuple(
            entity(33, version, "AlterConfigsResource", resource_type=kind, resource_name=name,
                   configs=tuple(entity(33, version, "AlterableConfig", name=k, value=v)
                                 for k, v in configs.items()))
            for kind, name, configs in resources
        ),
        validate_only=validate_only,
    )
    return [(r.error_code, r.error_message) for r in response.responses]


@pytest.mark.parametrize("version", versions(alter_configs))
def test_alter_configs_replaces_the_whole_override_set(tmp_path: Path, version: int) -> None:
    node = make_node(tmp_path / "data")
    create_topic(node, "t", 2, {"segment.ms": "5000", "retention.bytes": "100"})
    assert alter(node, version, (TOPIC, "t", {"retention.ms": "1000",
                                              "retention.bytes": None})) == [
        (ErrorCode.none, None)
    ]
    state = node.topics["t"]
    assert dict(state.config.overrides) == {"retention.ms": "1000"}  # the rest was reset
    assert state.config.retention_ms == 1000
    assert state.config.segment_ms == WEEK_MS
    assert state.config.retention_bytes == -1
    assert all(p.config.retention_ms == 1000 for p in state.partitions)
    node.close()
    reopened = make_node(tmp_path / "data")
    assert dict(reopened.topics["t"].config.overrides) == {"retention.ms": "1000"}
    reopened.close()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("retention.ms", "abc", "not an integer"),
        ("retention.ms", "-7", "below the minimum"),
        ("cleanup.policy", "delete,shred", "not one of"),
        ("no.such.config", "1", "unknown topic config"),
    ],
)
def test_alter_configs_refuses_bad_values_and_changes_nothing(
    node: BrokerNode, key: str, value: str, reason: str
) -> None:
    create_topic(node, "t", 1, {"segment.ms": "5000"})
    ((code, message),) = alter(node, 1, (TOPIC, "t", {"retention.ms": "1000", key: value}))
    assert code == ErrorCode.invalid_config
    assert key in message and reason in message
    assert dict(node.topics["t"].config.overrides) == {"segment.ms": "5000"}


def test_alter_configs_resource_errors(node: BrokerNode) -> None:
    create_topic(node, "good", 1)
    create_topic(node, "bad", 1)
    create_topic(node, "twice", 1)
    results = alter(
        node, 2,
        (TOPIC, "good", {"retention.ms": "1000"}),
        (TOPIC, "bad", {"retention.ms": "abc"}),
        (TOPIC, "missing", {"retention.ms": "1000"}),
        (BROKER, "0", {"log.retention.ms": "1000"}),
        (TOPIC, "twice", {}), (TOPIC, "twice", {"retention.ms": "1"}),
        (16, "metrics", {}),
    )
    codes = [code for code, _ in results]
    assert codes == [
        ErrorCode.none, ErrorCode.invalid_config, ErrorCode.unknown_topic_or_partition,
        ErrorCode.invalid_request, ErrorCode.invalid_request, ErrorCode.invalid_request,
        ErrorCode.invalid_request,
    ]
    assert "IncrementalAlterConfigs" in results[3][1]
    assert "more than once" in results[4][1]
    assert "CLIENT_METRICS" in results[6][1]
    # resources are independent: the good one is applied, the refused ones are not
    assert dict(node.topics["good"].config.overrides) == {"retention.ms": "1000"}
    assert dict(node.topics["bad"].config.overrides) == {}
    assert dict(node.topics["twice"].config.overrides) == {}


def test_alter_configs_refuses_a_key_named_twice(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    response = call(node, 33, 0, resources=(entity(
        33, 0, "AlterConfigsResource", resource_type=TOPIC, resource_name="t",
        configs=(entity(33, 0, "AlterableConfig", name="retention.ms", value="1"),
                 entity(33, 0, "AlterableConfig", name="retention.ms", value="2")),
    ),), validate_only=False)
    (result,) = response.responses
    assert result.error_code == ErrorCode.invalid_request
    assert "retention.ms" in result.error_message
    assert dict(node.topics["t"].config.overrides) == {}


def test_alter_configs_validate_only(node: BrokerNode) -> None:
    create_topic(node, "t", 1, {"segment.ms": "5000"})
    assert alter(node, 1, (TOPIC, "t", {"retention.ms": "1000"}), validate_only=True) == [
        (ErrorCode.none, None)
    ]
    ((code, _),) = alter(node, 1, (TOPIC, "t", {"retention.ms": "x"}), validate_only=True)
    assert code == ErrorCode.invalid_config
    assert dict(node.topics["t"].config.overrides) == {"segment.ms": "5000"}


# --- IncrementalAlterConfigs --------------------------------------------------------------

def incremental(node: BrokerNode, version: int,
                *resources: tuple[int, str, list[tuple[str, int, str | None]]],
                validate_only: bool = False) -> list[tuple[ErrorCode, Any]]:
    response = call(
        node, 44, version,
        resources=tuple(
            entity(44, version, "AlterConfigsResource", resource_type=kind, resource_name=name,
                   configs=tuple(entity(44, version, "AlterableConfig", name=k,
                                        config_operation=op, value=v) for k, op, v in ops))
            for kind, name, ops in resources
        ),
        validate_only=validate_only,
    )
    return [(r.error_code, r.error_message) for r in response.responses]


def source_of(node: BrokerNode, topic: str, key: str) -> tuple[str, int]:
    (entry,) = describe(node, 4, TOPIC, topic, keys=(key,)).configs
    return entry.value, entry.config_source


@pytest.mark.parametrize("version", versions(incremental_alter_configs))
def test_incremental_set_then_delete_goes_back_to_the_default(
    node: BrokerNode, version: int
) -> None:
    create_topic(node, "t", 1, {"segment.ms": "5000"})
    ok = [(ErrorCode.none, None)]
    assert incremental(node, version, (TOPIC, "t", [("retention.ms", SET, "1000")])) == ok
    overrides = dict(node.topics["t"].config.overrides)
    assert overrides == {"segment.ms": "5000", "retention.ms": "1000"}  # others kept
    assert source_of(node, "t", "retention.ms") == ("1000", SOURCE_TOPIC)
    assert incremental(node, version, (TOPIC, "t", [("retention.ms", DELETE, None)])) == ok
    assert dict(node.topics["t"].config.overrides) == {"segment.ms": "5000"}
    assert source_of(node, "t", "retention.ms") == (str(WEEK_MS), SOURCE_DEFAULT)
    # deleting a key that has no override is not an error
    assert incremental(node, version, (TOPIC, "t", [("retention.ms", DELETE, None)])) == ok
    # back to the broker's static value when the broker sets one
    assert incremental(node, version, (TOPIC, "t", [("segment.bytes", SET, "4096")])) == ok
    assert incremental(node, version, (TOPIC, "t", [("segment.bytes", DELETE, None)])) == ok
    assert source_of(node, "t", "segment.bytes") == ("1048576", SOURCE_STATIC)


def test_incremental_append_and_subtract_list_configs(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    ok = [(ErrorCode.none, None)]
    assert incremental(node, 1, (TOPIC, "t", [("cleanup.policy", APPEND, "compact")])) == ok
    assert node.topics["t"].config.cleanup_policy == ("delete", "compact")
    assert incremental(node, 1, (TOPIC, "t", [("cleanup.policy", APPEND, "compact,delete")])) == ok
    assert node.topics["t"].config.cleanup_policy == ("delete", "compact")  # no duplicates
    assert incremental(node, 1, (TOPIC, "t", [("cleanup.policy", SUBTRACT, "delete")])) == ok
    assert node.topics["t"].config.cleanup_policy == ("compact",)
    ((code, message),) = incremental(node, 1, (TOPIC, "t", [("cleanup.policy", SUBTRACT,
                                                             "compact")]))
    assert code == ErrorCode.invalid_config
    assert "cleanup.policy" in message and "empty" in message
    ((code, message),) = incremental(node, 1, (TOPIC, "t", [("cleanup.policy", APPEND, "shred")]))
    assert code == ErrorCode.invalid_config and "shred" in message
    assert node.topics["t"].config.cleanup_policy == ("compact",)


@pytest.mark.parametrize(
    ("ops", "code", "words"),
    [
        ([("retention.ms", APPEND, "5")], ErrorCode.invalid_config, ["retention.ms", "list"]),
        ([("retention.ms", SUBTRACT, "5")], ErrorCode.invalid_config, ["retention.ms", "list"]),
        ([("retention.ms", SET, "abc")], ErrorCode.invalid_config,
         ["retention.ms", "not an integer"]),
        ([("no.such", SET, "1")], ErrorCode.invalid_config, ["no.such", "unknown"]),
        ([("no.such", DELETE, None)], ErrorCode.invalid_config, ["no.such", "unknown"]),
        ([("retention.ms", 9, "1")], ErrorCode.invalid_request, ["retention.ms", "operation 9"]),
        ([("retention.ms", SET, None)], ErrorCode.invalid_request, ["retention.ms", "null"]),
        ([("retention.ms", SET, "1"), ("retention.ms", DELETE, None)], ErrorCode.invalid_request,
         ["retention.ms", "more than once"]),
        # one bad key refuses the whole resource: the good SET before it is not applied
        ([("segment.ms", SET, "10"), ("retention.bytes", SET, "-9")], ErrorCode.invalid_config,
         ["retention.bytes", "minimum"]),
    ],
)
def test_incremental_refusals_change_nothing(
    node: BrokerNode, ops: list[tuple[str, int, str | None]], code: ErrorCode, words: list[str]
) -> None:
    create_topic(node, "t", 1, {"retention.ms": "1000"})
    ((got, message),) = incremental(node, 1, (TOPIC, "t", ops))
    assert got == code
    for word in words:
        assert word in message
    assert dict(node.topics["t"].config.overrides) == {"retention.ms": "1000"}


def test_incremental_resource_errors_and_validate_only(node: BrokerNode) -> None:
    create_topic(node, "t", 1)
    results = incremental(
        node, 0,
        (TOPIC, "t", [("retention.ms", SET, "1000")]),
        (TOPIC, "missing", [("retention.ms", SET, "1000")]),
        (BROKER, "0", [("log.retention.ms", SET, "1000")]),
        (BROKER, "3", [("log.retention.ms", SET, "1000")]),
        validate_only=True,
    )
    assert [code for code, _ in results] == [
        ErrorCode.none, ErrorCode.unknown_topic_or_partition, ErrorCode.none,
        ErrorCode.invalid_request,
    ]
    assert "'3'" in results[3][1]
    assert dict(node.topics["t"].config.overrides) == {}
    assert node.config.dynamic == {}  # validate_only


# --- DescribeCluster ----------------------------------------------------------------------

@pytest.mark.parametrize("version", versions(describe_cluster))
def test_describe_cluster(node: BrokerNode, version: int) -> None:
    fields: dict[str, Any] = {"include_cluster_authorized_operations": False}
    if version >= 1:
        fields["endpoint_type"] = 1
    if version >= 2:
        fields["include_fenced_brokers"] = True
    response = call(node, 60, version, **fields)
    assert response.error_code == ErrorCode.none
    assert response.cluster_id == node.cluster_id
    assert response.controller_id == 0
    assert [(b.broker_id, b.host, b.port, b.rack) for b in response.brokers] == [
        (0, "127.0.0.1", 9092, None)
    ]
    assert response.cluster_authorized_operations == -(2**31)
    if version >= 1:
        assert response.endpoint_type == 1
    if version >= 2:
        assert not response.brokers[0].is_fenced


def test_describe_cluster_authorized_operations(node: BrokerNode) -> None:
    response = call(node, 60, 0, include_cluster_authorized_operations=True)
    ops = {bit for bit in range(32) if response.cluster_authorized_operations & (1 << bit)}
    # CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE
    assert ops == {5, 7, 8, 9, 10, 11, 12}


def test_describe_cluster_endpoint_types(node: BrokerNode) -> None:
    response = call(node, 60, 1, include_cluster_authorized_operations=False, endpoint_type=2)
    assert response.error_code == ErrorCode.mismatched_endpoint_type
    assert response.brokers == ()
    response = call(node, 60, 2, include_cluster_authorized_operations=False, endpoint_type=7,
                    include_fenced_brokers=True)
    assert response.error_code == ErrorCode.unsupported_endpoint_type
    assert "7" in response.error_message
