"""Log compaction (cleanup.policy=compact): keep, for every key, its latest record.

Owns: the cleaning of one partition log (Kafka's LogCleaner, LogCleanerManager's choice of
the cleanable range, and Cleaner.cleanSegments), in three steps that keep the core free of
threads and clocks:
1. `plan_clean` (event loop, clean_plan.py): choose the range and take what the job needs
   from the log;
2. `CleanJob.run` (off the event loop: the shell runs it from `CleanJob.spec` in a cleaner
   process, `run_spec`): build the key -> latest offset map over the dirty part, then write
   the cleaned segments as `.cleaned` files beside the log, never touching a file the log
   uses (a segment the clean would leave as it was is not rewritten at all);
3. `prepare_swap`, then `apply_swap` once a flush job synced what the first wrote (event
   loop, clean_swap.py): swap the cleaned segments in, crash-safely, without an fsync.

This module is the job itself (step 2); the rules below hold across the three modules.

What a clean keeps (Kafka's rules):
- Range: whole segments from the first one up to (not including) the first segment that is
  active, that holds the LSO or anything above it, or whose largest timestamp is newer than
  `min.compaction.lag.ms`. The dirty part starts at the first dirty offset (where the last
  clean ended); it must be at least `min.cleanable.dirty.ratio` of the range's bytes, unless
  its first batch is older than `max.compaction.lag.ms`.
- Records: a record is kept unless a later record of the same key lies in the dirty part, or
  it has no key, or it belongs to an aborted transaction (from the aborted-transaction
  index), or it is a tombstone (null value) whose batch's delete horizon has passed. A batch
  with a tombstone gets its delete horizon (now + `delete.retention.ms`, KIP-534) the first
  time a clean keeps it, so a tombstone lives that long after it reaches the cleaned part,
  however often the segment is rewritten after (KAFKA-8522).
- Transaction markers: kept while a batch of their transaction remains in the log, then
  until their own delete horizon passes (KAFKA-8351: the state of transactions is carried
  across the whole pass, never reset between segments). Every kept ABORT marker keeps its
  entry in the new segment's aborted-transaction index (KAFKA-13727).
- Producers: the batch holding each producer's last data offset (or, when it has none, its
  last marker of the current epoch) is kept, empty if need be, so its epoch and sequence
  survive a restart (Kafka's lastRecordsOfActiveProducers).
- Offsets never change: a kept record stays at its offset; batches keep their base and last
  offsets, so the log may have holes (KAFKA-8764: the first dirty offset always moves to the
  end of the range cleaned, never to a record, so a log with holes cannot loop).
- Small cleaned segments merge: consecutive segments whose sizes add up to at most
  `segment.bytes` are cleaned into one.

Crash safety (Kafka's `.cleaned` -> `.swap` -> rename protocol): a cleaned segment's `.log`
(and `.txnindex`, if it has aborted transactions) is written and made durable as
`<name>.cleaned` by the job; the swap makes the recovery point past the range durable (a
flush job), then renames the `.cleaned` files `.swap` (the `.txnindex` before the `.log`: a
`.log.swap` is the commit point), renames the replaced segments `.deleted`, then renames the
`.swap` files to their final names (same order), with no fsync between the renames: they
reach the disk in that order, and the next flush job syncs the directory (clean_swap.py). The
offset and time indexes travel in memory (`CleanStats.indexes`) and reach their files at the
next clean shutdown; after a crash, recovery rebuilds them, as for any segment without them.
`recover_swaps` (clean_swap.py), run before a log loads, removes `.cleaned` files (a clean
that never committed) and completes every `.log.swap` (removing the segments it replaces),
so a crash at any point leaves either the old segments or the new one, never both and never
neither. A cleaned segment only ever holds offsets below the recovery point (the job flushes
first), so recovery takes its holes for compaction, never for lost writes.

Deterministic: files only through `Disk`; the clock comes in as `now_ms`; the job's
throttle and cancel hooks are the shell's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.batch_filter import (
    BadRecordsError,
    OffsetMap,
    filter_records,
    has_delete_horizon,
    new_offset_map,
    rebuild_batch,
    records_section,
    scan_keys,
    scan_records,
)
from ackly.log.disk import Disk, DiskFile
from ackly.log.producer_state import NO_OFFSET
from ackly.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    AppendedBatch,
    LogSegment,
    file_name,
)
from ackly.log.txn_index import TXN_INDEX_SUFFIX, AbortedTxn, encode_entry
from ackly.protocol.record_codec import ControlType, decode_control_batch
from ackly.protocol.records import HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2, BatchHeader, read_header
from ackly.types import NO_TIMESTAMP

if TYPE_CHECKING:
    from ackly.log.partition_log import FlushJob

logger = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
# Kafka's SkimpyOffsetMap: 16 bytes of MD5 hash + 8 bytes of offset per entry.
OFFSET_MAP_ENTRY_BYTES = 24
_SEGMENT_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, LOG_SUFFIX)
_WRITE_CHUNK_BYTES = 1 << 20
_READ_CHUNK_BYTES = 4 << 20


class CleanCancelled(Exception):
    """The job was cancelled (the broker is stopping)."""


@dataclass(frozen=True)
class CleanerSettings:
    """Broker-wide cleaner settings (log.cleaner.*)."""

    dedupe_buffer_bytes: int = 128 * 1024 * 1024
    io_buffer_load_factor: float = 0.9
    threads: int = 1

    @property
    def map_capacity(self) -> int:
        """Keys one clean may map (Kafka: the dedupe buffer split over the threads)."""
        per_thread = self.dedupe_buffer_bytes // max(1, self.threads)
        return max(1, int(per_thread // OFFSET_MAP_ENTRY_BYTES * self.io_buffer_load_factor))


@dataclass
class CleanedSegment:
    """One output segment: written by the job, swapped in by `apply_clean`."""

    base_offset: int
    end_offset: int  # the replaced group's end: the next segment's base
    sources: tuple[LogSegment, ...]
    segment: LogSegment | None = None
    aborted: list[AbortedTxn] = field(default_factory=list)
    # One source whose every batch the clean kept as it was: nothing to write or swap.
    unchanged: bool = False
    indexes: tuple[bytes, bytes] | None = None  # offset index, time index of the new segment


@dataclass(frozen=True)
class CleanStats:
    bytes_read: int
    bytes_written: int
    records_removed: int
    unchanged: tuple[int, ...] = ()  # base offsets of the groups left as they were
    # (base offset, offset index, time index) of each new segment, as their files would hold
    # them: the swap takes them in memory and the files are written at the next clean
    # shutdown (after a crash, recovery rebuilds them), so a clean costs no index fsyncs.
    indexes: tuple[tuple[int, bytes, bytes], ...] = ()


class CleanJob:
    """One clean of one log, to run off the event loop (see the module docstring)."""

    def __init__(
        self,
        *,
        disk: Disk,
        dir_path: str,
        config: TopicConfig,
        sources: tuple[LogSegment, ...],
        groups: list[CleanedSegment],
        dirty_index: int,
        end_offset: int,
        aborted: tuple[AbortedTxn, ...],
        producer_last: dict[int, tuple[int, int]],
        now_ms: int,
        truncations: int,
        flush: FlushJob | None,
    ) -> None:
        self.disk = disk
        self.dir_path = dir_path
        self.config = config
        self.sources = sources
        self.groups = groups
        self.dirty_index = dirty_index
        self.end_offset = end_offset
        self.aborted = aborted
        self.producer_last = producer_last
        self.now_ms = now_ms
        self.truncations = truncations
        self.flush = flush
        self.stats: CleanStats | None = None
        # The log's owed-change count the swap waits for (clean_swap.prepare_swap).
        self.swap_after: int | None = None
        self._cancelled = False

    # ------------------------------------------------------------------ another process

    def spec(self) -> CleanSpec:
        """What another process needs to run this job's writing part (`run_spec`): paths
        and values only, no open file. The flush stays here (`run_flush`)."""
        return CleanSpec(
            dir_path=self.dir_path, config=self.config,
            sources=tuple((s.base_offset, s.created_ms) for s in self.sources),
            groups=tuple(
                (g.base_offset, g.end_offset, self.sources.index(g.sources[0]), len(g.sources))
                for g in self.groups
            ),
            dirty_index=self.dirty_index, end_offset=self.end_offset, aborted=self.aborted,
            producer_last=dict(self.producer_last), now_ms=self.now_ms,
        )

    def run_flush(self) -> None:
        """The fsync the range needs before it may be cleaned (see `run`)."""
        if self.flush is not None:
            self.flush.run()

    def cancel(self) -> None:
        """Ask a running job to stop at its next batch (it then raises CleanCancelled)."""
        self._cancelled = True

    def __repr__(self) -> str:
        return (
            f"CleanJob({self.dir_path!r}, segments={len(self.sources)}, "
            f"dirty_from={self.sources[self.dirty_index].base_offset}, end={self.end_offset})"
        )

    # ------------------------------------------------------------------ the worker's part

    def run(
        self,
        throttle: Callable[[int], None] | None = None,
        sync: Callable[[list[DiskFile]], None] | None = None,
    ) -> CleanStats:
        """Flush what the range needs, map the dirty part, write every `.cleaned` file
        (durable on return). `throttle(n)` is called after each `n` bytes read. Touches no
        file the log uses, so it may run while the event loop appends and reads.

        The `.cleaned` files are made durable together at the end, by `sync(files)` (default:
        one `flush` after another): the shell's cleaner issues their fsyncs at once, which
        the filesystem serves with far fewer journal commits than one per file."""
        self.run_flush()
        offset_map = self._build_offset_map(throttle)
        txns = _TxnTracker(self.aborted)
        read = written = removed = 0
        for group in self.groups:
            r, w, n = self._clean_group(group, offset_map, txns, throttle)
            read, written, removed = read + r, written + w, removed + n
        written_files = [g.segment.file for g in self.groups if g.segment is not None]
        if sync is not None:
            sync(written_files)
        else:
            for file in written_files:
                file.flush()
        unchanged = tuple(g.base_offset for g in self.groups if g.unchanged)
        indexes = tuple((g.base_offset, *g.indexes) for g in self.groups if g.indexes is not None)
        self.stats = CleanStats(read, written, removed, unchanged, indexes)
        return self.stats

    def _check_cancel(self) -> None:
        if self._cancelled:
            raise CleanCancelled(self.dir_path)

    def _build_offset_map(self, throttle: Callable[[int], None] | None) -> OffsetMap:
        """Key -> offset of its last record in the dirty part, skipping aborted data and
        markers (Kafka's Cleaner.buildOffsetMap)."""
        offset_map = new_offset_map()
        dirty = self.sources[self.dirty_index :]
        first_dirty = dirty[0].base_offset
        txns = _TxnTracker(tuple(a for a in self.aborted if a.last_offset >= first_dirty))
        for segment in dirty:
            for header, batch in _batches(segment):
                self._check_cancel()
                if header.is_control:
                    txns.on_marker(header, _marker_kind_of(batch, header))
                    continue
                if txns.on_data(header) or header.records_count == 0:
                    continue
                try:
                    scan_keys(records_section(batch, header), header, offset_map)
                except BadRecordsError:
                    continue  # kept as it is by the copy pass
            if throttle is not None:
                throttle(segment.size)
        return offset_map

    def _clean_group(
        self,
        group: CleanedSegment,
        offset_map: OffsetMap,
        txns: _TxnTracker,
        throttle: Callable[[int], None] | None,
    ) -> tuple[int, int, int]:
        disk = self.disk
        path = os.path.join(self.dir_path, file_name(group.base_offset, LOG_SUFFIX))
        cleaned_path = path + CLEANED_SUFFIX
        if disk.exists(cleaned_path):
            disk.remove(cleaned_path)  # a leftover of an abandoned clean
        file = disk.open(cleaned_path)
        out = LogSegment(
            disk, self.dir_path, group.base_offset, file, self.config,
            group.sources[0].created_ms,
        )
        group.segment = out
        buffer = bytearray()
        batches: list[AppendedBatch] = []
        read = written = removed = 0
        same = len(group.sources) == 1  # so far every batch kept as it was
        for source in group.sources:
            for header, batch in _batches(source):
                self._check_cancel()
                read += header.size
                kept, dropped, abort_entry = self._filter(batch, header, offset_map, txns)
                removed += dropped
                same = same and kept is batch
                if abort_entry is not None and kept is not None:
                    group.aborted.append(abort_entry)
                if kept is None:
                    continue
                kept_header = header if kept is batch else read_header(kept)
                batches.append(AppendedBatch(
                    len(buffer), kept_header.base_offset, kept_header.last_offset,
                    len(kept), kept_header.max_timestamp,
                ))
                buffer += kept
                if len(buffer) >= _WRITE_CHUNK_BYTES:
                    written += len(buffer)
                    out.append(buffer, batches)
                    buffer, batches = bytearray(), []
            if throttle is not None:
                throttle(source.size)
        if batches:
            written += len(buffer)
            out.append(buffer, batches)
        out.next_offset = group.end_offset
        if same:
            # Nothing changed: the segment stays, with its own files (no swap, no fsyncs).
            file.close()
            disk.remove(cleaned_path)
            group.segment = None
            group.unchanged = True
            return read, 0, 0
        # Made durable with the others at the end of `run`.
        # The indexes as LogSegment.on_become_inactive leaves them, handed to the swap.
        if out.max_timestamp != NO_TIMESTAMP:
            out.time_index.maybe_append(
                out.max_timestamp, out.offset_of_max_timestamp, skip_full_check=True
            )
        group.indexes = (out.offset_index.to_bytes(), out.time_index.to_bytes())
        base = os.path.join(self.dir_path, file_name(group.base_offset, ""))
        if group.aborted:
            disk.write_atomic(
                base + TXN_INDEX_SUFFIX + CLEANED_SUFFIX,
                b"".join(encode_entry(a) for a in group.aborted),
            )
        return read, written, removed

    def _filter(
        self,
        batch: memoryview,
        header: BatchHeader,
        offset_map: OffsetMap,
        txns: _TxnTracker,
    ) -> tuple[bytes | memoryview | None, int, AbortedTxn | None]:
        """(the batch as kept or None, records removed, the ABORT entry of a kept marker)."""
        now_ms = self.now_ms
        horizon = header.base_timestamp if has_delete_horizon(header) else None
        is_last = self._is_producers_last(header)
        if header.is_control:
            kind = _marker_kind_of(batch, header)
            can_discard, entry = txns.on_marker(header, kind)
            if not can_discard:
                return batch, 0, entry
            if horizon is None:
                # Its transaction has no data left: it goes once its own horizon passes.
                marker_horizon = now_ms + self.config.delete_retention_ms
                section = records_section(batch, header)
                kept = rebuild_batch(header, section, scan_records(section, header), marker_horizon)
                return kept, 0, entry
            if now_ms < horizon:
                return batch, 0, entry
            if is_last:
                return rebuild_batch(header, b"", [], None), header.records_count, None
            return None, header.records_count, None
        discard_all = txns.on_data(header)
        if header.records_count == 0:
            return (batch if is_last else None), 0, None
        if discard_all:
            if not is_last:
                return None, header.records_count, None
            return rebuild_batch(header, b"", [], None), header.records_count, None
        try:
            section = records_section(batch, header)
            kept_records, tombstones = filter_records(
                section, header, offset_map, horizon is not None and now_ms >= horizon
            )
        except BadRecordsError:
            return batch, 0, None  # Kafka marks such a log uncleanable; we keep the batch
        dropped = header.records_count - len(kept_records)
        set_horizon = tombstones and horizon is None
        if not kept_records and not is_last:
            return None, dropped, None
        if not dropped and not set_horizon:
            return batch, 0, None
        data_horizon = now_ms + self.config.delete_retention_ms if set_horizon else None
        return rebuild_batch(header, section, kept_records, data_horizon), dropped, None

    def _is_producers_last(self, header: BatchHeader) -> bool:
        if header.producer_id < 0:
            return False
        last = self.producer_last.get(header.producer_id)
        if last is None:
            return False
        last_data_offset, epoch = last
        if last_data_offset != NO_OFFSET:
            return not header.is_control and header.last_offset == last_data_offset
        return header.is_control and header.producer_epoch == epoch


class _TxnTracker:
    """The state of transactions as a pass reads the log in order (Kafka's
    CleanedTransactionMetadata): which producers are inside an aborted transaction (from the
    index), whether a batch of it was seen, and which committed transactions had data."""

    def __init__(self, aborted: tuple[AbortedTxn, ...]) -> None:
        self._pending = sorted(aborted, key=lambda a: (a.first_offset, a.last_offset))
        self._next = 0
        self._ongoing_aborted: dict[int, tuple[AbortedTxn, bool]] = {}
        self._ongoing_committed: set[int] = set()

    def _consume_up_to(self, offset: int) -> None:
        pending = self._pending
        while self._next < len(pending) and pending[self._next].first_offset <= offset:
            entry = pending[self._next]
            self._next += 1
            self._ongoing_aborted.setdefault(entry.producer_id, (entry, False))

    def on_data(self, header: BatchHeader) -> bool:
        """A data batch: True if it belongs to an aborted transaction (remove its records)."""
        self._consume_up_to(header.last_offset)
        if not header.is_transactional:
            return False
        pid = header.producer_id
        ongoing = self._ongoing_aborted.get(pid)
        if ongoing is not None:
            self._ongoing_aborted[pid] = (ongoing[0], True)
            return True
        self._ongoing_committed.add(pid)
        return False

    def on_marker(
        self, header: BatchHeader, kind: ControlType | None
    ) -> tuple[bool, AbortedTxn | None]:
        """A control batch: (may it be discarded once its horizon passes, the index entry it
        keeps if it is an ABORT marker)."""
        self._consume_up_to(header.last_offset)
        pid = header.producer_id
        if kind is ControlType.ABORT:
            ongoing = self._ongoing_aborted.pop(pid, None)
            self._ongoing_committed.discard(pid)
            entry = ongoing[0] if ongoing is not None else None
            if entry is not None and entry.last_offset != header.base_offset:
                entry = None  # an index entry of another marker: not this one's
            data_seen = ongoing is not None and ongoing[1]
            return not data_seen, entry
        if kind is ControlType.COMMIT:
            had_data = pid in self._ongoing_committed
            self._ongoing_committed.discard(pid)
            return not had_data, None
        # An empty control batch: a marker a former clean emptied.
        self._ongoing_aborted.pop(pid, None)
        self._ongoing_committed.discard(pid)
        return True, None


def _marker_kind_of(batch: bytes | memoryview, header: BatchHeader) -> ControlType | None:
    if header.records_count == 0:
        return None
    return decode_control_batch(batch)[1].kind


def _batches(segment: LogSegment) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Every batch of an inactive segment with its bytes, read a few MiB at a time: one read
    per chunk rather than two per batch (a header, then the batch), which in a log of small
    batches costs more than the records' scan."""
    file = segment.file
    end = segment.size
    position = 0
    while position < end:
        chunk = file.read(position, min(end - position, _READ_CHUNK_BYTES))
        view = memoryview(chunk)
        offset = 0
        while len(chunk) - offset >= HEADER_SIZE:
            header = read_header(view, offset)
            if header.magic != MAGIC_V2 or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
                raise KafkaError(
                    ErrorCode.kafka_storage_error,
                    f"bad batch framing at {position + offset} in {file.path}",
                )
            if offset + header.size > len(chunk):
                if offset == 0:  # one batch larger than a chunk
                    chunk = file.read(position, header.size)
                    if len(chunk) == header.size:
                        yield header, memoryview(chunk)
                        offset = header.size
                break
            yield header, view[offset : offset + header.size]
            offset += header.size
        if offset == 0:
            raise KafkaError(
                ErrorCode.kafka_storage_error, f"a batch ends past the end of {file.path}"
            )
        position += offset


@dataclass(frozen=True)
class CleanSpec:
    """A CleanJob as plain values, for a cleaner process (see `CleanJob.spec`)."""

    dir_path: str
    config: TopicConfig
    sources: tuple[tuple[int, int], ...]  # (base offset, created_ms) of each source segment
    groups: tuple[tuple[int, int, int, int], ...]  # (base, end, first source, source count)
    dirty_index: int
    end_offset: int
    aborted: tuple[AbortedTxn, ...]
    producer_last: dict[int, tuple[int, int]]
    now_ms: int


def run_spec(
    spec: CleanSpec,
    disk: Disk,
    throttle: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    sync: Callable[[list[DiskFile]], None] | None = None,
) -> CleanStats:
    """Run a job's writing part from its spec (in a cleaner process): open the source
    segments read-only by path, write the `.cleaned` files. `cancelled` is asked between
    segments."""
    sources: list[LogSegment] = []
    groups: list[CleanedSegment] = []
    try:
        for base, created_ms in spec.sources:
            if not disk.exists(os.path.join(spec.dir_path, file_name(base, LOG_SUFFIX))):
                # Deleted since the plan (retention, truncation): opening would create it.
                raise CleanCancelled(f"{spec.dir_path}: segment {base} is gone")
            sources.append(
                LogSegment.open_existing(disk, spec.dir_path, base, spec.config, created_ms)
            )
        groups = [
            CleanedSegment(base, end, tuple(sources[first : first + count]))
            for base, end, first, count in spec.groups
        ]
        job = CleanJob(
            disk=disk, dir_path=spec.dir_path, config=spec.config, sources=tuple(sources),
            groups=groups, dirty_index=spec.dirty_index, end_offset=spec.end_offset,
            aborted=spec.aborted, producer_last=spec.producer_last, now_ms=spec.now_ms,
            truncations=0, flush=None,
        )

        def throttle_and_check(count: int) -> None:
            if cancelled is not None and cancelled():
                job.cancel()
            if throttle is not None:
                throttle(count)

        return job.run(throttle_and_check, sync)
    finally:
        for segment in sources:
            segment.close()
        for group in groups:
            if group.segment is not None:
                group.segment.file.close()
