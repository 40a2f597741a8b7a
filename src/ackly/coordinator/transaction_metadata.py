"""One transactional id's state and the transitions it may take (Kafka's TransactionMetadata,
TransactionState; KIP-98, KIP-360, KIP-890 part 2).

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
                         Empty, CompleteCommit, CompleteAbort          (transaction version 2:
                                                                        an abort with no partition)
    CompleteCommit    <- PrepareCommit                                 (all markers written)
    CompleteAbort     <- PrepareAbort
    PrepareEpochFence <- Ongoing          (a timeout or a new producer instance bumps the epoch)
    Dead              <- Empty, CompleteCommit, CompleteAbort          (transactional id expired)

PrepareEpochFence, as in Kafka, is never written: the fence bumps the epoch and goes on to
PrepareAbort within the same operation, and the PrepareAbort record carries the bumped epoch.

Transaction version 2 (KIP-890 part 2; `client_transaction_version` 2, set by the requests of a
client that speaks it: EndTxn v5, and the partitions its Produce v12 / TxnOffsetCommit v5 add):
every Prepare record bumps the producer epoch (`last_producer_epoch` is the epoch before), so
the markers carry an epoch newer than any of the transaction's data and a request of the
finished transaction (old epoch) can never land in the next one. When the epoch would run out
(at EPOCH_EXHAUSTED) the Prepare record names a `next_producer_id`, and the Complete record
moves to it at epoch 0, keeping the old id as `previous_producer_id` (Kafka's
prepareAbortOrCommit and prepareComplete). Version 0 (every older client) keeps the epoch.

Invariants: the partitions are empty in Empty and in the Complete states; the producer epoch
never goes down for one producer id; `start_ms` (wall-clock) is -1 exactly when no
transaction was started since the last epoch bump; `next_producer_id` is set only in a Prepare
state of version 2. `previous_producer_id`, `next_producer_id` and `client_transaction_version`
are in the record (value v1's tagged fields, txn_records.py), so they survive a failover.
`last_producer_epoch` is not (nor in Kafka's record): it lives in memory, and a load sets it to
-1, except in a Prepare or Complete state of version 2, where the epoch bump it came from says
what it was (`from_value`).
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
# Kafka's TransactionVersion: what a client's requests say it speaks. 0: every client before
# KIP-890 part 2 (Kafka's TV_0, the record's default); 2: epoch bump at each transaction end.
TV_0 = 0
TV_2 = 2


def supports_epoch_bump(transaction_version: int) -> bool:
    return transaction_version >= TV_2


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
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE, S.EMPTY, S.COMPLETE_COMMIT,
                                S.COMPLETE_ABORT}),
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
    last_producer_epoch: int = int(NO_PRODUCER_EPOCH)  # in memory only (module docstring)
    previous_producer_id: int = int(NO_PRODUCER_ID)
    next_producer_id: int = int(NO_PRODUCER_ID)
    client_transaction_version: int = TV_0

    def to_value(self) -> TransactionLogValue:
        return TransactionLogValue(
            producer_id=self.producer_id, producer_epoch=self.producer_epoch,
            timeout_ms=self.timeout_ms, status=int(self.state),
            partitions=tuple(sorted(self.partitions)), last_update_ms=self.last_update_ms,
            start_ms=self.start_ms, previous_producer_id=self.previous_producer_id,
            next_producer_id=self.next_producer_id,
            client_transaction_version=self.client_transaction_version,
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
    next_producer_id: int = int(NO_PRODUCER_ID)
    client_transaction_version: int = TV_0
    # In memory only, on the monotonic clock (types.py): when this coordinator saw the
    # transaction start and the id last change (replayed live, or loaded: then the load's
    # time, so a failover gives a full timeout, never a shorter one). The timeout and the
    # id expiration run on these, so a wall-clock step expires nothing; `start_ms` and
    # `last_update_ms` are the wall-clock times the record stores and Describe* shows.
    monotonic_start_ms: int = -1
    monotonic_update_ms: int = -1

    @classmethod
    def from_value(cls, transactional_id: str, value: TransactionLogValue) -> TransactionMetadata:
        """As loaded from the log: the last producer epoch, which the record does not hold, is
        unknown (Kafka's loading), except where a version 2 epoch bump tells it."""
        try:
            state = TxnState(value.status)
        except ValueError:
            raise InvalidTransition(f"{transactional_id}: unknown transaction status {value.status}") from None
        partitions = frozenset(value.partitions) if state not in (S.EMPTY, *COMPLETE_STATES) else frozenset()
        return cls(transactional_id, value.producer_id, value.producer_epoch, value.timeout_ms, state,
                   partitions, value.start_ms, value.last_update_ms,
                   last_producer_epoch=derived_last_epoch(state, value),
                   previous_producer_id=value.previous_producer_id,
                   next_producer_id=value.next_producer_id,
                   client_transaction_version=value.client_transaction_version)

    # --- reading ---------------------------------------------------------------------------

    @property
    def is_epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    def transit(self) -> TxnTransit:
        return TxnTransit(self.producer_id, self.producer_epoch, self.timeout_ms, self.state,
                          self.partitions, self.start_ms, self.last_update_ms,
                          self.last_producer_epoch, self.previous_producer_id,
                          self.next_producer_id, self.client_transaction_version)

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

    def prepare_add_partitions(self, added: Iterable[TopicPartition], wall_ms: int,
                               transaction_version: int = TV_0) -> TxnTransit:
        start_ms = wall_ms if self.state in (S.EMPTY, *COMPLETE_STATES) else self.start_ms
        return self._to(S.ONGOING, partitions=self.partitions | frozenset(added), start_ms=start_ms,
                        last_update_ms=wall_ms, client_transaction_version=transaction_version)

    def prepare_fence_epoch(self) -> TxnTransit:
        """Bump the epoch of an Ongoing transaction so its producer is fenced before the
        coordinator aborts it (prepareFenceProducerEpoch). Not written: go on with
        `prepare_abort_or_commit(..., fence=...)`."""
        if self.producer_epoch >= MAX_EPOCH:
            raise InvalidTransition(f"{self.transactional_id}: epoch {self.producer_epoch} cannot be bumped")
        return self._to(S.PREPARE_EPOCH_FENCE, producer_epoch=self.producer_epoch + 1,
                        last_producer_epoch=NO_PRODUCER_EPOCH)

    def prepare_abort_or_commit(self, state: TxnState, wall_ms: int, fence: TxnTransit | None = None,
                                *, transaction_version: int | None = None,
                                next_producer_id: int = NO_PRODUCER_ID) -> TxnTransit:
        """The decision (prepareAbortOrCommit): PrepareCommit or PrepareAbort, from Ongoing, or
        PrepareAbort from the epoch fence `fence` (its bumped epoch is the one written).

        `transaction_version` (the client's; None: the one the transaction has) 2 bumps the
        epoch once more, so the markers carry an epoch newer than the transaction's data;
        `next_producer_id` is the id to move to at completion when that epoch is the last
        usable one (the caller allocates it). An abort from Empty or a Complete state (version
        2: a client may abort with no partition added) starts its transaction now."""
        assert state in PREPARE_STATES
        version = self.client_transaction_version if transaction_version is None else transaction_version
        if fence is not None:
            assert fence.state == S.PREPARE_EPOCH_FENCE and state == S.PREPARE_ABORT
            if not is_valid_transition(fence.state, state):
                raise InvalidTransition(f"{self.transactional_id}: PrepareEpochFence -> {state.kafka_name}")
            base = replace(fence, state=state, last_update_ms=wall_ms)
        else:
            base = self._to(state, last_update_ms=wall_ms)
        if not supports_epoch_bump(version):
            return replace(base, client_transaction_version=version)
        start_ms = wall_ms if self.state in (S.EMPTY, *COMPLETE_STATES) else base.start_ms
        # An epoch at the int16 maximum cannot be bumped (only a fence can take it there):
        # the markers then carry that epoch, still newer than the data's.
        return replace(base, producer_epoch=min(base.producer_epoch + 1, MAX_EPOCH),
                       last_producer_epoch=base.producer_epoch, next_producer_id=next_producer_id,
                       start_ms=start_ms, client_transaction_version=version)

    def prepare_complete(self, wall_ms: int) -> TxnTransit:
        """Every marker is written (prepareComplete): CompleteCommit or CompleteAbort; with a
        `next_producer_id` (version 2, epoch exhausted), that id at epoch 0."""
        state = S.COMPLETE_COMMIT if self.state == S.PREPARE_COMMIT else S.COMPLETE_ABORT
        if supports_epoch_bump(self.client_transaction_version) and self.next_producer_id != NO_PRODUCER_ID:
            return self._to(state, producer_id=self.next_producer_id, producer_epoch=0,
                            previous_producer_id=self.producer_id, next_producer_id=NO_PRODUCER_ID,
                            partitions=frozenset(), last_update_ms=wall_ms)
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
        self.next_producer_id = transit.next_producer_id
        self.client_transaction_version = transit.client_transaction_version


def derived_last_epoch(state: TxnState, value: TransactionLogValue) -> int:
    """The last producer epoch a loaded record implies: in a Prepare or Complete state of
    version 2 the epoch was bumped from it (after a move to the next producer id, from the last
    usable epoch of the old id); unknown (-1) otherwise, as Kafka loads it."""
    if not supports_epoch_bump(value.client_transaction_version) or state not in PREPARE_STATES | COMPLETE_STATES:
        return int(NO_PRODUCER_EPOCH)
    if state in COMPLETE_STATES and value.producer_epoch == 0 and value.previous_producer_id != NO_PRODUCER_ID:
        return EPOCH_EXHAUSTED
    return value.producer_epoch - 1
