"""Log compaction (cleanup.policy=compact): keep, for every key, its latest record.

Owns: the cleaning of one partition log (Kafka's LogCleaner, LogCleanerManager's choice of
the cleanable range, and Cleaner.cleanSegments), in three steps that keep the core free of
threads and clocks:
1. `plan_clean` (event loop): choose the range and take what the job needs from the log;
2. `CleanJob.run` (off the event loop: the shell runs it from `CleanJob.spec` in a cleaner
   process, `run_spec`): build the key -> latest offset map over the dirty part, then write
   the cleaned segments as `.cleaned` files beside the log, never touching a file the log
   uses (a segment the clean would leave as it was is not rewritten at all);
3. `apply_clean` (event loop): swap the cleaned segments in, crash-safely.

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
`<name>.cleaned`; the swap renames them `.swap` (the `.txnindex` before the `.log`, with a
directory fsync after each: a `.log.swap` is the commit point), renames the replaced
segments `.deleted`, then renames the `.swap` files to their final names (same order). The
offset and time indexes travel in memory (`CleanStats.indexes`) and reach their files at the
next clean shutdown; after a crash, recovery rebuilds them, as for any segment without them. `recover_swaps`, run
before a log loads, removes `.cleaned` files (a clean that never committed) and completes
every `.log.swap` (removing the segments it replaces), so a crash at any point leaves either
the old segments or the new one, never both and never neither. A cleaned segment only ever
holds offsets below the recovery point (the job flushes first), so recovery never scans one.

Deterministic: files only through `Disk`; the clock comes in as `now_ms`; the job's
throttle and cancel hooks are the shell's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ackly.config import TopicConfig
from ackly.log.batch_filter import (
    BadRecordsError,
    filter_records,
    has_delete_horizon,
    rebuild_batch,
    records_section,
    scan_keys,
    scan_records,
)
from ackly.log.checkpoint import OffsetCheckpoint
from ackly.log.disk import Disk, DiskFile
from ackly.log.index import INT32_MAX, CorruptIndexError, OffsetIndex, TimeIndex
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
from ackly.protocol.records import HEADER_SIZE, BatchHeader, read_header
from ackly.types import NO_TIMESTAMP

if TYPE_CHECKING:  # partition_log imports this module (recover_swaps)
    from ackly.log.partition_log import FlushJob, PartitionLog

logger = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
CLEANER_OFFSET_FILE = "cleaner-offset-checkpoint"
# Kafka's SkimpyOffsetMap: 16 bytes of MD5 hash + 8 bytes of offset per entry.
OFFSET_MAP_ENTRY_BYTES = 24
_SEGMENT_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, LOG_SUFFIX)
_WRITE_CHUNK_BYTES = 1 << 20

# Named crash points of the swap, for tests and the simulator: `apply_clean` raises
# CleanCrash at the named one (nothing in production names one).
CRASH_POINTS = ("after-swap-rename", "after-old-deleted", "after-new-renamed")


class CleanCrash(Exception):
    """Raised at a named crash point: the test then crashes the disk."""


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

    def run(self, throttle: Callable[[int], None] | None = None) -> CleanStats:
        """Flush what the range needs, map the dirty part, write every `.cleaned` file
        (durable on return). `throttle(n)` is called after each `n` bytes read. Touches no
        file the log uses, so it may run while the event loop appends and reads."""
        self.run_flush()
        offset_map = self._build_offset_map(throttle)
        txns = _TxnTracker(self.aborted)
        read = written = removed = 0
        for group in self.groups:
            r, w, n = self._clean_group(group, offset_map, txns, throttle)
            read, written, removed = read + r, written + w, removed + n
        unchanged = tuple(g.base_offset for g in self.groups if g.unchanged)
        indexes = tuple((g.base_offset, *g.indexes) for g in self.groups if g.indexes is not None)
        self.stats = CleanStats(read, written, removed, unchanged, indexes)
        return self.stats

    def _check_cancel(self) -> None:
        if self._cancelled:
            raise CleanCancelled(self.dir_path)

    def _build_offset_map(self, throttle: Callable[[int], None] | None) -> dict[bytes, int]:
        """Key -> offset of its last record in the dirty part, skipping aborted data and
        markers (Kafka's Cleaner.buildOffsetMap)."""
        offset_map: dict[bytes, int] = {}
        dirty = self.sources[self.dirty_index :]
        first_dirty = dirty[0].base_offset
        txns = _TxnTracker(tuple(a for a in self.aborted if a.last_offset >= first_dirty))
        for segment in dirty:
            for position, header in segment.iter_headers(0):
                self._check_cancel()
                if header.is_control:
                    txns.on_marker(header, _marker_kind(segment, position, header))
                    continue
                if txns.on_data(header) or header.records_count == 0:
                    continue
                batch = segment.read_batch(position, header)
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
        offset_map: dict[bytes, int],
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
            for position, header in source.iter_headers(0):
                self._check_cancel()
                batch = source.read_batch(position, header)
                read += header.size
                kept, dropped, abort_entry = self._filter(batch, header, offset_map, txns)
                removed += dropped
                same = same and kept is batch
                if abort_entry is not None and kept is not None:
                    group.aborted.append(abort_entry)
                if kept is None:
                    continue
                kept_header = read_header(kept)
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
        file.flush()
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
        batch: bytes,
        header: BatchHeader,
        offset_map: dict[bytes, int],
        txns: _TxnTracker,
    ) -> tuple[bytes | None, int, AbortedTxn | None]:
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


