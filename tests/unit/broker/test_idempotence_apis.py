"""InitProducerId, idempotent Produce and DescribeProducers against an in-process BrokerNode.

Requests are encoded into frames and handed to `BrokerNode.handle_frame`, so decoding,
dispatch and the response encoders are exercised; answers are decoded with kio.
"""

from __future__ import annotations

import datetime
import importlib
import io
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.dispatch import TABLE
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.errors import ErrorCode
from ackly.log.disk import RealDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import header_version, is_flexible, known_versions, request_type, response_type
from ackly.protocol.record_codec import Record, encode_batch

NOW_MS = 1_700_000_000_000
INIT_PRODUCER_ID, PRODUCE, DESCRIBE_PRODUCERS = 22, 0, 61
TOPIC = "idem"


def make_node(data_dir: Path, flush_policy: str = "never") -> BrokerNode:
    props = {"log.flush.policy": flush_policy, "log.segment.bytes": "4096"}
    return BrokerNode(
        config=BrokerConfig.from_properties(props), disk=RealDisk(), data_dir=str(data_dir),
        host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0),
    )


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    n.create_topic(TOPIC, 1, {}, NOW_MS)
    yield n
    n.close()


_correlation = iter(range(1, 1_000_000))


def call(node: BrokerNode, api_key: int, version: int, **fields: Any) -> Any:
    """Encode a request into a frame, run it (and any flush it waits for), decode the answer."""
    request = request_type(api_key, version)(**fields)
    correlation_id = next(_correlation)
    frame = io.BytesIO()
    frame.write(struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test")
    if header_version(api_key, version) >= 2:
        frame.write(b"\x00")
    entity_writer(type(request))(frame, request)
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(api_key, version, correlation_id, "test"),
                         now_ms=NOW_MS, sink=answers.append)
    node.handle_frame(ctx, frame.getvalue())
    for _ in range(3):  # flush.policy=always: the answer waits for a group flush
        if answers:
            break
        jobs = node.take_flush_jobs()
        for _, job in jobs:
            job.run()
        node.complete_flush(jobs, NOW_MS)
    assert len(answers) == 1 and answers[0] is not None, "exactly one answer"
    data = b"".join(bytes(piece) for piece in answers[0])
    offset = 8 + (1 if is_flexible(api_key, version) else 0)
    response, _ = entity_reader(response_type(api_key, version))(data, offset)
    return response


def init_producer_id(node: BrokerNode, version: int = 4, producer_id: int = -1, epoch: int = -1,
                     transactional_id: str | None = None) -> Any:
    fields: dict[str, Any] = {"transactional_id": transactional_id,
                              "transaction_timeout": datetime.timedelta(seconds=60)}
    if version >= 3:
        fields.update(producer_id=producer_id, producer_epoch=epoch)
    return call(node, INIT_PRODUCER_ID, version, **fields)


def produce(
    node: BrokerNode, *batches: bytes, version: int = 9, acks: int = -1
) -> tuple[int, int, str | None]:
    """(error code, base offset, error message) of a one-partition Produce."""
    m = importlib.import_module(request_type(PRODUCE, version).__module__)
    request = {
        "transactional_id": None, "acks": acks, "timeout": datetime.timedelta(seconds=10),
        "topic_data": (m.TopicProduceData(name=TOPIC, partition_data=(
            m.PartitionProduceData(index=0, records=b"".join(batches)),)),),
    }
    response = call(node, PRODUCE, version, **request)
    part = response.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset), getattr(part, "error_message", None)


