"""The transaction coordinator of one broker (Kafka's TransactionCoordinator; KIP-98, KIP-360,
KIP-588, KIP-890 parts 1 and 2): which shard owns a transactional id, and the transaction APIs.

A transactional id lives in partition `abs(javaStringHashCode(id)) % partitions` of
`__transaction_state`, computed exactly as Kafka does (and as groups are placed), and its
operations run on that partition's shard through the coordinator runtime: records in, replay
out, replies once committed (coordinator/runtime.py, transaction_state.py). A broker holds the
shards of the partitions it leads; an id whose shard is elsewhere is answered NOT_COORDINATOR,
one whose shard is still loading COORDINATOR_LOAD_IN_PROGRESS (Kafka's
TransactionStateManager.getTransactionState), which clients retry against the same broker.

Decisions and markers: a committed Prepare record becomes a `Decision` in `take_decisions()`;
the broker writes the markers (broker/transactions.py) and calls `complete(decision, ...)`,
which writes the Complete record if the shard is still the one that decided (same coordinator
epoch, the leader epoch of the `__transaction_state` partition) and the transaction still
waits for it, and tells the caller once that record is committed (or that the transaction had
moved on), or that it failed: the caller retries after a backoff, without writing the markers
again (Kafka's TransactionMarkerChannelManager retries the log append the same way). A shard
loaded from the log hands every Prepare state to the same path once the loaded records are
committed (the new leader's log tail included), so markers are never sent for a decision a
truncation could take back.

A write the log refuses (NOT_ENOUGH_REPLICAS while `__transaction_state` is below min ISR)
takes the shard back to its log before the request hears of it (runtime.py): a retried
AddPartitionsToTxn or EndTxn writes its record again, and KIP-890 verification never accepts a
partition the log does not hold. A revert puts back the id's metadata as it was before the
op, the fields that live in memory only (last producer epoch, previous producer id;
transaction_metadata.py) included. If a Prepare record's wait fails (refused, or HW did not
reach it in time), the shard's Prepare states are handed over again once what it holds is
committed (`take_retries()` then `resend_decisions`): a refused one is no longer among them,
one that was written comes back; the marker channel ignores a decision it already has.

Deterministic: time comes in as `now_ms`, producer ids from the injected allocator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ackly.coordinator.group_coordinator import INTERNAL_TOPICS, partition_for
from ackly.coordinator.runtime import (
    LOAD_SLICE_RECORDS,
    CoordinatorRuntime,
    Effects,
    ReplyScheduler,
    ShardLog,
    Waiter,
)
from ackly.coordinator.transaction_metadata import TV_0, TxnState
from ackly.coordinator.transaction_state import (
    Decision,
    EndTxnResult,
    InitResult,
    TransactionShard,
    TxnConfig,
    TxnDescription,
)
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

log = logging.getLogger("ackly.transactions")

TRANSACTION_STATE_TOPIC = "__transaction_state"
assert TRANSACTION_STATE_TOPIC in INTERNAL_TOPICS


@dataclass(frozen=True)
class TxnListing:
    transactional_id: str
    producer_id: int
    state: TxnState


class _DecisionWaiter:
    """Receives a shard's decisions once their Prepare record is committed."""

    def __init__(self, coordinator: TransactionCoordinator, index: int, coordinator_epoch: int) -> None:
        self.coordinator = coordinator
        self.index = index
        self.coordinator_epoch = coordinator_epoch

    def complete(self, result: Decision) -> None:
        self.coordinator._decided.append(result)

    def fail(self, code: ErrorCode) -> None:
        log.warning("__transaction_state-%d: a Prepare record was not committed (%s); its Prepare "
                    "states are handed over again", self.index, code.name)
        self.coordinator._retries.add((self.index, self.coordinator_epoch))


class _ErrorOnly:
    """An EndTxn waiter of a client before version 2, whose answer is the error code alone."""

    def __init__(self, waiter: Waiter[ErrorCode]) -> None:
        self.waiter = waiter

    def complete(self, result: EndTxnResult) -> None:
        self.waiter.complete(result.error)

    def fail(self, code: ErrorCode) -> None:
        self.waiter.fail(code)


