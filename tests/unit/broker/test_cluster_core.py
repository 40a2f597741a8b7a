"""Replication across BrokerNodes on a virtual clock (core_cluster.py): leaders, followers,
ISR, HW, acks=all, min.insync.replicas, failover, truncation by leader epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ackly.errors import ErrorCode
from ackly.types import TopicPartition

from .core_cluster import CoreCluster, batch, log_bytes, log_values

PRODUCE, FETCH, LIST_OFFSETS, CREATE_TOPICS, METADATA = 0, 1, 2, 19, 3


def create(c: CoreCluster, broker: int, name: str, partitions: int = 1, rf: int = 3,
           configs: dict[str, str] | None = None) -> Any:
    from ackly.protocol.messages import request_type
    import sys

    cls = request_type(CREATE_TOPICS, 7)
    mod = sys.modules[cls.__module__]
    topic = mod.CreatableTopic(
        name=name, num_partitions=partitions, replication_factor=rf, assignments=(),
        configs=tuple(mod.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()),
    )
    import datetime
    reply = c.call(broker, CREATE_TOPICS, 7, topics=(topic,), timeout=datetime.timedelta(seconds=10),
                   validate_only=False)
    return c.wait(reply)


def produce(c: CoreCluster, broker: int, topic: str, data: bytes, acks: int = -1, partition: int = 0,
            timeout_ms: int = 10_000) -> Any:
    import datetime
    import sys

    from ackly.protocol.messages import request_type

    cls = request_type(PRODUCE, 9)
    mod = sys.modules[cls.__module__]
    reply = c.call(broker, PRODUCE, 9, transactional_id=None, acks=acks,
                   timeout=datetime.timedelta(milliseconds=timeout_ms),
                   topic_data=(mod.TopicProduceData(name=topic, partition_data=(
                       mod.PartitionProduceData(index=partition, records=data),)),))
    return reply


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
        code, offset = result(c.wait(produce(c, leader, "t", batch(b"v%d" % i))))
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
