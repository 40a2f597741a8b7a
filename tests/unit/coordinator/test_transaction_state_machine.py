"""The transaction state machine: Kafka's transition table, each request in each state as a
table, and a hypothesis stateful test (random requests, timeouts, marker completions and
commit delays) checking after every step that replaying the log gives the live state."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.unit.coordinator.helpers import Box
from tests.unit.coordinator.txn_helpers import TxnHarness

from ackly.coordinator.transaction_metadata import (
    COMPLETE_STATES,
    PREPARE_STATES,
    InvalidTransition,
    TransactionMetadata,
    TxnState,
    is_valid_transition,
)
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

S = TxnState
A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)
TX = "tx"

# Kafka's TransactionState.validPreviousStates, written out as pairs (with transaction version 2's
# abort from Empty or a Complete state, an abort with no partition added).
KAFKA_TRANSITIONS = {
    (S.EMPTY, S.EMPTY), (S.COMPLETE_COMMIT, S.EMPTY), (S.COMPLETE_ABORT, S.EMPTY),
    (S.ONGOING, S.ONGOING), (S.EMPTY, S.ONGOING), (S.COMPLETE_COMMIT, S.ONGOING),
    (S.COMPLETE_ABORT, S.ONGOING),
    (S.ONGOING, S.PREPARE_COMMIT),
    (S.ONGOING, S.PREPARE_ABORT), (S.PREPARE_EPOCH_FENCE, S.PREPARE_ABORT),
    (S.EMPTY, S.PREPARE_ABORT), (S.COMPLETE_COMMIT, S.PREPARE_ABORT), (S.COMPLETE_ABORT, S.PREPARE_ABORT),
    (S.PREPARE_COMMIT, S.COMPLETE_COMMIT), (S.PREPARE_ABORT, S.COMPLETE_ABORT),
    (S.ONGOING, S.PREPARE_EPOCH_FENCE),
    (S.EMPTY, S.DEAD), (S.COMPLETE_COMMIT, S.DEAD), (S.COMPLETE_ABORT, S.DEAD),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("nxt", list(S))
def test_transition_table_is_kafkas(current: TxnState, nxt: TxnState) -> None:
    assert is_valid_transition(current, nxt) == ((current, nxt) in KAFKA_TRANSITIONS)


def test_apply_refuses_a_transition_outside_the_table() -> None:
    meta = TransactionMetadata(TX, 1, 0, 60_000, S.EMPTY)
    with pytest.raises(InvalidTransition):
        meta.prepare_complete(0)
    with pytest.raises(InvalidTransition):
        meta.apply(meta.transit().__class__(1, 0, 60_000, S.PREPARE_COMMIT, frozenset(), -1, 0))


def _to_state(h: TxnHarness, state: TxnState) -> tuple[int, int]:
    """Bring TX to `state`; its producer id and current epoch."""
    r = h.init(TX)
    pid, epoch = r.producer_id, r.producer_epoch
    if state == S.EMPTY:
        return pid, epoch
    assert h.add(TX, pid, epoch, A0) == ErrorCode.none
    if state == S.ONGOING:
        return pid, epoch
    assert h.end(TX, pid, epoch, state in (S.PREPARE_COMMIT, S.COMPLETE_COMMIT)) == ErrorCode.none
    if state in COMPLETE_STATES:
        h.finish_markers()
    assert h.meta(TX).state == state
    return pid, epoch


Op = Callable[[TxnHarness, int, int], object]
OPS: dict[str, Op] = {
    "add": lambda h, pid, e: h.add(TX, pid, e, A1),
    "commit": lambda h, pid, e: h.end(TX, pid, e, True),
    "abort": lambda h, pid, e: h.end(TX, pid, e, False),
    "init": lambda h, pid, e: h.init(TX).error,
}
N, CT, ITS = ErrorCode.none, ErrorCode.concurrent_transactions, ErrorCode.invalid_txn_state

# (state, request) -> (answer, state after); Kafka's TransactionCoordinator for each.
TABLE = [
    (S.EMPTY, "add", N, S.ONGOING), (S.EMPTY, "commit", ITS, S.EMPTY),
    (S.EMPTY, "abort", ITS, S.EMPTY), (S.EMPTY, "init", N, S.EMPTY),
    (S.ONGOING, "add", N, S.ONGOING), (S.ONGOING, "commit", N, S.PREPARE_COMMIT),
    (S.ONGOING, "abort", N, S.PREPARE_ABORT), (S.ONGOING, "init", CT, S.PREPARE_ABORT),
    (S.PREPARE_COMMIT, "add", CT, S.PREPARE_COMMIT), (S.PREPARE_COMMIT, "commit", CT, S.PREPARE_COMMIT),
    (S.PREPARE_COMMIT, "abort", ITS, S.PREPARE_COMMIT), (S.PREPARE_COMMIT, "init", CT, S.PREPARE_COMMIT),
    (S.PREPARE_ABORT, "add", CT, S.PREPARE_ABORT), (S.PREPARE_ABORT, "commit", ITS, S.PREPARE_ABORT),
    (S.PREPARE_ABORT, "abort", CT, S.PREPARE_ABORT), (S.PREPARE_ABORT, "init", CT, S.PREPARE_ABORT),
    (S.COMPLETE_COMMIT, "add", N, S.ONGOING), (S.COMPLETE_COMMIT, "commit", N, S.COMPLETE_COMMIT),
    (S.COMPLETE_COMMIT, "abort", ITS, S.COMPLETE_COMMIT), (S.COMPLETE_COMMIT, "init", N, S.EMPTY),
    (S.COMPLETE_ABORT, "add", N, S.ONGOING), (S.COMPLETE_ABORT, "commit", ITS, S.COMPLETE_ABORT),
    (S.COMPLETE_ABORT, "abort", N, S.COMPLETE_ABORT), (S.COMPLETE_ABORT, "init", N, S.EMPTY),
]


@pytest.mark.parametrize(("state", "op", "answer", "after"), TABLE)
def test_each_request_in_each_state(state: TxnState, op: str, answer: ErrorCode, after: TxnState) -> None:
    h = TxnHarness()
    pid, epoch = _to_state(h, state)
    assert OPS[op](h, pid, epoch) == answer
    assert h.meta(TX).state == after


@pytest.mark.parametrize("state", [S.EMPTY, S.ONGOING, S.COMPLETE_COMMIT, S.COMPLETE_ABORT])
@pytest.mark.parametrize("op", ["add", "commit", "abort"])
def test_an_older_epoch_is_fenced_in_every_state(state: TxnState, op: str) -> None:
    h = TxnHarness()
    pid, epoch = _to_state(h, state)
    assert OPS[op](h, pid, epoch - 1) == ErrorCode.producer_fenced


TXNS = ("t1", "t2", "t3")
PARTS = [TopicPartition("a", i) for i in range(3)] + [TopicPartition("__consumer_offsets", 7)]


class TransactionMachine(RuleBasedStateMachine):
    """Random requests from current and stale producers, clock jumps, markers finished late,
    and logs that commit late; after every step the log replays into the live state."""

    def __init__(self) -> None:
        super().__init__()
        self.h = TxnHarness(config=TxnHarness().config.__class__(
            max_timeout_ms=60_000, id_expiration_ms=500_000, abort_check_interval_ms=1_000,
            remove_expired_interval_ms=100_000))
        self.epochs: dict[str, tuple[int, int]] = {}  # the newest (pid, epoch) handed out
        self.seen: dict[int, int] = {}  # producer id -> highest epoch ever in the log state
        self.pending: list[tuple[str, str, Box]] = []
        self.failovers = 0

    def _drain(self) -> None:
        """Take the answers that came (a held log holds them back)."""
        still = []
        for kind, txn, box in self.pending:
            if not box.done:
                still.append((kind, txn, box))
                continue
            answer = box.value
            assert not isinstance(answer, tuple), answer  # no failure without a failing log
            if kind == "init":
                assert answer.error in (ErrorCode.none, ErrorCode.concurrent_transactions,
                                        ErrorCode.producer_fenced), answer
                if answer.error == ErrorCode.none:
                    self.epochs[txn] = (answer.producer_id, answer.producer_epoch)
            elif kind == "stale":
                assert answer in (ErrorCode.producer_fenced, ErrorCode.invalid_producer_id_mapping), answer
        self.pending = still

    @rule(txn=st.sampled_from(TXNS), timeout=st.sampled_from([2_000, 30_000]), kip360=st.booleans())
    def init(self, txn: str, timeout: int, kip360: bool) -> None:
        expected = self.epochs.get(txn) if kip360 else None
        box = Box()
        self.h.coordinator.init_producer_id(txn, timeout, expected, box, self.h.now_ms)
        self.pending.append(("init", txn, box))
        self.h.settle()
        self._drain()

    @rule(txn=st.sampled_from(TXNS), parts=st.sets(st.sampled_from(PARTS), min_size=1, max_size=2),
          stale=st.booleans())
    def add(self, txn: str, parts: set[TopicPartition], stale: bool) -> None:
        if txn not in self.epochs:
            return
        pid, epoch = self.epochs[txn]
        box = Box()
        self.h.coordinator.add_partitions(txn, pid, epoch - 1 if stale else epoch, parts, box, self.h.now_ms)
        self.pending.append(("stale" if stale else "add", txn, box))
        self.h.settle()
        self._drain()

    @rule(txn=st.sampled_from(TXNS), commit=st.booleans())
    def end(self, txn: str, commit: bool) -> None:
        if txn in self.epochs:
            box = Box()
            self.h.coordinator.end_transaction(txn, *self.epochs[txn], commit, box, self.h.now_ms)
            self.pending.append(("end", txn, box))
            self.h.settle()
            self._drain()

    @rule(txn=st.sampled_from(TXNS), part=st.sampled_from(PARTS), commit=st.booleans())
    def add_then_end(self, txn: str, part: TopicPartition, commit: bool) -> None:
        """The common path, so whole transactions happen often between the faults."""
        self.add(txn, {part}, False)
        self.end(txn, commit)

    @rule(ms=st.sampled_from([500, 3_000, 40_000, 200_000]))
    def advance(self, ms: int) -> None:
        # Within the write timeout: a held log delays answers but never fails them here.
        self.h.now_ms += ms
        self.h.coordinator.tick(self.h.now_ms)
        self.h.settle()
        self._drain()

    @rule()
    def finish_markers(self) -> None:
        self.h.finish_markers()

    @rule()
    def failover(self) -> None:
        """The coordinator dies; another loads the same logs (its held answers are lost: the
        clients time out and retry) and must finish every decision it finds."""
        old = self.h
        for log in old.logs:
            log.commit()  # the new leader's log is the truth; what it holds gets committed
        self.failovers += 1  # each coordinator hands out ids from a range of its own
        self.h = TxnHarness(logs=old.logs, config=old.config, now_ms=old.now_ms,
                            first_producer_id=1000 + 100_000 * self.failovers)
        self.pending = []
        prepared = {m.transactional_id for i in range(3) for m in self.h.coordinator.runtime.shard(i).txns.values()
                    if m.state in PREPARE_STATES}
        assert {d.transactional_id for d in self.h.decisions} == prepared

    @rule(index=st.integers(0, 2), hold=st.booleans())
    def commit_delay(self, index: int, hold: bool) -> None:
        log = self.h.logs[index]
        log.auto_commit = not hold
        if not hold:
            log.commit()
            self.h.settle()
            self._drain()

    @invariant()
    def replay_equals_live(self) -> None:
        fresh = TxnHarness(logs=self.h.logs, config=self.h.config, now_ms=self.h.now_ms)
        for index in range(3):
            live = self.h.coordinator.runtime.shard(index).txns
            loaded = fresh.coordinator.runtime.shard(index).txns
            assert {k: m.transit().to_value() for k, m in live.items()} == {
                k: m.transit().to_value() for k, m in loaded.items()}

    @invariant()
    def state_invariants(self) -> None:
        for index in range(3):
            for meta in self.h.coordinator.runtime.shard(index).txns.values():
                if meta.state == S.EMPTY or meta.state in COMPLETE_STATES:
                    assert not meta.partitions
                if meta.state in PREPARE_STATES or meta.state == S.ONGOING:
                    assert meta.partitions
                assert meta.state not in (S.DEAD, S.PREPARE_EPOCH_FENCE), "never kept"
                assert meta.producer_epoch >= self.seen.get(meta.producer_id, -1), "epochs never go down"
                self.seen[meta.producer_id] = meta.producer_epoch

    @invariant()
    def decided_means_prepared(self) -> None:
        for d in self.h.decisions:
            meta = self.h.coordinator.runtime.shard(d.index).txns.get(d.transactional_id)
            assert meta is not None and meta.state in PREPARE_STATES
            assert (meta.producer_id, meta.producer_epoch) == (d.producer_id, d.producer_epoch)
            assert meta.partitions == d.partitions

    def teardown(self) -> None:
        # Liveness: once logs commit and markers land, nothing stays undecided.
        for log in self.h.logs:
            log.auto_commit = True
        self.h.commit_logs()
        for _ in range(3):
            self.h.finish_markers()
            self.h.commit_logs()
        self._drain()
        assert not self.pending, "every request answered once its records are committed"
        for index in range(3):
            for meta in self.h.coordinator.runtime.shard(index).txns.values():
                assert meta.state not in PREPARE_STATES, meta


TestTransactionMachine = TransactionMachine.TestCase
TestTransactionMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