def _marker_kind_of(batch: bytes, header: BatchHeader) -> ControlType | None:
    if header.records_count == 0:
        return None
    return decode_control_batch(batch)[1].kind


def _marker_kind(segment: LogSegment, position: int, header: BatchHeader) -> ControlType | None:
    if header.records_count == 0:
        return None
    return _marker_kind_of(segment.read_batch(position, header), header)


# ---------------------------------------------------------------------- planning


def read_first_dirty(disk: Disk, dir_path: str) -> int | None:
    return OffsetCheckpoint(disk, dir_path, CLEANER_OFFSET_FILE).read()


def write_first_dirty(disk: Disk, dir_path: str, offset: int) -> None:
    """Durable on return. Only an optimisation: a lost one makes the next clean map more."""
    OffsetCheckpoint(disk, dir_path, CLEANER_OFFSET_FILE).write(offset)


@dataclass(frozen=True)
class CleanableRange:
    dirty_index: int  # first dirty segment
    end_index: int  # first segment not cleaned
    dirty_ratio: float
    must_clean: bool  # max.compaction.lag.ms passed


def cleanable_range(log: PartitionLog, first_dirty: int, now_ms: int) -> CleanableRange | None:
    """Which segments a clean may cover now (Kafka's LogCleanerManager.cleanableOffsets), or
    None if there is nothing dirty there."""
    config = log.config
    segments = log.segments
    if "compact" not in config.cleanup_policy or len(segments) < 2:
        return None
    limit = min(log.last_stable_offset, segments[-1].base_offset)
    end_index = 0
    while end_index + 1 < len(segments) and segments[end_index + 1].base_offset <= limit:
        segment = segments[end_index]
        if (
            config.min_compaction_lag_ms > 0
            and segment.max_timestamp != NO_TIMESTAMP
            and segment.max_timestamp > now_ms - config.min_compaction_lag_ms
        ):
            break
        end_index += 1
    if not log.log_start_offset <= first_dirty <= log.log_end_offset:
        first_dirty = log.log_start_offset
    dirty_index = 0
    while dirty_index < end_index and segments[dirty_index + 1].base_offset <= first_dirty:
        dirty_index += 1
    if dirty_index >= end_index:
        return None
    clean_bytes = sum(s.size for s in segments[:dirty_index])
    dirty_bytes = sum(s.size for s in segments[dirty_index:end_index])
    total = clean_bytes + dirty_bytes
    ratio = dirty_bytes / total if total else 0.0
    must_clean = False
    if config.max_compaction_lag_ms < 2**63 - 1:
        first = next(iter(segments[dirty_index].iter_headers(0)), None)
        if first is not None and now_ms - first[1].max_timestamp > config.max_compaction_lag_ms:
            must_clean = True
    return CleanableRange(dirty_index, end_index, ratio, must_clean)


def plan_clean(
    log: PartitionLog,
    first_dirty: int,
    now_ms: int,
    settings: CleanerSettings,
    *,
    force: bool = False,
) -> CleanJob | None:
    """A job cleaning what `cleanable_range` allows, if its dirty ratio reaches
    min.cleanable.dirty.ratio (or max.compaction.lag.ms forces it, or `force`), else None."""
    found = cleanable_range(log, first_dirty, now_ms)
    if found is None:
        return None
    config = log.config
    if not (force or found.must_clean or found.dirty_ratio >= config.min_cleanable_dirty_ratio):
        return None
    segments = log.segments
    # The map holds the keys of whole segments (at least one): stop before a segment whose
    # offsets could overflow it (Kafka fills its map to the same bound).
    end_index = found.dirty_index + 1
    offsets = segments[found.dirty_index].next_offset - segments[found.dirty_index].base_offset
    capacity = settings.map_capacity
    while end_index < found.end_index:
        segment = segments[end_index]
        count = segment.next_offset - segment.base_offset
        if offsets + count > capacity:
            break
        offsets += count
        end_index += 1
    sources = segments[:end_index]
    end_offset = segments[end_index].base_offset
    groups = _group_by_size(sources, segments[end_index].base_offset, config)
    aborted = tuple(
        log.collect_aborted_transactions(sources[0].base_offset, end_offset)
    )
    producer_last = {
        e.producer_id: (e.last_offset, e.epoch) for e in log.producer_state.active_producers()
    }
    flush = log.begin_flush() if log.recovery_point < end_offset else None
    return CleanJob(
        disk=log.disk, dir_path=log.dir_path, config=config, sources=tuple(sources),
        groups=groups, dirty_index=found.dirty_index, end_offset=end_offset, aborted=aborted,
        producer_last=producer_last, now_ms=now_ms, truncations=log.truncation_count,
        flush=flush,
    )


