"""One partition's log: an ordered list of segments and the offsets that describe it.

Owns: `PartitionLog` (Kafka's UnifiedLog + LocalLog, with LogLoader's recovery): offset
assignment on append, segment rolls, reads as file ranges, flush bookkeeping (recovery point),
timestamp lookups, retention and DeleteRecords (log start offset), truncation, recovery.

On-disk layout of a partition directory (`<topic>-<partition>/`):
    <base offset>.log / .index / .timeindex   segments (see segment.py)
    <base offset>.txnindex                    aborted transactions whose markers are in
                                              that segment (see txn_index.py)
    *.deleted                                 files of deleted segments, removed after
                                              file.delete.delay.ms (Kafka's asyncDelete)
    *.cleaned, *.swap                         a compaction in progress; completed or dropped
                                              before the log loads (see cleaner.py)
    cleaner-offset-checkpoint                 where the last compaction ended (cleaner.py)
    recovery-point, high-watermark, log-start-offset, clean-shutdown   (see checkpoint.py)
    <offset>.snapshot                         producer state as of that offset (see
                                              producer_state.py)
    leader-epoch-checkpoint                   where each leader epoch starts (leader_epoch.py)

Invariants (docs/guarantees.md rules 1, 2, 4, 6):
- log_start_offset <= high_watermark <= log_end_offset, and recovery_point <= log_end_offset.
- Segments are sorted by base offset and contiguous: each segment's next offset is the next
  segment's base offset; only the last (active) segment takes appends.
- Every batch below `recovery_point` is durable (it was fsynced, or recovery found and
  re-synced it). Recovery starts at the segment holding the checkpointed recovery point, or,
  given the data directory's recovery checkpoint (log_dir.py), at the byte where the batches
  below it end when that is in the active segment; `_recovery_position`, when set, is that
  byte (segment base, position in its .log).
- Offsets are dense and assigned here, by patching each batch's base offset in place.
- `producer_state` describes exactly the batches below LEO (idempotent producers, KIP-98):
  every append is checked against it before anything is written, and every change of LEO
  other than an append (recovery, truncation) rebuilds it from a snapshot and the log.
  After a clean stop it is loaded at the first use of the log (the `producer_state`
  property, and every call that changes the log, loads it first), so it holds for every
  reader; until then the snapshots on disk are the ones the stop left, and none is rewritten.
- `leader_epochs` has an entry for the epoch of every batch in the log (written durably before
  the batch), none at or above LEO and none below the log start (KIP-101, KIP-279).
- Transactions (KIP-98): `producer_state` also knows every ongoing transaction and the
  completed ones whose marker HW has not passed; every ABORT marker in the log has its entry
  in its segment's `.txnindex` (written at the append, leader and follower alike; truncated
  with the log; rebuilt by recovery for every segment it re-scans, by replaying the producer
  state from a snapshot at or below the first re-scanned offset).
- log_start_offset <= last_stable_offset <= high_watermark (docs/guarantees.md rule 2).

Visibility and durability: an append is visible to `read` on return, durable once a flush
that covers it completes (`begin_flush` / `FlushJob.run` / `complete_flush`), and committed
once the replication layer moves the high watermark past it (`set_high_watermark`).

Changes without an fsync: no call on the event loop waits for an fsync (a slow disk would
stall every connection). A truncation (`truncate_to`, `truncate_fully_and_start_at`) and a
new log start (`delete_records_before`, `enforce_retention`) change the files at once (the
cut, the checkpoints rewritten without an fsync, segments renamed `.deleted`, snapshots
removed) and owe their fsyncs to the next flush job, which the broker schedules and runs in
its sync pool: the rewritten files, then the directory, then the segment files (`dirs_first`),
so the lowered checkpoints and the renames are durable before any byte appended after them.
The rules that keep this safe:
- Nothing is appended after a cut before the cut is durable (`cut_durable`): a follower
  sends no fetch, and a replica that leads meanwhile refuses produce (a retriable
  NOT_LEADER_OR_FOLLOWER). The job syncs the lowered checkpoints (recovery point, HW, log
  start, leader epochs) before the cut file. A crash before the job completes may bring the
  truncated batches back, above the recovery point or below a checkpoint not yet lowered:
  they are intact batches this replica once had (nothing was written over them), and its
  next fetch finds the divergence by leader epoch and truncates them again (KIP-101/279), as
  Kafka's own truncation, which does not fsync the cut either, relies on.
- A DeleteRecords answer waits until the new log start is durable (`changes_durable`). A
  crash before may keep the old log start, or the first remaining segment's base: load
  takes the larger of the checkpoint and that base, so the log start never falls below what
  an answer reported.
- A failed fsync in that job is a failed flush: the log directory goes offline and nothing
  depending on it is acknowledged (broker/node.py).

The log never reads the clock: every time-dependent call takes `now_ms`.
"""

from __future__ import annotations

import logging
import os
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.checkpoint import (
    CLEAN_SHUTDOWN_FILE,
    HIGH_WATERMARK_FILE,
    LOG_START_OFFSET_FILE,
    RECOVERY_POINT_FILE,
    CleanShutdownMarker,
    OffsetCheckpoint,
)
from ackly.log.clean_swap import recover_swaps
from ackly.log.disk import TEMP_SUFFIX, Disk, DiskFile, PendingSyncs, sync_all
from ackly.log.index import INT32_MAX
from ackly.log.leader_epoch import LeaderEpochCache, entries_from_batches
from ackly.log.log_dir import CleanLogState, RecoveryCheckpoint
from ackly.log.producer_state import (
    DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    AppendOrigin,
    CompletedTxn,
    ProducerStateManager,
)
from ackly.log.segment import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    AppendedBatch,
    LogSegment,
    parse_file_name,
)
from ackly.log.txn_index import TXN_INDEX_SUFFIX, AbortedTxn
from ackly.protocol.record_codec import ControlRecord, decode_batch, decode_control_batch
from ackly.protocol.records import (
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    patch_base_offset,
    patch_leader_epoch,
    patch_log_append_time,
)
from ackly.types import NO_TIMESTAMP, WallClock, same_clock

logger = logging.getLogger(__name__)

LOG_APPEND_TIME = "LogAppendTime"
# A recovery that replayed at least this many batches into the producer state writes a
# snapshot of it (see _load_producer_state).
_SNAPSHOT_AFTER_REPLAYED_BATCHES = 1_000


@dataclass(frozen=True)
class AppendResult:
    first_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless message.timestamp.type=LogAppendTime
    log_start_offset: int
    # The append repeated batches already in the log (an idempotent producer's retry):
    # nothing was written, and the offsets are those of the original append.
    duplicate: bool = False


@dataclass(frozen=True)
class FileRange:
    """A byte range of one segment file holding whole batches (for sendfile)."""

    file: DiskFile
    position: int
    size: int


@dataclass(frozen=True)
class ReadResult:
    ranges: tuple[FileRange, ...]
    size: int  # sum of the ranges' sizes


EMPTY_READ = ReadResult((), 0)


MapFn = Callable[[Callable[[Any], None], Iterable[Any]], Iterable[None]]


def _serial_map(fn: Callable[[Any], None], items: Iterable[Any]) -> Iterable[None]:
    return map(fn, items)


class FlushJob:
    """An fsync of everything appended before `begin_flush`, to run off the event loop.

    `run` only fsyncs files and directories, so it is safe in a worker thread while the event
    loop keeps appending; hand the job back to `complete_flush` on the event loop afterwards.
    Besides the segments it syncs the files the log wrote without an fsync since the last job
    (`sync_paths`: a roll's indexes and snapshot, leader epochs, checkpoints) and the
    directories holding new entries (`sync_dirs`), so that nothing the recovery point will
    vouch for rests on a file or a name a crash could still take.

    A job that carries changes the event loop made without their fsyncs (`changes` > 0: a
    truncation, a new log start; see PartitionLog "Changes without an fsync") syncs its
    directories before its segment files (`dirs_first`): the lowered checkpoints, the removed
    snapshots and the segments renamed away are durable before any byte appended after them.
    """

    def __init__(
        self,
        files: tuple[DiskFile, ...],
        upto_offset: int,
        truncations: int,
        disk: Disk | None = None,
        sync_paths: tuple[str, ...] = (),
        sync_dirs: tuple[str, ...] = (),
        upto_position: tuple[int, int] | None = None,
        changes: int = 0,
    ) -> None:
        self.files = files
        self.upto_offset = upto_offset
        # (base offset of the active segment, its .log size) when the job began: where
        # `upto_offset` lies, for the recovery checkpoint (log_dir.py).
        self.upto_position = upto_position
        self.truncations = truncations
        self.disk = disk
        self.sync_paths = sync_paths
        self.sync_dirs = sync_dirs
        self.changes = changes  # the log's count of owed changes this job makes durable

    @property
    def dirs_first(self) -> bool:
        return self.changes > 0

    def run(self, sync_dirs: bool = True) -> None:
        """Every batch below `upto_offset` is durable on return (its directory entries too,
        unless `sync_dirs` is False: then the caller syncs `sync_dirs`; see `run_flush_round`)."""
        # The files the log wrote about itself first (a new partition's topic id marker
        # before any of its records), then the records, then the names.
        if self.disk is not None:
            sync_all(self.disk, self.sync_paths, self.sync_dirs if self.dirs_first else ())
        for file in self.files:
            file.flush()
        if self.disk is not None and sync_dirs and not self.dirs_first:
            sync_all(self.disk, (), self.sync_dirs)

    def __repr__(self) -> str:
        return f"FlushJob(upto_offset={self.upto_offset}, files={len(self.files)})"


