"""One log segment: a .log file of record batches and its two sparse indexes.

Owns: `LogSegment` (Kafka's kafka.log.LogSegment): appending batches, locating an offset or a
timestamp in the file, recovering (re-validating) the file, truncating it, and the segment's
file names.

On-disk layout, in the partition directory (Kafka's names, 20-digit zero-padded base offset):
    00000000000000000000.log        record batches (v2) exactly as on the wire, back to back
    00000000000000000000.index      sparse offset index (see index.py)
    00000000000000000000.timeindex  sparse time index (see index.py)
    00000000000000000000.txnindex   aborted transactions whose markers are here (see
                                    txn_index.py); absent while there are none
A segment being deleted has `.deleted` appended to each name until its delay has passed.

Invariants:
- The .log holds whole, CRC-valid batches with strictly increasing offsets; the first starts
  at `base_offset` or later and `next_offset` is one past the last batch's last offset.
- An offset index entry is added for a batch once more than `index_interval_bytes` of log
  have been written since the last entry (Kafka's rule); a time index entry goes with it when
  the segment's largest timestamp rose since the last one.
- The indexes are authoritative in memory. Their files are written whole (atomically) when the
  segment becomes inactive and at close; the active segment's files may be stale or absent,
  which is fine because recovery always rebuilds the active segment after an unclean stop.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError, StorageError
from ackly.log.disk import STORAGE_ERRNOS, Disk, DiskFile, PendingSyncs
from ackly.log.index import (
    INT32_MAX,
    OFFSET_ENTRY_SIZE,
    TIME_ENTRY_SIZE,
    CorruptIndexError,
    OffsetIndex,
    TimeIndex,
)
from ackly.log.lazy_file import LazyFile
from ackly.log.txn_index import TXN_INDEX_SUFFIX, TransactionIndex
from ackly.protocol.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    crc_of,
    read_header,
)
from ackly.types import NO_TIMESTAMP

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"

_FILE_NAME = re.compile(r"([0-9]{20})(\.log|\.index|\.timeindex|\.txnindex)")

# Reads while scanning: large for recovery (every byte is checked), small for header walks
# (a walk covers about one index interval, 4 KiB by default).
_RECOVERY_CHUNK_BYTES = 1 << 20
_HEADER_CHUNK_BYTES = 16 << 10


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def parse_file_name(name: str) -> tuple[int, str] | None:
    """(base offset, suffix) of a segment file name, or None for any other name."""
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def offset_index_entries(config: TopicConfig) -> int:
    return max(1, config.segment_index_bytes // OFFSET_ENTRY_SIZE)


def time_index_entries(config: TopicConfig) -> int:
    return max(1, config.segment_index_bytes // TIME_ENTRY_SIZE)


@dataclass(frozen=True)
class AppendedBatch:
    """Where one batch of an append lies and what the indexes need from it."""

    position: int  # relative to the start of the appended bytes
    base_offset: int
    last_offset: int
    size: int
    max_timestamp: int


class _Window:
    """Reads a file through one buffer, so walking many small headers costs few reads."""

    def __init__(self, file: DiskFile, end: int, chunk_bytes: int) -> None:
        self._file = file
        self._end = end
        self._chunk_bytes = chunk_bytes
        self._buf = b""
        self._start = 0

    def get(self, position: int, size: int) -> memoryview | None:
        """`size` bytes at `position`, or None if the file ends first."""
        if position + size > self._end:
            return None
        offset = position - self._start
        if offset < 0 or offset + size > len(self._buf):
            self._buf = self._file.read(position, max(size, self._chunk_bytes))
            self._start = position
            offset = 0
            if len(self._buf) < size:
                return None
        return memoryview(self._buf)[offset : offset + size]


def _frames_ok(header: BatchHeader, position: int, end: int) -> bool:
    return (
        header.magic == MAGIC_V2
        and header.batch_length >= HEADER_SIZE - LOG_OVERHEAD
        and position + header.size <= end
        and 0 <= header.last_offset_delta <= INT32_MAX
    )


_T = TypeVar("_T")


class _LoadedOnUse(Generic[_T]):
    """A segment attribute that a lazily opened segment reads from its index files on first
    use (`LogSegment._load_lazy`); setting it only stores it. Kept in `_<name>`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name

    @overload
    def __get__(self, segment: None, owner: type) -> _LoadedOnUse[_T]: ...

    @overload
    def __get__(self, segment: LogSegment, owner: type) -> _T: ...

    def __get__(self, segment: LogSegment | None, owner: type) -> Any:
        if segment is None:
            return self
        if segment._lazy_next_offset is not None:
            segment._load_lazy()
        return getattr(segment, self._attr)

    def __set__(self, segment: LogSegment, value: _T) -> None:
        setattr(segment, self._attr, value)


