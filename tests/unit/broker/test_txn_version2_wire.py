"""Transaction version 2 (KIP-890 part 2) at the wire, against an in-process BrokerNode: golden
request and response frames laid out field by field from Kafka's schemas (and checked against
kio's encoding of the same request), for Produce v12 adding a partition implicitly (no
AddPartitionsToTxn), EndTxn v5 answering the bumped epoch, and the late requests of a finished
transaction (its produce, its EndTxn) fenced instead of landing in the next one. ApiVersions v3
finalizes `transaction.version` 2."""

from __future__ import annotations

import datetime
import io
import struct
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.errors import ErrorCode
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import request_type, response_type
from ackly.protocol.record_codec import ControlType, Record, encode_batch

from .test_idempotence_apis import NOW_MS, call
from .test_transactions_apis import TOPIC, describe, find, init, markers, small_node

TXN = "tv2"
E = ErrorCode


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = small_node(tmp_path / "data")
    n.create_topic(TOPIC, 2, {}, NOW_MS)
    yield n
    n.close()


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compact_string(s: str) -> bytes:
    return uvarint(len(s) + 1) + s.encode()


def request_header(api_key: int, version: int, correlation_id: int) -> bytes:
    """Request header v2 (flexible): key, version, correlation id, client id, no tags."""
    return struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test" + b"\x00"


def end_txn_v5_body(pid: int, epoch: int, committed: bool) -> bytes:
    return compact_string(TXN) + struct.pack(">qh?", pid, epoch, committed) + b"\x00"


def produce_v12_body(partition: int, records: bytes) -> bytes:
    return (compact_string(TXN) + struct.pack(">hi", -1, 10_000)
            + uvarint(2) + compact_string(TOPIC)
            + uvarint(2) + struct.pack(">i", partition) + uvarint(len(records) + 1) + records + b"\x00"
            + b"\x00" + b"\x00")


def exchange(node: BrokerNode, api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """Send one frame's bytes; the whole response frame (size prefix included)."""
    answers: list[Any] = []
    ctx = RequestContext(header=RequestHeader(api_key, version, correlation_id, "test"), now_ms=NOW_MS,
                         sink=answers.append)
    node.handle_frame(ctx, request_header(api_key, version, correlation_id) + body)
    for _ in range(3):
        if answers:
            break
        jobs = node.take_flush_jobs()
        for _, job in jobs:
            job.run()
        node.complete_flush(jobs, NOW_MS)
    assert len(answers) == 1
    return b"".join(bytes(piece) for piece in answers[0])


def framed(correlation_id: int, body: bytes) -> bytes:
    """Response header v1: correlation id, no tags; the size prefix before it."""
    payload = struct.pack(">i", correlation_id) + b"\x00" + body
    return struct.pack(">i", len(payload)) + payload


def end_txn_v5_response(error: ErrorCode, pid: int, epoch: int) -> bytes:
    return struct.pack(">ihqh", 0, error, pid, epoch) + b"\x00"


def produce_v12_response(partition: int, error: ErrorCode, base_offset: int, log_start: int,
                         message: str | None = None) -> bytes:
    msg = b"\x00" if message is None else compact_string(message)
    return (uvarint(2) + compact_string(TOPIC)
            + uvarint(2) + struct.pack(">ihqqq", partition, error, base_offset, -1, log_start)
            + uvarint(1) + msg + b"\x00"
            + b"\x00" + struct.pack(">i", 0) + b"\x00")


def kio_body(api_key: int, version: int, **fields: Any) -> bytes:
    out = io.BytesIO()
    request = request_type(api_key, version)(**fields)
    entity_writer(type(request))(out, request)
    return out.getvalue()


def txn_batch(pid: int, epoch: int, seq: int, value: bytes) -> bytes:
    return encode_batch([Record(key=None, value=value, timestamp_ms=NOW_MS)], producer_id=pid,
                        producer_epoch=epoch, base_sequence=seq, transactional=True)


def test_golden_bodies_are_kios_encoding() -> None:
    records = txn_batch(5, 1, 0, b"x")
    m = __import__("kio.schema.produce.v12.request", fromlist=["x"])
    assert produce_v12_body(0, records) == kio_body(
        0, 12, transactional_id=TXN, acks=-1, timeout=datetime.timedelta(seconds=10),
        topic_data=(m.TopicProduceData(name=TOPIC, partition_data=(
            m.PartitionProduceData(index=0, records=records),)),))
    assert end_txn_v5_body(5, 1, True) == kio_body(26, 5, transactional_id=TXN, producer_id=5,
                                                   producer_epoch=1, committed=True)


def test_api_versions_finalizes_transaction_version_2(node: BrokerNode) -> None:
    body = compact_string("t") + compact_string("1") + b"\x00"
    data = exchange(node, 18, 3, 100, body)
    # ApiVersions answers with response header v0 (no tags) at every version (KIP-511).
    r, _ = entity_reader(response_type(18, 3))(data, 8)
    assert [(f.name, f.min_version_level, f.max_version_level) for f in r.finalized_features] == [
        ("transaction.version", 2, 2)]
    assert [(f.name, f.min_version, f.max_version) for f in r.supported_features] == [
        ("transaction.version", 0, 2)]
    versions = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in r.api_keys}
    assert versions[0][1] == 12 and versions[26][1] == 5 and versions[28][1] == 5 and versions[24][1] == 5


