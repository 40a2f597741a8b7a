"""Replication across BrokerNodes on a virtual clock (core_cluster.py): leaders, followers,
ISR, HW, acks=all, min.insync.replicas, failover, truncation by leader epoch."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

from ackly.errors import ErrorCode
from ackly.protocol.messages import request_type

from .core_cluster import CoreCluster, Reply, batch, log_bytes, log_values

PRODUCE, FETCH, LIST_OFFSETS, METADATA, CREATE_TOPICS = 0, 1, 2, 3, 19


def _schema(api_key: int, version: int) -> Any:
    return sys.modules[request_type(api_key, version).__module__]


def create(c: CoreCluster, broker: int, name: str, partitions: int = 1, rf: int = 3,
           configs: dict[str, str] | None = None) -> Any:
    mod = _schema(CREATE_TOPICS, 7)
    topic = mod.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=rf, assignments=(),
        configs=tuple(mod.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()),
    )
    reply = c.call(broker, CREATE_TOPICS, 7, topics=(topic,), timeout=datetime.timedelta(seconds=10),
                   validate_only=False)
    return c.wait(reply)


def produce(c: CoreCluster, broker: int, topic: str, data: bytes, acks: int = -1, partition: int = 0,
            timeout_ms: int = 10_000) -> Reply:
    mod = _schema(PRODUCE, 9)
    return c.call(broker, PRODUCE, 9, transactional_id=None, acks=acks,
                  timeout=datetime.timedelta(milliseconds=timeout_ms),
                  topic_data=(mod.TopicProduceData(name=topic, partition_data=(
                      mod.PartitionProduceData(index=partition, records=data),)),))


def result(reply_value: Any) -> tuple[ErrorCode, int]:
    (t,) = reply_value.responses
    (p,) = t.partition_responses
    return ErrorCode(p.error_code), int(p.base_offset)


def test_acks_all_is_answered_once_every_isr_member_has_the_batch(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    response = create(c, 1, "t", configs={"min.insync.replicas": "2"})
    assert response.topics[0].error_code == ErrorCode.none
    c.settle()
    state = c.state("t")
    assert state.isr == (1, 2, 3)
    leader = state.leader
    for i in range(5):
        reply = produce(c, leader, "t", batch(b"v%d" % i))
        assert result(c.wait(reply)) == (ErrorCode.none, i)
    c.settle()
    leader_log = log_bytes(c.node(leader), "t")
    for b in (1, 2, 3):
        p = c.node(b).partition("t", 0)
        assert p.log_end_offset == 5
        assert log_bytes(c.node(b), "t") == leader_log
    assert c.node(leader).partition("t", 0).high_watermark == 5


def test_produce_to_a_follower_is_not_leader(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t")
    c.settle()
    follower = next(b for b in (1, 2, 3) if b != c.leader("t"))
    code, _ = result(c.wait(produce(c, follower, "t", batch(b"x"))))
    assert code == ErrorCode.not_leader_or_follower


def test_failover_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    acked = []
    for i in range(10):
        code, _ = result(c.wait(produce(c, leader, "t", batch(b"v%d" % i))))
        assert code == ErrorCode.none
        acked.append(b"v%d" % i)
    epoch = c.state("t").leader_epoch
    c.kill(leader)
    c.until(lambda: c.leader("t") not in (-1, leader))
    new = c.leader("t")
    assert c.state("t").leader_epoch > epoch
    for i in range(10, 15):
        c.until(lambda: c.node(new).partition("t", 0).is_leader)
        code, _ = result(c.wait(produce(c, new, "t", batch(b"v%d" % i))))
        assert code == ErrorCode.none, code
        acked.append(b"v%d" % i)
    assert log_values(c.node(new), "t") == acked
    # the old leader comes back, catches up and rejoins the ISR
    c.start(leader)
    c.until(lambda: leader in c.state("t").isr)
    c.settle()
    assert log_bytes(c.node(leader), "t") == log_bytes(c.node(new), "t")


def test_not_enough_replicas_refuses_acks_all_and_the_log_does_not_grow(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    assert result(c.wait(produce(c, leader, "t", batch(b"a"))))[0] == ErrorCode.none
    for b in (1, 2, 3):
        if b != leader:
            c.kill(b)
    c.until(lambda: c.state("t").isr == (leader,))
    p = c.node(leader).partition("t", 0)
    leo = p.log_end_offset
    code, _ = result(c.wait(produce(c, leader, "t", batch(b"b"))))
    assert code == ErrorCode.not_enough_replicas
    assert p.log_end_offset == leo
    code, offset = result(c.wait(produce(c, leader, "t", batch(b"c"), acks=1)))
    assert (code, offset) == (ErrorCode.none, leo)


def test_a_returning_leader_truncates_its_divergent_tail_by_leader_epoch(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    old = c.leader("t")
    for i in range(3):
        assert result(c.wait(produce(c, old, "t", batch(b"c%d" % i))))[0] == ErrorCode.none
    c.settle()
    # Cut the leader from its followers; it takes acks=1 writes they never see.
    c.partitioned = {old}
    for i in range(3):
        assert result(c.wait(produce(c, old, "t", batch(b"lost%d" % i), acks=1)))[0] == ErrorCode.none
    assert c.node(old).partition("t", 0).log_end_offset == 6
    c.kill(old)
    c.partitioned = set()
    c.until(lambda: c.leader("t") not in (-1, old))
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader)
    for i in range(2):
        assert result(c.wait(produce(c, new, "t", batch(b"n%d" % i))))[0] == ErrorCode.none
    c.start(old)
    c.until(lambda: old in c.state("t").isr)
    c.settle()
    assert log_values(c.node(old), "t") == [b"c0", b"c1", b"c2", b"n0", b"n1"]
    assert log_bytes(c.node(old), "t") == log_bytes(c.node(new), "t")

    def epochs_of_batches(b: int) -> list[tuple[int, int]]:
        # The entries that start batches (a leader also has one at LEO for its new epoch).
        p = c.node(b).partition("t", 0)
        return [(e.epoch, e.start_offset) for e in p.log.leader_epochs.entries
                if e.start_offset < p.log_end_offset]

    assert epochs_of_batches(old) == epochs_of_batches(new) == [(0, 0), (1, 3)]


def test_isr_shrinks_after_the_lag_time_and_acks_all_gets_not_enough_replicas_after_append(
    tmp_path: Path,
) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "3"})
    c.settle()
    leader = c.leader("t")
    followers = [b for b in (1, 2, 3) if b != leader]
    c.partitioned = {followers[0]}
    reply = produce(c, leader, "t", batch(b"x"), timeout_ms=30_000)
    c.pump()
    assert not reply.done  # waits for the cut follower
    c.until(lambda: reply.done)
    code, _ = result(reply.value)
    assert code == ErrorCode.not_enough_replicas_after_append
    assert followers[0] not in c.state("t").isr
    c.partitioned = set()
    c.until(lambda: followers[0] in c.state("t").isr)


OFFSETS_FOR_LEADER_EPOCH = 23


def offsets_for_epoch(c: CoreCluster, broker: int, topic: str, epoch: int, current: int = -1) -> tuple[int, int, int]:
    mod = _schema(OFFSETS_FOR_LEADER_EPOCH, 4)
    reply = c.call(broker, OFFSETS_FOR_LEADER_EPOCH, 4, replica_id=-1, topics=(
        mod.OffsetForLeaderTopic(topic=topic, partitions=(
            mod.OffsetForLeaderPartition(partition=0, current_leader_epoch=current, leader_epoch=epoch),)),))
    (t,) = c.wait(reply).topics
    (p,) = t.partitions
    return int(p.error_code), int(p.leader_epoch), int(p.end_offset)


def test_offsets_for_leader_epoch_tells_where_each_epoch_ends(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    first = c.leader("t")
    for i in range(3):
        assert result(c.wait(produce(c, first, "t", batch(b"a%d" % i))))[0] == ErrorCode.none
    epoch0 = c.state("t").leader_epoch
    c.kill(first)
    c.until(lambda: c.leader("t") not in (-1, first))
    second = c.leader("t")
    c.until(lambda: c.node(second).partition("t", 0).is_leader)
    epoch1 = c.state("t").leader_epoch
    assert result(c.wait(produce(c, second, "t", batch(b"b"))))[0] == ErrorCode.none
    assert offsets_for_epoch(c, second, "t", epoch0) == (0, epoch0, 3)
    assert offsets_for_epoch(c, second, "t", epoch1) == (0, epoch1, 4)
    assert offsets_for_epoch(c, second, "t", epoch1 + 5)[1:] == (-1, -1)
    follower = next(b for b in c.running if b != second)
    assert offsets_for_epoch(c, follower, "t", epoch0)[0] == ErrorCode.not_leader_or_follower
    assert offsets_for_epoch(c, second, "t", epoch0, current=epoch0)[0] == ErrorCode.fenced_leader_epoch
    assert offsets_for_epoch(c, second, "t", epoch0, current=epoch1 + 1)[0] == ErrorCode.unknown_leader_epoch


def test_an_idempotent_retry_to_the_new_leader_is_recognised(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    pid = 4242
    for seq in range(3):
        data = batch(b"s%d" % seq, producer_id=pid, producer_epoch=0, base_sequence=seq)
        assert result(c.wait(produce(c, leader, "t", data))) == (ErrorCode.none, seq)
    c.kill(leader)
    c.until(lambda: c.leader("t") not in (-1, leader))
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader)
    retry = batch(b"s2", producer_id=pid, producer_epoch=0, base_sequence=2)
    assert result(c.wait(produce(c, new, "t", retry))) == (ErrorCode.none, 2), "the original offset"
    assert c.node(new).partition("t", 0).log_end_offset == 3, "nothing written twice"
    following = batch(b"s3", producer_id=pid, producer_epoch=0, base_sequence=3)
    assert result(c.wait(produce(c, new, "t", following))) == (ErrorCode.none, 3)
    gap = batch(b"s9", producer_id=pid, producer_epoch=0, base_sequence=9)
    assert result(c.wait(produce(c, new, "t", gap)))[0] == ErrorCode.out_of_order_sequence_number


def test_under_flush_always_a_follower_fsyncs_before_its_fetch_counts(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"log.flush.policy": "always"})
    create(c, 1, "t", configs={"min.insync.replicas": "3"})
    c.settle()
    leader = c.leader("t")
    c.hold_flushes = True
    reply = produce(c, leader, "t", batch(b"x"))
    c.advance(1_000)
    assert not reply.done, "no replica has flushed: nothing is committed"
    for b in c.running:
        p = c.node(b).partition("t", 0)
        assert p.log_end_offset == 1 and p.log.recovery_point == 0
    assert c.node(leader).partition("t", 0).high_watermark == 0
    c.hold_flushes = False
    assert result(c.wait(reply)) == (ErrorCode.none, 0)
    for b in c.running:
        assert c.node(b).partition("t", 0).log.recovery_point == 1


def test_consumers_before_fetch_v11_are_sent_to_the_leader_and_see_nothing_above_hw(
    tmp_path: Path,
) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    assert result(c.wait(produce(c, leader, "t", batch(b"committed"))))[0] == ErrorCode.none
    follower = next(b for b in c.running if b != leader)
    c.partitioned = {b for b in c.running if b != leader}  # followers stop fetching
    assert result(c.wait(produce(c, leader, "t", batch(b"pending"), acks=1)))[0] == ErrorCode.none
    mod = _schema(FETCH, 10)

    def fetch(broker: int) -> Any:
        # v11+ may be served by a follower (KIP-392: test_read_replica.py).
        reply = c.call(broker, FETCH, 10, replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0,
                       max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                       topics=(mod.FetchTopic(topic="t", partitions=(mod.FetchPartition(
                           partition=0, current_leader_epoch=-1, fetch_offset=0, log_start_offset=-1,
                           partition_max_bytes=1 << 20),)),),
                       forgotten_topics_data=())
        (t,) = c.wait(reply).responses
        (p,) = t.partitions
        return p

    assert fetch(follower).error_code == ErrorCode.not_leader_or_follower
    data = fetch(leader)
    assert data.error_code == ErrorCode.none and data.high_watermark == 1
    from ackly.protocol.record_codec import decode_batch
    from ackly.protocol.records import iter_batches

    values = []
    for pos, header in iter_batches(data.records):
        values += [r.value for r in decode_batch(data.records[pos: pos + header.size])[1]]
    assert values == [b"committed"]


def test_unclean_election_lets_an_out_of_sync_replica_lead_and_the_old_leader_truncates(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"unclean.leader.election.enable": "true"})
    c.settle()
    leader = c.leader("t")
    assert result(c.wait(produce(c, leader, "t", batch(b"shared"))))[0] == ErrorCode.none
    c.settle()
    others = [b for b in c.running if b != leader]
    c.partitioned = set(others)
    # A write the followers never get: they fall behind and, after the lag time, out of the ISR.
    assert result(c.wait(produce(c, leader, "t", batch(b"only-on-the-old-leader"), acks=1)))[0] == ErrorCode.none
    c.until(lambda: c.state("t").isr == (leader,))
    c.kill(leader)
    c.partitioned = set()
    c.until(lambda: c.leader("t") in others)
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader and not c.node(new).partition("t", 0).recovering)
    assert result(c.wait(produce(c, new, "t", batch(b"after"))))[0] == ErrorCode.none
    c.start(leader)
    c.until(lambda: leader in c.state("t").isr)
    c.settle()
    # The acknowledged write only the old leader had is gone: allowed by the topic's config.
    assert log_values(c.node(leader), "t") == [b"shared", b"after"]
    assert log_bytes(c.node(leader), "t") == log_bytes(c.node(new), "t")


def test_controlled_shutdown_moves_leadership_before_leaving(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", partitions=3, configs={"min.insync.replicas": "2"})
    c.settle()
    leaving = c.leader("t", 0)
    node = c.node(leaving)
    node.begin_controlled_shutdown(c.now_ms)
    c.until(lambda: node.shutdown_ready(c.now_ms))
    for i in range(3):
        assert c.leader("t", i) != leaving
        assert leaving not in c.state("t", i).isr or len(c.state("t", i).isr) == 1
    node.leave(c.now_ms)
    c.pump()
    assert c.store.get(f"/ackly/brokers/{leaving}") is None


def test_fault_point_ack_before_replication_loses_an_acknowledged_write(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    c.node(leader).faults.enable("ack-before-replication")
    c.partitioned = {leader}
    assert result(c.wait(produce(c, leader, "t", batch(b"acked"))))[0] == ErrorCode.none  # at once
    c.kill(leader)
    c.partitioned = set()
    c.until(lambda: c.leader("t") not in (-1, leader))
    assert b"acked" not in log_values(c.node(c.leader("t")), "t")


def test_fault_point_forget_producer_state_writes_a_retry_twice(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    data = batch(b"once", producer_id=77, producer_epoch=0, base_sequence=0)
    assert result(c.wait(produce(c, leader, "t", data)))[0] == ErrorCode.none
    for b in c.running:
        c.node(b).faults.enable("forget-producer-state")
    c.kill(leader)
    c.until(lambda: c.leader("t") not in (-1, leader))
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader)
    assert result(c.wait(produce(c, new, "t", data))) == (ErrorCode.none, 1), "written again"
    assert log_values(c.node(new), "t") == [b"once", b"once"]


def test_a_leader_restarted_within_its_session_waits_for_a_new_epoch(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    leader = c.leader("t")
    epoch = c.state("t").leader_epoch
    assert result(c.wait(produce(c, leader, "t", batch(b"a"))))[0] == ErrorCode.none
    c.kill(leader, revoke=False)  # its lease lives on: the cluster has not noticed yet
    node = c.start(leader)
    c.pump()
    assert c.state("t").leader == leader and c.state("t").leader_epoch == epoch
    assert not node.partition("t", 0).is_leader, "the state names the old incarnation"
    code, _ = result(c.wait(produce(c, leader, "t", batch(b"b"))))
    assert code == ErrorCode.not_leader_or_follower
    c.until(lambda: c.state("t").leader_epoch > epoch)
    c.until(lambda: all(c.node(b).partition("t", 0).high_watermark >= 1 for b in c.running))
    new = c.leader("t")
    c.until(lambda: c.node(new).partition("t", 0).is_leader)
    assert result(c.wait(produce(c, new, "t", batch(b"c"))))[0] == ErrorCode.none
    c.until(lambda: leader in c.state("t").isr)
    assert log_values(c.node(leader), "t")[:1] == [b"a"]


DELETE_RECORDS = 21


def test_a_follower_behind_the_leaders_log_start_restarts_its_log_there(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "1"})
    c.settle()
    leader = c.leader("t")
    assert result(c.wait(produce(c, leader, "t", batch(b"v0"))))[0] == ErrorCode.none
    c.settle()
    lagging = next(b for b in c.running if b != leader)
    c.kill(lagging)
    c.until(lambda: lagging not in c.state("t").isr)
    for i in range(1, 6):
        assert result(c.wait(produce(c, leader, "t", batch(b"v%d" % i))))[0] == ErrorCode.none
    mod = _schema(DELETE_RECORDS, 2)
    reply = c.call(leader, DELETE_RECORDS, 2, timeout=datetime.timedelta(seconds=5), topics=(
        mod.DeleteRecordsTopic(name="t", partitions=(mod.DeleteRecordsPartition(partition_index=0, offset=4),)),))
    (t,) = c.wait(reply).topics
    assert t.partitions[0].error_code == ErrorCode.none and t.partitions[0].low_watermark == 4
    c.start(lagging)
    c.until(lambda: lagging in c.state("t").isr)
    c.settle()
    p = c.node(lagging).partition("t", 0)
    assert (p.log_start_offset, p.log_end_offset) == (4, 6)
    assert log_values(c.node(lagging), "t") == [b"v4", b"v5"]


def test_metadata_lists_every_broker_leader_replicas_isr_and_offline_replicas(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t", configs={"min.insync.replicas": "2"})
    c.settle()
    mod = _schema(METADATA, 12)

    def metadata(broker: int) -> Any:
        return c.wait(c.call(broker, METADATA, 12, topics=(mod.MetadataRequestTopic(topic_id=None, name="t"),),
                             allow_auto_topic_creation=False, include_topic_authorized_operations=False))

    response = metadata(2)
    assert sorted(int(b.node_id) for b in response.brokers) == [1, 2, 3]
    assert int(response.controller_id) in (1, 2, 3) and response.cluster_id
    (p,) = response.topics[0].partitions
    state = c.state("t")
    assert (int(p.leader_id), int(p.leader_epoch)) == (state.leader, state.leader_epoch)
    assert sorted(p.replica_nodes) == [1, 2, 3] and sorted(p.isr_nodes) == [1, 2, 3] and not p.offline_replicas
    down = next(b for b in c.running if b != state.leader)
    c.kill(down)
    c.until(lambda: down not in c.state("t").isr)
    asking = next(b for b in c.running if b != down)
    response = metadata(asking)
    (p,) = response.topics[0].partitions
    assert sorted(int(b.node_id) for b in response.brokers) == sorted(c.running)
    assert list(p.offline_replicas) == [down] and down not in p.isr_nodes
