"""Hypothesis drives a KIP-848 consumer group through joins, heartbeats, leaves (dynamic and
static), silent members timing out, subscription changes, new partitions and coordinator
reloads, and checks after every step:

- no partition is in two members' assignments (assigned or pending revocation) on the
  coordinator, and no two consumers that are members at their current epoch own one;
- a member's epoch never goes down while it stays in the group; the group epoch never does;
- what a consumer owns at its epoch is what the coordinator has assigned it (or is still
  revoking from it);
- a reload from the log gives back exactly the durable state (epochs, targets, members);
- a heartbeat whose records the log refuses (NOT_ENOUGH_REPLICAS) leaves the group exactly as
  its log says (the runtime's undo), and the member hears an error.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ackly.coordinator.consumer_group import ConsumerGroup, partitions_of
from ackly.errors import ErrorCode

from .consumer_helpers import GROUP, Consumer, heartbeat, view
from .helpers import Box, Harness
from .txn_helpers import FailingLog

NAMES = ["a", "b", "c", "d"]
STATIC = {"c": "inst-c", "d": "inst-d"}
TOPIC_SETS = [("t",), ("t", "u"), ("u",)]


def durable(group: ConsumerGroup | None) -> Any:
    if group is None:
        return None
    return (group.group_epoch, group.assignment_epoch, group.metadata_hash, group.target,
            {m.member_id: (m.member_epoch, m.previous_member_epoch, m.state, m.assigned, m.pending_revocation,
                           m.metadata_record()) for m in group.members.values()})


class ConsumerGroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.logs = [FailingLog(i) for i in range(3)]
        for log in self.logs:
            log.code = ErrorCode.not_enough_replicas
        self.h = Harness(logs=list(self.logs))
        self.counts = {"t": 3, "u": 2}
        self.consumers: dict[str, Consumer] = {}
        self.generation = 0  # a fresh member id per process start
        self.seen_epochs: dict[str, int] = {}
        self.group_epoch = 0

    def _group(self) -> ConsumerGroup | None:
        group: ConsumerGroup | None = self.h.shard(GROUP).consumer_groups.get(GROUP)
        return group

    def _consumer(self, name: str) -> Consumer:
        c = self.consumers.get(name)
        if c is None:
            self.generation += 1
            c = self.consumers[name] = Consumer(f"{name}-{self.generation}", ("t",), instance_id=STATIC.get(name))
        return c

    @rule(name=st.sampled_from(NAMES), times=st.integers(1, 3))
    def beat(self, name: str, times: int) -> None:
        c = self._consumer(name)
        for _ in range(times):
            result = heartbeat(self.h, c, view(self.counts))
            if result.error is ErrorCode.unreleased_instance_id:
                del self.consumers[name]  # that process gives up; a later one tries again
                return
            assert result.error in (ErrorCode.none, ErrorCode.fenced_member_epoch,
                                    ErrorCode.unknown_member_id), result

    @rule(name=st.sampled_from(NAMES), static_leave=st.booleans())
    def leave(self, name: str, static_leave: bool) -> None:
        c = self.consumers.pop(name, None)
        if c is None or c.epoch <= 0:
            return
        epoch = -2 if static_leave and c.instance_id is not None else -1
        result = heartbeat(self.h, c, view(self.counts), epoch=epoch)
        assert result.error in (ErrorCode.none, ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id), result

    @rule(name=st.sampled_from(NAMES), topics=st.sampled_from(TOPIC_SETS))
    def resubscribe(self, name: str, topics: tuple[str, ...]) -> None:
        c = self.consumers.get(name)
        if c is not None:
            c.topics = topics
            c.resend = True

    @rule(topic=st.sampled_from(["t", "u"]))
    def add_partition(self, topic: str) -> None:
        if self.counts[topic] < 6:
            self.counts[topic] += 1

    @rule(ms=st.integers(1_000, 60_000), keep=st.sampled_from(NAMES))
    def time_passes(self, ms: int, keep: str) -> None:
        """Only `keep` heartbeats meanwhile; the others may time out."""
        end = self.h.now_ms + ms
        while self.h.now_ms < end:
            self.h.advance(min(4_000, end - self.h.now_ms))
            if keep in self.consumers:
                heartbeat(self.h, self.consumers[keep], view(self.counts))

    @rule(name=st.sampled_from(NAMES))
    def refused_beat(self, name: str) -> None:
        """The log refuses the heartbeat's records: the answer is an error and the group is
        what its log says."""
        c = self.consumers.get(name)
        if c is None:
            return
        for log in self.logs:
            log.failures = 1
        box = Box()
        self.h.coordinator.consumer_group_heartbeat(GROUP, c.request(full=c.epoch == 0 or c.resend),
                                                    view(self.counts), box, self.h.now_ms)
        self.h.settle()
        wrote = any(log.refused for log in self.logs)
        for log in self.logs:
            log.failures, log.refused = 0, False
        if wrote:
            assert isinstance(box.value, tuple) and box.value[0] == "failed", box.value
            reloaded = self.h.reopened().shard(GROUP).consumer_groups.get(GROUP)
            assert durable(self._group()) == durable(reloaded)

    @rule()
    def reload(self) -> None:
        before = durable(self._group())
        self.h = self.h.reopened()
        assert durable(self._group()) == before

    @invariant()
    def invariants(self) -> None:
        self.h.check()
        group = self._group()
        if group is None:
            self.seen_epochs.clear()
            return
        assert group.group_epoch >= self.group_epoch
        self.group_epoch = group.group_epoch
        for member_id in list(self.seen_epochs):
            if member_id not in group.members:
                del self.seen_epochs[member_id]
        for m in group.members.values():
            if m.member_epoch >= 0:
                assert m.member_epoch >= self.seen_epochs.get(m.member_id, 0), "member epoch went back"
                self.seen_epochs[m.member_id] = m.member_epoch
        owners: dict[Any, str] = {}
        for c in self.consumers.values():
            m = group.members.get(c.member_id)
            if m is None or c.epoch != m.member_epoch:
                continue
            held = partitions_of(c.owned)
            assert held <= partitions_of(m.assigned) | partitions_of(m.pending_revocation), c
            for tp in held:
                assert tp not in owners, f"{tp} owned by {owners[tp]} and {c.member_id}"
                owners[tp] = c.member_id


ConsumerGroupMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestConsumerGroupStateful = ConsumerGroupMachine.TestCase
