"""A refused append reverts a shard through its undo log (coordinator/runtime.py), never by
re-reading the log; the invariant kept is that between ops a shard's durable state is exactly
its log replayed. Hypothesis drives groups and transactional ids through random operations
while the log refuses random appends, and after every step compares the live shards with
shards loaded afresh from the same logs, field by field of what records say.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ackly.coordinator.group import JoinResult
from ackly.coordinator.group_manager import CommitPartition, GroupShard
from ackly.coordinator.transaction_state import InitResult, TransactionShard
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

from .helpers import Box, Harness
from .test_txn_offsets import marker, txn_commit
from .txn_helpers import FailingLog, TxnHarness

E = ErrorCode
GROUPS = ["g0", "g1", "g2", "g3"]
TOPIC_PARTITIONS = [("t", 0), ("t", 1), ("u", 0)]
TXN_IDS = ["a", "b", "c"]
PARTS = [TopicPartition("t", 0), TopicPartition("t", 1)]


def group_durable_view(shards: list[GroupShard]) -> dict[str, Any]:
    """Everything a group shard holds because of its records."""
    return {
        "groups": sorted(g for s in shards for g in s.groups),
        "group_values": {g: v for s in shards for g, v in s.group_values.items()},
        "offsets": {(g, tp): v for s in shards for g, o in s.offsets.items() for tp, v in o.items()},
        "committed_at": {(g, tp): at for s in shards for g, o in s.committed_at.items()
                         for tp, at in o.items()},
        "pending": {(pid, g, tp): p for s in shards for pid, by_group in s.pending.items()
                    for g, by_tp in by_group.items() for tp, p in by_tp.items()},
        "open_txns": {(g, tp): frozenset(pids) for s in shards for g, by_tp in s.open_txns.items()
                      for tp, pids in by_tp.items()},
    }


def txn_durable_view(shards: list[TransactionShard]) -> dict[str, Any]:
    """Each transactional id's record (the in-memory-only fields, last producer epoch and
    previous producer id, are not in the log)."""
    return {t: (m.producer_id, m.producer_epoch, m.timeout_ms, m.state, m.partitions, m.start_ms,
                m.last_update_ms)
            for s in shards for t, m in s.txns.items()}


class GroupRevertMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.logs = [FailingLog(i) for i in range(2)]
        for log in self.logs:
            log.code = E.not_enough_replicas
        self.h = Harness(logs=list(self.logs))
        self.members: dict[str, list[tuple[str, int]]] = {}
        self.refusals = 0
        self.producer_id = 5000

    def _refuse(self, refuse: bool) -> None:
        for log in self.logs:
            log.failures = 1 if refuse else 0

    def _settle(self) -> None:
        for log in self.logs:
            if log.failures == 0 and log.refused:
                self.refusals += 1
                log.refused = False
            log.failures = 0
        self.h.settle()

    @rule(group=st.sampled_from(GROUPS), tp=st.sampled_from(TOPIC_PARTITIONS),
          offset=st.integers(0, 1000), refuse=st.booleans())
    def commit(self, group: str, tp: tuple[str, int], offset: int, refuse: bool) -> None:
        self._refuse(refuse)
        box = Box()
        self.h.coordinator.commit_offsets(group, "", None, -1, -1, [CommitPartition(*tp, offset, -1, "")],
                                          E.illegal_generation, box, self.h.now_ms)
        self._settle()

    @rule(group=st.sampled_from(GROUPS), refuse=st.booleans(), version=st.sampled_from([3, 9]))
    def join(self, group: str, refuse: bool, version: int) -> None:
        self._refuse(refuse)
        first = self.h.join(group_id=group, version=version)
        self._settle()
        answer = first.answers[0] if first.answers else None
        if isinstance(answer, JoinResult) and answer.error is E.member_id_required:
            self._refuse(refuse)
            self.h.join(answer.member_id, group_id=group, version=version)
            self._settle()

    @rule(group=st.sampled_from(GROUPS), refuse=st.booleans())
    def sync_leader(self, group: str, refuse: bool) -> None:
        shard = self.h.shard(group)
        g = shard.groups.get(group)
        if g is None or g.leader_id is None or g.leader_id not in g.members:
            return
        self._refuse(refuse)
        self.h.sync(g.leader_id, g.generation, {m: b"x" for m in g.members}, group_id=group)
        self._settle()

    @rule(group=st.sampled_from(GROUPS), refuse=st.booleans())
    def leave_all(self, group: str, refuse: bool) -> None:
        g = self.h.shard(group).groups.get(group)
        if g is None or not g.members:
            return
        self._refuse(refuse)
        self.h.leave(*[(m, None) for m in list(g.members)], group_id=group)
        self._settle()

    @rule(group=st.sampled_from(GROUPS), tp=st.sampled_from(TOPIC_PARTITIONS), refuse=st.booleans())
    def delete_offset(self, group: str, tp: tuple[str, int], refuse: bool) -> None:
        self._refuse(refuse)
        box = Box()
        self.h.coordinator.delete_offsets(group, [tp], box, self.h.now_ms)
        self._settle()

    @rule(group=st.sampled_from(GROUPS), refuse=st.booleans())
    def delete_group(self, group: str, refuse: bool) -> None:
        self._refuse(refuse)
        box = Box()
        self.h.coordinator.delete_groups([group], box, self.h.now_ms)
        self._settle()

    @rule(group=st.sampled_from(GROUPS), tp=st.sampled_from(TOPIC_PARTITIONS),
          offset=st.integers(0, 1000), outcome=st.sampled_from(["commit", "abort", "open"]))
    def transactional_commit(self, group: str, tp: tuple[str, int], offset: int, outcome: str) -> None:
        self.producer_id += 1
        txn_commit(self.h, {tp: offset}, producer_id=self.producer_id, epoch=0, group_id=group)
        self._settle()
        if outcome != "open":
            marker(self.h, committed=outcome == "commit", producer_id=self.producer_id, epoch=0,
                   group_id=group)

    @rule(ms=st.sampled_from([0, 1_000, 15_000, 40_000, 8 * 24 * 3600 * 1000]), refuse=st.booleans())
    def advance(self, ms: int, refuse: bool) -> None:
        # Session and rebalance timeouts, offset expiry: writes a timer makes can be refused.
        self._refuse(refuse)
        self.h.advance(ms)
        self._settle()

    @invariant()
    def reverted_state_is_the_log_replayed(self) -> None:
        self.h.check()
        fresh = self.h.reopened()
        fresh.check()
        assert group_durable_view(self.h.coordinator.shards()) == group_durable_view(
            fresh.coordinator.shards())

    def teardown(self) -> None:
        self._settle()


class TxnRevertMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = TxnHarness(partitions=2)
        self.logs = [log for log in self.h.logs if isinstance(log, FailingLog)]
        for log in self.logs:
            log.code = E.not_enough_replicas
        self.producers: dict[str, tuple[int, int]] = {}

    def _refuse(self, refuse: bool) -> None:
        for log in self.logs:
            log.failures = 1 if refuse else 0

    def _done(self) -> None:
        for log in self.logs:
            log.failures = 0
        self.h.commit_logs()

    @rule(txn=st.sampled_from(TXN_IDS), refuse=st.booleans())
    def init(self, txn: str, refuse: bool) -> None:
        self._refuse(refuse)
        r = self.h.init(txn)
        if isinstance(r, InitResult) and r.error is E.none:
            self.producers[txn] = (r.producer_id, r.producer_epoch)
        self._done()

    @rule(txn=st.sampled_from(TXN_IDS), part=st.sampled_from(PARTS), refuse=st.booleans())
    def add(self, txn: str, part: TopicPartition, refuse: bool) -> None:
        if txn not in self.producers:
            return
        self._refuse(refuse)
        self.h.add(txn, *self.producers[txn], part)
        self._done()

    @rule(txn=st.sampled_from(TXN_IDS), commit=st.booleans(), refuse=st.booleans())
    def end(self, txn: str, commit: bool, refuse: bool) -> None:
        if txn not in self.producers:
            return
        self._refuse(refuse)
        self.h.end(txn, *self.producers[txn], commit)
        self._done()

    @rule(refuse=st.booleans())
    def markers_written(self, refuse: bool) -> None:
        self._refuse(refuse)
        self.h.finish_markers()
        self._done()

    @rule(ms=st.sampled_from([1, 2_000, 70_000]), refuse=st.booleans())
    def advance(self, ms: int, refuse: bool) -> None:
        self._refuse(refuse)
        self.h.advance(ms)
        self._done()

    @invariant()
    def reverted_state_is_the_log_replayed(self) -> None:
        fresh = TxnHarness(partitions=len(self.h.logs), logs=self.h.logs, now_ms=self.h.now_ms)
        assert txn_durable_view([s for _, s in self.h.coordinator.runtime.shards()]) == \
            txn_durable_view([s for _, s in fresh.coordinator.runtime.shards()])


TestGroupRevert = GroupRevertMachine.TestCase
TestGroupRevert.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestTxnRevert = TxnRevertMachine.TestCase
TestTxnRevert.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
