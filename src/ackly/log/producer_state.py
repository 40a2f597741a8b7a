"""Idempotent producer state of one partition (KIP-98): epochs, sequences, recent batches.

Owns: `ProducerStateManager` (Kafka's ProducerStateManager, with the checks of Kafka's
ProducerAppendInfo): for every producer id that wrote to this partition, its epoch, the
metadata of its last 5 batches (sequence range, offset range, timestamp), its last timestamp
and when it last appended; the checks a client's batch must pass before it is appended; and
the `<offset>.snapshot` files that let recovery skip most of the log.

What a client append meets (docs/guarantees.md rules 15 and 17), checked for every batch of the
request before anything is written, so a refused request writes nothing:
- same epoch, same sequence range as one of the producer's last 5 batches: a duplicate (a
  retry whose first answer was lost). Nothing is written; the append answers with the
  ORIGINAL offsets. Kafka answers v2 clients the same way (success, not
  DUPLICATE_SEQUENCE_NUMBER), because they need the offsets.
- same epoch: the first sequence must follow the last one (wrapping from 2^31-1 to 0), else
  OUT_OF_ORDER_SEQUENCE_NUMBER.
- older epoch: INVALID_PRODUCER_EPOCH (what Kafka answers Produce since 2.7, see
  ProducerAppendInfo.checkProducerEpoch).
- newer epoch (the producer bumped it, KIP-360): the batch must start at sequence 0, else
  OUT_OF_ORDER_SEQUENCE_NUMBER; the old epoch's batches are forgotten.
- a producer id with no state here: any sequence starts it (KIP-360, Kafka 2.5:
  ProducerAppendInfo.checkSequence accepts any sequence when there is no current epoch). The
  state is legitimately absent when none of the producer's batches is in this replica's log,
  and that happens without any fault of the broker: librdkafka times out (message.timeout.ms)
  the first batches it sent to a leader that was then cut off, while the partition has no
  known leader, without bumping its epoch, so the new leader's first batch from it carries a
  later sequence; or a pipelined request arrives after a retriable refusal of the one before
  it (NOT_ENOUGH_REPLICAS, NOT_LEADER_OR_FOLLOWER) once the ISR or the leadership changed; or
  the state expired (producer.id.expiration.ms of silence) or went with a truncation.
  UNKNOWN_PRODUCER_ID here is fatal for librdkafka unless the batch is a first attempt at the
  sequence it expected next ("unable to retry without risking duplication").
  What still holds (rules 15 and 17): from the first batch accepted here on, the producer's
  batches are contiguous, in send order and never written twice, since every later one passes
  the sequence checks above; a batch sent before that first one can never be written after
  it (its sequence is behind: OUT_OF_ORDER_SEQUENCE_NUMBER, or a duplicate of one of the last
  5). The producer's earlier batches are simply not in this partition, as in Kafka: none of
  them is in this replica's log, so none was committed (acks=all, unclean election off).
Appends that come through replication (and recovery's replay) are not checked: the leader
checked them, and the log is the truth (Kafka's AppendOrigin.REPLICATION).

Transactions (KIP-98; Kafka's ProducerStateEntry.currentTxnFirstOffset, ongoingTxns,
unreplicatedTxns and ProducerAppendInfo.appendEndTxnMarker):
- A producer's first transactional batch on this partition starts its ongoing transaction
  there (`current_txn_first_offset`); a control batch (COMMIT or ABORT marker) ends it and
  becomes a completed transaction, kept as *unreplicated* until HW passes its marker.
- The first unstable offset (the LSO's lower bound) is the first offset of the oldest
  transaction that is ongoing or unreplicated (Kafka's firstUnstableOffset): a transaction
  whose marker a new leader might not have must stay invisible to read_committed fetches.
- Client batches: a transactional batch follows the epoch and sequence rules above; a
  non-transactional batch from a producer with an ongoing transaction is refused
  (INVALID_TXN_STATE); a control batch from a client is refused (INVALID_RECORD, Kafka's
  LogValidator). With KIP-890 verification, a transactional batch that would start a
  transaction must carry the verification guard handed out when the coordinator was asked,
  and still current: a marker or an epoch bump since then voids it (INVALID_TXN_STATE;
  Kafka's VerificationStateEntry).
- Coordinator appends (Kafka's AppendOrigin.COORDINATOR: markers, and a coordinator's own
  transactional records): no sequence checks; an epoch older than the producer's is refused
  (INVALID_PRODUCER_EPOCH) and a newer one becomes the producer's epoch (fencing); a marker
  from an older coordinator epoch than the last one seen is refused
  (TRANSACTION_COORDINATOR_FENCED).
- Producers with an ongoing transaction never expire (they hold the LSO; the transaction
  coordinator ends them).

On-disk layout: `<20-digit offset>.snapshot` in the partition directory holds the state of every
producer after every batch below that offset and none at or above it. It is written (atomically)
when a segment rolls (offset = the new segment's base), at clean close (offset = LEO) and after
recovery replayed part of the log. Format, big-endian (not Kafka's: it keeps all 5 batches per
producer, so retries of any of them are still recognised after a restart; Kafka's snapshot
keeps only the last one):
    version int16 (1) | crc uint32: CRC-32C of everything after it | count int32
    per producer: producer_id int64 | epoch int16 | last_timestamp int64 | last_append_ms int64
                  | coordinator_epoch int32 | current_txn_first_offset int64 | batches int8
    per batch:    first_seq int32 | last_seq int32 | first_offset int64 | last_offset int64
                  | timestamp int64

Invariants:
- The state is exactly what replaying the log's batches below its end offset would give
  (apart from `last_append_ms`, the broker's clock, which the log does not record).
- Each producer keeps at most 5 batches, oldest first, all of its current epoch, each one's
  first sequence following the previous one's last.
- A snapshot at offset S describes exactly the batches below S; one above the log end is
  never loaded (recovery removes it: it describes batches that a crash or truncation took).

Expiry: a producer silent for producer.id.expiration.ms (by the broker's monotonic clock at
its last append, so a wall-clock step expires none; Kafka uses the batch's own timestamp,
which a producer with old or skewed timestamps would expire at once) is forgotten at the
next `remove_expired`. After a restart, producers
replayed from the log or loaded from a snapshot count as having appended at the restart (a
snapshot's `last_append_ms` is another run's monotonic time): expiry may come later, never
earlier.

Deterministic: no clock (time comes in as `now_ms`), no threads, files only through `Disk`.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import crc32c

from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import Disk, PendingSyncs
from ackly.log.txn_index import AbortedTxn
from ackly.protocol.record_codec import ControlRecord, ControlType
from ackly.protocol.records import BatchHeader
from ackly.types import NO_TIMESTAMP

logger = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = ".snapshot"
# Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN; it matches the clients' limit of 5
# in-flight requests per connection for an idempotent producer, so any retry is one of these.
NUM_BATCHES_TO_RETAIN = 5
SEQUENCE_LIMIT = 2**31  # sequences count 0..2^31-1, then wrap to 0
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000
NO_EPOCH = -1
NO_SEQUENCE = -1
NO_OFFSET = -1

_SNAPSHOT_NAME = re.compile(r"([0-9]{20})\.snapshot")
_SNAPSHOT_VERSION = 1
_PREFIX = struct.Struct(">hI")  # version, crc
_COUNT = struct.Struct(">i")
_ENTRY = struct.Struct(">qhqqiqb")
_BATCH = struct.Struct(">iiqqq")
_NEVER = 2**63 - 1


class AppendOrigin(enum.Enum):
    """Where an append comes from, which decides what is checked (Kafka's AppendOrigin)."""

    CLIENT = "client"  # a producer: every check
    # Markers and a coordinator's own transactional records: epochs, not sequences.
    COORDINATOR = "coordinator"
    REPLICATION = "replication"  # a follower copying its leader, or recovery: none


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """What is kept of one appended batch: enough to recognise and answer its retry."""

    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int  # its max timestamp as stored (the append time under LogAppendTime)


@dataclass(slots=True)
class ProducerStateEntry:
    """One producer's state on this partition (Kafka's ProducerStateEntry)."""

    producer_id: int
    epoch: int
    batches: tuple[BatchMetadata, ...] = ()  # oldest first, at most NUM_BATCHES_TO_RETAIN
    last_timestamp: int = NO_TIMESTAMP
    last_append_ms: int = 0
    # Transactions (KIP-98): the coordinator epoch of the last marker, and the first offset
    # of the producer's ongoing transaction on this partition (NO_OFFSET: none).
    coordinator_epoch: int = -1
    current_txn_first_offset: int = NO_OFFSET

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else NO_OFFSET

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        """The kept batch this one repeats, if any (Kafka's findDuplicateBatch)."""
        if epoch != self.epoch:
            return None
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """A checked batch of an append, placed relative to the append's first offset."""

    producer_id: int
    epoch: int
    first_seq: int
    last_seq: int
    offset_delta: int  # its base offset minus the append's first offset
    last_offset_delta: int
    max_timestamp: int
    is_control: bool
    is_transactional: bool = False
    marker: ControlRecord | None = None  # a control batch's marker


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction a marker ended on this partition (Kafka's CompletedTxn)."""

    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool
    # The LSO just after its marker, as the aborted-transaction index records it.
    last_stable_offset: int

    def as_aborted(self) -> AbortedTxn:
        return AbortedTxn(
            self.producer_id, self.first_offset, self.last_offset, self.last_stable_offset
        )


@dataclass(slots=True)
class _Verification:
    """A KIP-890 verification in flight or done for a producer (Kafka's
    VerificationStateEntry): the guard is the identity the append must present."""

    guard: object
    epoch: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What `prepare` decided: either the producer batches to record once the append is
    written (`apply`), or a duplicate to answer with, writing nothing."""

    batches: tuple[PlannedBatch, ...] = ()
    duplicate: BatchMetadata | None = None


EMPTY_PLAN = AppendPlan()


def next_sequence(last_seq: int) -> int:
    """The sequence that must follow `last_seq` (NO_SEQUENCE: nothing yet, so 0)."""
    if last_seq == NO_SEQUENCE:
        return 0
    return (last_seq + 1) % SEQUENCE_LIMIT


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def parse_snapshot_name(name: str) -> int | None:
    match = _SNAPSHOT_NAME.fullmatch(name)
    return None if match is None else int(match.group(1))


class CorruptSnapshotError(Exception):
    """A snapshot file whose bytes are not a snapshot this module wrote."""


def encode_snapshot(entries: Iterable[ProducerStateEntry]) -> bytes:
    body = bytearray()
    ordered = sorted(entries, key=lambda e: e.producer_id)
    body += _COUNT.pack(len(ordered))
    for e in ordered:
        body += _ENTRY.pack(
            e.producer_id, e.epoch, e.last_timestamp, e.last_append_ms, e.coordinator_epoch,
            e.current_txn_first_offset, len(e.batches),
        )
        for b in e.batches:
            body += _BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp)
    return _PREFIX.pack(_SNAPSHOT_VERSION, crc32c.crc32c(body)) + bytes(body)


def decode_snapshot(data: bytes) -> list[ProducerStateEntry]:
    """Entries of a snapshot; CorruptSnapshotError if it is torn, altered or unknown."""
    try:
        version, crc = _PREFIX.unpack_from(data, 0)
        if version != _SNAPSHOT_VERSION:
            raise CorruptSnapshotError(f"unknown snapshot version {version}")
        body = memoryview(data)[_PREFIX.size :]
        if crc32c.crc32c(body) != crc:
            raise CorruptSnapshotError("snapshot CRC-32C mismatch")
        (count,) = _COUNT.unpack_from(body, 0)
        position = _COUNT.size
        entries: list[ProducerStateEntry] = []
        for _ in range(count):
            pid, epoch, last_ts, last_append, coord_epoch, txn_first, n = _ENTRY.unpack_from(body, position)
            position += _ENTRY.size
            if not 0 <= n <= NUM_BATCHES_TO_RETAIN or pid < 0:
                raise CorruptSnapshotError(f"bad entry for producer {pid}")
            batches = []
            for _ in range(n):
                batches.append(BatchMetadata(*_BATCH.unpack_from(body, position)))
                position += _BATCH.size
            entries.append(ProducerStateEntry(
                pid, epoch, tuple(batches), last_ts, last_append, coord_epoch, txn_first,
            ))
        if position != len(body):
            raise CorruptSnapshotError("trailing bytes after the last entry")
        return entries
    except struct.error as exc:
        raise CorruptSnapshotError(f"truncated snapshot: {exc}") from None


class ProducerStateManager:
    """The producer state of one partition replica, and its snapshot files."""

    def __init__(
        self,
        disk: Disk,
        dir_path: str,
        expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        syncs: PendingSyncs | None = None,
    ) -> None:
        self.disk = disk
        self.dir_path = dir_path
        # With PendingSyncs, snapshots are written without an fsync and synced by the log's
        # next flush job: a snapshot only saves replay work, and one a crash lost or tore is
        # skipped (an older one, or the log from its start, is replayed instead).
        self._syncs = syncs
        self._expiration_ms = expiration_ms
        self._producers: dict[int, ProducerStateEntry] = {}
        self._snapshots: set[int] = set()
        # No producer can expire before this (a lower bound; `remove_expired` scans only then).
        self._next_expiry_ms = _NEVER
        # Producer id -> first offset of its ongoing transaction here (mirrors the entries).
        self._ongoing: dict[int, int] = {}
        # Completed transactions whose marker HW has not yet passed, in marker order.
        self._unreplicated: list[CompletedTxn] = []
        self._verifications: dict[int, _Verification] = {}

    # ------------------------------------------------------------------ state

    @property
    def expiration_ms(self) -> int:
        return self._expiration_ms

    def get(self, producer_id: int) -> ProducerStateEntry | None:
        return self._producers.get(producer_id)

    def active_producers(self) -> Iterator[ProducerStateEntry]:
        """Every producer with state here, by producer id."""
        for producer_id in sorted(self._producers):
            yield self._producers[producer_id]

    def __len__(self) -> int:
        return len(self._producers)

    def clear(self) -> None:
        self._producers.clear()
        self._next_expiry_ms = _NEVER
        self._ongoing.clear()
        self._unreplicated.clear()
        self._verifications.clear()

    # ------------------------------------------------------------------ transactions

    def ongoing_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of every ongoing transaction on this partition."""
        return dict(self._ongoing)

    def first_unstable_offset(self, high_watermark: int) -> int | None:
        """The first offset of the oldest transaction that is ongoing, or completed with its
        marker not yet below `high_watermark` (Kafka's firstUnstableOffset); None if none.
        Forgets the completed transactions HW has passed."""
        if self._unreplicated and self._unreplicated[0].last_offset < high_watermark:
            self._unreplicated = [t for t in self._unreplicated if t.last_offset >= high_watermark]
        first: int | None = None
        if self._ongoing:
            first = min(self._ongoing.values())
        for txn in self._unreplicated:
            if first is None or txn.first_offset < first:
                first = txn.first_offset
        return first

    def _lso_after(self, producer_id: int, marker_offset: int) -> int:
        """The LSO an aborted-index entry records: the oldest other ongoing transaction's first
        offset, else just past the marker (Kafka's ProducerStateManager.lastStableOffset)."""
        others = [first for pid, first in self._ongoing.items() if pid != producer_id]
        return min(others) if others else marker_offset + 1

    def verification_guard(self, producer_id: int, epoch: int, now_ms: int) -> object:
        """The guard a transactional append of this producer must carry after the coordinator
        verified the partition (KIP-890 part 1); the same one while a verification for this
        epoch stands. A marker or an epoch bump voids it. A request of an older epoch than the
        verification in flight (a fenced instance's) gets a guard of its own, never stored: it
        must not void the newer epoch's, as Kafka's VerificationStateEntry keeps the highest
        epoch it saw."""
        current = self._verifications.get(producer_id)
        if current is not None and current.epoch == epoch:
            return current.guard
        guard = object()
        if current is not None and current.epoch > epoch:
            return guard
        self._verifications[producer_id] = _Verification(guard, epoch, now_ms)
        return guard

    def has_ongoing_transaction(self, producer_id: int, epoch: int | None = None) -> bool:
        """The producer has a transaction open here (with `epoch`: one of that epoch; a
        transaction version 2 producer's next transaction has a newer epoch than the one whose
        marker has not landed here yet)."""
        if producer_id not in self._ongoing:
            return False
        if epoch is None:
            return True
        entry = self._producers.get(producer_id)
        return entry is not None and entry.epoch == epoch

    # ------------------------------------------------------------------ appends

    def prepare(
        self,
        headers: Sequence[BatchHeader],
        origin: AppendOrigin,
        markers: Sequence[ControlRecord | None] = (),
        verification_guard: object | None = None,
    ) -> AppendPlan:
        """Check the batches of one append; change nothing (Kafka's
        UnifiedLog.analyzeAndValidateProducerState with ProducerAppendInfo).

        `markers` holds, per batch, the marker of a control batch (None for data batches; may
        be empty when there is no control batch). `verification_guard`, when given, is the
        KIP-890 guard a transactional batch that starts a transaction must match.

        Returns the plan to `apply` once the batches are written, or a plan whose `duplicate`
        says the append repeats batches already in the log: write nothing, answer with those
        offsets. Raises KafkaError (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
        INVALID_RECORD, INVALID_TXN_STATE,
        TRANSACTION_COORDINATOR_FENCED) if any batch is refused: nothing may be written.
        """
        planned: list[PlannedBatch] = []
        duplicates: list[BatchMetadata] = []
        fresh = 0  # batches to write, idempotent or not
        # Each producer's (epoch, last sequence) after the batches of this append so far.
        working: dict[int, tuple[int, int]] = {}
        # Each producer's "in a transaction here" after the batches of this append so far.
        in_txn: dict[int, bool] = {}
        offset_delta = 0
        for i, h in enumerate(headers):
            delta = offset_delta
            offset_delta += h.last_offset_delta + 1
            pid = h.producer_id
            # Read once: every batch of every append passes here (followers' too).
            is_control = h.is_control
            is_transactional = h.is_transactional
            marker = None
            if is_control:
                marker = markers[i] if i < len(markers) else None
                if marker is None and origin is not AppendOrigin.CLIENT:
                    raise KafkaError(ErrorCode.corrupt_message, "control batch without a marker")
            if pid < 0:
                if origin is not AppendOrigin.REPLICATION and (is_transactional or is_control):
                    raise KafkaError(
                        ErrorCode.invalid_record, "a transactional batch needs a producer id"
                    )
                fresh += 1  # not an idempotent batch: nothing to check or keep
                continue
            if origin is not AppendOrigin.REPLICATION:
                ongoing = in_txn.get(pid, pid in self._ongoing)
                if origin is AppendOrigin.CLIENT:
                    if is_control:
                        # Kafka's LogValidator: only the coordinator writes markers.
                        raise KafkaError(
                            ErrorCode.invalid_record, "clients may not write control batches"
                        )
                    duplicate = self._check_client_batch(h, working)
                    if duplicate is not None:
                        duplicates.append(duplicate)
                        continue
                    if is_transactional or ongoing:  # else plain idempotent: nothing to check
                        same_txn = ongoing
                        if ongoing and is_transactional and pid not in in_txn:
                            # A newer epoch's transactional batch does not join the open
                            # transaction of an older one: it needs its own verification.
                            entry = self._producers.get(pid)
                            same_txn = entry is None or entry.epoch == h.producer_epoch
                        self._check_txn_state(h, same_txn, verification_guard)
                else:
                    self._check_coordinator_batch(h, working, marker)
                # Only checked appends read it: replication is not checked.
                in_txn[pid] = not is_control and (is_transactional or ongoing)
            fresh += 1
            working[pid] = (h.producer_epoch, h.last_sequence)
            planned.append(PlannedBatch(
                pid, h.producer_epoch, h.base_sequence, h.last_sequence, delta,
                h.last_offset_delta, h.max_timestamp, is_control, is_transactional, marker,
            ))
        if not duplicates:
            return AppendPlan(tuple(planned)) if planned else EMPTY_PLAN
        if fresh:
            # Clients send one batch per partition per request, so this never comes from a real
            # producer. Kafka would answer the duplicate's offsets and silently drop the new
            # batches; refusing the whole request loses nothing without saying so.
            raise KafkaError(
                ErrorCode.invalid_record, "a produce request mixes retried and new batches"
            )
        first, last = duplicates[0], duplicates[-1]
        return AppendPlan(duplicate=BatchMetadata(
            first.first_seq, last.last_seq, first.first_offset,
            max(d.last_offset for d in duplicates), last.timestamp,
        ))

    def _check_txn_state(
        self, h: BatchHeader, ongoing: bool, verification_guard: object | None
    ) -> None:
        """A client batch against the producer's transaction here (see module doc)."""
        pid = h.producer_id
        if not h.is_transactional:
            if ongoing:
                raise KafkaError(
                    ErrorCode.invalid_txn_state,
                    f"producer {pid} has an ongoing transaction: non-transactional batch refused",
                )
            return
        if ongoing or verification_guard is None:
            return
        current = self._verifications.get(pid)
        if current is None or current.guard is not verification_guard:
            # A marker (or an epoch bump) landed since the coordinator answered: this batch
            # belongs to a transaction that has ended here (KIP-890's hanging transaction).
            raise KafkaError(
                ErrorCode.invalid_txn_state,
                f"producer {pid}: the partition's transaction verification no longer holds",
            )

    def _check_coordinator_batch(
        self, h: BatchHeader, working: dict[int, tuple[int, int]], marker: ControlRecord | None
    ) -> None:
        """Epoch (and, for a marker, coordinator epoch) checks of a coordinator's append."""
        pid = h.producer_id
        entry = self._producers.get(pid)
        if pid in working:
            current_epoch = working[pid][0]
        elif entry is not None:
            current_epoch = entry.epoch
        else:
            return
        if h.producer_epoch < current_epoch:
            raise KafkaError(
                ErrorCode.invalid_producer_epoch,
                f"producer {pid} epoch {h.producer_epoch} is older than {current_epoch}",
            )
        if marker is not None and entry is not None and marker.coordinator_epoch < entry.coordinator_epoch:
            raise KafkaError(
                ErrorCode.transaction_coordinator_fenced,
                f"marker of producer {pid} from coordinator epoch {marker.coordinator_epoch} < "
                f"{entry.coordinator_epoch}",
            )

    def _check_client_batch(
        self, h: BatchHeader, working: dict[int, tuple[int, int]]
    ) -> BatchMetadata | None:
        """The duplicate this batch repeats, None if it may be appended, or KafkaError."""
        pid = h.producer_id
        epoch, first_seq = h.producer_epoch, h.base_sequence
        if epoch < 0 or first_seq < 0:
            # Kafka's LogValidator refuses these too: a producer id promises both.
            raise KafkaError(
                ErrorCode.invalid_record,
                f"batch of producer {pid} has epoch {epoch} and sequence {first_seq}",
            )
        if pid in working:
            current_epoch, last_seq = working[pid]
        else:
            entry = self._producers.get(pid)
            if entry is None:
                # No batch of this producer in the log: nothing to check a sequence against
                # (KIP-360; see the module doc for what ordering still holds).
                return None
            # Retries are looked up in the state before this append, as Kafka does: within one
            # request a batch cannot repeat another of the same request.
            duplicate = entry.find_duplicate(epoch, first_seq, h.last_sequence)
            if duplicate is not None:
                return duplicate
            current_epoch, last_seq = entry.epoch, entry.last_seq
        if epoch < current_epoch:
            raise KafkaError(
                ErrorCode.invalid_producer_epoch,
                f"producer {pid} epoch {epoch} is older than its current epoch {current_epoch}",
            )
        if epoch > current_epoch:
            if first_seq != 0:
                raise KafkaError(
                    ErrorCode.out_of_order_sequence_number,
                    f"producer {pid} new epoch {epoch} starts at sequence {first_seq}, not 0",
                )
            return None
        expected = next_sequence(last_seq)
        if first_seq != expected:
            raise KafkaError(
                ErrorCode.out_of_order_sequence_number,
                f"producer {pid} epoch {epoch}: sequence {first_seq}, expected {expected}",
            )
        return None

    def apply(
        self, plan: AppendPlan, first_offset: int, now_ms: int, log_append_time_ms: int = -1
    ) -> list[CompletedTxn]:
        """Record the batches of `plan`, now written from `first_offset` on. With
        `log_append_time_ms` >= 0 the batches were stamped with it (LogAppendTime).
        Returns the transactions its markers completed, in log order."""
        assert plan.duplicate is None, "a duplicate writes nothing"
        completed: list[CompletedTxn] = []
        for b in plan.batches:
            start = first_offset + b.offset_delta
            timestamp = b.max_timestamp if log_append_time_ms < 0 else log_append_time_ms
            txn = self._record(
                b.producer_id, b.epoch, b.first_seq, b.last_seq, start,
                start + b.last_offset_delta, timestamp, b.is_control, now_ms,
                b.is_transactional, b.marker,
            )
            if txn is not None:
                completed.append(txn)
        return completed

    def replay(
        self, h: BatchHeader, now_ms: int, marker: ControlRecord | None = None
    ) -> CompletedTxn | None:
        """Record a batch read back from the log (recovery, truncation), unchecked. A control
        batch comes with its marker. Returns the transaction it completed, if it is a marker."""
        if h.producer_id < 0:
            return None
        return self._record(
            h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence, h.base_offset,
            h.last_offset, h.max_timestamp, h.is_control, now_ms, h.is_transactional, marker,
        )

    def _record(
        self, pid: int, epoch: int, first_seq: int, last_seq: int, first_offset: int,
        last_offset: int, timestamp: int, is_control: bool, now_ms: int,
        is_transactional: bool = False, marker: ControlRecord | None = None,
    ) -> CompletedTxn | None:
        entry = self._producers.get(pid)
        if entry is None:
            entry = self._producers[pid] = ProducerStateEntry(pid, epoch)
            self._next_expiry_ms = min(self._next_expiry_ms, now_ms + self._expiration_ms)
        if epoch != entry.epoch:
            # A new epoch (or, from replication, whatever the leader wrote) starts afresh:
            # the old epoch's batches can no longer be retried (ProducerStateEntry.
            # maybeUpdateProducerEpoch); a verification of the old epoch no longer holds.
            entry.epoch = epoch
            entry.batches = ()
            self._verifications.pop(pid, None)
        if not is_control and first_seq >= 0:
            # A transaction marker carries the epoch but no sequence, nor does a coordinator's
            # own transactional batch; a producer's data batches are kept.
            batch = BatchMetadata(first_seq, last_seq, first_offset, last_offset, timestamp)
            entry.batches = (*entry.batches[1 - NUM_BATCHES_TO_RETAIN :], batch)
        entry.last_timestamp = timestamp
        entry.last_append_ms = now_ms
        if is_control:
            return self._end_transaction(entry, last_offset, marker)
        if is_transactional and entry.current_txn_first_offset == NO_OFFSET:
            entry.current_txn_first_offset = first_offset
            self._ongoing[pid] = first_offset
        return None

    def _end_transaction(
        self, entry: ProducerStateEntry, marker_offset: int, marker: ControlRecord | None
    ) -> CompletedTxn:
        """A marker at `marker_offset` ends the producer's transaction here (Kafka's
        ProducerAppendInfo.appendEndTxnMarker): a marker with no transaction before it still
        completes one, holding only the marker."""
        pid = entry.producer_id
        first = entry.current_txn_first_offset
        if first == NO_OFFSET:
            first = marker_offset
        aborted = marker is None or marker.kind is ControlType.ABORT
        lso = self._lso_after(pid, marker_offset)
        txn = CompletedTxn(pid, first, marker_offset, aborted, lso)
        entry.current_txn_first_offset = NO_OFFSET
        if marker is not None:
            entry.coordinator_epoch = marker.coordinator_epoch
        self._ongoing.pop(pid, None)
        self._verifications.pop(pid, None)
        self._unreplicated.append(txn)
        return txn

    # ------------------------------------------------------------------ expiry

    def remove_expired(self, now_ms: int) -> int:
        """Forget producers silent for expiration_ms or more (Kafka's
        removeExpiredProducers). Returns how many; cheap when none can be due yet."""
        if now_ms < self._next_expiry_ms:
            return 0
        limit = self._expiration_ms
        # A producer in a transaction holds the LSO: only its marker may end it (Kafka's
        # ProducerStateManager.isProducerExpired).
        expired = [
            pid for pid, e in self._producers.items()
            if now_ms - e.last_append_ms >= limit and pid not in self._ongoing
        ]
        for pid in expired:
            del self._producers[pid]
        for pid in [p for p, v in self._verifications.items() if now_ms - v.created_ms >= limit]:
            del self._verifications[pid]
        self._next_expiry_ms = min(
            (e.last_append_ms + limit for e in self._producers.values()
             if e.producer_id not in self._ongoing), default=_NEVER
        )
        if self._verifications:
            self._next_expiry_ms = min(
                self._next_expiry_ms,
                min(v.created_ms + limit for v in self._verifications.values()),
            )
        return len(expired)

    # ------------------------------------------------------------------ snapshots

    def _path(self, offset: int) -> str:
        return os.path.join(self.dir_path, snapshot_file_name(offset))

    def scan_snapshots(self, names: list[str] | None = None) -> list[int]:
        """(Re)read which snapshot files exist (from `names`, the directory's listing, if the
        caller has just made one); returns their offsets, ascending."""
        self._snapshots = set()
        for name in self.disk.listdir(self.dir_path) if names is None else names:
            offset = parse_snapshot_name(name)
            if offset is not None:
                self._snapshots.add(offset)
        return self.snapshot_offsets()

    def snapshot_offsets(self) -> list[int]:
        return sorted(self._snapshots)

    def take_snapshot(self, offset: int) -> None:
        """Write the state as the snapshot at `offset`, which must be the log end offset (the
        state covers exactly the batches below it). Durable on return, or with PendingSyncs
        once they are synced."""
        data = encode_snapshot(self._producers.values())
        if self._syncs is not None:
            self._syncs.write_atomic(self._path(offset), data)
        else:
            self.disk.write_atomic(self._path(offset), data)
        self._snapshots.add(offset)

    def _delete_snapshot(self, offset: int) -> None:
        self._snapshots.discard(offset)
        path = self._path(offset)
        if self.disk.exists(path):
            if self._syncs is None:
                self.disk.remove(path)
            else:
                # Durable with the log's next flush job, which syncs the directory before any
                # data appended after the change that made this snapshot go.
                self.disk.remove(path, durable=False)
                self._syncs.add_dir(self.dir_path)

    def delete_snapshots_below(self, offset: int) -> None:
        """The log start moved to `offset`: the data older snapshots describe is gone, and
        replay could not bridge from them. The state itself is kept (see module doc)."""
        for snapshot in [s for s in self._snapshots if s < offset]:
            self._delete_snapshot(snapshot)

    def delete_snapshots_above(self, offset: int) -> None:
        """The log ends at `offset` now: later snapshots describe batches it no longer has."""
        for snapshot in [s for s in self._snapshots if s > offset]:
            self._delete_snapshot(snapshot)

    def delete_all_snapshots(self) -> None:
        for snapshot in list(self._snapshots):
            self._delete_snapshot(snapshot)

    def load_latest_snapshot(self, max_offset: int, now_ms: int | None = None) -> int | None:
        """Replace the state with the newest readable snapshot at or below `max_offset` and
        return its offset; a corrupt one is deleted and the next older tried. None (and an
        empty state) if there is none: the caller replays the whole log. Given `now_ms`, every
        loaded producer counts as having appended then (see Expiry in the module docstring)."""
        self.clear()
        for offset in sorted((s for s in self._snapshots if s <= max_offset), reverse=True):
            data = self.disk.read_file(self._path(offset))
            try:
                if data is None:
                    raise CorruptSnapshotError("file vanished")
                entries = decode_snapshot(data)
            except CorruptSnapshotError as exc:
                logger.warning("%s: deleting producer snapshot %d: %s", self.dir_path, offset, exc)
                self._delete_snapshot(offset)
                continue
            for entry in entries:
                if now_ms is not None:
                    # The stored time is another run's monotonic clock, meaningless now (a
                    # reboot restarts it): count the producer as having appended at the load.
                    entry.last_append_ms = now_ms
                self._producers[entry.producer_id] = entry
                if entry.current_txn_first_offset != NO_OFFSET:
                    self._ongoing[entry.producer_id] = entry.current_txn_first_offset
            self._next_expiry_ms = 0 if entries else _NEVER
            return offset
        return None

    def __repr__(self) -> str:
        return f"ProducerStateManager({self.dir_path!r}, producers={len(self._producers)})"
