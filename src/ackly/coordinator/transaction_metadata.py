"""One transactional id's state and the transitions it may take (Kafka's TransactionMetadata,
TransactionState; KIP-98, KIP-360).

Owns: `TxnState` (Kafka's names and ids), the table of valid previous states, and
`TransactionMetadata` with its `prepare_*` methods. A `prepare_*` method never changes the
metadata: it returns the `TxnTransit` the caller writes to `__transaction_state`; the metadata
changes only when that record is replayed (`apply`), live or at load, so the state after a
failover is the state before it (coordinator/runtime.py).

Transitions (Kafka's TransactionState.validPreviousStates, transaction version 0/1):

    Empty             <- Empty, CompleteCommit, CompleteAbort         (InitProducerId)
    Ongoing           <- Ongoing, Empty, CompleteCommit, CompleteAbort (AddPartitionsToTxn)
    PrepareCommit     <- Ongoing                                       (EndTxn commit)
    PrepareAbort      <- Ongoing, PrepareEpochFence                    (EndTxn abort, fencing)
    CompleteCommit    <- PrepareCommit                                 (all markers written)
    CompleteAbort     <- PrepareAbort
    PrepareEpochFence <- Ongoing          (a timeout or a new producer instance bumps the epoch)
    Dead              <- Empty, CompleteCommit, CompleteAbort          (transactional id expired)

PrepareEpochFence, as in Kafka, is never written: the fence bumps the epoch and goes on to
PrepareAbort within the same operation, and the PrepareAbort record carries the bumped epoch.

Invariants: the partitions are empty in Empty and in the Complete states; the producer epoch
never goes down for one producer id; `start_ms` (wall-clock) is -1 exactly when no
transaction was started since the last epoch bump. `last_producer_epoch` and `previous_producer_id` are not in the
record (value v0 has no room for them, as in Kafka before transaction version 2): they live in
memory only and a load sets them to -1, as Kafka's loading does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ackly.coordinator.txn_records import TransactionLogValue
from ackly.errors import ErrorCode
from ackly.types import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TopicPartition

# Kafka's TransactionMetadata.isEpochExhausted: the last usable epoch leaves room for the bump
# an epoch fence may take (Short.MaxValue - 1).
EPOCH_EXHAUSTED = 2**15 - 2
MAX_EPOCH = 2**15 - 1


class TxnState(enum.IntEnum):
    """Kafka's TransactionState, by its id in the log."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """As Kafka names it in DescribeTransactions / ListTransactions."""
        return _NAMES[self]

    @classmethod
    def by_kafka_name(cls, name: str) -> TxnState | None:
        return _BY_NAME.get(name)


_NAMES = {
    TxnState.EMPTY: "Empty", TxnState.ONGOING: "Ongoing", TxnState.PREPARE_COMMIT: "PrepareCommit",
    TxnState.PREPARE_ABORT: "PrepareAbort", TxnState.COMPLETE_COMMIT: "CompleteCommit",
    TxnState.COMPLETE_ABORT: "CompleteAbort", TxnState.DEAD: "Dead",
    TxnState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_NAME = {name: state for state, name in _NAMES.items()}

S = TxnState
VALID_PREVIOUS: dict[TxnState, frozenset[TxnState]] = {
    S.EMPTY: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.ONGOING: frozenset({S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_COMMIT: frozenset({S.ONGOING}),
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE}),
    S.COMPLETE_COMMIT: frozenset({S.PREPARE_COMMIT}),
    S.COMPLETE_ABORT: frozenset({S.PREPARE_ABORT}),
    S.PREPARE_EPOCH_FENCE: frozenset({S.ONGOING}),
    S.DEAD: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
}
PREPARE_STATES = frozenset({S.PREPARE_COMMIT, S.PREPARE_ABORT})
COMPLETE_STATES = frozenset({S.COMPLETE_COMMIT, S.COMPLETE_ABORT})


def is_valid_transition(current: TxnState, nxt: TxnState) -> bool:
    return current in VALID_PREVIOUS[nxt]


def is_epoch_exhausted(epoch: int) -> bool:
    return epoch >= EPOCH_EXHAUSTED


class InvalidTransition(AssertionError):
    """A transition the table does not allow: a bug in the caller, never the peer's doing."""


@dataclass(frozen=True)
class TxnTransit:
    """The metadata a transition leads to (Kafka's TxnTransitMetadata): what is written."""

    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition]
    start_ms: int
    last_update_ms: int
    # In memory only (see the module docstring).
    last_producer_epoch: int = int(NO_PRODUCER_EPOCH)
    previous_producer_id: int = int(NO_PRODUCER_ID)

    def to_value(self) -> TransactionLogValue:
        return TransactionLogValue(
            producer_id=self.producer_id, producer_epoch=self.producer_epoch,
            timeout_ms=self.timeout_ms, status=int(self.state),
            partitions=tuple(sorted(self.partitions)), last_update_ms=self.last_update_ms,
            start_ms=self.start_ms,
        )


