"""Transactions at the partition level through the APIs of an in-process BrokerNode (KIP-98):
transactional Produce, WriteTxnMarkers v1, Fetch with both isolation levels, ListOffsets
read_committed, DescribeProducers, KIP-890 verification (with a stand-in coordinator), and,
on a three-broker core cluster, markers answered at HW and followers rebuilding the leader's
transaction state.

Requests are encoded into frames and handed to `BrokerNode.handle_frame`; answers are
decoded with kio, and fetch answers are also re-encoded by kio and compared byte for byte.
"""

from __future__ import annotations

import datetime
import io
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.dispatch import TABLE
from ackly.broker.node import BrokerNode
from ackly.broker.txn_markers import TxnMarker, append_markers
from ackly.config import BrokerConfig
from ackly.errors import ErrorCode
from ackly.log.disk import RealDisk
from ackly.log.txn_index import AbortedTxn
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import header_version, is_flexible, request_type, response_type
from ackly.protocol.record_codec import ControlType, Record, encode_batch, encode_control_batch
from ackly.protocol.records import iter_batches
from ackly.types import TopicPartition

from .core_cluster import CoreCluster

NOW_MS = 1_700_000_000_000
PRODUCE, FETCH, LIST_OFFSETS, CREATE_TOPICS, WRITE_TXN_MARKERS, DESCRIBE_PRODUCERS = 0, 1, 2, 19, 27, 61
TOPIC = "txn"
TP = TopicPartition(TOPIC, 0)
PID_A, PID_B = 1000, 2000


def make_node(data_dir: Path, **props: str) -> BrokerNode:
    config = {"log.flush.policy": "never", "transaction.partition.verification.enable": "false",
              "offsets.topic.num.partitions": "1", **props}
    return BrokerNode(
        config=BrokerConfig.from_properties(config), disk=RealDisk(), data_dir=str(data_dir),
        host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0),
    )


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    n.create_topic(TOPIC, 1, {}, NOW_MS)
    yield n
    n.close()


_correlation = iter(range(1, 1_000_000))


def _piece_bytes(piece: Any) -> bytes:
    if isinstance(piece, bytes | bytearray | memoryview):
        return bytes(piece)
    return bytes(piece.file.read(piece.position, piece.size))  # a FileRange


def start(node: BrokerNode, api_key: int, version: int, **fields: Any) -> list[Any]:
    """Hand a request to the node; returns the list its answer will be put in."""
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
    return answers


def decode(api_key: int, version: int, answers: list[Any]) -> tuple[Any, bytes]:
    assert len(answers) == 1 and answers[0] is not None, "exactly one answer"
    data = b"".join(_piece_bytes(piece) for piece in answers[0])
    offset = 8 + (1 if is_flexible(api_key, version) else 0)
    response, _ = entity_reader(response_type(api_key, version))(data, offset)
    return response, data[offset:]


def call(node: BrokerNode, api_key: int, version: int, **fields: Any) -> Any:
    return decode(api_key, version, start(node, api_key, version, **fields))[0]


def _schema(api_key: int, version: int) -> Any:
    return sys.modules[request_type(api_key, version).__module__]


def tbatch(pid: int, seq: int, *values: bytes, epoch: int = 0, transactional: bool = True) -> bytes:
    return encode_batch([Record(key=None, value=v, timestamp_ms=NOW_MS) for v in values],
                        producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                        transactional=transactional)


def produce(node: BrokerNode, data: bytes, transactional_id: str | None = "tx",
            acks: int = -1) -> tuple[ErrorCode, int]:
    m = _schema(PRODUCE, 9)
    response = call(node, PRODUCE, 9, transactional_id=transactional_id, acks=acks,
                    timeout=datetime.timedelta(seconds=10),
                    topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
                        m.PartitionProduceData(index=0, records=data),)),))
    part = response.responses[0].partition_responses[0]
    return ErrorCode(part.error_code), int(part.base_offset)