def run_flush_round(jobs: list[FlushJob], map_fn: MapFn = _serial_map) -> None:
    """Run a group flush: every job's files, then each directory once however many jobs name
    it (a round that first flushes a thousand new partitions fsyncs the data directory once).
    `map_fn` runs the jobs, then the directories: the shell passes a thread pool's `map`, so
    that many fsyncs of different files wait on the disk together (a file system commits
    concurrent fsyncs in one journal transaction) instead of one after the other."""
    list(map_fn(_run_without_dirs, jobs))
    dirs: set[tuple[Disk, str]] = set()
    for job in jobs:
        if job.disk is not None and not job.dirs_first:  # those synced their own
            dirs.update((job.disk, path) for path in job.sync_dirs)
    list(map_fn(_sync_dir, sorted(dirs, key=lambda d: d[1])))


def _run_without_dirs(job: FlushJob) -> None:
    job.run(sync_dirs=False)


def _sync_dir(entry: tuple[Disk, str]) -> None:
    entry[0].sync_dir(entry[1])


@dataclass
class _PendingDeletion:
    due_ms: int
    file: DiskFile
    paths: list[str]


class PartitionLog:
    """The log of one partition replica on one broker."""

    def __init__(
        self,
        disk: Disk,
        dir_path: str,
        config: TopicConfig,
        now_ms: int,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        wall_clock: WallClock = same_clock,
    ) -> None:
        """Use `PartitionLog.open`."""
        self.disk = disk
        self.wall_clock = wall_clock  # LogAppendTime and retention.ms (types.py)
        self.dir_path = dir_path
        self.config = config
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []  # base offsets of _segments, for bisect
        self._log_start_offset = 0
        self._high_watermark = 0
        self._recovery_point = 0
        # (segment base, byte position in its .log) where the batches below the recovery
        # point end, when known exactly (log_dir.py's recovery checkpoint records it).
        self._recovery_position: tuple[int, int] | None = None
        # Called before the log goes below what a recovery checkpoint may record of it (a
        # truncation) or is deleted: the broker removes the data directory's checkpoint, durably
        # for a deletion, else (False) without an fsync: the truncation's flush job syncs the
        # data directory with the cut (`_before_truncation`).
        self.before_truncation: Callable[[bool], None] | None = None
        # What opening the log checked after a crash: segments recovered and bytes whose CRC
        # was computed (0 and 0 after a clean stop, or for a log without unflushed writes).
        self.recovered_segments = 0
        self.recovered_bytes = 0
        # Bumped by every truncate_to: a flush that began before a truncation must not move
        # the recovery point over offsets that were rewritten after it.
        self._truncations = 0
        self._pending_deletions: list[_PendingDeletion] = []
        self._clock_ms = now_ms  # latest now_ms seen: deadlines of deletions without a now_ms
        self._closed = False
        self._closing_flush: FlushJob | None = None  # between begin_close and finish_close
        self._recovery_point_file = OffsetCheckpoint(disk, dir_path, RECOVERY_POINT_FILE)
        self._high_watermark_file = OffsetCheckpoint(disk, dir_path, HIGH_WATERMARK_FILE)
        self._log_start_file = OffsetCheckpoint(disk, dir_path, LOG_START_OFFSET_FILE)
        self._clean_shutdown = CleanShutdownMarker(disk, dir_path)
        # Files written (and names made) without an fsync, synced by the next flush job: see
        # FlushJob and `_sync_pending`. Nothing on the event loop waits for an fsync of them.
        self.syncs = PendingSyncs(disk)
        # Changes made without their fsyncs (a truncation's cut, a new log start, segments
        # renamed away), counted; the flush job that syncs them reports the count back. See
        # "Changes without an fsync" in the module docstring.
        self._owed_changes = 0
        self._synced_changes = 0
        self._owed_cut = 0  # the count at the last truncation
        # Files and directories taken by jobs begun while changes are owed: every such job
        # syncs them all again, so the one whose completion clears the changes synced them
        # itself, whichever thread ran the others (a clean's flush job runs in the cleaner's).
        self._owed_paths: set[str] = set()
        self._owed_dirs: set[str] = set()
        self._producer_state = ProducerStateManager(
            disk, dir_path, producer_id_expiration_ms, syncs=self.syncs
        )
        # After a clean stop the producer state is loaded at the first use of the log, not at
        # the open (see `producer_state`): (now_ms of the open, rebuild_from, the listing).
        self._deferred_producer_state: tuple[int, int, list[str] | None] | None = None
        self.leader_epochs = LeaderEpochCache(disk, dir_path, syncs=self.syncs)

    # ------------------------------------------------------------------ open and recovery

    @classmethod
    def open(
        cls,
        disk: Disk,
        dir_path: str,
        config: TopicConfig,
        now_ms: int,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        wall_clock: WallClock = same_clock,
        clean_state: CleanLogState | None = None,
        recovery: RecoveryCheckpoint | None = None,
    ) -> PartitionLog:
        """Create the partition directory, or load and recover what is in it (LogLoader).

        `clean_state` is what the data directory's checkpoints (log_dir.py) say of this log
        after a clean stop; without it the log's own clean-shutdown marker and checkpoints
        decide. `recovery` is the data directory's last recovery checkpoint of this log
        (after a crash): only what follows its position is checked. On return every batch in
        the log is CRC-valid, and the producer state describes every batch below LEO.

        A new partition costs no fsync here: an empty log has nothing a crash could lose.
        Its directory, its first segment's name and its files become durable with the first
        flush that makes a record in it durable (FlushJob syncs them first), and until then
        no record in it is acknowledged under flush.policy=always (docs/guarantees.md: acks
        wait for the flush). Under interval/never an acknowledged record may be lost to a
        power loss anyway until its flush; what a crash leaves here is an empty or missing
        directory, which the next start re-creates empty, as it would a partition whose
        unflushed records were lost.
        """
        self = cls(disk, dir_path, config, now_ms, producer_id_expiration_ms, wall_clock)
        if not disk.exists(dir_path):
            disk.makedirs(dir_path)
            self.syncs.add_dir(os.path.dirname(dir_path))  # the new name in the data directory
        self._load(now_ms, clean_state, recovery)
        return self

    def _load(
        self, now_ms: int, clean_state: CleanLogState | None, recovery: RecoveryCheckpoint | None
    ) -> None:
        disk, config = self.disk, self.config
        names = disk.listdir(self.dir_path)
        if any(name.endswith((".cleaned", ".swap")) for name in names):
            # A clean interrupted by a crash: finish its swap or drop it (see cleaner.py).
            recover_swaps(disk, self.dir_path)
            names = disk.listdir(self.dir_path)
        # Where the batches below the recovery point end, when known: (segment base, position).
        durable_end: tuple[int, int] | None = None
        if clean_state is not None:
            clean = True
            recovery_point: int | None = clean_state.recovery_point
            high_watermark: int | None = clean_state.high_watermark
            log_start: int | None = clean_state.log_start_offset
            if clean_state.segment_base >= 0:
                durable_end = (clean_state.segment_base, clean_state.position)
        elif recovery is not None:
            # After a crash, with the data directory's recovery checkpoint: exact where the
            # log's own files are conservative (they move once per segment).
            clean = False
            recovery_point = recovery.recovery_point
            high_watermark = recovery.high_watermark
            log_start = recovery.log_start_offset
            durable_end = (recovery.segment_base, recovery.position)
            if CLEAN_SHUTDOWN_FILE in names:
                self._clean_shutdown.remove()  # older than the crash: never to be trusted
        else:
            clean = CLEAN_SHUTDOWN_FILE in names and self._clean_shutdown.is_present()
            if clean:
                # Gone before anything changes: a crash from here on must not look clean.
                self._clean_shutdown.remove()
            recovery_point = self._recovery_point_file.read()
            high_watermark = self._high_watermark_file.read()
            log_start = self._log_start_file.read()

        bases: set[int] = set()
        txn_indexed: set[int] = set()  # segments with a .txnindex: only those are read
        segment_files: list[tuple[str, int, str]] = []  # (name, base offset, suffix)
        for name in names:
            if name.endswith((DELETED_SUFFIX, TEMP_SUFFIX)):
                disk.remove(os.path.join(self.dir_path, name))
                continue
            parsed = parse_file_name(name)
            if parsed is None:
                continue
            segment_files.append((name, *parsed))
            if parsed[1] == LOG_SUFFIX:
                bases.add(parsed[0])
            elif parsed[1] == TXN_INDEX_SUFFIX:
                txn_indexed.add(parsed[0])
        for name, base, suffix in segment_files:
            if suffix != LOG_SUFFIX and base not in bases:
                disk.remove(os.path.join(self.dir_path, name))  # index without its log

        segments = [
            LogSegment.open_existing(disk, self.dir_path, base, config, now_ms, self.syncs)
            for base in sorted(bases)
        ]
        if not segments:
            start = log_start or 0
            segments = [LogSegment.create(disk, self.dir_path, start, config, now_ms, self.syncs)]
        snapshot_names: list[str] | None = names
        tail_checked: LogSegment | None = None
        exact = False  # whether the batches below the recovery point end at `durable_end`
        if clean:
            recovered = self._load_clean(segments, recovery_point, durable_end)
        else:
            recovered, tail_checked, exact = self._recover_segments(
                segments, recovery_point or 0, durable_end
            )
        self.recovered_segments = len(recovered) + (tail_checked is not None)
        self.recovered_bytes = sum(s.recovered_bytes for s in recovered) + (
            0 if tail_checked is None else tail_checked.recovered_bytes
        )

        self._set_segments(segments)
        leo = self.log_end_offset
        start = max(segments[0].base_offset, log_start if log_start is not None else 0)
        if start > leo:
            # The log start was checkpointed (durably) above data that never became durable:
            # start afresh there, as Kafka's truncateFullyAndStartAt does.
            logger.warning("%s: log start %d above recovered end %d", self.dir_path, start, leo)
            for segment in segments:
                self._remove_segment_now(segment)
            self._set_segments(
                [LogSegment.create(disk, self.dir_path, start, config, now_ms, self.syncs)]
            )
            recovered, tail_checked, exact = [], None, False
            # No snapshot can describe the new, empty log (truncateFullyAndStartAt drops them).
            self._producer_state.scan_snapshots(names)
            self._producer_state.delete_all_snapshots()
            snapshot_names = None  # the listing names snapshots that are gone
        self._log_start_offset = start
        # Segments wholly below the log start: a deletion that was cut short by a crash.
        while len(self._segments) > 1 and self._segments[1].base_offset <= start:
            self._remove_segment_now(self._segments[0])
            self._set_segments(self._segments[1:])

        leo = self.log_end_offset
        if clean:
            self._recovery_point = leo
            self._recovery_position = (self._active.base_offset, self._active.size)
        else:
            # What recovery accepted after the recovery point may sit only in the page cache
            # (kill -9): it stays above the recovery point, as a fresh append would, and the
            # first flush round makes it durable in the flusher's threads (the broker schedules
            # it, `needs_flush`, and the shell runs it before it listens), so loading the logs
            # after a crash costs no fsync per partition on the event loop. Under
            # flush.policy=always HW does not pass it until then.
            self._recovery_point = max(min(recovery_point or 0, leo), start)
            if exact and self._recovery_point == recovery_point:
                self._recovery_position = durable_end
            elif self._recovery_point == leo:
                # Nothing after the recovery point: the whole active segment was flushed.
                self._recovery_position = (self._active.base_offset, self._active.size)
        hw = high_watermark if high_watermark is not None else start
        self._high_watermark = min(max(hw, start), leo)
        if recovery is not None:
            # The log's own checkpoints are left as they are (never above the truth), unless
            # recovery lost what the data directory's checkpoint counted: then lowered.
            if (hw > self._high_watermark or (log_start or 0) > self._log_start_offset
                    or (recovery_point or 0) > leo):
                self.write_checkpoints(durable=False)
        elif clean_state is None:
            # After a clean stop recorded by the data directory the log's own checkpoints are
            # left as they are: never above the truth, and within the segment holding the
            # recovery point, which is all a recovery after a later crash needs of them. After
            # a crash, what changed is conservative when lost (a lower HW, a log start below
            # segments that are gone): written without an fsync.
            self.write_checkpoints(durable=False)
        self._load_leader_epochs(recovered if tail_checked is None else [*recovered, tail_checked])
        # Aborted-transaction indexes: trusted below the recovery point (flushed with their
        # segments); the ones of re-scanned segments (or unreadable ones) are rebuilt by the
        # producer-state replay, which then starts at or below their first offset. A segment
        # without a .txnindex file has an empty index: no need to look for the file again.
        rebuild_from = leo
        for segment in self._segments:
            if segment in recovered or (
                segment.base_offset in txn_indexed and not segment.txn_index.load()
            ):
                segment.txn_index.reset()
                rebuild_from = min(rebuild_from, segment.base_offset)
            elif segment is tail_checked:
                # Checked from the recovery point on: its index is trusted below it (synced
                # with the batches), entries of markers a cut took go, and the replay from the
                # recovery point adds the ones after it.
                segment.txn_index.truncate_to(segment.next_offset)
                rebuild_from = min(rebuild_from, max(self._recovery_point, segment.base_offset))
        if clean and not recovered and rebuild_from == leo:
            # Nothing to rebuild: the snapshots and the log are as the clean stop left them,
            # and stay so until the first call that needs the state or changes the log
            # (every such call loads it first), so a start with thousands of partitions
            # reads no snapshot file, and a clean stop of a log never used rewrites none.
            # The HW of the open bounds the snapshot then chosen, whatever HW is at the load.
            self._deferred_producer_state = (
                now_ms, min(rebuild_from, self._high_watermark), snapshot_names
            )
            return
        self._load_producer_state(now_ms, rebuild_from, snapshot_names)
        for segment in self._segments:
            segment.txn_index.flush()

    @property
    def producer_state(self) -> ProducerStateManager:
        """The producers' state of this log, loaded now if the open deferred it."""
        if self._deferred_producer_state is not None:
            self._load_deferred_producer_state()
        return self._producer_state

    @property
    def producer_state_loaded(self) -> bool:
        return self._deferred_producer_state is None

    def _load_deferred_producer_state(self) -> None:
        deferred, self._deferred_producer_state = self._deferred_producer_state, None
        if deferred is None:
            return
        now_ms, rebuild_from, names = deferred
        # Every producer loaded counts as having appended at the open (as an eager load
        # would have it), so the expiry deadlines do not depend on when the log is first used.
        self._load_producer_state(now_ms, rebuild_from, names)
        for segment in self._segments:
            segment.txn_index.flush()

    def _load_leader_epochs(self, recovered: list[LogSegment]) -> None:
        """Load the leader-epoch checkpoint and align it with the recovered log (Kafka's
        LogLoader does the same); rebuild it from the batches' partition leader epochs if it
        is missing or garbled (a log written before it existed, or a torn disk). The epochs of
        the re-scanned segments are assigned again (Kafka's LogSegment.recover does): the
        checkpoint is synced only with the flush that makes their batches durable, so a crash
        may have kept a batch whose epoch the file does not know yet."""
        cache = self.leader_epochs
        if not cache.load() and self.log_end_offset > self._log_start_offset:
            found = [
                (h.partition_leader_epoch, h.base_offset)
                for h in self._headers_from(self._log_start_offset)
            ]
            cache.replace(entries_from_batches(found))
        elif recovered:
            for segment in self._segments:
                if segment in recovered:
                    for epoch, base_offset in segment.recovered_epochs:
                        if (
                            base_offset >= self._log_start_offset
                            and cache.epoch_for_offset(base_offset) != epoch
                        ):
                            cache.assign(epoch, base_offset)
        cache.truncate_from_end(self.log_end_offset)
        cache.truncate_from_start(self._log_start_offset)

    def _load_producer_state(
        self, now_ms: int, rebuild_from: int, names: list[str] | None = None
    ) -> None:
        """Rebuild the producer state of the recovered log (Kafka's LogLoader with
        ProducerStateManager.truncateAndReload): the newest snapshot at or below LEO, HW and
        `rebuild_from`, then the headers of every batch after it (records are read only for
        markers). `names`: the directory's listing, when the snapshots in it are current."""
        state = self._producer_state
        state.scan_snapshots(names)
        state.delete_snapshots_below(self._log_start_offset)
        if self._replay_producer_state(now_ms, rebuild_from) >= _SNAPSHOT_AFTER_REPLAYED_BATCHES:
            # A snapshot here spares the next recovery this replay. Only an optimisation (so
            # a full disk must not stop the start), and worth a file (and its fsync in the
            # first flush) only for a long replay: after a kill -9 of a broker with thousands
            # of partitions each replays its few unflushed batches.
            try:
                state.take_snapshot(self.log_end_offset)
            except KafkaError as exc:
                logger.warning("%s: no producer snapshot after recovery: %s", self.dir_path, exc)

    def _replay_producer_state(self, now_ms: int, rebuild_from: int | None = None) -> int:
        """Reload the producer state from the newest snapshot at or below LEO (dropping the
        ones above it) and replay the batches after it; returns how many were replayed.
        Without a snapshot the replay starts at the first segment.

        The snapshot is also at or below HW, so that the replay sees every marker HW has not
        passed (an unreplicated transaction holds the LSO back; snapshots do not keep them),
        and at or below `rebuild_from`, so that every ABORT marker from there on reaches its
        segment's aborted-transaction index (entries already there are kept, not doubled)."""
        state = self._producer_state
        leo = self.log_end_offset
        state.delete_snapshots_above(leo)
        limit = min(leo, self._high_watermark)
        if rebuild_from is not None:
            limit = min(limit, rebuild_from)
        loaded = state.load_latest_snapshot(limit, now_ms)
        start = self._segments[0].base_offset if loaded is None else loaded
        replayed = 0
        for segment, position, header in self._batches_from(start):
            marker = None
            if header.is_control and header.producer_id >= 0:
                marker = _read_marker(segment.read_batch(position, header))
            completed = state.replay(header, now_ms, marker)
            if completed is not None and completed.aborted:
                segment.txn_index.add_if_absent(completed.as_aborted())
            replayed += 1
        return replayed

    def _batches_from(self, offset: int) -> Iterator[tuple[LogSegment, int, BatchHeader]]:
        """(segment, position, header) of every batch holding an offset >= `offset`."""
        for segment in self._segments[self._segment_index(offset) :]:
            if offset >= segment.next_offset:
                continue  # nothing there (and a lazily loaded segment stays unread)
            position = 0
            if offset > segment.base_offset:
                located = segment.translate_offset(offset)
                if located is None:
                    continue
                position = located[0]
            for batch_position, header in segment.iter_headers(position):
                if header.last_offset >= offset:
                    yield segment, batch_position, header

    def _headers_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of every batch holding an offset >= `offset`, in log order."""
        for _, _, header in self._batches_from(offset):
            yield header

    def _load_clean(
        self, segments: list[LogSegment], recovery_point: int | None,
        durable_end: tuple[int, int] | None,
    ) -> list[LogSegment]:
        """After a clean stop: trust every segment as it is. Their index files are read at the
        first lookup, the active one's too when the clean stop recorded where the log ended
        (LEO and the .log size then) and the file still ends there: a start-up then reads no
        index and scans nothing, so its time depends on the number of partitions, not on the
        bytes stored. Otherwise the active segment's tail after its last index entry is
        walked. Returns the segments it had to recover (an active tail that does not frame)."""
        for i, segment in enumerate(segments[:-1]):
            segment.load_lazily(segments[i + 1].base_offset)
        active = segments[-1]
        if (
            recovery_point is not None
            and recovery_point >= active.base_offset
            and durable_end == (active.base_offset, active.size)
        ):
            active.load_lazily(recovery_point)
            return []
        if active.load_indexes(None) and active.load_active_tail():
            return []
        cut = active.recover()
        if cut:
            active.flush()  # as in _recover_segments: the cut must be durable first
        return [active]

    def _recover_segments(
        self, segments: list[LogSegment], recovery_point: int,
        durable_end: tuple[int, int] | None = None,
    ) -> tuple[list[LogSegment], LogSegment | None, bool]:
        """After a crash: load the segments below the one holding `recovery_point` as they are
        and recover that one and every later one (edited in place). Returns the segments
        recovered, the active segment if only its bytes after the recovery point were
        checked, and whether `durable_end` was used: it (segment base, position) says where the batches below the
        recovery point end, and when that is in the active segment, the bytes before it are
        trusted (it was fsynced) and a segment without bytes after it is not read at all."""
        bases = [s.base_offset for s in segments]
        first_to_recover = max(0, bisect_right(bases, recovery_point) - 1)
        last = segments[-1]
        if (
            durable_end is not None
            and first_to_recover == len(segments) - 1
            and durable_end[0] == last.base_offset
            and durable_end[1] <= last.size
        ):
            for i, segment in enumerate(segments[:-1]):
                segment.load_lazily(segments[i + 1].base_offset)
            position = durable_end[1]
            if position == last.size and recovery_point >= last.base_offset:
                # Nothing was written after the checkpoint: its index files may predate the
                # last truncation, so they are rebuilt from the headers at the first use.
                last.load_lazily(recovery_point, trust_index_files=False)
                return [], None, True
            cut = last.recover(durable_position=position)
            if cut:
                last.flush()  # see below: the cut must be durable before any append
            return [], last, True
        recovered: list[LogSegment] = []
        i = 0
        while i < len(segments):
            segment = segments[i]
            is_last = i == len(segments) - 1
            next_base = None if is_last else segments[i + 1].base_offset
            if i < first_to_recover:
                assert next_base is not None
                # Trusted as it is; its index files are read at the first lookup (a
                # start-up reads none but the recovered segments': its time depends on the
                # unflushed tail, not on the bytes stored).
                segment.load_lazily(next_base)
                i += 1
                continue
            cut = segment.recover()
            recovered.append(segment)
            if cut:
                # The cut itself must be durable before anything is appended after it:
                # else a later crash could bring back the cut bytes, and with them whole
                # batches that were lost (a torn write before a complete one). Only a
                # torn log pays this fsync.
                segment.flush()
            if next_base is not None and (cut or segment.next_offset != next_base):
                # Later segments would follow a gap: they hold writes that came after the
                # lost ones. Drop them, as LogLoader deletes segments after a torn one.
                logger.warning(
                    "%s: dropping %d segments after %d",
                    self.dir_path,
                    len(segments) - i - 1,
                    segment.base_offset,
                )
                for later in segments[i + 1 :]:
                    self._remove_segment_now(later)
                del segments[i + 1 :]
            elif next_base is not None:
                segment.on_become_inactive()
            i += 1
        return recovered, None, False

    def _remove_segment_now(self, segment: LogSegment) -> None:
        segment.close()
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
            path = segment.path(suffix)
            if self.disk.exists(path):
                self.disk.remove(path)

    def _set_segments(self, segments: list[LogSegment]) -> None:
        self._segments = segments
        self._bases = [s.base_offset for s in segments]

    # ------------------------------------------------------------------ state

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """LEO: the offset the next appended record will get."""
        return self._segments[-1].next_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @property
    def last_stable_offset(self) -> int:
        """LSO: the first offset of the oldest transaction that is ongoing or whose marker is
        not yet below HW, else HW; never below the log start (Kafka's
        UnifiedLog.lastStableOffset with firstUnstableOffset). read_committed reads stop here."""
        hw = self._high_watermark
        first = self.producer_state.first_unstable_offset(hw)
        if first is None:
            return hw
        return min(max(first, self._log_start_offset), hw)

    def collect_aborted_transactions(self, start_offset: int, upper_offset: int) -> list[AbortedTxn]:
        """Every aborted transaction holding an offset in [start_offset, upper_offset), from
        the segments' indexes (Kafka's LocalLog.collectAbortedTransactions): the search
        walks forward from the segment holding `start_offset` and stops at the first entry
        whose LSO reaches `upper_offset` (no later marker can end a transaction that began
        below it)."""
        self._check_open()
        found: list[AbortedTxn] = []
        for segment in self._segments[self._segment_index(start_offset) :]:
            for entry in segment.txn_index.entries:
                if entry.last_offset >= start_offset and entry.first_offset < upper_offset:
                    found.append(entry)
                if entry.last_stable_offset >= upper_offset:
                    return found
        return found

    @property
    def truncation_count(self) -> int:
        """Bumped by every truncation: a job planned before one must not be applied."""
        return self._truncations

    @property
    def is_closed(self) -> bool:
        return self._closed

    def replace_segments(
        self, old: list[LogSegment], install: Callable[[], list[LogSegment]]
    ) -> None:
        """Replace inactive segments `old` by the ones `install` opens (a clean's swap, see
        cleaner.py): `old` are renamed `.deleted` first (removed after file.delete.delay.ms,
        so ranges already handed out stay readable; one directory fsync for them all), then
        `install` runs and its segments take their places. The checkpoints are rewritten.
        Nothing here fsyncs: the renames and the checkpoints are owed to the next flush job
        (`_owe_change`; see clean_swap.py for why the order alone keeps a crash safe)."""
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        doomed = {id(s) for s in old}
        assert len(doomed) == len(old) and id(self._active) not in doomed
        rest = [s for s in self._segments if id(s) not in doomed]
        assert len(rest) + len(old) == len(self._segments), "replacing segments not in the log"
        self._set_segments(rest)
        self._schedule_deletion(old)
        self._owe_change()
        new = install()
        for segment in new:
            segment.syncs = self.syncs
        self._set_segments(sorted(rest + new, key=lambda s: s.base_offset))
        self.write_checkpoints(durable=False)

    @property
    def recovery_point(self) -> int:
        """Every batch below this offset is durable."""
        return self._recovery_point

    def recovery_checkpoint(self) -> RecoveryCheckpoint | None:
        """What the data directory's recovery checkpoint records of this log (log_dir.py):
        None while the position of the recovery point is not known (until the first flush
        after a truncation or a recovery that re-scanned segments)."""
        position = self._recovery_position
        if position is None or self._closed:
            return None
        return RecoveryCheckpoint(self._recovery_point, position[0], position[1],
                                  self._log_start_offset, self._high_watermark)

    def _before_truncation(self, *, deleting: bool = False) -> None:
        if self.before_truncation is None:
            return
        if deleting:
            # Synced with the data directory by the removal of the deleted directory, off
            # the event loop (`remove_deleted_dir`). A log created later under the same name
            # is never described by an entry that a power loss brought back: its directory
            # is made after this removal in the same directory (kept by a crash only with
            # it), and its first flush syncs that directory before any of its records is
            # durable.
            self.before_truncation(False)
            return
        # The checkpoint's removal goes with the cut: this log's next flush job syncs the
        # data directory before the cut's segment files, and nothing is appended after the
        # cut until that job ran (`cut_durable`). Until then a crash may keep the entry, but
        # it describes bytes that were durable (the cut ones come back, as the docstring's
        # "Changes without an fsync" allows) or a position the cut file no longer reaches,
        # which recovery does not trust.
        self.before_truncation(False)
        self.syncs.add_dir(os.path.dirname(self.dir_path))

    @property
    def needs_flush(self) -> bool:
        """Batches above the recovery point wait for a flush (appends, or what recovery
        accepted after a crash), or changes wait for their fsyncs."""
        return self.log_end_offset > self._recovery_point or not self.changes_durable

    @property
    def changes_durable(self) -> bool:
        """Every truncation and log start move made so far is durable (a flush job synced
        them)."""
        return self._synced_changes >= self._owed_changes

    @property
    def cut_durable(self) -> bool:
        """The last truncation is durable: a follower may fetch past it."""
        return self._synced_changes >= self._owed_cut

    def _owe_change(self) -> None:
        """A change was made without its fsyncs: the next flush job must sync it."""
        self._owed_changes += 1
        # The directory holds renamed, removed or new entries (and rewritten checkpoints).
        self.syncs.add_dir(self.dir_path)

    def owe_sync(self) -> int:
        """Have the next flush job sync what was written without an fsync so far (the
        broker schedules it: `needs_flush`); returns the count that `synced_through` waits
        for (a clean's swap waits so for its checkpoints, clean_swap.py)."""
        self._check_open()
        self._owe_change()
        return self._owed_changes

    def synced_through(self, count: int) -> bool:
        """A flush job synced every change owed up to `count` (from `owe_sync`)."""
        return self._synced_changes >= count

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return tuple(self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def _active(self) -> LogSegment:
        return self._segments[-1]

    def _check_open(self) -> None:
        assert not self._closed, f"{self.dir_path}: log used after close"

    def _advance_clock(self, now_ms: int) -> None:
        self._clock_ms = max(self._clock_ms, now_ms)

    def _segment_index(self, offset: int) -> int:
        """Index of the segment whose range holds `offset` (0 if below them all)."""
        return max(0, bisect_right(self._bases, offset) - 1)

    def set_high_watermark(self, offset: int) -> None:
        """Move HW forward to `offset`, clamped to [log_start_offset, LEO]. A lower value is
        ignored: HW goes back only through `truncate_to`."""
        self._check_open()
        offset = min(max(offset, self._log_start_offset), self.log_end_offset)
        if offset > self._high_watermark:
            self._high_watermark = offset

    def update_config(self, config: TopicConfig) -> None:
        """New topic config (AlterConfigs); takes effect from the next append/roll/retention."""
        self.config = config
        for segment in self._segments:
            segment.update_config(config)

    # ------------------------------------------------------------------ append and roll

    def append(
        self,
        records: bytearray,
        headers: list[BatchHeader],
        leader_epoch: int,
        now_ms: int,
        origin: AppendOrigin = AppendOrigin.CLIENT,
        verification_guard: object | None = None,
    ) -> AppendResult:
        """Append validated batches as the leader: assign offsets from LEO and stamp them.

        `records` holds the batches back to back and `headers` their parsed headers, as
        `records.validate_batches` returned them. Batches of idempotent producers are first
        checked against the producer state (see producer_state.py; all of them before any is
        written): a refusal raises KafkaError and writes nothing; a retry of batches already
        in the log writes nothing and returns the original offsets with `duplicate` set.
        Each written batch's base offset and partition leader epoch are patched in place
        (outside the CRC); with LogAppendTime its timestamp too (the CRC is re-signed). Rolls
        first when needed.

        Transactional batches and markers (control batches, COORDINATOR origin only) go
        through the producer state's transaction checks too (`verification_guard`: KIP-890,
        see producer_state.py); an ABORT marker's entry goes to the active segment's
        aborted-transaction index.

        Visible to `read` on return; not durable (see `begin_flush`); not committed.
        Raises KafkaError(KAFKA_STORAGE_ERROR) if the disk refuses: then nothing was written
        and LEO did not move.
        """
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        assert headers, "append needs at least one batch"
        self._advance_clock(now_ms)
        log_append_time = self.config.message_timestamp_type == LOG_APPEND_TIME
        append_time_ms = self.wall_clock(now_ms) if log_append_time else -1
        # The producer state refuses a client's control batch whatever it holds: only a
        # coordinator's markers are worth decoding.
        markers = [] if origin is AppendOrigin.CLIENT else _markers_of(records, headers)
        plan = self.producer_state.prepare(headers, origin, markers, verification_guard)
        if plan.duplicate is not None:
            original = plan.duplicate
            return AppendResult(
                first_offset=original.first_offset,
                last_offset=original.last_offset,
                log_append_time_ms=original.timestamp if log_append_time else -1,
                log_start_offset=self._log_start_offset,
                duplicate=True,
            )
        offset_count = sum(h.last_offset_delta + 1 for h in headers)
        self.maybe_roll(now_ms, incoming_bytes=len(records), incoming_offsets=offset_count)
        first_offset = next_offset = self.log_end_offset
        if leader_epoch >= 0:
            # Durable before the batch is written: a crash never leaves a batch whose epoch
            # the cache does not know (a no-op after the first append of the epoch).
            self.leader_epochs.assign(leader_epoch, first_offset)
        position = 0
        batches: list[AppendedBatch] = []
        for header in headers:
            patch_base_offset(records, position, next_offset)
            patch_leader_epoch(records, position, leader_epoch)
            max_timestamp = header.max_timestamp
            if log_append_time:
                patch_log_append_time(records, position, header.size, append_time_ms)
                max_timestamp = append_time_ms
            last_offset = next_offset + header.last_offset_delta
            batches.append(
                AppendedBatch(position, next_offset, last_offset, header.size, max_timestamp)
            )
            next_offset = last_offset + 1
            position += header.size
        assert position == len(records), "headers do not cover records"
        self._active.append(records, batches)
        if plan.batches:
            self._index_completed(self.producer_state.apply(
                plan, first_offset, now_ms, append_time_ms
            ))
        return AppendResult(
            first_offset=first_offset,
            last_offset=next_offset - 1,
            log_append_time_ms=append_time_ms,
            log_start_offset=self._log_start_offset,
        )

    def append_replicated(
        self, records: bytearray, headers: list[BatchHeader], now_ms: int
    ) -> AppendResult:
        """Append batches copied from the leader (a follower's append; Kafka's
        appendAsFollower): offsets, partition leader epochs and timestamps are the leader's and
        are kept as they are. The first batch must start at LEO and the batches must be
        in increasing order, with holes only where the leader's log has them (compaction); else
        KafkaError(CORRUPT_MESSAGE) and nothing is written. Producer state is
        updated without checks (AppendOrigin.REPLICATION); the leader-epoch cache learns every
        new epoch (durably, before the batches are written).

        Visible to `read` on return; not durable (see `begin_flush`); HW is the caller's.
        """
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        assert headers, "append needs at least one batch"
        self._advance_clock(now_ms)
        expected = first_offset = self.log_end_offset
        for h in headers:
            if h.base_offset < expected:
                raise KafkaError(
                    ErrorCode.corrupt_message,
                    f"replicated batch at {h.base_offset}, expected {expected}",
                )
            expected = h.next_offset
        plan = self.producer_state.prepare(
            headers, AppendOrigin.REPLICATION, _markers_of(records, headers)
        )
        self.maybe_roll(
            now_ms, incoming_bytes=len(records), incoming_offsets=expected - first_offset
        )
        position = 0
        batches: list[AppendedBatch] = []
        for h in headers:
            if h.partition_leader_epoch >= 0:
                self.leader_epochs.assign(h.partition_leader_epoch, h.base_offset)
            batches.append(
                AppendedBatch(position, h.base_offset, h.last_offset, h.size, h.max_timestamp)
            )
            position += h.size
        assert position == len(records), "headers do not cover records"
        self._active.append(records, batches)
        if plan.batches:
            self._index_completed(self.producer_state.apply(plan, first_offset, now_ms))
        return AppendResult(
            first_offset=first_offset,
            last_offset=expected - 1,
            log_append_time_ms=-1,
            log_start_offset=self._log_start_offset,
        )

    def _index_completed(self, completed: list[CompletedTxn]) -> None:
        """Aborted transactions just completed by markers of the active segment go to its
        index (Kafka's LogSegment.updateTxnIndex)."""
        for txn in completed:
            if txn.aborted:
                self._active.txn_index.append(txn.as_aborted())

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop the whole log and restart it empty at `offset` (a follower that fell behind the
        leader's log start; Kafka's truncateFullyAndStartAt). Durable once `cut_durable`
        (the next flush job), like `truncate_to`."""
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        assert offset >= 0, offset
        self._before_truncation()
        self._truncations += 1
        self._recovery_position = None
        self._owe_change()
        self._owed_cut = self._owed_changes
        self.producer_state.delete_all_snapshots()
        self.producer_state.clear()
        self.leader_epochs.clear()
        self._recovery_point = offset
        self._recovery_point_file.write_unsynced(offset, self.syncs)
        doomed = self._segments
        self._set_segments([])
        self._schedule_deletion(doomed)
        self._set_segments(
            [LogSegment.create(
                self.disk, self.dir_path, offset, self.config, self._clock_ms, self.syncs
            )]
        )
        self._log_start_offset = offset
        self._log_start_file.write_unsynced(offset, self.syncs)
        self._high_watermark = offset
        self._high_watermark_file.write_unsynced(offset, self.syncs)

    def maybe_roll(self, now_ms: int, incoming_bytes: int = 0, incoming_offsets: int = 0) -> None:
        """Roll if the active segment cannot take `incoming_bytes` more (segment.bytes), is
        older than segment.ms, has a full index, or would overflow its relative offsets
        (Kafka's LogSegment.shouldRoll). Like Kafka, only append calls this for real: an idle
        partition keeps its segment. An empty segment never rolls."""
        self._check_open()
        active = self._active
        size = active.size
        if size == 0:
            return
        config = self.config
        if (
            size + incoming_bytes > config.segment_bytes
            or now_ms - active.created_ms > config.segment_ms - self._roll_jitter_ms()
            or active.index_full()
            or self.log_end_offset + incoming_offsets - 1 - active.base_offset > INT32_MAX
        ):
            self.roll(now_ms)

    def _roll_jitter_ms(self) -> int:
        """How much earlier than segment.ms this log rolls (segment.jitter.ms). Kafka draws it
        at random for each segment, below min(segment.jitter.ms, segment.ms); here each log
        takes a fixed share of that range, from a hash of its directory name, so that logs
        created together spread their rolls and the core needs no randomness for it."""
        jitter_ms = min(self.config.segment_jitter_ms, self.config.segment_ms)
        if jitter_ms <= 0:
            return 0
        return zlib.crc32(os.path.basename(self.dir_path).encode()) % jitter_ms

    def roll(self, now_ms: int) -> None:
        """Start a new active segment at LEO (no-op if the active one is empty).

        The old segment's indexes and a producer-state snapshot at the new base are written
        without an fsync, as is the new segment's name: the next flush job syncs them with
        the old .log, before the recovery point can pass the old segment (recovery trusts
        the indexes of the segments below it only; a snapshot above what a crash leaves, or a
        torn one, is discarded by recovery). No fsync runs here. Raises
        KafkaError(KAFKA_STORAGE_ERROR) with nothing changed if the disk refuses.
        """
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        self._advance_clock(now_ms)
        old = self._active
        if old.size == 0:
            return
        # Kafka's UnifiedLog.roll takes it too: recovery after a crash then replays at most
        # the active segment's headers.
        self.producer_state.take_snapshot(self.log_end_offset)
        old.on_become_inactive()
        new = LogSegment.create(
            self.disk, self.dir_path, self.log_end_offset, self.config, now_ms, self.syncs
        )
        self._segments.append(new)
        self._bases.append(new.base_offset)

    # ------------------------------------------------------------------ read

    def read(
        self, fetch_offset: int, max_bytes: int, upper_offset: int, min_one_batch: bool = True
    ) -> ReadResult:
        """Whole batches from the one holding `fetch_offset`, each with every offset below
        `upper_offset` (HW or LSO), at most `max_bytes` in total; with `min_one_batch` the
        first batch comes whole even if larger (KIP-74). One FileRange per segment touched.

        Sees every append that returned (visible, not necessarily durable or committed: the
        caller bounds it with `upper_offset`). Raises KafkaError(OFFSET_OUT_OF_RANGE) if
        `fetch_offset` is below the log start or above LEO.
        """
        self._check_open()
        leo = self.log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > leo:
            raise KafkaError(
                ErrorCode.offset_out_of_range,
                f"fetch offset {fetch_offset} outside [{self._log_start_offset}, {leo}]",
            )
        upper = min(upper_offset, leo)
        if fetch_offset >= upper:
            return EMPTY_READ
        i = self._segment_index(fetch_offset)
        segment = self._segments[i]
        located = segment.translate_offset(fetch_offset)
        while located is None:
            # Compaction left nothing at or after `fetch_offset` in this segment: the next
            # batch is in a later one (Kafka's LocalLog.read moves on the same way).
            i += 1
            if i >= len(self._segments):
                return EMPTY_READ
            segment = self._segments[i]
            located = segment.translate_offset(fetch_offset)
        position, first = located
        if first.last_offset >= upper:
            return EMPTY_READ
        if first.size > max_bytes:
            if not min_one_batch:
                return EMPTY_READ
            return ReadResult((FileRange(segment.file, position, first.size),), first.size)
        ranges: list[FileRange] = []
        remaining = max_bytes
        while True:
            end = segment.read_end(position, position + remaining, upper)
            if end > position:
                ranges.append(FileRange(segment.file, position, end - position))
                remaining -= end - position
            if end < segment.size or i + 1 >= len(self._segments):
                break
            i += 1
            segment = self._segments[i]
            position = 0
            if segment.base_offset >= upper:
                break
        return ReadResult(tuple(ranges), max_bytes - remaining)

    def read_bytes(self, r: FileRange) -> bytes:
        """The bytes of a range from `read` (short only if the log was truncated since)."""
        return r.file.read(r.position, r.size)

    # ------------------------------------------------------------------ flush

    def begin_flush(self) -> FlushJob | None:
        """A job that makes everything appended so far durable, or None if it already is.

        Covers the segments from the one holding the recovery point to the active one.
        """
        self._check_open()
        leo = self.log_end_offset
        owed = self._owed_changes if self._owed_changes > self._synced_changes else 0
        if leo <= self._recovery_point and not owed:
            # Files written since the last job wait for the next one (or close): they matter
            # only once records after the recovery point are flushed.
            return None
        first = self._segment_index(self._recovery_point)
        files = tuple(s.file for s in self._segments[first:])
        # Aborted-transaction indexes go with their segments: below the recovery point they
        # are trusted by the next recovery.
        txn_files = tuple(
            f for f in (s.txn_index.file for s in self._segments[first:]) if f is not None
        )
        self.leader_epochs.write_pending(below=leo)
        paths, dirs = self.syncs.take()
        if owed:
            self._owed_paths.update(paths)
            self._owed_dirs.update(dirs)
            paths, dirs = tuple(sorted(self._owed_paths)), tuple(sorted(self._owed_dirs))
        active = self._active
        return FlushJob(files + txn_files, leo, self._truncations, self.disk, paths, dirs,
                        upto_position=(active.base_offset, active.size), changes=owed)

    def complete_flush(self, job: FlushJob) -> None:
        """Record that `job` ran: recovery_point = max(recovery_point, job.upto_offset).

        The recovery-point checkpoint is rewritten only when the recovery point enters a new
        segment: recovery starts from the segment holding it, so a finer checkpoint would buy
        nothing. It is written without an fsync (the next flush job syncs it): a crash before
        that leaves the previous value, lower and so safe, at the cost of re-scanning one more
        segment.
        """
        if job.changes > self._synced_changes:
            self._synced_changes = job.changes
            if self.changes_durable:
                self._owed_paths.clear()
                self._owed_dirs.clear()
        if self._closed or job.truncations != self._truncations:
            return  # a truncation since: it set the recovery point itself
        upto = min(job.upto_offset, self.log_end_offset)
        if upto <= self._recovery_point:
            return
        crossed = self._segment_index(upto) != self._segment_index(self._recovery_point)
        self._recovery_point = upto
        self._recovery_position = job.upto_position if upto == job.upto_offset else None
        if crossed:
            self.write_checkpoints(durable=False)

    def flush_now(self) -> None:
        """Flush synchronously: everything appended so far is durable on return."""
        job = self.begin_flush()
        if job is not None:
            job.run()
            self.complete_flush(job)

    def write_checkpoints(self, durable: bool = True) -> None:
        """Write the recovery point, high watermark and log start offset (each only if it
        changed): durable on return, or with `durable=False` once the next flush job (or
        `sync_pending`) has synced them. The server may call this periodically (Kafka does
        every log.flush.offset.checkpoint.interval.ms); close does it too."""
        self._check_open()
        files = (
            (self._recovery_point_file, self._recovery_point),
            (self._high_watermark_file, self._high_watermark),
            (self._log_start_file, self._log_start_offset),
        )
        for checkpoint, value in files:
            if durable:
                checkpoint.write(value)
            else:
                checkpoint.write_unsynced(value, self.syncs)

    def sync_pending(self) -> None:
        """fsync, here and now, every file written and name made without one so far."""
        self.leader_epochs.write_pending()
        if self.syncs:
            paths, dirs = self.syncs.take()
            sync_all(self.disk, paths, dirs)

    # ------------------------------------------------------------------ timestamps

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or above the log start whose timestamp
        is >= `timestamp_ms`, or None (ListOffsets by timestamp; Kafka's
        UnifiedLog.fetchOffsetByTimestamp). Sees everything appended, committed or not."""
        self._check_open()
        start = self._log_start_offset
        for segment in self._segments[self._segment_index(start) :]:
            found = segment.find_timestamp(timestamp_ms, start)
            if found is None:
                continue
            position, header = found
            data = segment.read_batch(position, header)
            return _first_record_at_or_after(data, header, timestamp_ms, start)
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp at or above the log
        start (ListOffsets -3, KIP-734), the earliest such record on ties; None if no record
        has a timestamp. Sees everything appended, committed or not."""
        self._check_open()
        start = self._log_start_offset
        best: tuple[int, LogSegment, int] | None = None  # timestamp, segment, batch offset
        for segment in self._segments[self._segment_index(start) :]:
            timestamp, offset = segment.max_timestamp, segment.offset_of_max_timestamp
            if timestamp != NO_TIMESTAMP and offset < start:
                # The log start cuts this segment: only the batches above it count, and only
                # the records above it in the batch that straddles it.
                timestamp = NO_TIMESTAMP
                located = segment.translate_offset(start)
                if located is not None:
                    for position, header in segment.iter_headers(located[0]):
                        batch_max = header.max_timestamp
                        if header.base_offset < start:
                            data = segment.read_batch(position, header)
                            batch_max = _max_record(data, header, start)[1]
                        if batch_max > timestamp:
                            timestamp, offset = batch_max, header.base_offset
            if timestamp != NO_TIMESTAMP and (best is None or timestamp > best[0]):
                best = (timestamp, segment, offset)
        if best is None:
            return None
        timestamp, segment, offset = best
        located = segment.translate_offset(offset)
        if located is None:
            return max(offset, start), timestamp
        position, header = located
        return _max_record(segment.read_batch(position, header), header, start)

    # ------------------------------------------------------------------ deletion

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start up to `offset` and delete the segments wholly
        below it (their files go after file.delete.delay.ms). Returns the log start offset.

        Raises KafkaError(OFFSET_OUT_OF_RANGE) if `offset` is above the high watermark.
        The new log start is visible on return and durable once `changes_durable` (the next
        flush job): DeleteRecords answers only then.
        """
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        if offset < 0 or offset > self._high_watermark:
            raise KafkaError(
                ErrorCode.offset_out_of_range,
                f"delete-records offset {offset} outside [0, {self._high_watermark}]",
            )
        if offset <= self._log_start_offset:
            return self._log_start_offset
        self._log_start_offset = offset
        self._owe_change()
        self._log_start_file.write_unsynced(offset, self.syncs)
        self.leader_epochs.truncate_from_start(offset)
        count = 0
        while count + 1 < len(self._segments) and self._segments[count + 1].base_offset <= offset:
            count += 1
        self._delete_oldest(count)
        return offset

    def enforce_retention(self, now_ms: int) -> int:
        """Delete the oldest segments that break retention.ms (by their largest timestamp) or
        retention.bytes, never one holding HW or anything above it (Kafka's
        UnifiedLog.deleteOldSegments). The active segment goes too when it qualifies, after
        a roll. Returns the number of segments deleted; the log start moves to the first
        remaining segment (durable once `changes_durable`: the next flush job)."""
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        self._advance_clock(now_ms)
        config = self.config
        if "delete" not in config.cleanup_policy:
            return 0
        segments = self._segments
        hw = self._high_watermark

        def deletable(segment: LogSegment) -> bool:
            # Whole segment below HW, and not the empty active segment (an inactive one may
            # be empty: compaction emptied it).
            return (segment.size > 0 or segment is not segments[-1]) and segment.next_offset <= hw

        count = 0
        if config.retention_ms >= 0:
            wall_ms = self.wall_clock(now_ms)  # record timestamps are wall-clock times
            while count < len(segments) and deletable(segments[count]):
                segment = segments[count]
                timestamp = segment.max_timestamp
                if timestamp == NO_TIMESTAMP:
                    # No timestamps at all: its age since it was opened (monotonic, like
                    # created_ms), not a wall-clock time.
                    if now_ms - segment.created_ms <= config.retention_ms:
                        break
                elif wall_ms - timestamp <= config.retention_ms:
                    break
                count += 1
        if config.retention_bytes >= 0:
            excess = sum(s.size for s in segments[count:]) - config.retention_bytes
            while count < len(segments) and deletable(segments[count]):
                if excess - segments[count].size < 0:
                    break
                excess -= segments[count].size
                count += 1
        if count == 0:
            return 0
        if count == len(segments):
            self.roll(now_ms)
        new_start = self._segments[count].base_offset
        self._owe_change()
        if new_start > self._log_start_offset:
            self._log_start_offset = new_start
            self._log_start_file.write_unsynced(new_start, self.syncs)
            self.leader_epochs.truncate_from_start(new_start)
        self._delete_oldest(count)
        return count

    def _delete_oldest(self, count: int) -> None:
        """Schedule the first `count` segments for deletion (Kafka's asyncDelete): their files
        are renamed `.deleted` now and removed by `tick` after file.delete.delay.ms, so a
        FileRange already handed out stays readable until then. Producer snapshots below the
        log start go now; the producers' state stays (see producer_state.py)."""
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        assert count < len(self._segments), "the active segment always remains"
        doomed = self._segments[:count]
        self._set_segments(self._segments[count:])
        self._schedule_deletion(doomed)
        self.producer_state.delete_snapshots_below(self._log_start_offset)

    def _schedule_deletion(self, segments: list[LogSegment]) -> None:
        """Rename `segments` away (`.deleted`), without a directory fsync: the caller owes it
        (`_owe_change`) or makes it."""
        due_ms = self._clock_ms + self.config.file_delete_delay_ms
        for segment in segments:
            paths = segment.rename_to_deleted(durable=False)
            self._pending_deletions.append(_PendingDeletion(due_ms, segment.file, paths))

    def tick(self, now_ms: int) -> None:
        """Remove the files of deleted segments whose delay has passed, and forget producers
        silent for producer.id.expiration.ms."""
        self._check_open()
        self._advance_clock(now_ms)
        if self._deferred_producer_state is None:
            # A state not loaded yet has nobody to expire now: loaded later, its producers
            # count as having appended at the open, and a later tick expires them.
            self._producer_state.remove_expired(now_ms)
        keep: list[_PendingDeletion] = []
        for pending in self._pending_deletions:
            if pending.due_ms <= now_ms:
                self._remove_pending(pending)
            else:
                keep.append(pending)
        self._pending_deletions = keep

    def _remove_pending(self, pending: _PendingDeletion) -> None:
        pending.file.close()
        for path in pending.paths:
            # A later segment of the same base may have been deleted under the same name.
            # No directory fsync: a `.deleted` file that a crash brings back is removed when
            # the log loads.
            if self.disk.exists(path):
                self.disk.remove(path, durable=False)

    def truncate_to(self, offset: int) -> None:
        """Drop every record at or above `offset` (a follower's truncation; Kafka's
        UnifiedLog.truncateTo). A cut inside a batch drops that whole batch, so LEO may end
        below `offset`. Below the first segment, the log restarts empty at `offset`.

        Visible on return, durable once `cut_durable`: the cut, the lowered checkpoints and
        the directory changes are synced by the next flush job, in the sync pool, and a
        follower sends no fetch before (see "Changes without an fsync"). HW, recovery point
        and log start are clamped to the new LEO. The producer state is rebuilt for the
        new LEO from an older snapshot and the log (Kafka's truncateAndReload), so retries of
        truncated batches are not mistaken for duplicates.
        """
        self._check_open()
        self._load_deferred_producer_state()  # the state must describe the log before it changes
        if offset >= self.log_end_offset:
            # No record to drop, but the leader-epoch cache may end with an epoch this replica
            # assigned as leader and never wrote in: it is not in the log, so it goes (Kafka's
            # UnifiedLog.truncateTo does the same), or the next fetch would claim it.
            self.leader_epochs.truncate_from_end(self.log_end_offset)
            return
        assert offset >= 0, offset
        self._before_truncation()
        self._truncations += 1
        self._recovery_position = None
        self._owe_change()
        self._owed_cut = self._owed_changes
        # The snapshots describing batches the log loses go; the job syncs their directory
        # before the cut file, so no crash keeps one beside data appended after the cut.
        self.producer_state.delete_snapshots_above(offset)
        self.leader_epochs.truncate_from_end(offset)
        if offset < self._recovery_point:
            self._recovery_point = offset
        if offset < self._segments[0].base_offset:
            if offset < self._log_start_offset:
                self._log_start_offset = offset
            doomed = self._segments
            self._set_segments([])
            self._schedule_deletion(doomed)
            self._set_segments(
                [LogSegment.create(
                    self.disk, self.dir_path, offset, self.config, self._clock_ms, self.syncs
                )]
            )
            # The log restarts empty: nothing is left to describe (truncateFullyAndStartAt).
            self.producer_state.delete_all_snapshots()
            self.producer_state.clear()
        else:
            i = self._segment_index(offset)
            doomed = [s for s in self._segments[i + 1 :] if s.base_offset > offset]
            kept = self._segments[: len(self._segments) - len(doomed)]
            self._set_segments(kept)
            self._schedule_deletion(doomed)
            segment = self._active
            segment.truncate_to(offset)  # the flush job fsyncs it (its file is in the job)
            # Entries of markers the cut took go too (Kafka's TransactionIndex.truncateTo).
            segment.txn_index.truncate_to(segment.next_offset)
            self._replay_producer_state(self._clock_ms)
        leo = self.log_end_offset
        self.leader_epochs.truncate_from_end(leo)  # a cut inside a batch took the whole batch
        self._recovery_point = min(self._recovery_point, leo)
        self._recovery_point_file.write_unsynced(self._recovery_point, self.syncs)
        if self._log_start_offset > leo:
            self._log_start_offset = leo
        self._log_start_file.write_unsynced(self._log_start_offset, self.syncs)
        if self._high_watermark > leo:
            # Lowered too, synced before anything appended after the cut: a stale checkpoint
            # would, after a crash, call the records appended after this truncation committed.
            self._high_watermark = leo
            self._high_watermark_file.write_unsynced(leo, self.syncs)

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Close (`begin_close`, its job, `finish_close`), then write this log's own checkpoints and its
        clean-shutdown marker, durably: the next open without a data directory's state trusts
        the log as it is."""
        if self._closed:
            return
        state = self._close()
        self._recovery_point_file.write(state.recovery_point)
        self._high_watermark_file.write(state.high_watermark)
        self._log_start_file.write(state.log_start_offset)
        self._clean_shutdown.write()

    def begin_close(self) -> FlushJob:
        """The first half of a clean close: write the indexes and the producer snapshot, and
        return the one job that makes them and everything else durable (the records not yet
        flushed, every file written without an fsync, the directory). Run it, on any thread,
        then `finish_close`; until then the log takes no other call. A broker closing
        thousands of logs runs their jobs together (run_flush_round), not one by one."""
        self._check_open()
        flush = self.begin_flush()
        self._closing_flush = flush
        if self._deferred_producer_state is None:
            self._producer_state.take_snapshot(self.log_end_offset)
        # else: never loaded, so the log has not changed since the clean stop before this
        # open, and the snapshots it left still describe it: none is rewritten.
        for segment in self._segments:
            if segment.indexes_dirty:
                segment.on_become_inactive()
        for pending in self._pending_deletions:
            self._remove_pending(pending)
        self._pending_deletions = []
        self.leader_epochs.write_pending(below=self.log_end_offset)
        paths, dirs = self.syncs.take()
        if flush is None:
            return FlushJob((), self.log_end_offset, self._truncations, self.disk, paths, dirs)
        return FlushJob(
            flush.files, flush.upto_offset, flush.truncations, self.disk,
            tuple(sorted({*flush.sync_paths, *paths})), tuple(sorted({*flush.sync_dirs, *dirs})),
            upto_position=flush.upto_position, changes=flush.changes,
        )

    def finish_close(self) -> CleanLogState:
        """The second half of a clean close, once the job of `begin_close` ran without an
        error: close every file. Returns what the data directory's clean-shutdown checkpoints
        must record of this log (log_dir.py) for the next open to trust it as it is; the log
        writes no checkpoint or marker of its own (a broker with thousands of partitions
        writes four files at a clean stop, not four per partition)."""
        flush, self._closing_flush = self._closing_flush, None
        if flush is not None and flush.truncations == self._truncations:
            self._recovery_point = max(self._recovery_point, flush.upto_offset)
        for segment in self._segments:
            segment.close()
        self._closed = True
        active = self._active
        exact = self._recovery_point == self.log_end_offset
        return CleanLogState(
            self._recovery_point, self._log_start_offset, self._high_watermark,
            active.base_offset if exact else -1, active.size if exact else -1,
        )

    def _close(self) -> CleanLogState:
        job = self.begin_close()
        job.run()
        return self.finish_close()

    def abandon(self) -> None:
        """The log directory failed: close every file, flushing and writing nothing (no
        checkpoint, no clean-shutdown marker), so the next start recovers this log from its
        recovery point, checking every batch's CRC, as after a crash (Kafka's
        LocalLog.closeHandlers)."""
        if self._closed:
            return
        for segment in self._segments:
            segment.close()
        for pending in self._pending_deletions:
            pending.file.close()
        self._pending_deletions = []
        self._closed = True

    def delete(self) -> str | None:
        """DeleteTopics: close every file and rename the partition directory away
        (`<name>.<n>-delete`, Kafka's LogManager.asyncDelete), without an fsync. Returns the
        new path, which the caller removes off the event loop (`remove_deleted_dir`), or
        None if the directory was not there.

        A crash before the removal's sync keeps the directory under its old name or the new
        one. Under the new one, start-up removes it (`remove_deleted_dirs`). Under the old
        one, nothing opens it unless a partition of that name is hosted again, and its topic
        is gone from the metadata before any replica deletes its log; a new topic of the
        same name finds a different topic id in `partition.metadata` and deletes the
        directory (ReplicaManager._open). One rename keeps that marker with the segments:
        a removal cut short by the crash leaves them under the `-delete` name, never
        segments without their marker under a partition's name."""
        self._before_truncation(deleting=True)  # a new log of the same name must not inherit its entry
        self.abandon()  # nothing to write for a log about to go
        if not self.disk.exists(self.dir_path):
            return None
        return move_away(self.disk, self.dir_path)

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.dir_path!r}, log_start={self._log_start_offset}, "
            f"hw={self._high_watermark}, leo={self.log_end_offset}, "
            f"recovery_point={self._recovery_point}, segments={len(self._segments)})"
        )


DELETED_DIR_SUFFIX = "-delete"


def move_away(disk: Disk, dir_path: str) -> str:
    """Rename a partition directory to be deleted `<dir>.<n>-delete` (the first n not taken:
    the same partition may go again before an earlier directory of it is removed), without
    an fsync; returns the new path, for `remove_deleted_dir`."""
    n = 0
    while disk.exists(f"{dir_path}.{n}{DELETED_DIR_SUFFIX}"):
        n += 1
    doomed = f"{dir_path}.{n}{DELETED_DIR_SUFFIX}"
    disk.rename(dir_path, doomed, durable=False)
    return doomed


def is_deleted_dir(name: str) -> bool:
    """A directory name `PartitionLog.delete` gave (never a partition's: `<topic>-<int>`)."""
    return name.endswith(DELETED_DIR_SUFFIX)


def remove_deleted_dir(disk: Disk, path: str) -> None:
    """Off the event loop: remove a directory `PartitionLog.delete` renamed away, then sync
    the data directory, which makes the rename, the removal and the data directory's
    checkpoint removal durable."""
    if disk.exists(path):
        disk.rmtree(path)
    disk.sync_dir(os.path.dirname(path))


def remove_deleted_dirs(disk: Disk, data_dir: str) -> int:
    """At start-up: remove every deleted partition's directory a crash left (their removal
    had not finished). Returns how many."""
    doomed = [n for n in disk.listdir(data_dir) if is_deleted_dir(n)]
    for name in doomed:
        disk.rmtree(os.path.join(data_dir, name))
    if doomed:
        disk.sync_dir(data_dir)
    return len(doomed)


def _read_marker(batch: bytes) -> ControlRecord:
    """The marker of a control batch read back from the log (CRC already checked)."""
    return decode_control_batch(batch)[1]


def _markers_of(records: bytearray, headers: list[BatchHeader]) -> list[ControlRecord | None]:
    """Per batch of an append, the marker of each control batch (None for data batches);
    an empty list when there is none. KafkaError(CORRUPT_MESSAGE) for a control batch that
    does not hold exactly one transaction marker."""
    if not any(h.is_control for h in headers):
        return []
    markers: list[ControlRecord | None] = []
    position = 0
    view = memoryview(records)
    for h in headers:
        markers.append(
            decode_control_batch(view[position : position + h.size])[1] if h.is_control else None
        )
        position += h.size
    return markers


def _first_record_at_or_after(
    batch: bytes, header: BatchHeader, timestamp_ms: int, start_offset: int
) -> tuple[int, int]:
    """(offset, timestamp) of the first record of `batch` at or above `start_offset` with a
    timestamp >= `timestamp_ms`. A LogAppendTime batch gives every record its max timestamp,
    so no decoding is needed; otherwise decode, falling back to batch precision if the batch
    cannot be decoded (e.g. a codec this process lacks)."""
    if header.attributes & TIMESTAMP_TYPE_MASK:
        return max(header.base_offset, start_offset), header.max_timestamp
    try:
        _, records = decode_batch(batch, verify_crc=False)
    except KafkaError:
        return max(header.base_offset, start_offset), header.max_timestamp
    for record in records:
        if record.offset >= start_offset and record.timestamp_ms >= timestamp_ms:
            return record.offset, record.timestamp_ms
    # The header promised a timestamp this high: trust it at batch precision.
    return max(header.base_offset, start_offset), header.max_timestamp


def _max_record(batch: bytes, header: BatchHeader, start_offset: int) -> tuple[int, int]:
    """(offset, timestamp) of the earliest record of `batch` at or above `start_offset` with
    the largest timestamp among those; batch precision if the batch cannot be decoded."""
    if header.attributes & TIMESTAMP_TYPE_MASK:
        return max(header.base_offset, start_offset), header.max_timestamp
    try:
        _, records = decode_batch(batch, verify_crc=False)
    except KafkaError:
        return max(header.base_offset, start_offset), header.max_timestamp
    best: tuple[int, int] | None = None
    for record in records:
        if record.offset >= start_offset and (best is None or record.timestamp_ms > best[1]):
            best = (record.offset, record.timestamp_ms)
    return best if best is not None else (max(header.base_offset, start_offset), NO_TIMESTAMP)
