"""Transactions across three BrokerNodes on a virtual clock (core_cluster.py): markers to
partitions led by other brokers go as WriteTxnMarkers peer requests, KIP-890 verification of a
produce on another broker goes to the coordinator as AddPartitionsToTxn v4, and a coordinator
that dies after its decision is replaced by one that loads the decision and finishes it."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ackly.coordinator.transaction_coordinator import TRANSACTION_STATE_TOPIC
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import ControlType, Record, decode_batch, decode_control_record, encode_batch
from ackly.protocol.records import iter_batches

from .core_cluster import CoreCluster, log_bytes
from .test_cluster_core import _schema, create

DATA = "d"
TXN = "cluster-txn"
PROPS = {"transaction.state.log.num.partitions": "3"}


def call(c: CoreCluster, broker: int, api_key: int, version: int, **fields: Any) -> Any:
    return c.wait(c.call(broker, api_key, version, **fields))


def find_coordinator(c: CoreCluster) -> int:
    for _ in range(100):
        r = call(c, 1, 10, 3, key=TXN, key_type=1)
        if r.error_code == ErrorCode.none:
            return int(r.node_id)
        c.advance(100)
    raise AssertionError("no transaction coordinator")


def add(c: CoreCluster, coord: int, pid: int, epoch: int, *partitions: int) -> set[ErrorCode]:
    mod = _schema(24, 3)
    r = call(c, coord, 24, 3, v3_and_below_transactional_id=TXN, v3_and_below_producer_id=pid,
             v3_and_below_producer_epoch=epoch,
             v3_and_below_topics=(mod.AddPartitionsToTxnTopic(name=DATA, partitions=partitions),))
    return {ErrorCode(p.partition_error_code) for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}


def produce(c: CoreCluster, partition: int, pid: int, epoch: int, seq: int) -> ErrorCode:
    mod = _schema(0, 9)
    data = encode_batch([Record(key=None, value=b"v%d" % seq)], producer_id=pid, producer_epoch=epoch,
                        base_sequence=seq, transactional=True)
    r = call(c, c.leader(DATA, partition), 0, 9, transactional_id=TXN, acks=-1,
             timeout=datetime.timedelta(seconds=10),
             topic_data=(mod.TopicProduceData(name=DATA, partition_data=(
                 mod.PartitionProduceData(index=partition, records=data),)),))
    return ErrorCode(r.responses[0].partition_responses[0].error_code)


def markers(c: CoreCluster, partition: int) -> list[ControlType]:
    data = log_bytes(c.node(c.leader(DATA, partition)), DATA, partition)
    out = []
    for pos, h in iter_batches(data):
        header, records = decode_batch(data[pos:pos + h.size])
        if header.is_control:
            out.append(decode_control_record(records[0]).kind)
    return out


def settled(c: CoreCluster, partition: int) -> bool:
    p = c.node(c.leader(DATA, partition)).partition(DATA, partition)
    return p.last_stable_offset == p.high_watermark == p.log_end_offset


def txn_state(c: CoreCluster, coord: int) -> str:
    return str(call(c, coord, 65, 0, transactional_ids=(TXN,)).transaction_states[0].transaction_state)


def setup(tmp_path: Path) -> tuple[CoreCluster, int, int, int]:
    c = CoreCluster(tmp_path, [1, 2, 3], PROPS)
    assert create(c, 1, DATA, partitions=3).topics[0].error_code == ErrorCode.none
    c.settle()
    coord = find_coordinator(c)
    c.settle()
    r = call(c, coord, 22, 4, transactional_id=TXN, transaction_timeout=datetime.timedelta(seconds=60),
             producer_id=-1, producer_epoch=-1)
    assert r.error_code == ErrorCode.none
    return c, coord, int(r.producer_id), int(r.producer_epoch)


def test_markers_and_verification_cross_brokers(tmp_path: Path) -> None:
    c, coord, pid, epoch = setup(tmp_path)
    leaders = {p: c.leader(DATA, p) for p in range(3)}
    assert set(leaders.values()) - {coord}, "some data partition is led by another broker"
    remote = next(p for p, b in leaders.items() if b != coord)
    # Verification (KIP-890): the remote leader asks the coordinator, which says no.
    before = c.node(leaders[remote]).partition(DATA, remote).log_end_offset
    assert produce(c, remote, pid, epoch, 0) != ErrorCode.none
    assert c.node(leaders[remote]).partition(DATA, remote).log_end_offset == before
    assert add(c, coord, pid, epoch, 0, 1, 2) == {ErrorCode.none}
    for p in range(3):
        assert produce(c, p, pid, epoch, 0) == ErrorCode.none
    assert not settled(c, remote), "the open transaction holds the LSO"
    end = call(c, coord, 26, 3, transactional_id=TXN, producer_id=pid, producer_epoch=epoch, committed=True)
    assert end.error_code == ErrorCode.none
    c.until(lambda: all(settled(c, p) and markers(c, p) for p in range(3)), limit_ms=10_000)
    assert all(markers(c, p) == [ControlType.COMMIT] for p in range(3))
    c.until(lambda: txn_state(c, coord) == "CompleteCommit", limit_ms=5_000)


def test_a_new_coordinator_finishes_the_decision_of_a_dead_one(tmp_path: Path) -> None:
    c, coord, pid, epoch = setup(tmp_path)
    assert add(c, coord, pid, epoch, 0, 1, 2) == {ErrorCode.none}
    for p in range(3):
        assert produce(c, p, pid, epoch, 0) == ErrorCode.none
    cut = next(c.leader(DATA, p) for p in range(3) if c.leader(DATA, p) != coord)
    cut_partition = next(p for p in range(3) if c.leader(DATA, p) == cut)
    c.partitioned = {cut}  # its data partition cannot get a marker now
    end = c.call(coord, 26, 3, transactional_id=TXN, producer_id=pid, producer_epoch=epoch, committed=True)
    # The decision commits once the cut broker leaves the __transaction_state ISR.
    assert c.wait(end, limit_ms=20_000).error_code == ErrorCode.none
    assert txn_state(c, coord) == "PrepareCommit"
    assert not markers(c, cut_partition)
    c.kill(coord)
    c.partitioned = set()
    c.settle(3_000)
    new = find_coordinator(c)
    assert new != coord
    c.until(lambda: all(c.leader(DATA, p) in c.running and settled(c, p) and markers(c, p) for p in range(3)),
            limit_ms=30_000)
    for p in range(3):
        assert set(markers(c, p)) == {ControlType.COMMIT}, "only commit markers, on every partition"
    c.until(lambda: txn_state(c, new) == "CompleteCommit", limit_ms=10_000)
    tp = c.state(TRANSACTION_STATE_TOPIC, 0)
    assert tp is not None
