"""The transactions of one `__transaction_state` partition (Kafka's TransactionStateManager,
one partition's worth of it), as a coordinator runtime shard.

Owns: every transactional id whose partition this is, by id, and the operations on them
(InitProducerId, AddPartitionsToTxn, EndTxn, completion, the timers). Each operation returns
its answer through `fx.reply` and writes at most one record per transactional id through
`fx.append`; the metadata changes only in `replay` (coordinator/runtime.py), so a shard loaded
from the log equals the shard that wrote it.

Decisions: an operation that writes PrepareCommit or PrepareAbort also replies a `Decision`
to the coordinator's decision waiter; the runtime delivers it once the record is committed,
and only then are markers sent (the Prepare record is the decision point, docs/guarantees.md rule
18). Loading a shard hands every transaction found in a Prepare state to the same waiter, so
a new coordinator finishes what the old one decided.

Timers (`tick`, on the monotonic clock: TransactionMetadata.monotonic_start_ms and
monotonic_update_ms, never the wall-clock times the records store): an Ongoing transaction
whose start is more than its timeout ago is fenced and
aborted (Kafka's abortTimedOutTransactions: epoch bump, then PrepareAbort with that epoch);
an id in Empty or a Complete state untouched for transactional.id.expiration.ms is removed
(a tombstone; Kafka's removeExpiredTransactionalIds).

Transaction version 2 (KIP-890 part 2, transaction_metadata.py): EndTxn v5 bumps the epoch in
its Prepare record and answers the new producer id and epoch; a retry of it is recognised by
its epoch being the one before (or, after a move to the next producer id, by the previous id),
and answered again; any other epoch is PRODUCER_FENCED, so an EndTxn delayed from the
transaction before can never end the next one (Kafka's TransactionCoordinator.endTransaction
with TV2). An abort with no partition added is allowed (it still bumps the epoch).

Invariants: a transactional id maps to the partition `partition_for(id)`; at most one
decision per (id, producer id, epoch) is in flight; the last producer epoch, which no record
holds, comes from `_live_last_epoch`, set by the operation that writes the record, or from
`derived_last_epoch` on load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

from ackly.coordinator.runtime import Effects, Waiter
from ackly.coordinator.transaction_metadata import (
    COMPLETE_STATES,
    EPOCH_EXHAUSTED,
    MAX_EPOCH,
    PREPARE_STATES,
    TV_0,
    InvalidTransition,
    TransactionMetadata,
    TxnState,
    TxnTransit,
    is_epoch_exhausted,
    is_valid_transition,
    supports_epoch_bump,
)
from ackly.coordinator.txn_records import (
    RecordFormatError,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from ackly.errors import ErrorCode, KafkaError
from ackly.types import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TopicPartition, WallClock, same_clock

log = logging.getLogger("ackly.transactions")


@dataclass(frozen=True)
class TxnConfig:
    max_timeout_ms: int  # transaction.max.timeout.ms
    id_expiration_ms: int  # transactional.id.expiration.ms
    abort_check_interval_ms: int  # transaction.abort.timed.out.transaction.cleanup.interval.ms
    remove_expired_interval_ms: int  # transaction.remove.expired.transaction.cleanup.interval.ms
    wall_clock: WallClock = same_clock  # the times records store (types.py)


@dataclass(frozen=True)
class Decision:
    """A committed Prepare record: markers to write to `partitions`."""

    index: int  # the __transaction_state partition
    coordinator_epoch: int
    transactional_id: str
    producer_id: int
    producer_epoch: int
    committed: bool
    partitions: frozenset[TopicPartition]
    # The client's transaction version: with 2 the markers carry an epoch newer than any of
    # the transaction's data, and a partition takes one only if it is (txn_markers.py).
    transaction_version: int = TV_0


@dataclass(frozen=True)
class EndTxnResult:
    """EndTxn's answer; v5 carries the producer id and epoch to go on with (version 2)."""

    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclass(frozen=True)
class InitResult:
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclass(frozen=True)
class TxnDescription:
    transactional_id: str
    state: TxnState
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    start_ms: int
    partitions: frozenset[TopicPartition]