def write_markers(node: BrokerNode, *markers: tuple[int, int, bool], coordinator_epoch: int = 0,
                  topic: str = TOPIC) -> list[ErrorCode]:
    """WriteTxnMarkers v1, one (producer id, epoch, commit) per marker on topic-0."""
    m = _schema(WRITE_TXN_MARKERS, 1)
    response = call(node, WRITE_TXN_MARKERS, 1, markers=tuple(
        m.WritableTxnMarker(producer_id=pid, producer_epoch=epoch, transaction_result=commit,
                            coordinator_epoch=coordinator_epoch,
                            topics=(m.WritableTxnMarkerTopic(name=topic, partition_indexes=(0,)),))
        for pid, epoch, commit in markers
    ))
    assert [int(r.producer_id) for r in response.markers] == [pid for pid, _, _ in markers]
    return [ErrorCode(r.topics[0].partitions[0].error_code) for r in response.markers]


def fetch_request(version: int, isolation_level: int, offset: int = 0, max_wait_ms: int = 0) -> dict[str, Any]:
    m = _schema(FETCH, version)
    fields: dict[str, Any] = dict(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1, max_bytes=1 << 20,
        isolation_level=isolation_level, topics=(m.FetchTopic(topic=TOPIC, partitions=(
            m.FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20),)),),
    )
    if version >= 7:
        fields["forgotten_topics_data"] = ()
    return fields


def fetch(node: BrokerNode, version: int, isolation_level: int, offset: int = 0) -> Any:
    """The partition of a Fetch; its bytes must be exactly what kio writes for the same value."""
    response, body = decode(FETCH, version, start(
        node, FETCH, version, **fetch_request(version, isolation_level, offset)))
    out = io.BytesIO()
    entity_writer(type(response))(out, response)
    assert out.getvalue() == body, "the hand-encoded response differs from kio's"
    return response.responses[0].partitions[0]


def offsets_in(records: bytes | None) -> list[tuple[int, int, bool]]:
    """(base offset, producer id, is control) of each batch."""
    return [(h.base_offset, h.producer_id, h.is_control) for _, h in iter_batches(records or b"")]


def latest(node: BrokerNode, isolation_level: int) -> int:
    m = _schema(LIST_OFFSETS, 7)
    response = call(node, LIST_OFFSETS, 7, replica_id=-1, isolation_level=isolation_level,
                    topics=(m.ListOffsetsTopic(name=TOPIC, partitions=(
                        m.ListOffsetsPartition(partition_index=0, timestamp=-1),)),))
    part = response.topics[0].partitions[0]
    assert part.error_code == ErrorCode.none
    return int(part.offset)


def describe(node: BrokerNode) -> dict[int, tuple[int, int]]:
    """producer id -> (coordinator epoch, current transaction start offset)."""
    m = _schema(DESCRIBE_PRODUCERS, 0)
    response = call(node, DESCRIBE_PRODUCERS, 0,
                    topics=(m.TopicRequest(name=TOPIC, partition_indexes=(0,)),))
    return {int(p.producer_id): (int(p.coordinator_epoch), int(p.current_txn_start_offset))
            for p in response.topics[0].partitions[0].active_producers}


# --- one broker ----------------------------------------------------------------------------


def test_write_txn_markers_is_advertised_at_v1_and_v2() -> None:
    assert (TABLE[WRITE_TXN_MARKERS].min_version, TABLE[WRITE_TXN_MARKERS].max_version) == (1, 2)


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_read_committed_stops_at_the_lso_and_lists_aborted_transactions(
    node: BrokerNode, version: int
) -> None:
    assert produce(node, tbatch(PID_A, 0, b"a1", b"a2")) == (ErrorCode.none, 0)  # 0-1
    assert produce(node, encode_batch([Record(None, b"plain", timestamp_ms=NOW_MS)]),
                   transactional_id=None) == (ErrorCode.none, 2)
    assert produce(node, tbatch(PID_B, 0, b"b1")) == (ErrorCode.none, 3)
    committed = fetch(node, version, 1)
    assert (committed.high_watermark, committed.last_stable_offset) == (4, 0)
    assert offsets_in(committed.records) == []
    assert committed.aborted_transactions == ()
    uncommitted = fetch(node, version, 0)
    assert uncommitted.last_stable_offset == 0  # the real LSO, for read_uncommitted too
    assert [o for o, _, _ in offsets_in(uncommitted.records)] == [0, 2, 3]
    assert uncommitted.aborted_transactions is None
    assert (latest(node, 0), latest(node, 1)) == (4, 0)
    assert describe(node) == {PID_A: (-1, 0), PID_B: (-1, 3)}

    assert write_markers(node, (PID_A, 0, False), coordinator_epoch=7) == [ErrorCode.none]  # 4
    committed = fetch(node, version, 1)
    assert committed.last_stable_offset == 3  # B's transaction is still open
    assert [o for o, _, _ in offsets_in(committed.records)] == [0, 2]
    assert [(a.producer_id, a.first_offset) for a in committed.aborted_transactions] == [(PID_A, 0)]
    assert write_markers(node, (PID_B, 0, True)) == [ErrorCode.none]  # 5
    committed = fetch(node, version, 1)
    assert (committed.high_watermark, committed.last_stable_offset) == (6, 6)
    assert offsets_in(committed.records) == [
        (0, PID_A, False), (2, -1, False), (3, PID_B, False), (4, PID_A, True), (5, PID_B, True),
    ]
    assert [(a.producer_id, a.first_offset) for a in committed.aborted_transactions] == [(PID_A, 0)]
    # A fetch past the aborted transaction does not list it.
    assert fetch(node, version, 1, offset=5).aborted_transactions == ()
    assert (latest(node, 0), latest(node, 1)) == (6, 6)
    assert describe(node) == {PID_A: (7, -1), PID_B: (0, -1)}