@dataclass
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition] = frozenset()
    start_ms: int = -1
    last_update_ms: int = -1
    last_producer_epoch: int = int(NO_PRODUCER_EPOCH)
    previous_producer_id: int = int(NO_PRODUCER_ID)
    # In memory only, on the monotonic clock (types.py): when this coordinator saw the
    # transaction start and the id last change (replayed live, or loaded: then the load's
    # time, so a failover gives a full timeout, never a shorter one). The timeout and the
    # id expiration run on these, so a wall-clock step expires nothing; `start_ms` and
    # `last_update_ms` are the wall-clock times the record stores and Describe* shows.
    monotonic_start_ms: int = -1
    monotonic_update_ms: int = -1

    @classmethod
    def from_value(cls, transactional_id: str, value: TransactionLogValue) -> TransactionMetadata:
        """As loaded from the log: the in-memory-only fields start unknown (Kafka's loading)."""
        try:
            state = TxnState(value.status)
        except ValueError:
            raise InvalidTransition(f"{transactional_id}: unknown transaction status {value.status}") from None
        partitions = frozenset(value.partitions) if state not in (S.EMPTY, *COMPLETE_STATES) else frozenset()
        return cls(transactional_id, value.producer_id, value.producer_epoch, value.timeout_ms, state,
                   partitions, value.start_ms, value.last_update_ms)

    # --- reading ---------------------------------------------------------------------------

    @property
    def is_epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    def transit(self) -> TxnTransit:
        return TxnTransit(self.producer_id, self.producer_epoch, self.timeout_ms, self.state,
                          self.partitions, self.start_ms, self.last_update_ms,
                          self.last_producer_epoch, self.previous_producer_id)

    # --- transitions (nothing changes until `apply`) ---------------------------------------

    def _to(self, state: TxnState, **changes: object) -> TxnTransit:
        if not is_valid_transition(self.state, state):
            raise InvalidTransition(f"{self.transactional_id}: {self.state.kafka_name} -> {state.kafka_name}")
        return replace(self.transit(), state=state, **changes)  # type: ignore[arg-type]

    def prepare_increment_epoch(self, timeout_ms: int, expected_epoch: int | None,
                                wall_ms: int) -> TxnTransit | ErrorCode:
        """InitProducerId on a finished (or never started) transaction: the next epoch
        (Kafka's prepareIncrementProducerEpoch, KIP-360 for `expected_epoch`)."""
        bumped = self.producer_epoch + 1
        if expected_epoch is not None and expected_epoch != self.producer_epoch \
                and expected_epoch == self.last_producer_epoch:
            # A retry of a bump this producer already got (maybe a rotation): the same answer.
            return self._to(S.EMPTY, timeout_ms=timeout_ms, partitions=frozenset(), start_ms=-1,
                            last_update_ms=wall_ms)
        if self.is_epoch_exhausted:
            return ErrorCode.producer_fenced  # the caller rotates the id when it may
        if expected_epoch is None:
            # A new instance: the epoch before it is forgotten, so the old instance's retries
            # of InitProducerId are fenced, never taken for this one's.
            epoch, last = bumped, int(NO_PRODUCER_EPOCH)
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == self.producer_epoch:
            epoch, last = bumped, self.producer_epoch
        else:
            return ErrorCode.producer_fenced
        return self._to(S.EMPTY, producer_epoch=epoch, last_producer_epoch=last, timeout_ms=timeout_ms,
                        partitions=frozenset(), start_ms=-1, last_update_ms=wall_ms)

    def prepare_rotate_producer_id(self, new_producer_id: int, timeout_ms: int, wall_ms: int,
                                   record_last_epoch: bool) -> TxnTransit:
        """The epoch is exhausted: a new producer id at epoch 0 (prepareProducerIdRotation)."""
        return self._to(
            S.EMPTY, producer_id=new_producer_id, producer_epoch=0,
            last_producer_epoch=self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH,
            previous_producer_id=self.producer_id, timeout_ms=timeout_ms, partitions=frozenset(),
            start_ms=-1, last_update_ms=wall_ms,
        )

    def prepare_add_partitions(self, added: Iterable[TopicPartition], wall_ms: int) -> TxnTransit:
        start_ms = wall_ms if self.state in (S.EMPTY, *COMPLETE_STATES) else self.start_ms
        return self._to(S.ONGOING, partitions=self.partitions | frozenset(added), start_ms=start_ms,
                        last_update_ms=wall_ms)

    def prepare_fence_epoch(self) -> TxnTransit:
        """Bump the epoch of an Ongoing transaction so its producer is fenced before the
        coordinator aborts it (prepareFenceProducerEpoch). Not written: go on with
        `prepare_abort_or_commit(..., fence=...)`."""
        if self.producer_epoch >= MAX_EPOCH:
            raise InvalidTransition(f"{self.transactional_id}: epoch {self.producer_epoch} cannot be bumped")
        return self._to(S.PREPARE_EPOCH_FENCE, producer_epoch=self.producer_epoch + 1,
                        last_producer_epoch=NO_PRODUCER_EPOCH)

    def prepare_abort_or_commit(self, state: TxnState, wall_ms: int,
                                fence: TxnTransit | None = None) -> TxnTransit:
        """The decision (prepareAbortOrCommit): PrepareCommit or PrepareAbort, from Ongoing, or
        PrepareAbort from the epoch fence `fence` (its bumped epoch is the one written)."""
        assert state in PREPARE_STATES
        if fence is not None:
            assert fence.state == S.PREPARE_EPOCH_FENCE and state == S.PREPARE_ABORT
            if not is_valid_transition(fence.state, state):
                raise InvalidTransition(f"{self.transactional_id}: PrepareEpochFence -> {state.kafka_name}")
            return replace(fence, state=state, last_update_ms=wall_ms)
        return self._to(state, last_update_ms=wall_ms)

    def prepare_complete(self, wall_ms: int) -> TxnTransit:
        """Every marker is written (prepareComplete): CompleteCommit or CompleteAbort."""
        state = S.COMPLETE_COMMIT if self.state == S.PREPARE_COMMIT else S.COMPLETE_ABORT
        return self._to(state, partitions=frozenset(), last_update_ms=wall_ms)

    def prepare_dead(self) -> TxnTransit:
        """transactional.id.expiration.ms passed: the id is removed (a tombstone is written)."""
        return self._to(S.DEAD, partitions=frozenset())

    def apply(self, transit: TxnTransit) -> None:
        """Replay: take the transition (checked against the table)."""
        if not is_valid_transition(self.state, transit.state):
            raise InvalidTransition(
                f"{self.transactional_id}: {self.state.kafka_name} -> {transit.state.kafka_name}")
        self.producer_id = transit.producer_id
        self.producer_epoch = transit.producer_epoch
        self.timeout_ms = transit.timeout_ms
        self.state = transit.state
        self.partitions = transit.partitions
        self.start_ms = transit.start_ms
        self.last_update_ms = transit.last_update_ms
        self.last_producer_epoch = transit.last_producer_epoch
        self.previous_producer_id = transit.previous_producer_id