class LogSegment:
    """A .log file with its offset and time indexes (kafka.log.LogSegment)."""

    def __init__(
        self,
        disk: Disk,
        dir_path: str,
        base_offset: int,
        file: DiskFile,
        config: TopicConfig,
        created_ms: int,
        syncs: PendingSyncs | None = None,
    ) -> None:
        self.disk = disk
        # With PendingSyncs (a partition log's segments) the index files are written without
        # an fsync; the log syncs them in its next flush job, before its recovery point can
        # pass this segment (recovery trusts the indexes of the segments below it only).
        self.syncs = syncs
        self.dir_path = dir_path
        self.base_offset = base_offset
        self.file = file
        self._offset_index = OffsetIndex(base_offset, offset_index_entries(config))
        self._time_index = TimeIndex(base_offset, time_index_entries(config))
        # Set for an inactive segment whose index files are read only when first needed (its
        # next offset; Kafka's LazyIndex): a clean start-up reads no index of them at all.
        self._lazy_next_offset: int | None = None
        # False when the index files on disk may not describe the .log (the segment that held
        # the recovery point at a crash): a lazy load then rebuilds them from the headers.
        self._lazy_trust_files = True
        # Bytes `recover` CRC-checked (what a start-up after a crash read of this segment).
        self.recovered_bytes = 0
        self.txn_index = TransactionIndex(disk, dir_path, base_offset, syncs)
        self.index_interval_bytes = config.index_interval_bytes
        # Age for segment.ms rolls. Kafka prefers the first batch's timestamp; producer clocks
        # are not ours to trust, so ackly uses the broker's clock when the segment was made
        # (or loaded: like Kafka's LogSegment.created, the age restarts with the process).
        self.created_ms = created_ms
        self.next_offset = base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = base_offset
        self._bytes_since_index_entry = 0
        self.indexes_dirty = True
        self._failed = False
        # (epoch, base offset) of each batch `recover` accepted whose partition leader epoch
        # differs from the batch before it: what the leader-epoch cache must know after it.
        self.recovered_epochs: list[tuple[int, int]] = []

    # -- construction

    @classmethod
    def create(
        cls,
        disk: Disk,
        dir_path: str,
        base_offset: int,
        config: TopicConfig,
        now_ms: int,
        syncs: PendingSyncs | None = None,
    ) -> LogSegment:
        """A new, empty segment (its .log file is created; the indexes come at roll/close).
        With PendingSyncs the new file's directory entry is durable once they are synced (the
        flush that first makes data in it durable syncs them too)."""
        path = os.path.join(dir_path, file_name(base_offset, LOG_SUFFIX))
        file = disk.open(path) if syncs is None else syncs.create(path)
        if file.size():
            # A stale file under a name we are about to reuse (Kafka warns and deletes it too).
            logger.warning("segment %s exists when rolling; emptying it", file.path)
            file.truncate(0)
        segment = cls(disk, dir_path, base_offset, file, config, now_ms, syncs)
        segment.txn_index.reset()  # likewise a stale aborted-transaction index
        return segment

    @classmethod
    def open_existing(
        cls,
        disk: Disk,
        dir_path: str,
        base_offset: int,
        config: TopicConfig,
        now_ms: int,
        syncs: PendingSyncs | None = None,
    ) -> LogSegment:
        """A segment found on disk; its state is set by `load_indexes` or `recover`. Its
        .log is opened by its first read or append (lazy_file.py), not here."""
        file = LazyFile(disk, os.path.join(dir_path, file_name(base_offset, LOG_SUFFIX)))
        return cls(disk, dir_path, base_offset, file, config, now_ms, syncs)

    def path(self, suffix: str) -> str:
        return os.path.join(self.dir_path, file_name(self.base_offset, suffix))

    @property
    def size(self) -> int:
        return self.file.size()

    # -- the indexes and the largest timestamp, loaded on first use for a lazy segment

    offset_index: _LoadedOnUse[OffsetIndex] = _LoadedOnUse()
    time_index: _LoadedOnUse[TimeIndex] = _LoadedOnUse()
    max_timestamp: _LoadedOnUse[int] = _LoadedOnUse()
    offset_of_max_timestamp: _LoadedOnUse[int] = _LoadedOnUse()

    def load_lazily(self, next_offset: int, trust_index_files: bool = True) -> None:
        """A trusted segment (below the recovery point, or any segment after a clean stop)
        that ends at `next_offset`: its index files are read at the first lookup or append
        (Kafka's LazyIndex), so start-up time does not grow with the bytes stored. Without
        `trust_index_files` they are rebuilt from the batch headers then instead, and written
        again at the next roll or clean close."""
        self.next_offset = next_offset
        self.indexes_dirty = not trust_index_files
        self._lazy_next_offset = next_offset
        self._lazy_trust_files = trust_index_files

    def _load_lazy(self) -> None:
        next_offset = self._lazy_next_offset
        assert next_offset is not None
        self._lazy_next_offset = None
        if self._lazy_trust_files and self.load_indexes(next_offset):
            self.load_inactive(next_offset)
            return
        # Missing or failing its sanity check: rebuilt from the batch headers (the data is
        # trusted: it lies below the recovery point), and written again at the next roll or
        # clean close.
        self._offset_index.clear()
        self._time_index.clear()
        self._max_timestamp, self._offset_of_max_timestamp = NO_TIMESTAMP, self.base_offset
        self._bytes_since_index_entry = 0
        for position, header in self.iter_headers(0):
            self._index_batch(position, header.base_offset, header.size, header.max_timestamp)
        self.next_offset = next_offset
        self.indexes_dirty = True

    def update_config(self, config: TopicConfig) -> None:
        self._offset_index.max_entries = offset_index_entries(config)
        self._time_index.max_entries = time_index_entries(config)
        self.index_interval_bytes = config.index_interval_bytes

    # -- append

    def append(self, records: bytes | bytearray | memoryview, batches: list[AppendedBatch]) -> int:
        """Write already-patched batches at the end of the .log; index them; return the position.

        Visible to readers on return; not durable until the file is flushed. On a storage
        error nothing is written and nothing changes (KafkaError(KAFKA_STORAGE_ERROR)).
        """
        assert batches and batches[0].base_offset >= self.next_offset, self.next_offset
        if self._lazy_next_offset is not None:
            self._load_lazy()
        if self._failed:
            raise StorageError("append to", self.file.path, None, "the segment is offline")
        before = self.file.size()
        try:
            position = self.file.append(records)
        except (OSError, KafkaError) as exc:
            # RealFile already undoes a partial write; this covers any other DiskFile. If the
            # undo fails, bytes we do not account for may sit past `before`: take the segment
            # offline (appends refused) until a restart's recovery cuts them.
            try:
                if self.file.size() != before:
                    self.file.truncate(before)
            except (OSError, KafkaError):
                self._failed = True
            if isinstance(exc, KafkaError) or exc.errno not in STORAGE_ERRNOS:
                raise
            raise StorageError("append to", self.file.path, exc.errno, exc.strerror or str(exc))
        for batch in batches:
            self._index_batch(
                position + batch.position, batch.base_offset, batch.size, batch.max_timestamp
            )
        self.next_offset = batches[-1].last_offset + 1
        self.indexes_dirty = True  # at least the largest timestamp may have moved
        return position

    def _index_batch(self, position: int, base_offset: int, size: int, max_timestamp: int) -> None:
        # Same order as LogSegment.append in Kafka: the largest timestamp first, then (every
        # index interval) an offset entry and a time entry carrying the largest timestamp.
        # The fields, not the properties: appends and rebuilds run on loaded indexes.
        if max_timestamp > self._max_timestamp:
            self._max_timestamp = max_timestamp
            self._offset_of_max_timestamp = base_offset
        if self._bytes_since_index_entry > self.index_interval_bytes:
            if not self._offset_index.is_full():
                self._offset_index.append(base_offset, position)
            if self._max_timestamp != NO_TIMESTAMP:
                self._time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
            self._bytes_since_index_entry = 0
            self.indexes_dirty = True
        self._bytes_since_index_entry += size

    def index_full(self) -> bool:
        return self.offset_index.is_full() or self.time_index.is_full()

    # -- lookups

    def _header(self, window: _Window, position: int) -> BatchHeader:
        view = window.get(position, HEADER_SIZE)
        header = None if view is None else read_header(view)
        if header is None or not _frames_ok(header, position, self.size):
            # Unreachable unless the file changed under us: the log was validated on append
            # and on recovery. Answer as a storage failure rather than serve garbage.
            raise KafkaError(
                ErrorCode.kafka_storage_error, f"bad batch framing at {position} in {self.file.path}"
            )
        return header

    def iter_headers(self, position: int, end: int | None = None) -> _HeaderWalk:
        """Walk the batch headers from `position` (a batch start) up to `end` (default: EOF)."""
        return _HeaderWalk(self, position, self.size if end is None else end)

    def translate_offset(self, offset: int, start_position: int = 0) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch at or after `start_position` whose last
        offset is >= `offset`, or None past the end (Kafka's LogSegment.translateOffset).

        Floor lookup in the offset index, then a forward walk over batch headers.
        """
        _, position = self.offset_index.lookup(offset)
        for batch_position, header in self.iter_headers(max(position, start_position)):
            if header.last_offset >= offset:
                return batch_position, header
        return None

    def read_end(self, start_position: int, max_end_position: int, upper_offset: int) -> int:
        """The end of the longest run of whole batches from `start_position` that stays within
        `max_end_position` and below `upper_offset` (every batch's last offset < it)."""
        size = self.size
        if self.next_offset <= upper_offset and size <= max_end_position:
            return size
        # Batches before an index entry (o, p) all end by p and hold offsets below o, so when
        # o <= upper_offset and p <= max_end_position the walk may start at p.
        position = start_position
        entry = self.offset_index.floor_entry(upper_offset, max_end_position)
        if entry is not None:
            position = max(position, entry[1])
        for batch_position, header in self.iter_headers(position):
            if header.last_offset >= upper_offset or batch_position + header.size > max_end_position:
                return batch_position
        return size

    def find_timestamp(self, timestamp: int, start_offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch holding an offset >= `start_offset` whose
        largest timestamp is >= `timestamp` (the search of Kafka's findOffsetByTimestamp)."""
        if self.max_timestamp < timestamp:
            return None
        entry = self.time_index.lookup(timestamp)
        from_offset = max(start_offset, self.base_offset if entry is None else entry[1])
        located = self.translate_offset(from_offset)
        if located is None:
            return None
        for position, header in self.iter_headers(located[0]):
            if header.max_timestamp >= timestamp and header.last_offset >= start_offset:
                return position, header
        return None

    def read_batch(self, position: int, header: BatchHeader) -> bytes:
        return self.file.read(position, header.size)

    # -- loading and recovery

    def load_indexes(self, next_offset_bound: int | None) -> bool:
        """Load the .index and .timeindex files; False if either is absent or fails its
        sanity check (Kafka's LogSegment.sanityCheck), in which case the caller recovers."""
        offset_data = self.disk.read_file(self.path(INDEX_SUFFIX))
        time_data = self.disk.read_file(self.path(TIME_INDEX_SUFFIX))
        if offset_data is None or time_data is None:
            return False
        try:
            offset_index = OffsetIndex.from_bytes(
                self.base_offset, offset_data, self._offset_index.max_entries, self.size
            )
            time_index = TimeIndex.from_bytes(
                self.base_offset, time_data, self._time_index.max_entries, next_offset_bound
            )
        except CorruptIndexError as exc:
            logger.warning("rebuilding the indexes of %s: %s", self.file.path, exc)
            return False
        last = offset_index.last_entry()
        if next_offset_bound is not None and last is not None and last[0] >= next_offset_bound:
            return False
        self.offset_index, self.time_index = offset_index, time_index
        last_time = time_index.last_entry()
        if last_time is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_time
        self.indexes_dirty = False
        return True

    def load_inactive(self, next_offset: int) -> None:
        """State of a trusted inactive segment: it ends where the next one begins."""
        self.next_offset = next_offset
        last = self.offset_index.last_entry()
        self._bytes_since_index_entry = self.size - (0 if last is None else last[1])

    def load_active_tail(self) -> bool:
        """After a clean shutdown: walk the headers after the last index entry to find the
        next offset, and CRC-check the last batch. False if the tail does not frame exactly
        (the caller then recovers the whole segment)."""
        last = self.offset_index.last_entry()
        position = 0 if last is None else last[1]
        size = self.size
        window = _Window(self.file, size, _HEADER_CHUNK_BYTES)
        next_offset = self.base_offset
        last_batch: tuple[int, BatchHeader] | None = None
        while position < size:
            view = window.get(position, HEADER_SIZE)
            if view is None:
                return False
            header = read_header(view)
            if not _frames_ok(header, position, size) or header.base_offset < next_offset:
                return False
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = header.base_offset
            last_batch = (position, header)
            next_offset = header.next_offset
            position += header.size
        if last_batch is not None:
            batch_position, header = last_batch
            data = self.file.read(batch_position, header.size)
            if len(data) != header.size or crc_of(data, 0, header.size) != header.crc:
                return False
        self.next_offset = next_offset
        self._bytes_since_index_entry = size - (0 if last is None else last[1])
        return True

    def recover(self, durable_position: int = 0) -> int:
        """Re-validate the .log and rebuild both indexes (Kafka's LogSegment.recover).

        Checks each batch's framing, magic, offsets (increasing, within this segment's
        relative range) and CRC-32C; cuts the file at the first batch that fails, which is
        where a torn or lost write begins. Returns the number of bytes cut. The cut is visible
        at once and durable after the next flush.

        Batches that end at or before `durable_position` (the recovery point's position: they
        were fsynced) are only framed and indexed, their CRC not computed: a crash changes
        nothing there. `recovered_bytes` counts the bytes whose CRC was checked.
        """
        self.offset_index.clear()
        self.time_index.clear()
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = self.base_offset
        self._bytes_since_index_entry = 0
        self.indexes_dirty = True
        size = self.size
        window = _Window(self.file, size, _RECOVERY_CHUNK_BYTES)
        position = 0
        next_offset = self.base_offset
        epochs = self.recovered_epochs = []
        checked = 0
        while position < size:
            view = window.get(position, HEADER_SIZE)
            if view is None:
                break
            header = read_header(view)
            if (
                not _frames_ok(header, position, size)
                or header.base_offset < next_offset
                or header.last_offset - self.base_offset > INT32_MAX
            ):
                break
            if position + header.size > durable_position:
                batch = window.get(position, header.size)
                if batch is None or crc_of(batch, 0, header.size) != header.crc:
                    break
                checked += header.size
            self._index_batch(position, header.base_offset, header.size, header.max_timestamp)
            epoch = header.partition_leader_epoch
            if epoch >= 0 and (not epochs or epochs[-1][0] != epoch):
                epochs.append((epoch, header.base_offset))
            next_offset = header.next_offset
            position += header.size
        self.next_offset = next_offset
        self.recovered_bytes = checked + (size - position)
        truncated = size - position
        if truncated:
            logger.warning(
                "recovery cut %d bytes at position %d of %s", truncated, position, self.file.path
            )
            self.file.truncate(position)
        return truncated

    # -- changes

    def truncate_to(self, offset: int) -> int:
        """Drop every batch holding an offset >= `offset`; return the bytes removed.

        As in Kafka, the cut is at the start of the batch holding `offset`, so a cut inside a
        batch removes that whole batch (`next_offset` may end below `offset`). Visible at
        once; durable after the next flush.
        """
        located = self.translate_offset(offset)
        if located is None:
            # Nothing at or after `offset` here; a compacted segment may still end above it.
            if self.next_offset > offset:
                self.next_offset = max(offset, self.base_offset)
            return 0
        position, header = located
        removed = self.size - position
        self.file.truncate(position)
        self.offset_index.truncate_to_offset(header.base_offset)
        self.time_index.truncate_to_offset(header.base_offset)
        self.next_offset = header.base_offset
        self.indexes_dirty = True
        # The largest timestamp of what is left: the last time entry covers everything up to
        # its offset; walk the headers after it.
        last_time = self.time_index.last_entry()
        if last_time is None:
            self.max_timestamp, self.offset_of_max_timestamp = NO_TIMESTAMP, self.base_offset
            walk_from = 0
        else:
            self.max_timestamp, self.offset_of_max_timestamp = last_time
            start = self.translate_offset(last_time[1])
            walk_from = position if start is None else start[0]
        for _, batch in self.iter_headers(walk_from):
            if batch.max_timestamp > self.max_timestamp:
                self.max_timestamp = batch.max_timestamp
                self.offset_of_max_timestamp = batch.base_offset
        last = self.offset_index.last_entry()
        self._bytes_since_index_entry = position - (0 if last is None else last[1])
        return removed

    def on_become_inactive(self) -> None:
        """The segment stops taking appends (roll): record its largest timestamp in the time
        index even if full, then write both indexes (see `write_indexes`)."""
        if self.max_timestamp != NO_TIMESTAMP:
            self.time_index.maybe_append(
                self.max_timestamp, self.offset_of_max_timestamp, skip_full_check=True
            )
        self.write_indexes()

    def write_indexes(self) -> None:
        """Write both index files whole (atomically). Durable on return, or with PendingSyncs
        once they are synced."""
        for suffix, data in ((INDEX_SUFFIX, self.offset_index.to_bytes()),
                             (TIME_INDEX_SUFFIX, self.time_index.to_bytes())):
            if self.syncs is not None:
                self.syncs.write_atomic(self.path(suffix), data)
            else:
                self.disk.write_atomic(self.path(suffix), data)
        self.indexes_dirty = False

    def flush(self) -> None:
        """fsync the .log: every batch appended so far is durable on return."""
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.txn_index.close()

    def rename_to_deleted(self, durable: bool = True) -> list[str]:
        """Rename this segment's files to `<name>.deleted` (durable, or with `durable=False`
        once the directory is synced); the open .log keeps serving reads until it is
        closed. Returns the new paths."""
        renamed = []
        # No fetch reads the aborted transactions of a deleted segment: its index closes now.
        self.txn_index.close()
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
            path = self.path(suffix)
            if self.disk.exists(path):
                self.disk.rename(path, path + DELETED_SUFFIX, durable=durable)
                renamed.append(path + DELETED_SUFFIX)
                if suffix == LOG_SUFFIX and isinstance(self.file, LazyFile):
                    self.file.moved(path + DELETED_SUFFIX)  # opened later, under its new name
        return renamed

    def __repr__(self) -> str:
        return (
            f"LogSegment(base={self.base_offset}, next={self.next_offset}, size={self.size}, "
            f"max_ts={self.max_timestamp})"
        )


class _HeaderWalk:
    """Iterator over (position, header) of consecutive batches of one segment."""

    def __init__(self, segment: LogSegment, position: int, end: int) -> None:
        self._segment = segment
        self._position = position
        self._end = end
        self._window = _Window(segment.file, end, _HEADER_CHUNK_BYTES)

    def __iter__(self) -> _HeaderWalk:
        return self

    def __next__(self) -> tuple[int, BatchHeader]:
        position = self._position
        if position >= self._end:
            raise StopIteration
        header = self._segment._header(self._window, position)
        self._position = position + header.size
        return position, header