def test_clients_may_not_write_control_batches(node: BrokerNode) -> None:
    control = encode_control_batch(ControlType.COMMIT, producer_id=PID_A, producer_epoch=0)
    assert produce(node, control)[0] == ErrorCode.invalid_record
    assert node.partition(TOPIC, 0).log_end_offset == 0


def test_transaction_state_errors_of_produce(node: BrokerNode) -> None:
    assert produce(node, tbatch(PID_A, 0, b"a", epoch=2))[0] == ErrorCode.none
    # A plain batch from a producer inside a transaction.
    assert produce(node, tbatch(PID_A, 1, b"x", epoch=2, transactional=False))[0] == \
        ErrorCode.invalid_txn_state
    # A fenced epoch: INVALID_PRODUCER_EPOCH (PRODUCER_FENCED is not a Produce error).
    assert produce(node, tbatch(PID_A, 0, b"y", epoch=1))[0] == ErrorCode.invalid_producer_epoch
    # Markers: an older epoch is refused; a newer one fences.
    assert write_markers(node, (PID_A, 1, True)) == [ErrorCode.invalid_producer_epoch]
    assert write_markers(node, (PID_A, 3, False)) == [ErrorCode.none]
    assert produce(node, tbatch(PID_A, 1, b"z", epoch=2))[0] == ErrorCode.invalid_producer_epoch
    assert write_markers(node, (PID_A, 3, True), topic="nope") == [ErrorCode.unknown_topic_or_partition]


def test_a_read_committed_long_poll_wakes_when_the_lso_moves(node: BrokerNode) -> None:
    produce(node, tbatch(PID_A, 0, b"a"))
    answers = start(node, FETCH, 12, **fetch_request(12, 1, max_wait_ms=30_000))
    assert answers == [], "nothing is stable yet: the fetch waits"
    write_markers(node, (PID_A, 0, True))
    response, _ = decode(FETCH, 12, answers)
    part = response.responses[0].partitions[0]
    assert part.last_stable_offset == 2 and offsets_in(part.records)[0][0] == 0


