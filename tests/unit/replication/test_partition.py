"""Partition as a leader sees it: HW over the (maximal) ISR, min ISR, ISR shrink and expand,
leadership changes; and a stateful check of HW's invariants (rules 2, 7-9)."""

from __future__ import annotations

import dataclasses
import random
import uuid

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ackly.cluster.metadata import NO_LEADER, LeaderRecoveryState, PartitionState
from ackly.config import BrokerConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import SimDisk
from ackly.log.partition_log import PartitionLog
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

TP = TopicPartition("t", 0)
TOPIC_ID = uuid.UUID(int=7)
ME = 1
LAG_MS = 1_000


def make_partition(min_isr: int = 1, flush: str = "never", seed: int = 0) -> Partition:
    config = dataclasses.replace(
        BrokerConfig.from_properties({}).topic_defaults(), min_insync_replicas=min_isr, flush_policy=flush,
    )
    disk = SimDisk(random.Random(seed))
    log = PartitionLog.open(disk, "/data/t-0", config, 0)
    return Partition(tp=TP, log=log, config=config, broker_id=ME)


def state(leader: int = ME, epoch: int = 1, isr: tuple[int, ...] = (1, 2, 3), partition_epoch: int = 1,
          recovering: bool = False) -> PartitionState:
    return PartitionState(
        TOPIC_ID, (1, 2, 3), isr, leader, epoch, partition_epoch,
        LeaderRecoveryState.RECOVERING if recovering else LeaderRecoveryState.RECOVERED,
    )


def append(p: Partition, count: int = 1, acks: int = -1) -> int:
    data = bytearray(encode_batch([Record(key=None, value=b"x")] * count, now_ms=0))
    return p.append_as_leader(data, validate_batches(data, 1 << 20), acks, 0).last_offset


def test_hw_is_the_smallest_leo_over_the_isr_and_waits_for_unheard_followers() -> None:
    p = make_partition()
    assert p.make_leader(state(), 0)
    append(p, 5)
    assert p.high_watermark == 0, "followers not heard from in this epoch hold HW"
    assert not p.record_follower_fetch(2, 10, 3, 0)
    assert p.high_watermark == 0
    assert p.record_follower_fetch(3, 11, 4, 0)
    assert p.high_watermark == 3
    assert p.record_follower_fetch(2, 10, 5, 0)
    assert p.high_watermark == 4
    # a follower's fetch offset going back (a restart) never lowers HW
    p.record_follower_fetch(2, 12, 1, 0)
    assert p.high_watermark == 4


def test_under_flush_always_the_leaders_own_term_is_its_flushed_offset() -> None:
    p = make_partition(flush="always")
    p.make_leader(state(isr=(1,)), 0)
    append(p, 3)
    assert p.high_watermark == 0
    p.log.flush_now()
    assert p.on_flushed() and p.high_watermark == 3


def test_min_isr_refuses_before_the_append_and_reports_a_shrink_after_it() -> None:
    p = make_partition(min_isr=2)
    p.make_leader(state(isr=(1,)), 0)
    with pytest.raises(KafkaError) as refused:
        append(p)
    assert refused.value.code == ErrorCode.not_enough_replicas
    assert p.log_end_offset == 0
    assert append(p, acks=1) == 0  # acks=1 is not bound by min ISR

    q = make_partition(min_isr=2, seed=1)
    q.make_leader(state(isr=(1, 2)), 0)
    last = append(q)
    assert q.produce_status(last, -1) is None  # waits for follower 2
    q.update_isr(state(isr=(1,), partition_epoch=2))  # the ISR shrank meanwhile
    assert q.produce_status(last, -1) == ErrorCode.not_enough_replicas_after_append
    q.make_follower(state(leader=2, epoch=2, isr=(2,)))
    assert q.produce_status(last, -1) == ErrorCode.not_leader_or_follower


def test_isr_shrinks_after_the_lag_time_and_expands_by_rule_9() -> None:
    p = make_partition()
    p.make_leader(state(), 0)
    append(p, 2)
    p.record_follower_fetch(2, 10, 2, 100)  # caught up
    p.record_follower_fetch(3, 11, 0, 100)  # behind
    # Every follower counts as caught up when the leadership starts (t=0).
    assert p.isr_to_shrink(LAG_MS, LAG_MS) is None
    assert p.isr_to_shrink(LAG_MS + 1, LAG_MS) == frozenset({1, 2})
    p.begin_isr_change(frozenset({1, 2}), {})
    assert p.maximal_isr == frozenset({1, 2, 3}), "HW keeps counting 3 until the shrink settles"
    p.update_isr(state(isr=(1, 2), partition_epoch=2))
    assert p.pending_isr is None and p.maximal_isr == frozenset({1, 2})
    assert p.high_watermark == 2
    # 3 comes back: not before its LEO reaches HW and the epoch's start
    p.record_follower_fetch(3, 11, 1, 2000)
    assert p.isr_to_expand(3) is None
    p.record_follower_fetch(3, 11, 2, 2001)
    assert p.isr_to_expand(3) == frozenset({1, 2, 3})