def _group_by_size(
    sources: tuple[LogSegment, ...], end_offset: int, config: TopicConfig
) -> list[CleanedSegment]:
    """Consecutive segments cleaned into one while their sizes fit segment.bytes, their
    offsets fit a relative offset and their index entries fit one index (Kafka's
    groupSegmentsBySize)."""
    groups: list[CleanedSegment] = []
    i = 0
    while i < len(sources):
        first = sources[i]
        size = first.size
        entries = len(first.offset_index)
        j = i + 1
        while j < len(sources):
            nxt = sources[j]
            nxt_end = sources[j + 1].base_offset if j + 1 < len(sources) else end_offset
            if (
                size + nxt.size > config.segment_bytes
                or entries + len(nxt.offset_index) >= first.offset_index.max_entries
                or nxt_end - 1 - first.base_offset > INT32_MAX
            ):
                break
            size += nxt.size
            entries += len(nxt.offset_index)
            j += 1
        group_end = sources[j].base_offset if j < len(sources) else end_offset
        groups.append(CleanedSegment(first.base_offset, group_end, tuple(sources[i:j])))
        i = j
    return groups


# ---------------------------------------------------------------------- the swap


def _cleaned_paths(dir_path: str, base_offset: int, suffix: str) -> tuple[str, str, str]:
    final = os.path.join(dir_path, file_name(base_offset, suffix))
    return final + CLEANED_SUFFIX, final + SWAP_SUFFIX, final


def discard(job: CleanJob) -> None:
    """Remove the `.cleaned` files of a job that will not be applied."""
    for group in job.groups:
        if group.segment is not None:
            group.segment.file.close()
        for suffix in _SEGMENT_SUFFIXES:
            cleaned = _cleaned_paths(job.dir_path, group.base_offset, suffix)[0]
            try:
                if job.disk.exists(cleaned):
                    job.disk.remove(cleaned)
            except OSError as exc:  # the directory went with its topic
                logger.debug("%s: %s", cleaned, exc)


def apply_clean(log: PartitionLog, job: CleanJob, crash_at: str | None = None) -> int | None:
    """Swap the job's cleaned segments into `log` (event loop). Returns the new first dirty
    offset, or None if the log changed under the job (truncated, segments deleted, closed):
    the job is then discarded and the log is as it was.

    Durable on return: a crash at any point leaves the old segments or the new ones."""
    if (
        log.is_closed
        or job.stats is None
        or job.truncations != log.truncation_count
        or log.segments[: len(job.sources)] != job.sources
    ):
        discard(job)
        return None
    if job.flush is not None:
        log.complete_flush(job.flush)
    disk = job.disk
    unchanged = set(job.stats.unchanged)
    changed = [g for g in job.groups if g.base_offset not in unchanged]
    # 1. `.cleaned` -> `.swap`, the indexes of every group first, then the `.log`s: a
    # `.log.swap` is the commit point, so its indexes must be durable before it is. One
    # directory fsync per phase, not per file.
    _rename_all(disk, job.dir_path, changed, CLEANED_SUFFIX, SWAP_SUFFIX)
    _crash_point(crash_at, "after-swap-rename")

    # 2. The replaced segments go (renamed `.deleted`, removed after file.delete.delay.ms so
    # a fetch already handed a range of them still reads it); 3. `.swap` -> final names, the
    # indexes before the `.log`s again, and the new segments take their places.
    indexes = {base: (offsets, times) for base, offsets, times in job.stats.indexes}

    def install() -> list[LogSegment]:
        _crash_point(crash_at, "after-old-deleted")
        _rename_all(disk, job.dir_path, changed, SWAP_SUFFIX, "")
        return [_open_cleaned(log, group, indexes.get(group.base_offset)) for group in changed]

    for group in job.groups:
        if group.segment is not None:  # written in this process
            group.segment.file.close()
    log.replace_segments([s for g in changed for s in g.sources], install)
    _crash_point(crash_at, "after-new-renamed")
    write_first_dirty(disk, job.dir_path, job.end_offset)
    return job.end_offset