class TransactionShard:
    def __init__(self, index: int, coordinator_epoch: int, config: TxnConfig,
                 decisions: Waiter[Decision], now_ms: int) -> None:
        self.index = index
        self.coordinator_epoch = coordinator_epoch
        self.config = config
        self.decisions = decisions
        self.txns: dict[str, TransactionMetadata] = {}
        self._live_last_epoch: int | None = None
        self._next_abort_check_ms = now_ms + config.abort_check_interval_ms
        self._next_expiry_ms = now_ms + config.remove_expired_interval_ms

    # --- replay ----------------------------------------------------------------------------

    def replay(self, key: bytes, value: bytes | None, now_ms: int, loading: bool) -> None:
        try:
            transactional_id = decode_key(key)
            before = self.txns.get(transactional_id)
            was_ongoing = before is not None and before.state == TxnState.ONGOING
            self._replay(key, value, loading)
            meta = self.txns.get(transactional_id)
            if meta is not None:
                # The deadlines' monotonic times (TransactionMetadata): a transaction starts
                # when the id enters Ongoing (a loaded one: at the load).
                if meta.state == TxnState.ONGOING and (meta is not before or not was_ongoing):
                    meta.monotonic_start_ms = now_ms
                meta.monotonic_update_ms = now_ms
        except (RecordFormatError, InvalidTransition) as exc:
            # Loading: someone else wrote into the topic; skip it, as the loader does for any
            # undecodable record. Live: it is our own record, so this is a bug.
            if not loading:
                raise
            log.warning("__transaction_state-%d: record skipped: %s", self.index, exc)

    def _replay(self, key: bytes, value: bytes | None, loading: bool) -> None:
        live_last_epoch = self._live_last_epoch
        self._live_last_epoch = None
        transactional_id = decode_key(key)
        if value is None:
            self.txns.pop(transactional_id, None)
            return
        decoded = decode_value(value)
        current = self.txns.get(transactional_id)
        if loading or current is None:
            # The log is the truth; later records win (as Kafka's loading does).
            meta = TransactionMetadata.from_value(transactional_id, decoded)
            if not loading and live_last_epoch is not None:
                meta.last_producer_epoch = live_last_epoch
            self.txns[transactional_id] = meta
            return
        state = TxnState(decoded.status)
        current.apply(TxnTransit(
            decoded.producer_id, decoded.producer_epoch, decoded.timeout_ms, state,
            frozenset(decoded.partitions), decoded.start_ms, decoded.last_update_ms,
            NO_PRODUCER_EPOCH if live_last_epoch is None else live_last_epoch,
            decoded.previous_producer_id, decoded.next_producer_id, decoded.client_transaction_version))

    def _write(self, transactional_id: str, transit: TxnTransit, fx: Effects) -> None:
        key = encode_key(transactional_id)
        if transit.state == TxnState.DEAD:
            fx.append(key, None)
            return
        self._live_last_epoch = transit.last_producer_epoch
        fx.append(key, encode_value(transit.to_value(), empty=transit.state == TxnState.EMPTY))
        assert self._live_last_epoch is None, "the runtime replays a record as it is written"

    def on_loaded(self, now_ms: int) -> None:
        pass

    def undo_point(self, key: bytes, now_ms: int) -> Callable[[], None]:
        """`Shard.undo_point`: a record changes one transactional id's metadata (replayed in
        place, `TransactionMetadata.apply`), so its undo puts its fields back, in the same
        object (a tombstone removes it from `txns`: it goes back there)."""
        transactional_id = decode_key(key)
        current = self.txns.get(transactional_id)
        saved = None if current is None else replace(current)

        def undo() -> None:
            if current is None or saved is None:
                self.txns.pop(transactional_id, None)
                return
            for f in fields(saved):  # not `apply`: going back is no edge of the state machine
                setattr(current, f.name, getattr(saved, f.name))
            self.txns[transactional_id] = current

        return undo

    def on_unloaded(self) -> None:
        pass

    def pending_decisions(self) -> list[Decision]:
        """Every transaction in a Prepare state (after a load: the old coordinator's)."""
        return [self._decision(m) for m in self.txns.values() if m.state in PREPARE_STATES]

    def _decision(self, meta: TransactionMetadata) -> Decision:
        return Decision(self.index, self.coordinator_epoch, meta.transactional_id, meta.producer_id,
                        meta.producer_epoch, meta.state == TxnState.PREPARE_COMMIT, meta.partitions,
                        meta.client_transaction_version)

    # --- operations ------------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None,
                         new_producer_id: Callable[[], int], waiter: Waiter[InitResult], now_ms: int,
                         fx: Effects) -> None:
        """Kafka's handleInitProducerId with a transactional id (KIP-98, KIP-360)."""
        meta = self.txns.get(transactional_id)
        try:
            if meta is None:
                transit = TxnTransit(new_producer_id(), 0, timeout_ms, TxnState.EMPTY, frozenset(), -1,
                                     self.config.wall_clock(now_ms))
                self._write(transactional_id, transit, fx)
                fx.reply(waiter, InitResult(ErrorCode.none, transit.producer_id, 0))
                return
            fx.reply(waiter, self._init_existing(meta, timeout_ms, expected, new_producer_id, now_ms, fx))
        except KafkaError as exc:
            # No producer id could be reserved (a failing disk): retriable.
            log.warning("InitProducerId %r: %s", transactional_id, exc)
            fx.reply(waiter, InitResult(ErrorCode.coordinator_not_available))

    def _init_existing(self, meta: TransactionMetadata, timeout_ms: int, expected: tuple[int, int] | None,
                       new_producer_id: Callable[[], int], now_ms: int, fx: Effects) -> InitResult:
        if expected is not None and not (
            meta.producer_epoch == NO_PRODUCER_EPOCH
            or expected[0] == meta.producer_id
            # A retry of a bump that rotated the id, whose answer was lost.
            or (expected[0] == meta.previous_producer_id and is_epoch_exhausted(expected[1]))
        ):
            return InitResult(ErrorCode.producer_fenced)
        if meta.state in PREPARE_STATES:
            return InitResult(ErrorCode.concurrent_transactions)
        if meta.state == TxnState.ONGOING:
            # The previous instance left a transaction open: fence it and abort it first. The
            # client retries on CONCURRENT_TRANSACTIONS and gets its epoch once the abort is
            # complete (the bumped epoch written here is never handed out).
            self._decide(meta, TxnState.PREPARE_ABORT, now_ms, fx, self._fence(meta))
            return InitResult(ErrorCode.concurrent_transactions)
        assert meta.state == TxnState.EMPTY or meta.state in COMPLETE_STATES, meta.state
        if meta.is_epoch_exhausted and (expected is None or expected[1] == meta.producer_epoch):
            transit = meta.prepare_rotate_producer_id(new_producer_id(), timeout_ms,
                                                      self.config.wall_clock(now_ms), expected is not None)
        else:
            bumped = meta.prepare_increment_epoch(timeout_ms, None if expected is None else expected[1],
                                                  self.config.wall_clock(now_ms))
            if isinstance(bumped, ErrorCode):
                return InitResult(bumped)
            transit = bumped
        self._write(meta.transactional_id, transit, fx)
        return InitResult(ErrorCode.none, transit.producer_id, transit.producer_epoch)

    def _check_producer(self, meta: TransactionMetadata | None, producer_id: int,
                        producer_epoch: int) -> ErrorCode | None:
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if meta.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced
        return None

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: Iterable[TopicPartition], waiter: Waiter[ErrorCode], now_ms: int,
                       fx: Effects, transaction_version: int = TV_0) -> None:
        """Kafka's handleAddPartitionsToTransaction (also AddOffsetsToTxn's one partition, and
        the partitions a version 2 client's Produce or TxnOffsetCommit adds implicitly)."""
        meta = self.txns.get(transactional_id)
        added = frozenset(partitions)
        error = self._check_producer(meta, producer_id, producer_epoch)
        if error is not None:
            fx.reply(waiter, error)
            return
        assert meta is not None
        if meta.state in PREPARE_STATES:
            fx.reply(waiter, ErrorCode.concurrent_transactions)
        elif meta.state == TxnState.ONGOING and added <= meta.partitions:
            fx.reply(waiter, ErrorCode.none)
        elif not is_valid_transition(meta.state, TxnState.ONGOING):
            fx.reply(waiter, ErrorCode.invalid_txn_state)
        else:
            transit = meta.prepare_add_partitions(added, self.config.wall_clock(now_ms), transaction_version)
            self._write(transactional_id, transit, fx)
            fx.reply(waiter, ErrorCode.none)

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """KIP-890 part 1: is each partition in this producer's ongoing transaction? Reads
        only (Kafka's handleVerifyPartitionsInTransaction)."""
        meta = self.txns.get(transactional_id)
        wanted = list(partitions)
        error = self._check_producer(meta, producer_id, producer_epoch)
        if error is None and meta is not None and meta.state in PREPARE_STATES:
            error = ErrorCode.concurrent_transactions
        if error is not None:
            return {tp: error for tp in wanted}
        assert meta is not None
        ongoing = meta.state == TxnState.ONGOING
        return {tp: ErrorCode.none if ongoing and tp in meta.partitions else ErrorCode.invalid_txn_state
                for tp in wanted}

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int,
                        committed: bool, waiter: Waiter[EndTxnResult], now_ms: int, fx: Effects,
                        transaction_version: int = TV_0,
                        new_producer_id: Callable[[], int] | None = None) -> None:
        """Kafka's endTransaction from a client (EndTxn); version 2 from EndTxn v5."""
        if supports_epoch_bump(transaction_version):
            assert new_producer_id is not None
            self._end_v2(transactional_id, producer_id, producer_epoch, committed, waiter, now_ms, fx,
                         transaction_version, new_producer_id)
            return
        meta = self.txns.get(transactional_id)
        error = self._check_producer(meta, producer_id, producer_epoch)
        if error is not None:
            fx.reply(waiter, EndTxnResult(error))
            return
        assert meta is not None
        wanted = TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT
        if meta.state == TxnState.ONGOING:
            self._decide(meta, wanted, now_ms, fx, transaction_version=transaction_version)
            code = ErrorCode.none
        elif meta.state in COMPLETE_STATES:
            # A retry of an EndTxn that completed: success if it asked for the same outcome.
            same = (meta.state == TxnState.COMPLETE_COMMIT) == committed
            code = ErrorCode.none if same else ErrorCode.invalid_txn_state
        elif meta.state in PREPARE_STATES:
            same = meta.state == wanted
            code = ErrorCode.concurrent_transactions if same else ErrorCode.invalid_txn_state
        else:
            code = ErrorCode.invalid_txn_state
        fx.reply(waiter, EndTxnResult(code, meta.producer_id, meta.producer_epoch)
                 if code == ErrorCode.none else EndTxnResult(code))

    def _end_v2(self, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool,
                waiter: Waiter[EndTxnResult], now_ms: int, fx: Effects, transaction_version: int,
                new_producer_id: Callable[[], int]) -> None:
        """EndTxn of a version 2 client (Kafka's endTransaction with TV2): which epoch may ask
        depends on the state, since every transaction end bumps it."""
        meta = self.txns.get(transactional_id)
        if meta is None:
            fx.reply(waiter, EndTxnResult(ErrorCode.invalid_producer_id_mapping))
            return
        complete = meta.state in COMPLETE_STATES
        # A retry of an EndTxn whose transaction moved to the next producer id (epoch ran out).
        retry_on_overflow = (complete and producer_id == meta.previous_producer_id
                             and meta.producer_id != producer_id and meta.producer_epoch == 0
                             and producer_epoch >= EPOCH_EXHAUSTED)
        if producer_id != meta.producer_id and not retry_on_overflow:
            fx.reply(waiter, EndTxnResult(ErrorCode.invalid_producer_id_mapping))
            return
        # A retry of an EndTxn whose Prepare record bumped the epoch: it asks with the one before.
        retry_on_bump = producer_id == meta.producer_id and meta.producer_epoch == producer_epoch + 1
        if meta.state in PREPARE_STATES:
            valid = retry_on_bump
        elif complete:
            valid = retry_on_bump or retry_on_overflow or producer_epoch == meta.producer_epoch
        else:
            valid = producer_epoch == meta.producer_epoch
        if not valid:
            fx.reply(waiter, EndTxnResult(ErrorCode.producer_fenced))
            return
        is_retry = retry_on_bump or retry_on_overflow
        wanted = TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT
        same_complete = complete and (meta.state == TxnState.COMPLETE_COMMIT) == committed
        if meta.state == TxnState.ONGOING or (not committed and not is_retry and (
                meta.state == TxnState.EMPTY or complete)):
            # Ongoing: the decision. Empty or Complete, not a retry: an abort with no partition.
            try:
                transit = self._decide(meta, wanted, now_ms, fx, transaction_version=transaction_version,
                                       new_producer_id=new_producer_id)
            except KafkaError as exc:
                log.warning("EndTxn %r: %s", transactional_id, exc)
                fx.reply(waiter, EndTxnResult(ErrorCode.coordinator_not_available))
                return
            if transit.next_producer_id != NO_PRODUCER_ID:
                fx.reply(waiter, EndTxnResult(ErrorCode.none, transit.next_producer_id, 0))
            else:
                fx.reply(waiter, EndTxnResult(ErrorCode.none, transit.producer_id, transit.producer_epoch))
        elif complete and is_retry and same_complete:
            fx.reply(waiter, EndTxnResult(ErrorCode.none, meta.producer_id, meta.producer_epoch))
        elif meta.state == wanted:
            fx.reply(waiter, EndTxnResult(ErrorCode.concurrent_transactions))
        else:
            fx.reply(waiter, EndTxnResult(ErrorCode.invalid_txn_state))

    @staticmethod
    def _fence(meta: TransactionMetadata) -> TxnTransit | None:
        """The epoch fence before a coordinator-side abort. An epoch at the int16 maximum
        cannot be bumped (InitProducerId rotates the producer id long before, at
        EPOCH_EXHAUSTED; Kafka throws here): abort with the epoch it has instead."""
        if meta.producer_epoch >= MAX_EPOCH:
            log.error("transaction %r: epoch %d cannot be bumped; aborting without a fence",
                      meta.transactional_id, meta.producer_epoch)
            return None
        return meta.prepare_fence_epoch()

    def _decide(self, meta: TransactionMetadata, state: TxnState, now_ms: int, fx: Effects,
                fence: TxnTransit | None = None, *, transaction_version: int | None = None,
                new_producer_id: Callable[[], int] | None = None) -> TxnTransit:
        """Write the Prepare record (the decision) and hand it to the decision waiter. With
        version 2 and the epoch at its last usable value, the next producer id is allocated
        now (`new_producer_id`; never for a fence, as Kafka's endTransaction)."""
        version = meta.client_transaction_version if transaction_version is None else transaction_version
        next_id: int = NO_PRODUCER_ID
        if (supports_epoch_bump(version) and fence is None and new_producer_id is not None
                and meta.is_epoch_exhausted):
            next_id = new_producer_id()
        transit = meta.prepare_abort_or_commit(state, self.config.wall_clock(now_ms), fence,
                                               transaction_version=version, next_producer_id=next_id)
        self._write(meta.transactional_id, transit, fx)
        fx.reply(self.decisions, self._decision(meta))
        return transit

    def complete(self, decision: Decision, now_ms: int, fx: Effects, waiter: Waiter[Decision]) -> None:
        """Every marker of `decision` is written: the Complete record (`waiter` hears once it
        is committed, or that it failed). A transaction that moved on (its Complete record is
        written already: a retry) has nothing to write; `waiter` hears once what the shard
        holds is committed."""
        meta = self.txns.get(decision.transactional_id)
        if (meta is None or meta.state not in PREPARE_STATES or meta.producer_id != decision.producer_id
                or meta.producer_epoch != decision.producer_epoch):
            log.info("transaction %r moved on before its markers completed", decision.transactional_id)
            fx.reply(waiter, decision)
            return
        self._write(meta.transactional_id, meta.prepare_complete(self.config.wall_clock(now_ms)), fx)
        fx.reply(waiter, decision)

    # --- reading ---------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> TxnDescription | None:
        meta = self.txns.get(transactional_id)
        return None if meta is None else _description(meta)

    def descriptions(self) -> list[TxnDescription]:
        return [_description(meta) for meta in self.txns.values()]

    # --- timers ----------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        return min(self._next_abort_check_ms, self._next_expiry_ms)

    def tick(self, now_ms: int, fx: Effects) -> None:
        if now_ms >= self._next_abort_check_ms:
            self._next_abort_check_ms = now_ms + self.config.abort_check_interval_ms
            self.abort_timed_out(now_ms, fx)
        if now_ms >= self._next_expiry_ms:
            self._next_expiry_ms = now_ms + self.config.remove_expired_interval_ms
            self.remove_expired(now_ms, fx)

    def abort_timed_out(self, now_ms: int, fx: Effects) -> None:
        """Kafka's abortTimedOutTransactions: fence the producer (epoch bump) and abort, so the
        LSO of every partition of the transaction moves on (docs/guarantees.md rule 22)."""
        for meta in list(self.txns.values()):
            if meta.state != TxnState.ONGOING or meta.monotonic_start_ms + meta.timeout_ms >= now_ms:
                continue
            log.info("transaction %r (producer %d epoch %d) timed out after %d ms: aborting",
                     meta.transactional_id, meta.producer_id, meta.producer_epoch, meta.timeout_ms)
            self._decide(meta, TxnState.PREPARE_ABORT, now_ms, fx, self._fence(meta))

    def remove_expired(self, now_ms: int, fx: Effects) -> None:
        for meta in list(self.txns.values()):
            idle = meta.state == TxnState.EMPTY or meta.state in COMPLETE_STATES
            if idle and meta.monotonic_update_ms + self.config.id_expiration_ms <= now_ms:
                log.info("transactional id %r expired", meta.transactional_id)
                self._write(meta.transactional_id, meta.prepare_dead(), fx)


def _description(meta: TransactionMetadata) -> TxnDescription:
    return TxnDescription(meta.transactional_id, meta.state, meta.producer_id, meta.producer_epoch,
                          meta.timeout_ms, meta.start_ms, meta.partitions)