def test_a_pending_expansion_counts_the_new_member_for_hw() -> None:
    p = make_partition()
    p.make_leader(state(isr=(1, 2)), 0)
    append(p, 4)
    p.record_follower_fetch(2, 10, 4, 1)
    assert p.high_watermark == 4
    append(p, 2)
    p.record_follower_fetch(3, 11, 4, 2)
    p.begin_isr_change(frozenset({1, 2, 3}), {3: 11})
    p.record_follower_fetch(2, 10, 6, 3)
    assert p.high_watermark == 4, "3 is in the maximal ISR: HW waits for it"
    assert p.abandon_isr_change() and p.high_watermark == 6


def test_a_new_leadership_assigns_its_epoch_at_leo_and_forgets_followers() -> None:
    p = make_partition()
    p.make_leader(state(epoch=1), 0)
    append(p, 3)
    p.record_follower_fetch(2, 10, 3, 1)
    p.record_follower_fetch(3, 11, 3, 1)
    assert p.high_watermark == 3
    p.make_follower(state(leader=2, epoch=2))
    assert not p.is_leader and p.leader_id == 2
    assert p.make_leader(state(epoch=3), 5)
    assert p.leader_epoch_start_offset == 3
    assert p.log.leader_epochs.latest_epoch == 3
    assert all(f.log_end_offset == -1 for f in p.followers.values())
    assert not p.make_leader(state(epoch=3, isr=(1, 2), partition_epoch=9), 6), "same epoch: not a new term"
    assert not p.make_follower(state(leader=2, epoch=2)), "an older epoch is ignored"
    assert p.is_leader


def test_check_leader_fences_old_epochs_and_refuses_unknown_ones() -> None:
    p = make_partition()
    p.make_leader(state(epoch=4), 0)
    p.check_leader(4)
    p.check_leader(-1)
    for epoch, code in ((3, ErrorCode.fenced_leader_epoch), (5, ErrorCode.unknown_leader_epoch)):
        with pytest.raises(KafkaError) as refused:
            p.check_leader(epoch)
        assert refused.value.code == code
    p.make_follower(state(leader=NO_LEADER, epoch=5))
    with pytest.raises(KafkaError) as refused:
        p.check_leader(5)
    assert refused.value.code == ErrorCode.not_leader_or_follower


class LeaderMachine(RuleBasedStateMachine):
    """Appends, follower fetches (at or below the leader's LEO), ISR changes in flight or
    settled, time. Invariants: HW never falls within the epoch; HW <= LEO; HW never passes a
    member of the maximal ISR; the min-ISR check guards acks=all appends."""

    def __init__(self) -> None:
        super().__init__()
        self.p = make_partition(min_isr=2)
        self.now = 0
        self.partition_epoch = 1
        self.isr: tuple[int, ...] = (1, 2, 3)
        self.p.make_leader(state(isr=self.isr), 0)
        self.last_hw = 0
        self.leos = {2: -1, 3: -1}

    @rule(count=st.integers(1, 3), acks=st.sampled_from([-1, 1]))
    def produce(self, count: int, acks: int) -> None:
        before = self.p.log_end_offset
        try:
            append(self.p, count, acks)
        except KafkaError as exc:
            assert exc.code == ErrorCode.not_enough_replicas and acks == -1
            assert len(self.p.isr) < 2 and self.p.log_end_offset == before

    @rule(follower=st.sampled_from([2, 3]), data=st.data())
    def fetch(self, follower: int, data: st.DataObject) -> None:
        offset = data.draw(st.integers(max(self.leos[follower], 0), self.p.log_end_offset))
        self.leos[follower] = offset
        self.now += data.draw(st.integers(0, 700))
        self.p.record_follower_fetch(follower, 100 + follower, offset, self.now)

    @precondition(lambda self: self.p.pending_isr is None)
    @rule(advance=st.integers(0, 1_500))
    def shrink(self, advance: int) -> None:
        self.now += advance
        new = self.p.isr_to_shrink(self.now, LAG_MS)
        if new is not None:
            self.p.begin_isr_change(new, {})

    @precondition(lambda self: self.p.pending_isr is None)
    @rule(follower=st.sampled_from([2, 3]))
    def expand(self, follower: int) -> None:
        new = self.p.isr_to_expand(follower)
        if new is not None:
            f = self.p.followers[follower]
            assert f.log_end_offset >= self.p.high_watermark
            self.p.begin_isr_change(new, {follower: f.broker_epoch})

    @precondition(lambda self: self.p.pending_isr is not None)
    @rule(accepted=st.booleans())
    def settle(self, accepted: bool) -> None:
        pending = self.p.pending_isr
        assert pending is not None
        if accepted:
            self.partition_epoch += 1
            self.isr = tuple(sorted(pending.isr))
            self.p.update_isr(state(isr=self.isr, partition_epoch=self.partition_epoch))
        else:
            self.p.abandon_isr_change()

    @invariant()
    def hw_rules(self) -> None:
        p = self.p
        hw = p.high_watermark
        assert hw >= self.last_hw, "HW went back within one leader epoch"
        assert hw <= p.log_end_offset
        for b in p.maximal_isr - {ME}:
            assert hw <= max(self.leos[b], 0), f"HW {hw} passed ISR member {b} at {self.leos[b]}"
        self.last_hw = hw


TestLeaderMachine = LeaderMachine.TestCase
TestLeaderMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