def test_produce_v12_adds_the_partition_and_end_txn_v5_bumps_the_epoch(node: BrokerNode) -> None:
    assert find(node, TXN).error_code == E.none
    r = init(node, TXN)
    pid, e = int(r.producer_id), int(r.producer_epoch)
    # No AddPartitionsToTxn: the first transactional Produce v12 adds the partition.
    got = exchange(node, 0, 12, 101, produce_v12_body(0, txn_batch(pid, e, 0, b"a")))
    assert got == framed(101, produce_v12_response(0, E.none, 0, 0))
    state = describe(node, TXN)
    assert state.transaction_state == "Ongoing"
    assert [(t.topic, list(t.partitions)) for t in state.topics] == [(TOPIC, [0])]
    got = exchange(node, 26, 5, 102, end_txn_v5_body(pid, e, True))
    assert got == framed(102, end_txn_v5_response(E.none, pid, e + 1))
    assert markers(node, 0) == [(ControlType.COMMIT, pid, e + 1)], "the marker carries the new epoch"
    # The same EndTxn again (its answer lost): a retry, answered the same.
    assert exchange(node, 26, 5, 103, end_txn_v5_body(pid, e, True)) == framed(
        103, end_txn_v5_response(E.none, pid, e + 1))

    # A produce delayed from the finished transaction (old epoch): fenced, nothing written.
    before = node.partition(TOPIC, 0).log_end_offset
    got = exchange(node, 0, 12, 104, produce_v12_body(0, txn_batch(pid, e, 1, b"late")))
    assert got == framed(104, produce_v12_response(
        0, E.invalid_producer_epoch, -1, -1, "the transaction coordinator refused the partition"))
    assert node.partition(TOPIC, 0).log_end_offset == before
    assert describe(node, TXN).transaction_state == "CompleteCommit", "it opened no transaction"

    # The next transaction, on the other partition; the delayed EndTxn of the one before
    # arrives while it is open: fenced, and the open transaction stays open.
    got = exchange(node, 0, 12, 105, produce_v12_body(1, txn_batch(pid, e + 1, 0, b"b")))
    assert got == framed(105, produce_v12_response(1, E.none, 0, 0))
    for corr, commit in ((106, True), (107, False)):
        assert exchange(node, 26, 5, corr, end_txn_v5_body(pid, e, commit)) == framed(
            corr, end_txn_v5_response(E.producer_fenced, -1, -1))
    assert describe(node, TXN).transaction_state == "Ongoing"
    assert markers(node, 1) == []
    assert exchange(node, 26, 5, 108, end_txn_v5_body(pid, e + 1, False)) == framed(
        108, end_txn_v5_response(E.none, pid, e + 2))
    assert markers(node, 1) == [(ControlType.ABORT, pid, e + 2)]
    assert markers(node, 0) == [(ControlType.COMMIT, pid, e + 1)], "partition 0 untouched"


def test_a_retried_version_2_marker_cannot_end_the_next_transaction(node: BrokerNode) -> None:
    """WriteTxnMarkers v2 (transaction version 2): a marker not newer than the producer's epoch
    on the partition is refused, so a marker retried after the next transaction wrote there
    leaves it open."""
    assert find(node, TXN).error_code == E.none
    r = init(node, TXN)
    pid, e = int(r.producer_id), int(r.producer_epoch)
    got = exchange(node, 0, 12, 201, produce_v12_body(0, txn_batch(pid, e, 0, b"a")))
    assert got == framed(201, produce_v12_response(0, E.none, 0, 0))
    got = exchange(node, 26, 5, 202, end_txn_v5_body(pid, e, True))
    assert got == framed(202, end_txn_v5_response(E.none, pid, e + 1))
    got = exchange(node, 0, 12, 203, produce_v12_body(0, txn_batch(pid, e + 1, 0, b"b")))
    assert got == framed(203, produce_v12_response(0, E.none, 2, 0))
    m = __import__("kio.schema.write_txn_markers.v2.request", fromlist=["x"])
    retried = call(node, 27, 2, markers=(m.WritableTxnMarker(
        producer_id=pid, producer_epoch=e + 1, transaction_result=True, coordinator_epoch=0,
        transaction_version=2, topics=(m.WritableTxnMarkerTopic(name=TOPIC, partition_indexes=(0,)),)),))
    assert retried.markers[0].topics[0].partitions[0].error_code == E.invalid_producer_epoch
    assert markers(node, 0) == [(ControlType.COMMIT, pid, e + 1)]
    p = node.partition(TOPIC, 0)
    assert p.last_stable_offset == 2 < p.log_end_offset, "the next transaction is still open"
