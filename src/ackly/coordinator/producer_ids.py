"""Producer ids for idempotent producers: allocation that survives restarts, and epoch bumps.

Owns: `ProducerIdManager`, the broker's side of InitProducerId without a transactional id
(Kafka's ProducerIdManager, with the null-transactional-id path of TransactionCoordinator.
handleInitProducerId and the epoch rules of KIP-360).

Allocation, records in and replay out: ids are reserved in blocks of `block_size`. Before the
first id of a block is handed out, the block's end is written to `producer-id-block` in the
data directory (Disk.write_atomic: durable on return, never torn), and the allocator's state
changes only by replaying that record: at start-up from the file, and after writing it. A
restart resumes at the recorded end, skipping what was left of the block, as Kafka's block
allocators do. So an id is never handed out twice, which exactly-once needs: a partition that
still knows an id would take a new owner's first batches for retries of the old owner's, and
drop them.

File `producer-id-block` (ASCII, like the log's checkpoints):
    1\\n        version
    <end>\\n    the first producer id not reserved yet
A file that does not parse stops the broker: guessing could reuse ids.

Reserving ahead (`reserve_ahead`, what a broker uses): no write of the file runs on the event
loop. The first block is reserved durably when the manager is made (start-up); from then on,
once half of the reserved ids are used, the next block is reserved by a `BlockReservation`
job that the broker runs with its flush round, in the shell's sync pool, and only its
completion (`reserved`) lets ids of the new block out. A burst that uses the rest before the
job completed is answered COORDINATOR_LOAD_IN_PROGRESS (retriable), as Kafka's
RPCProducerIdManager answers while its next block is on its way; a failed job is a failed
flush (the log directory goes offline).

Blocks claimed from the cluster (`claimed_blocks`, a broker of a cluster): no file; each block
is claimed in the cluster metadata with a compare-and-set (ClusterMember.claim_producer_ids,
as Kafka's brokers ask the controller with AllocateProducerIds), so no two brokers, and no
broker that lost its disk, ever get the same ids. The first block is claimed once the broker
has joined; the next once half of the current one is used (`claim_due`; the broker sends it
and reports `claimed` or `claim_lost`). Until a block is there, a new id is answered
COORDINATOR_LOAD_IN_PROGRESS (retriable), as Kafka's RPCProducerIdManager answers. Blocks of
one broker are not contiguous: others claim in between.

Epoch bumps (KIP-360, InitProducerId v3+). A request that carries the producer's id and epoch
asks for a new epoch, after an error that left its sequences unknowable
(OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, a timed-out batch). For the ids it handed
out, the manager remembers the current epoch and the one before it (Kafka's
TransactionMetadata keeps the same pair):
- epoch == current: the same id with epoch + 1; once the epoch is exhausted (32766, Kafka's
  isEpochExhausted), a new id with epoch 0 instead;
- epoch == previous: a retry of a bump whose answer was lost: the current epoch again;
- epoch > current: accepted like the current one, because KIP-360 lets an idempotent producer
  bump its epoch locally (the Java client does) without telling anyone;
- anything older: PRODUCER_FENCED (the handler answers INVALID_PRODUCER_EPOCH before v4).
An id it does not remember (handed out before a restart, or forgotten to bound memory) gets a
fresh id, which is always safe: a new id starts at sequence 0 everywhere. Kafka itself hands
a fresh id to every request without a transactional id; the bump keeps the id stable instead.

Invariants: `_next_id <= _block_end`; every id handed out is below the end recorded on disk
(claimed blocks: inside a block the cluster gave this broker);
at most MAX_TRACKED_PRODUCERS epoch records are kept, the least recently used dropped first.

Deterministic: no clock, no threads, files only through `Disk`.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass

from ackly.errors import AcklyError, ErrorCode, KafkaError
from ackly.log.disk import Disk
from ackly.log.partition_log import FlushJob
from ackly.types import NO_PRODUCER_EPOCH, NO_PRODUCER_ID

BLOCK_FILE = "producer-id-block"
BLOCK_SIZE = 1000  # Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE
MAX_PRODUCER_ID = 2**63 - 1
# Kafka's TransactionMetadata.isEpochExhausted: the last bump must still fit in an int16 and
# leave room for the one a transaction marker may take.
EPOCH_EXHAUSTED = 2**15 - 2
MAX_TRACKED_PRODUCERS = 100_000

_BLOCK_FILE_FORMAT = re.compile(rb"1\n(0|[1-9][0-9]{0,18})\n")


class ProducerIdFileError(AcklyError):
    """`producer-id-block` exists but cannot be read: the broker must not guess."""


@dataclass(frozen=True)
class ProducerIdBlockRecord:
    """The reservation of every id below `end` (what `producer-id-block` holds)."""

    end: int


@dataclass(frozen=True)
class InitProducerIdResult:
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclass
class _Epochs:
    current: int
    previous: int = NO_PRODUCER_EPOCH
    # The id that replaced this one when its epochs ran out (NO_PRODUCER_ID: none).
    successor: int = NO_PRODUCER_ID


class BlockReservation(FlushJob):
    """The durable write of a new reservation end, run where the shell runs flush jobs (its
    sync pool): the file's write, fsync, rename and directory fsync, off the event loop. It
    names no log file or directory of a partition, so a flush round runs it like any job."""

    def __init__(self, disk: Disk, path: str, end: int) -> None:
        super().__init__((), 0, 0)
        self.block_disk = disk
        self.path = path
        self.end = end

    def run(self, sync_dirs: bool = True) -> None:
        self.block_disk.write_atomic(self.path, _encode_record(ProducerIdBlockRecord(self.end)))

    def __repr__(self) -> str:
        return f"BlockReservation(end={self.end})"


def _encode_record(record: ProducerIdBlockRecord) -> bytes:
    return f"1\n{record.end}\n".encode("ascii")


class ProducerIdManager:
    """Hands out producer ids and bumps their epochs; see the module docstring."""

    def __init__(self, disk: Disk, data_dir: str, block_size: int = BLOCK_SIZE, first_id: int = 0,
                 reserve_ahead: bool = False, claimed_blocks: bool = False) -> None:
        """`first_id`: the lowest id this manager may hand out. `claimed_blocks`: the blocks
        come from the cluster metadata (module docstring); no file is read or written."""
        assert block_size >= 1 and first_id >= 0
        self._disk = disk
        self._path = os.path.join(data_dir, BLOCK_FILE)
        self._block_size = block_size
        self._next_id = 0
        self._block_end = 0  # ids in [_next_id, _block_end) are reserved and unused
        self._epochs: OrderedDict[int, _Epochs] = OrderedDict()
        self._claimed_blocks = claimed_blocks
        self._claim_in_flight = False
        self._queued_block: tuple[int, int] | None = None  # claimed, after the current one
        self._reserve_ahead = reserve_ahead
        self._reservation: BlockReservation | None = None
        self._reservation_taken = False
        if claimed_blocks:
            return
        record = self._read_record()
        if record is not None:
            self._replay(record, restarted=True)
        if self._block_end < first_id:
            self._next_id = self._block_end = first_id
        # `_reservation`: the reservation waiting for `take_reservation`, or handed out and not
        # yet `reserved`.
        if reserve_ahead:
            # Start-up, before the broker serves: the first block, durably, here.
            self._reserve_now()

    # ------------------------------------------------------------------ allocation

    @property
    def next_id(self) -> int:
        """The id the next `generate` returns if it needs no new block."""
        return self._next_id

    @property
    def block_end(self) -> int:
        return self._block_end

    def generate(self) -> int:
        """A producer id never handed out before, by this broker in any run. Reserves a new
        block durably first when the current one is used up; raises KafkaError
        (KAFKA_STORAGE_ERROR) if that write fails, with nothing changed."""
        if self._claimed_blocks:
            return self._generate_claimed()
        if self._next_id >= self._block_end:
            if self._reserve_ahead:
                self._reserve_later()
                raise KafkaError(ErrorCode.coordinator_load_in_progress,
                                 "the next block of producer ids is being reserved")
            self._reserve_now()
        producer_id = self._next_id
        self._next_id += 1
        if self._reserve_ahead and self._block_end - self._next_id <= self._block_size // 2:
            self._reserve_later()
        return producer_id

    def _generate_claimed(self) -> int:
        if self._next_id >= self._block_end:
            if self._queued_block is None:
                raise KafkaError(ErrorCode.coordinator_load_in_progress,
                                 "the next block of producer ids is being claimed from the cluster")
            (self._next_id, self._block_end), self._queued_block = self._queued_block, None
        producer_id = self._next_id
        self._next_id += 1
        return producer_id

    @property
    def claim_due(self) -> bool:
        """A block should be claimed from the cluster now (none in flight, none queued, and
        at most half of the current one left)."""
        return (self._claimed_blocks and not self._claim_in_flight and self._queued_block is None
                and self._block_end - self._next_id <= self._block_size // 2)

    @property
    def block_size(self) -> int:
        return self._block_size

    def claim_sent(self) -> None:
        self._claim_in_flight = True

    def claimed(self, first_id: int, end: int) -> None:
        """The cluster gave this broker the ids in [first_id, end)."""
        assert self._claimed_blocks and first_id < end
        self._claim_in_flight = False
        if self._next_id >= self._block_end:
            self._next_id, self._block_end = first_id, end
        else:
            self._queued_block = (first_id, end)

    def claim_lost(self) -> None:
        """The claim was refused (another broker claimed first) or its outcome is unknown
        (the block is then skipped for good): claim again."""
        self._claim_in_flight = False

    def _next_end(self) -> int:
        end = self._block_end + self._block_size
        if end > MAX_PRODUCER_ID:
            raise AcklyError("producer ids exhausted")  # 2^63: not in this universe
        return end

    def _reserve_now(self) -> None:
        """Reserve the next block durably, here (start-up, or without `reserve_ahead`)."""
        record = ProducerIdBlockRecord(self._next_end())
        self._write_record(record)
        self._replay(record, restarted=False)

    def _reserve_later(self) -> None:
        if self._reservation is None:
            self._reservation = BlockReservation(self._disk, self._path, self._next_end())

    @property
    def reservation_due(self) -> bool:
        """A reservation waits to be taken (`take_reservation`)."""
        return self._reservation is not None and not self._reservation_taken

    def take_reservation(self) -> BlockReservation | None:
        """The reservation job to run off the loop, if one waits; report it to `reserved`."""
        if not self.reservation_due:
            return None
        self._reservation_taken = True
        return self._reservation

    def reserved(self, job: BlockReservation) -> None:
        """`job` ran without an error: its block's ids may go out."""
        if job is not self._reservation:
            return
        self._reservation, self._reservation_taken = None, False
        # The ids not yet handed out stay in use: the new end only extends them.
        self._block_end = max(self._block_end, job.end)

    def _replay(self, record: ProducerIdBlockRecord, restarted: bool) -> None:
        if restarted:
            # What was left of the block may have been handed out before the restart.
            self._next_id = record.end
        else:
            self._next_id = self._block_end
        self._block_end = record.end

    def _read_record(self) -> ProducerIdBlockRecord | None:
        data = self._disk.read_file(self._path)
        if data is None:
            return None
        match = _BLOCK_FILE_FORMAT.fullmatch(data)
        if match is None:
            raise ProducerIdFileError(
                f"{self._path} is not a producer id reservation ({data[:40]!r}); refusing to "
                "guess which ids were handed out. Restore it, or write a value above every id "
                "ever used."
            )
        return ProducerIdBlockRecord(int(match.group(1)))

    def _write_record(self, record: ProducerIdBlockRecord) -> None:
        self._disk.write_atomic(self._path, _encode_record(record))

    # ------------------------------------------------------------------ InitProducerId

    def init_producer_id(self, producer_id: int, producer_epoch: int) -> InitProducerIdResult:
        """Answer InitProducerId for an idempotent producer (no transactional id).

        (-1, -1) asks for a new id; an id and epoch ask for an epoch bump (KIP-360). Raises
        KafkaError (KAFKA_STORAGE_ERROR) if a new id was needed and its block could not be
        reserved."""
        no_id = producer_id == NO_PRODUCER_ID
        no_epoch = producer_epoch == NO_PRODUCER_EPOCH
        if no_id and no_epoch:
            return self._fresh()
        if no_id or no_epoch or producer_id < 0 or producer_epoch < 0:
            # Kafka's KafkaApis.handleInitProducerIdRequest: both or neither.
            return InitProducerIdResult(ErrorCode.invalid_request)
        epochs = self._epochs.get(producer_id)
        if epochs is None:
            return self._fresh()
        self._epochs.move_to_end(producer_id)
        if epochs.successor != NO_PRODUCER_ID:
            if producer_epoch == epochs.current:
                return InitProducerIdResult(ErrorCode.none, epochs.successor, 0)
            return InitProducerIdResult(ErrorCode.producer_fenced)
        if producer_epoch >= epochs.current:
            if producer_epoch >= EPOCH_EXHAUSTED:
                successor = self._fresh()
                epochs.current = producer_epoch
                epochs.successor = successor.producer_id
                return successor
            epochs.previous = producer_epoch
            epochs.current = producer_epoch + 1
            return InitProducerIdResult(ErrorCode.none, producer_id, epochs.current)
        if producer_epoch == epochs.previous:
            return InitProducerIdResult(ErrorCode.none, producer_id, epochs.current)
        return InitProducerIdResult(ErrorCode.producer_fenced)

    def _fresh(self) -> InitProducerIdResult:
        producer_id = self.generate()
        self._epochs[producer_id] = _Epochs(current=0)
        while len(self._epochs) > MAX_TRACKED_PRODUCERS:
            self._epochs.popitem(last=False)
        return InitProducerIdResult(ErrorCode.none, producer_id, 0)