def test_markers_on_consumer_offsets_complete_the_groups_transaction(
    node: BrokerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.create_topic("__consumer_offsets", 1, {}, NOW_MS)
    calls: list[tuple[int, int, bool]] = []
    monkeypatch.setattr(node.group_coordinator, "complete_transaction",
                        lambda index, pid, committed, now_ms: calls.append((index, pid, committed)))
    results: list[dict[TopicPartition, ErrorCode]] = []
    offsets_tp = TopicPartition("__consumer_offsets", 0)
    append_markers(node, [TxnMarker(PID_A, 0, True, 0, (offsets_tp, TP))], NOW_MS, results.append)
    assert results == [{offsets_tp: ErrorCode.none, TP: ErrorCode.none}]
    assert calls == [(0, PID_A, True)]


class FakeTransactions:
    """Stands in for the transaction coordinator's verify_partitions (KIP-890 part 1)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int, list[TopicPartition]]] = []
        self.pending: list[Callable[[dict[TopicPartition, ErrorCode]], None]] = []

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Any, now_ms: int,
                          done: Callable[[dict[TopicPartition, ErrorCode]], None], *,
                          add: bool = False) -> None:
        self.asked.append((transactional_id, producer_id, producer_epoch, list(partitions)))
        self.pending.append(done)


def test_verification_asks_the_coordinator_before_a_transaction_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(tmp_path / "v", **{"transaction.partition.verification.enable": "true"})
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    fake = FakeTransactions()
    monkeypatch.setattr(node.transactions, "verify_partitions", fake.verify_partitions)
    try:
        m = _schema(PRODUCE, 9)

        def send(data: bytes) -> list[Any]:
            return start(node, PRODUCE, 9, transactional_id="tx", acks=1,
                         timeout=datetime.timedelta(seconds=10),
                         topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
                             m.PartitionProduceData(index=0, records=data),)),))

        def code(answers: list[Any]) -> ErrorCode:
            response, _ = decode(PRODUCE, 9, answers)
            return ErrorCode(response.responses[0].partition_responses[0].error_code)

        # Refused by the coordinator: nothing is written.
        answers = send(tbatch(PID_A, 0, b"a"))
        assert answers == [] and fake.asked == [("tx", PID_A, 0, [TP])]
        fake.pending.pop()({TP: ErrorCode.invalid_txn_state})
        assert code(answers) == ErrorCode.invalid_txn_state
        assert node.partition(TOPIC, 0).log_end_offset == 0
        # Answers a producer must see as Produce errors it knows (Kafka converts them too).
        for answer, expected in ((ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch),
                                 (ErrorCode.not_coordinator, ErrorCode.not_enough_replicas)):
            answers = send(tbatch(PID_A, 0, b"a"))
            fake.pending.pop()({TP: answer})
            assert code(answers) == expected
        assert node.partition(TOPIC, 0).log_end_offset == 0
        # Confirmed: appended; inside the transaction nobody is asked again.
        answers = send(tbatch(PID_A, 0, b"a"))
        fake.pending.pop()({TP: ErrorCode.none})
        assert code(answers) == ErrorCode.none
        assert code(send(tbatch(PID_A, 1, b"b"))) == ErrorCode.none
        assert len(fake.asked) == 4
        # A marker lands between the coordinator's answer and the append: refused (KIP-890).
        write_markers(node, (PID_A, 0, True))
        answers = send(tbatch(PID_A, 2, b"late"))
        write_markers(node, (PID_A, 0, False))
        leo = node.partition(TOPIC, 0).log_end_offset
        fake.pending.pop()({TP: ErrorCode.none})
        assert code(answers) == ErrorCode.invalid_txn_state
        assert node.partition(TOPIC, 0).log_end_offset == leo
    finally:
        node.close()


def test_a_producers_requests_are_appended_in_the_order_they_were_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # librdkafka with linger.ms=0 pipelines one request per record. R1 (sequence 1) and R2 (2)
    # both start the producer's next transaction here, so both wait for the coordinator; R2's
    # answer comes first (the coordinator moved here between them, or a peer answered on a
    # newer connection). Appending R2 then would refuse it OUT_OF_ORDER_SEQUENCE_NUMBER and take
    # R1: the client, reading answers in request order, sees its head of line refused and fails
    # for good. Kafka reads R2 only after answering R1.
    node = make_node(tmp_path / "v", **{"transaction.partition.verification.enable": "true"})
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    fake = FakeTransactions()
    monkeypatch.setattr(node.transactions, "verify_partitions", fake.verify_partitions)
    try:
        m = _schema(PRODUCE, 9)

        def send(data: bytes) -> list[Any]:
            return start(node, PRODUCE, 9, transactional_id="tx", acks=1,
                         timeout=datetime.timedelta(seconds=10),
                         topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
                             m.PartitionProduceData(index=0, records=data),)),))

        def answer(answers: list[Any]) -> tuple[ErrorCode, int]:
            response, _ = decode(PRODUCE, 9, answers)
            part = response.responses[0].partition_responses[0]
            return ErrorCode(part.error_code), int(part.base_offset)

        # A committed transaction: the partition keeps the producer's sequence 0.
        first = send(tbatch(PID_A, 0, b"a"))
        fake.pending.pop()({TP: ErrorCode.none})
        assert answer(first) == (ErrorCode.none, 0)
        write_markers(node, (PID_A, 0, True))
        r1, r2 = send(tbatch(PID_A, 1, b"b")), send(tbatch(PID_A, 2, b"c"))
        assert len(fake.asked) == 3 and r1 == [] and r2 == []
        verify_r1, verify_r2 = fake.pending
        verify_r2({TP: ErrorCode.none})
        assert r2 == [] and node.partition(TOPIC, 0).log_end_offset == 2  # R2 waits for R1
        verify_r1({TP: ErrorCode.none})
        assert answer(r1) == (ErrorCode.none, 2) and answer(r2) == (ErrorCode.none, 3)
        assert node.transactions.verified_appends.waiting(PID_A) == 0

        # Inside the transaction nobody is asked again, and nobody waits.
        assert produce(node, tbatch(PID_A, 3, b"d")) == (ErrorCode.none, 4)

        # A request that starts no transaction (the producer's is ongoing on other-0) still
        # waits behind an earlier request of its producer that is being verified.
        node.create_topic("other", 1, {}, NOW_MS)
        other = TopicPartition("other", 0)

        def send_other(seq: int) -> list[Any]:
            return start(node, PRODUCE, 9, transactional_id="tx", acks=1,
                         timeout=datetime.timedelta(seconds=10),
                         topic_data=(m.TopicProduceData(name="other", partition_data=(
                             m.PartitionProduceData(index=0, records=tbatch(PID_A, seq, b"x")),)),))

        started = send_other(0)
        fake.pending[-1]({other: ErrorCode.none})
        assert answer(started) == (ErrorCode.none, 0)
        write_markers(node, (PID_A, 0, False))  # ends the transaction on txn-0 only
        r3, r4 = send(tbatch(PID_A, 4, b"e")), send_other(1)
        assert len(fake.asked) == 5 and r3 == [] and r4 == []
        fake.pending[-1]({TP: ErrorCode.none})
        assert answer(r3) == (ErrorCode.none, 6) and answer(r4) == (ErrorCode.none, 1)
        assert node.transactions.verified_appends.waiting(PID_A) == 0
    finally:
        node.close()


# --- a replicated partition ----------------------------------------------------------------


def test_markers_wait_for_hw_and_followers_rebuild_the_leaders_state(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], {"transaction.partition.verification.enable": "false"})
    mod = _schema(CREATE_TOPICS, 7)
    reply = c.call(1, CREATE_TOPICS, 7, topics=(mod.CreatableTopic(
        name=TOPIC, num_partitions=1, replication_factor=3, assignments=(),
        configs=(mod.CreatableTopicConfig(name="min.insync.replicas", value="2"),)),),
        timeout=datetime.timedelta(seconds=10), validate_only=False)
    assert c.wait(reply).topics[0].error_code == ErrorCode.none
    c.settle()
    leader = c.leader(TOPIC)
    m = _schema(PRODUCE, 9)
    for pid, epoch in ((PID_A, 0), (PID_B, 1)):
        data = tbatch(pid, 0, b"v", epoch=epoch)
        reply = c.call(leader, PRODUCE, 9, transactional_id="tx", acks=-1,
                       timeout=datetime.timedelta(seconds=10),
                       topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
                           m.PartitionProduceData(index=0, records=data),)),))
        assert c.wait(reply).responses[0].partition_responses[0].error_code == ErrorCode.none
    node = c.node(leader)
    results: list[dict[TopicPartition, ErrorCode]] = []
    append_markers(node, [TxnMarker(PID_A, 0, False, 0, (TP,))], c.now_ms, results.append)
    assert results == [], "answered only once HW passes the marker"
    assert node.partition(TOPIC, 0).last_stable_offset == 0
    c.until(lambda: bool(results))
    assert results == [{TP: ErrorCode.none}]
    leader_log = node.partition(TOPIC, 0).log
    assert leader_log.last_stable_offset == 1  # B is still open
    c.settle()
    expected = [AbortedTxn(PID_A, 0, 2, 1)]
    for b in c.running:
        log = c.node(b).partition(TOPIC, 0).log
        assert [e for s in log.segments for e in s.txn_index.entries] == expected
        assert log.producer_state.ongoing_transactions() == {PID_B: 1}
        assert log.last_stable_offset == 1
    # An older epoch is refused at once, with nothing written.
    results.clear()
    leo = leader_log.log_end_offset
    append_markers(node, [TxnMarker(PID_B, 0, True, 0, (TP,))], c.now_ms, results.append)
    assert results == [{TP: ErrorCode.invalid_producer_epoch}]
    assert leader_log.log_end_offset == leo