def _rename_all(
    disk: Disk, dir_path: str, groups: list[CleanedSegment], from_suffix: str, to_suffix: str
) -> None:
    """Rename the files of `groups` from `<name><from>` to `<name><to>`: every index file,
    a directory fsync, every `.log`, a directory fsync."""
    for suffixes in (_SEGMENT_SUFFIXES[:-1], _SEGMENT_SUFFIXES[-1:]):
        for group in groups:
            for suffix in suffixes:
                final = os.path.join(dir_path, file_name(group.base_offset, suffix))
                if disk.exists(final + from_suffix):
                    disk.rename(final + from_suffix, final + to_suffix, durable=False)
        disk.sync_dir(dir_path)


def _open_cleaned(
    log: PartitionLog, group: CleanedSegment, indexes: tuple[bytes, bytes] | None
) -> LogSegment:
    """The swapped-in segment with the indexes the job built (its index files are written at
    the next clean shutdown: `indexes_dirty`; recovery rebuilds them after a crash)."""
    segment = LogSegment.open_existing(
        log.disk, log.dir_path, group.base_offset, log.config, group.sources[0].created_ms
    )
    try:
        if indexes is None:
            raise CorruptIndexError("no indexes from the job")
        segment.offset_index = OffsetIndex.from_bytes(
            group.base_offset, indexes[0], segment.offset_index.max_entries, segment.size
        )
        segment.time_index = TimeIndex.from_bytes(
            group.base_offset, indexes[1], segment.time_index.max_entries, group.end_offset
        )
        last_time = segment.time_index.last_entry()
        if last_time is not None:
            segment.max_timestamp, segment.offset_of_max_timestamp = last_time
    except CorruptIndexError:
        segment.recover()  # unreachable unless the job was wrong: rebuild from the log
    segment.load_inactive(group.end_offset)
    segment.indexes_dirty = True
    segment.txn_index.load()
    return segment


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

        return job.run(throttle_and_check)
    finally:
        for segment in sources:
            segment.close()
        for group in groups:
            if group.segment is not None:
                group.segment.file.close()


def _crash_point(crash_at: str | None, name: str) -> None:
    assert crash_at is None or crash_at in CRASH_POINTS, crash_at
    if crash_at == name:
        raise CleanCrash(name)


def recover_swaps(disk: Disk, dir_path: str) -> int:
    """Before a log loads: drop the files of uncommitted cleans, complete committed swaps.
    Returns the number of swaps completed. Durable on return."""
    if not disk.exists(dir_path):
        return 0
    names = disk.listdir(dir_path)
    for name in names:
        if name.endswith(CLEANED_SUFFIX):
            disk.remove(os.path.join(dir_path, name))
    swaps = sorted(n for n in names if n.endswith(LOG_SUFFIX + SWAP_SUFFIX))
    for name in swaps:
        base = int(name[:20])
        swap_path = os.path.join(dir_path, name)
        end = _next_offset_of(disk, swap_path, base)
        # Every segment the swapped one replaces: base offsets in [base, end).
        for other in disk.listdir(dir_path):
            if len(other) < 20 or not other[:20].isdigit() or other.endswith(SWAP_SUFFIX):
                continue
            other_base = int(other[:20])
            if base <= other_base < max(end, base + 1) and other[20:] in _SEGMENT_SUFFIXES:
                disk.remove(os.path.join(dir_path, other))
        for suffix in _SEGMENT_SUFFIXES:
            _, swap, final = _cleaned_paths(dir_path, base, suffix)
            if disk.exists(swap):
                disk.rename(swap, final)
        logger.warning("%s: completed the swap of cleaned segment %d", dir_path, base)
    # `.swap` index files whose `.log.swap` never came: an uncommitted clean.
    for name in disk.listdir(dir_path):
        if name.endswith(SWAP_SUFFIX):
            disk.remove(os.path.join(dir_path, name))
    return len(swaps)


def _next_offset_of(disk: Disk, path: str, base_offset: int) -> int:
    """One past the last batch of a fully written (fsynced) segment file."""
    file: DiskFile = disk.open(path)
    try:
        size = file.size()
        position = 0
        next_offset = base_offset
        while position + HEADER_SIZE <= size:
            header = read_header(file.read(position, HEADER_SIZE))
            if header.size < HEADER_SIZE or position + header.size > size:
                break
            next_offset = header.next_offset
            position += header.size
        return next_offset
    finally:
        file.close()
