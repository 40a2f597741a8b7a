"""Transactions at the partition level over a real socket: transactional batches built by hand,
markers through WriteTxnMarkers v1, reads with both isolation levels (KIP-98).

The broker runs in-process with partition verification off (KIP-890 would ask a transaction
coordinator about the hand-made transactional id); the coordinator's own flow is tested with
real clients elsewhere.
"""

from __future__ import annotations

import datetime

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.list_offsets.v7.request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.write_txn_markers.v1.request import (
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
)
from kio.static.primitive import Records, i8, i16, i32, i64

from ackly.protocol.record_codec import Record, decode_batches, encode_batch
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow

TOPIC = "txn-wire"
PID_A, PID_B = 4000, 5000


def tbatch(pid: int, seq: int, *values: bytes) -> bytes:
    return encode_batch([Record(key=None, value=v, timestamp_ms=1_700_000_000_000) for v in values],
                        producer_id=pid, producer_epoch=0, base_sequence=seq, transactional=True)


def produce(c: WireClient, data: bytes) -> tuple[int, int]:
    resp = c.request(ProduceRequest(
        transactional_id="wire-tx", acks=i16(-1), timeout=datetime.timedelta(seconds=10),
        topic_data=(TopicProduceData(name=TOPIC, partition_data=(
            PartitionProduceData(index=i32(0), records=Records(data)),)),),
    ))
    part = resp.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset)


def end_txn(c: WireClient, pid: int, commit: bool) -> int:
    resp = c.request(WriteTxnMarkersRequest(markers=(WritableTxnMarker(
        producer_id=i64(pid), producer_epoch=i16(0), transaction_result=commit,
        coordinator_epoch=i32(0),
        topics=(WritableTxnMarkerTopic(name=TOPIC, partition_indexes=(i32(0),)),),
    ),)))
    return int(resp.markers[0].topics[0].partitions[0].error_code)


def fetch(c: WireClient, isolation_level: int) -> tuple[int, list[tuple[int, int]], list[bytes]]:
    """(LSO, aborted (producer id, first offset), values a read_committed consumer keeps)."""
    resp = c.request(FetchRequest(
        cluster_id=None, replica_id=i32(-1), max_wait=datetime.timedelta(0), min_bytes=i32(1),
        max_bytes=i32(1 << 20), isolation_level=i8(isolation_level), session_id=i32(0),
        session_epoch=i32(-1), topics=(FetchTopic(topic=TOPIC, partitions=(FetchPartition(
            partition=i32(0), current_leader_epoch=i32(-1), fetch_offset=i64(0),
            last_fetched_epoch=i32(-1), log_start_offset=i64(-1), partition_max_bytes=i32(1 << 20),
        ),)),), forgotten_topics_data=(), rack_id="",
    ))
    part = resp.responses[0].partitions[0]
    assert part.error_code == ErrorCode.none
    aborted = [(int(a.producer_id), int(a.first_offset)) for a in part.aborted_transactions or ()]
    # What a read_committed consumer keeps (the Java consumer's rule): skip control batches
    # and the batches of an aborted producer from its first offset to its ABORT marker.
    kept: list[bytes] = []
    aborting: set[int] = set()
    queue = sorted(aborted, key=lambda a: a[1])  # each entry is taken once, by first offset
    for header, records in decode_batches(part.records or b""):
        while queue and queue[0][1] <= header.last_offset:
            aborting.add(queue.pop(0)[0])
        if header.is_control:
            aborting.discard(header.producer_id)
            continue
        if header.producer_id in aborting:
            continue
        kept.extend(r.value or b"" for r in records)
    return int(part.last_stable_offset), aborted, kept


def latest(c: WireClient, isolation_level: int) -> int:
    resp = c.request(ListOffsetsRequest(
        replica_id=i32(-1), isolation_level=i8(isolation_level),
        topics=(ListOffsetsTopic(name=TOPIC, partitions=(ListOffsetsPartition(
            partition_index=i32(0), current_leader_epoch=i32(-1), timestamp=i64(-1)),)),),
    ))
    return int(resp.topics[0].partitions[0].offset)


def test_hand_made_transactions_through_write_txn_markers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = InProcessBroker(str(tmp_path / "d"), {
        "transaction.partition.verification.enable": "false",
    }).start()
    try:
        with WireClient(broker.bootstrap) as c:
            assert c.request(rq.create_topic(TOPIC)).topics[0].error_code == ErrorCode.none
            assert produce(c, tbatch(PID_A, 0, b"a1", b"a2")) == (ErrorCode.none, 0)
            assert produce(c, tbatch(PID_B, 0, b"b1")) == (ErrorCode.none, 2)
            assert fetch(c, 1) == (0, [], [])
            assert fetch(c, 0)[2] == [b"a1", b"a2", b"b1"]
            assert (latest(c, 0), latest(c, 1)) == (3, 0)

            assert end_txn(c, PID_A, commit=False) == ErrorCode.none  # 3
            assert produce(c, tbatch(PID_A, 2, b"a3")) == (ErrorCode.none, 4)  # A's next one
            assert end_txn(c, PID_B, commit=True) == ErrorCode.none  # 5
            lso, aborted, kept = fetch(c, 1)
            assert lso == 4  # A's second transaction is open
            assert aborted == [(PID_A, 0)]
            assert kept == [b"b1"]
            assert end_txn(c, PID_A, commit=True) == ErrorCode.none  # 6
            assert fetch(c, 1) == (7, [(PID_A, 0)], [b"b1", b"a3"])
            assert (latest(c, 0), latest(c, 1)) == (7, 7)
            # read_uncommitted sees every record, the aborted ones too.
            assert fetch(c, 0)[2] == [b"a1", b"a2", b"b1", b"a3"]
    finally:
        broker.stop()
