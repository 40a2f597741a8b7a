"""After EndTxn is answered, an OffsetFetch of the group shows the transaction's offsets, even
without `require_stable` (a client such as aiokafka asks for committed offsets right after
commit_transaction returns). Three BrokerNodes on a virtual clock (core_cluster.py), the
group's `__consumer_offsets` partition led by another broker than the transaction
coordinator, so its marker goes as a WriteTxnMarkers peer request after the decision; the
network is moved one round at a time and OffsetFetch is sent in the round EndTxn is answered."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, partition_for
from ackly.errors import ErrorCode

from .core_cluster import CoreCluster, Reply
from .test_cluster_core import _schema, create

DATA = "d"
TXN = "offsets-txn"
PROPS = {"transaction.state.log.num.partitions": "1", "offsets.topic.num.partitions": "6"}


def call(c: CoreCluster, broker: int, api_key: int, version: int, **fields: Any) -> Any:
    return c.wait(c.call(broker, api_key, version, **fields))


def coordinator(c: CoreCluster, key: str, key_type: int) -> int:
    for _ in range(100):
        r = call(c, 1, 10, 3, key=key, key_type=key_type)
        if r.error_code == ErrorCode.none:
            return int(r.node_id)
        c.advance(100)
    raise AssertionError(f"no coordinator for {key!r}")


def step_until_done(c: CoreCluster, reply: Reply, limit_ms: int = 20_000) -> None:
    """Move messages one round at a time (the clock only when nothing moves) and stop in the
    round the reply arrives: what else was in flight then is still in flight."""
    end = c.now_ms + limit_ms
    while not reply.done:
        assert c.now_ms < end, "no answer in virtual time"
        if not c.step():
            c.now_ms += 10
            c.store.tick(c.now_ms)
            for b in c.running:
                node = c.node(b)
                due = node.next_deadline_ms()
                if due is not None and due <= c.now_ms:
                    node.tick(c.now_ms)


def committed_offset(c: CoreCluster, broker: int, group: str) -> int:
    mod = _schema(9, 7)
    r = c.call(broker, 9, 7, group_id=group, require_stable=False,
               topics=(mod.OffsetFetchRequestTopic(name=DATA, partition_indexes=(0,)),))
    step_until_done(c, r)
    (part,) = r.value.topics[0].partitions
    assert part.error_code == ErrorCode.none
    return int(part.committed_offset)


def test_offsets_are_visible_when_end_txn_is_answered(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], PROPS)
    assert create(c, 1, DATA).topics[0].error_code == ErrorCode.none
    c.settle()
    txn_coord = coordinator(c, TXN, 1)
    c.settle()
    group, group_coord = next((g, b) for g in (f"g{i}" for i in range(60))
                              if (b := coordinator(c, g, 0)) != txn_coord)
    c.settle()
    init = call(c, txn_coord, 22, 4, transactional_id=TXN, transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1, producer_epoch=-1)
    assert init.error_code == ErrorCode.none
    pid, epoch = int(init.producer_id), int(init.producer_epoch)
    add = call(c, txn_coord, 25, 3, transactional_id=TXN, producer_id=pid, producer_epoch=epoch, group_id=group)
    assert add.error_code == ErrorCode.none
    mod = _schema(28, 3)
    topic = mod.TxnOffsetCommitRequestTopic(name=DATA, partitions=(mod.TxnOffsetCommitRequestPartition(
        partition_index=0, committed_offset=42, committed_leader_epoch=-1, committed_metadata=""),))
    sent = call(c, group_coord, 28, 3, transactional_id=TXN, group_id=group, producer_id=pid,
                producer_epoch=epoch, generation_id=-1, member_id="", group_instance_id=None, topics=(topic,))
    assert sent.topics[0].partitions[0].error_code == ErrorCode.none
    assert committed_offset(c, group_coord, group) == -1, "pending until the transaction commits"

    end = c.call(txn_coord, 26, 3, transactional_id=TXN, producer_id=pid, producer_epoch=epoch, committed=True)
    step_until_done(c, end)
    assert end.value.error_code == ErrorCode.none
    assert committed_offset(c, group_coord, group) == 42


def test_version_2_adds_partitions_across_brokers_and_shows_offsets_at_end_txn(tmp_path: Path) -> None:
    """A transaction version 2 client: Produce v12 on another broker than the coordinator has
    it add the partition (AddPartitionsToTxn v5), TxnOffsetCommit v5 adds the group's offsets
    partition, EndTxn v5 answers the bumped epoch once the offsets are visible."""
    from ackly.protocol.record_codec import Record, encode_batch

    c = CoreCluster(tmp_path, [1, 2, 3], PROPS)
    assert create(c, 1, DATA, partitions=3).topics[0].error_code == ErrorCode.none
    c.settle()
    txn_coord = coordinator(c, TXN, 1)
    c.settle()
    group, group_coord = next((g, b) for g in (f"g{i}" for i in range(60))
                              if (b := coordinator(c, g, 0)) != txn_coord)
    c.settle()
    init = call(c, txn_coord, 22, 4, transactional_id=TXN, transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1, producer_epoch=-1)
    pid, epoch = int(init.producer_id), int(init.producer_epoch)
    remote = next(p for p in range(3) if c.leader(DATA, p) != txn_coord)
    pm = _schema(0, 12)
    data = encode_batch([Record(key=None, value=b"v")], producer_id=pid, producer_epoch=epoch,
                        base_sequence=0, transactional=True)
    r = call(c, c.leader(DATA, remote), 0, 12, transactional_id=TXN, acks=-1,
             timeout=datetime.timedelta(seconds=10), topic_data=(pm.TopicProduceData(name=DATA, partition_data=(
                 pm.PartitionProduceData(index=remote, records=data),)),))
    assert r.responses[0].partition_responses[0].error_code == ErrorCode.none
    mod = _schema(28, 5)
    topic = mod.TxnOffsetCommitRequestTopic(name=DATA, partitions=(mod.TxnOffsetCommitRequestPartition(
        partition_index=0, committed_offset=7, committed_leader_epoch=-1, committed_metadata=""),))
    sent = call(c, group_coord, 28, 5, transactional_id=TXN, group_id=group, producer_id=pid,
                producer_epoch=epoch, generation_id=-1, member_id="", group_instance_id=None, topics=(topic,))
    assert sent.topics[0].partitions[0].error_code == ErrorCode.none
    described = call(c, txn_coord, 65, 0, transactional_ids=(TXN,)).transaction_states[0]
    assert {(t.topic, int(p)) for t in described.topics for p in t.partitions} == {
        (DATA, remote), (OFFSETS_TOPIC, partition_for(group, 6))}, "both added implicitly"
    end = c.call(txn_coord, 26, 5, transactional_id=TXN, producer_id=pid, producer_epoch=epoch, committed=True)
    step_until_done(c, end)
    assert (end.value.error_code, end.value.producer_id, end.value.producer_epoch) == (ErrorCode.none, pid, epoch + 1)
    assert committed_offset(c, group_coord, group) == 7