def pbatch(pid: int, epoch: int, seq: int, count: int = 1) -> bytes:
    records = [Record(key=None, value=b"%d" % (seq + i), timestamp_ms=NOW_MS) for i in range(count)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_advertised_ranges() -> None:
    assert (TABLE[INIT_PRODUCER_ID].min_version, TABLE[INIT_PRODUCER_ID].max_version) == (0, 6)
    assert set(range(0, 7)) <= set(known_versions(INIT_PRODUCER_ID))  # v0 turns librdkafka's on
    assert (TABLE[DESCRIBE_PRODUCERS].min_version, TABLE[DESCRIBE_PRODUCERS].max_version) == (0, 0)


@pytest.mark.parametrize("version", range(0, 7))
def test_init_producer_id_hands_out_fresh_ids_in_every_version(node: BrokerNode, version: int) -> None:
    first, second = init_producer_id(node, version), init_producer_id(node, version)
    assert first.error_code == second.error_code == ErrorCode.none
    assert first.producer_id != second.producer_id
    assert first.producer_epoch == second.producer_epoch == 0


@pytest.mark.parametrize("version", range(3, 7))
def test_init_producer_id_bumps_the_epoch_and_fences_stale_ones(node: BrokerNode, version: int) -> None:
    pid = init_producer_id(node, version).producer_id
    bumped = init_producer_id(node, version, pid, 0)
    assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (ErrorCode.none, pid, 1)
    init_producer_id(node, version, pid, 1)
    stale = init_producer_id(node, version, pid, 0)
    # KIP-588: PRODUCER_FENCED from v4; older clients know the same case as INVALID_PRODUCER_EPOCH.
    expected = ErrorCode.producer_fenced if version >= 4 else ErrorCode.invalid_producer_epoch
    assert stale.error_code == expected
    assert init_producer_id(node, version, pid, -1).error_code == ErrorCode.invalid_request


def test_transactional_ids_go_to_their_transaction_coordinator(node: BrokerNode) -> None:
    # Before any FindCoordinator created __transaction_state, no broker coordinates the id:
    # the client looks the coordinator up (tests/unit/broker/test_transactions_apis.py).
    answer = init_producer_id(node, 4, transactional_id="txn")
    assert answer.error_code == ErrorCode.not_coordinator
    assert (answer.producer_id, answer.producer_epoch) == (-1, -1)


@pytest.mark.parametrize("flush_policy", ["never", "always"])
def test_produce_answers_a_retry_with_the_original_offset(tmp_path: Path, flush_policy: str) -> None:
    node = make_node(tmp_path / "data", flush_policy)
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    pid = init_producer_id(node).producer_id
    assert produce(node, pbatch(pid, 0, 0, 3))[:2] == (ErrorCode.none, 0)
    assert produce(node, encode_batch([Record(None, b"plain")]))[:2] == (ErrorCode.none, 3)
    assert produce(node, pbatch(pid, 0, 0, 3))[:2] == (ErrorCode.none, 0)  # the retry
    assert produce(node, pbatch(pid, 0, 3))[:2] == (ErrorCode.none, 4)
    assert node.partition(TOPIC, 0).log_end_offset == 5
    node.close()


def test_produce_refusals_carry_kafkas_codes(node: BrokerNode) -> None:
    pid = init_producer_id(node).producer_id
    produce(node, pbatch(pid, 0, 0))
    code, _, message = produce(node, pbatch(pid, 0, 2))
    assert code == ErrorCode.out_of_order_sequence_number and message and "expected 1" in message
    # A producer with no state here starts at any sequence (KIP-360), not UNKNOWN_PRODUCER_ID.
    assert produce(node, pbatch(pid + 1000, 0, 4))[:2] == (ErrorCode.none, 1)
    bumped = init_producer_id(node, 4, pid, 0)
    assert produce(node, pbatch(pid, bumped.producer_epoch, 0))[0] == ErrorCode.none
    assert produce(node, pbatch(pid, 0, 1))[0] == ErrorCode.invalid_producer_epoch
    assert node.partition(TOPIC, 0).log_end_offset == 3


def test_describe_producers(node: BrokerNode) -> None:
    pid = init_producer_id(node).producer_id
    produce(node, pbatch(pid, 0, 0, 4))
    m = importlib.import_module(request_type(DESCRIBE_PRODUCERS, 0).__module__)
    answer = call(node, DESCRIBE_PRODUCERS, 0, topics=(
        m.TopicRequest(name=TOPIC, partition_indexes=(0, 5)),
        m.TopicRequest(name="nope", partition_indexes=(0,)),
    ))
    known, missing = answer.topics[0].partitions
    assert known.error_code == ErrorCode.none
    [state] = known.active_producers
    assert (state.producer_id, state.producer_epoch, state.last_sequence) == (pid, 0, 3)
    assert state.last_timestamp == NOW_MS
    assert missing.error_code == ErrorCode.unknown_topic_or_partition
    assert answer.topics[1].partitions[0].error_code == ErrorCode.unknown_topic_or_partition


def test_a_restart_keeps_duplicates_recognised_and_ids_unique(tmp_path: Path) -> None:
    node = make_node(tmp_path / "data", "always")
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    pid = init_producer_id(node).producer_id
    for seq in range(3):
        produce(node, pbatch(pid, 0, seq))
    node.close()
    node = make_node(tmp_path / "data", "always")
    assert produce(node, pbatch(pid, 0, 2))[:2] == (ErrorCode.none, 2)
    assert produce(node, pbatch(pid, 0, 3))[:2] == (ErrorCode.none, 3)
    assert init_producer_id(node).producer_id > pid
    node.close()