class TransactionCoordinator:
    def __init__(self, *, config: TxnConfig, scheduler: ReplyScheduler, write_timeout_ms: int,
                 new_producer_id: Callable[[], int]) -> None:
        self.config = config
        self.runtime: CoordinatorRuntime[TransactionShard] = CoordinatorRuntime(
            scheduler, write_timeout_ms, config.wall_clock)
        self.new_producer_id = new_producer_id
        self.partitions = 0
        self._epochs: dict[int, int] = {}  # coordinator epoch of each shard held here
        self._decided: list[Decision] = []
        self._retries: set[tuple[int, int]] = set()

    @property
    def loaded(self) -> bool:
        """The internal topic exists (its partition count is known)."""
        return self.partitions > 0

    def set_partition_count(self, partitions: int) -> None:
        assert partitions > 0
        self.partitions = partitions

    def partition_for(self, transactional_id: str) -> int:
        assert self.loaded
        return partition_for(transactional_id, self.partitions)

    def here(self, transactional_id: str) -> bool:
        return self.loaded and self.partition_for(transactional_id) in self.runtime

    def coordinator_epoch(self, index: int) -> int | None:
        return self._epochs.get(index)

    # --- shards ----------------------------------------------------------------------------

    def load_shard(self, index: int, shard_log: ShardLog, coordinator_epoch: int, now_ms: int,
                   *, at_once: bool = True) -> None:
        """This broker now leads partition `index` in leader epoch `coordinator_epoch`: replay
        it now, or (not `at_once`) in slices through `load_step`, answering
        COORDINATOR_LOAD_IN_PROGRESS meanwhile (Kafka's TransactionStateManager)."""
        self.unload_shard(index)
        waiter = _DecisionWaiter(self, index, coordinator_epoch)

        def new_shard(now_ms: int) -> TransactionShard:
            return TransactionShard(index, coordinator_epoch, self.config, waiter, now_ms)

        self._epochs[index] = coordinator_epoch
        if at_once:
            self.runtime.load(index, shard_log, new_shard, now_ms)
            self._loaded(index, now_ms)
        elif self.runtime.begin_load(index, shard_log, new_shard, now_ms):
            self._loaded(index, now_ms)

    @property
    def loading(self) -> bool:
        return self.runtime.loading

    def load_step(self, now_ms: int, max_records: int = LOAD_SLICE_RECORDS) -> None:
        """Replay up to about `max_records` records of the shards still loading."""
        for index in self.runtime.load_step(now_ms, max_records):
            self._loaded(index, now_ms)

    def _loaded(self, index: int, now_ms: int) -> None:
        # Decided by an earlier coordinator: finish it once what was loaded is committed.
        self.resend_decisions(index, now_ms)

    def unload_shard(self, index: int) -> None:
        self._epochs.pop(index, None)
        if index in self.runtime or self.runtime.is_loading(index):
            self.runtime.unload(index)

    def not_here(self, transactional_id: str) -> ErrorCode | None:
        """COORDINATOR_LOAD_IN_PROGRESS while the id's shard loads, NOT_COORDINATOR if it is
        elsewhere; None if it is served here."""
        if self.here(transactional_id):
            return None
        if self.loaded and self.runtime.is_loading(self.partition_for(transactional_id)):
            return ErrorCode.coordinator_load_in_progress
        return ErrorCode.not_coordinator

    def take_retries(self) -> list[int]:
        """Shards whose decision write failed, still loaded in the same epoch: their
        decisions are to be handed over again (`resend_decisions`)."""
        retries = [i for i, epoch in sorted(self._retries)
                   if self.coordinator_epoch(i) == epoch and i in self.runtime]
        self._retries.clear()
        return retries

    def resend_decisions(self, index: int, now_ms: int) -> None:
        """Hand every transaction of shard `index` in a Prepare state to the decision path,
        once everything its log holds is committed."""
        shard = self.runtime.shard(index)
        for decision in shard.pending_decisions():
            self.runtime.read([index], lambda d=decision: d, shard.decisions, now_ms)  # type: ignore[misc]

    def take_decisions(self) -> list[Decision]:
        """Committed decisions whose markers are to be written (drained). A decision of a
        shard that is no longer loaded in its epoch is dropped: its new coordinator resends."""
        out = [d for d in self._decided if self.coordinator_epoch(d.index) == d.coordinator_epoch]
        self._decided.clear()
        return out

    def is_current(self, decision: Decision) -> bool:
        return (self.coordinator_epoch(decision.index) == decision.coordinator_epoch
                and decision.index in self.runtime)

    def complete(self, decision: Decision, now_ms: int, done: Waiter[Decision]) -> None:
        """Every marker of `decision` is written: write its Complete record. `done` hears once
        the record is committed (or the transaction had moved on: nothing to write), or that
        the write failed: refused (the shard is back at its Prepare state, the log's), or not
        committed in time; the caller then calls again after a backoff, with the markers
        already written (Kafka's marker channel retries the append the same way)."""
        if not self.is_current(decision):
            done.fail(ErrorCode.not_coordinator)
            return
        self.runtime.write(decision.index, lambda s, fx: s.complete(decision, now_ms, fx, done), now_ms)

    # --- the APIs --------------------------------------------------------------------------

    def _route(self, transactional_id: str, waiter: Waiter[Any]) -> int | None:
        if not transactional_id:
            waiter.fail(ErrorCode.invalid_request)
            return None
        if (code := self.not_here(transactional_id)) is not None:
            waiter.fail(code)
            return None
        return self.partition_for(transactional_id)

    def init_producer_id(self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None,
                         waiter: Waiter[InitResult], now_ms: int) -> None:
        if transactional_id and not 0 < timeout_ms <= self.config.max_timeout_ms:
            # Kafka's validateTransactionTimeoutMs.
            waiter.complete(InitResult(ErrorCode.invalid_transaction_timeout))
            return
        index = self._route(transactional_id, waiter)
        if index is None:
            return

        def op(s: TransactionShard, fx: Effects) -> None:
            s.init_producer_id(transactional_id, timeout_ms, expected, self.new_producer_id, waiter, now_ms, fx)

        self.runtime.write(index, op, now_ms)

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: Iterable[TopicPartition], waiter: Waiter[ErrorCode], now_ms: int,
                       transaction_version: int = TV_0) -> None:
        index = self._route(transactional_id, waiter)
        if index is None:
            return
        parts = list(partitions)

        def op(s: TransactionShard, fx: Effects) -> None:
            s.add_partitions(transactional_id, producer_id, producer_epoch, parts, waiter, now_ms, fx,
                             transaction_version)

        self.runtime.write(index, op, now_ms)

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """Answered at once from the shard's state (no write; KIP-890 part 1)."""
        parts = list(partitions)
        if not transactional_id:
            return {tp: ErrorCode.invalid_request for tp in parts}
        if (code := self.not_here(transactional_id)) is not None:
            return dict.fromkeys(parts, code)
        shard = self.runtime.shard(self.partition_for(transactional_id))
        return shard.verify_partitions(transactional_id, producer_id, producer_epoch, parts)

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool,
                        waiter: Waiter[ErrorCode], now_ms: int) -> None:
        """EndTxn of a client before transaction version 2 (v0-v4): the answer is a code."""
        self.end_transaction_versioned(transactional_id, producer_id, producer_epoch, committed, TV_0,
                                       _ErrorOnly(waiter), now_ms)

    def end_transaction_versioned(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                  committed: bool, transaction_version: int, waiter: Waiter[EndTxnResult],
                                  now_ms: int) -> None:
        """EndTxn as the client's transaction version has it (2: EndTxn v5, the epoch bumped
        and the producer id and epoch to go on with in the answer)."""
        index = self._route(transactional_id, waiter)
        if index is None:
            return

        def op(s: TransactionShard, fx: Effects) -> None:
            s.end_transaction(transactional_id, producer_id, producer_epoch, committed, waiter, now_ms, fx,
                              transaction_version, self.new_producer_id)

        self.runtime.write(index, op, now_ms)

    def describe(self, transactional_id: str) -> TxnDescription | ErrorCode:
        if not transactional_id:
            return ErrorCode.invalid_request
        if (code := self.not_here(transactional_id)) is not None:
            return code
        found = self.runtime.shard(self.partition_for(transactional_id)).describe(transactional_id)
        return ErrorCode.transactional_id_not_found if found is None else found

    def list_transactions(self, states: frozenset[TxnState] | None, producer_ids: frozenset[int] | None,
                          min_duration_ms: int, now_ms: int) -> list[TxnListing]:
        """Kafka's listTransactionStates over the shards held here (v1: running longer than
        `min_duration_ms`, -1 for any; Dead ids are never listed)."""
        out = []
        for _, shard in self.runtime.shards():
            for d in shard.descriptions():
                if d.state == TxnState.DEAD:
                    continue
                if states is not None and d.state not in states:
                    continue
                if producer_ids is not None and d.producer_id not in producer_ids:
                    continue
                # start_ms is the stored wall-clock time (KIP-994's filter compares it).
                if min_duration_ms >= 0 and self.config.wall_clock(now_ms) - d.start_ms <= min_duration_ms:
                    continue
                out.append(TxnListing(d.transactional_id, d.producer_id, d.state))
        return sorted(out, key=lambda t: t.transactional_id)

    # --- time ------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Run a load slice if a shard is loading, then the shards' timers."""
        if self.runtime.loading:
            self.load_step(now_ms)
        self.runtime.tick(now_ms)

    def next_deadline_ms(self) -> int | None:
        return self.runtime.next_deadline_ms()
