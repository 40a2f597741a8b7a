"""Swapping a clean's segments into the log, crash-safely, and finishing an interrupted swap
at start-up (Kafka's replaceSegments and the `.swap` handling of LogLoader; see cleaner.py
for the protocol).

Owns: the swap in two steps on the event loop, neither of which fsyncs: `prepare_swap`
(the checkpoints, whose sync the next flush job owes) and, once that job ran, `apply_swap`
(the renames, whose directory sync the next flush job owes); `apply_clean` (both at once,
for tools and tests), `discard` (a job not applied), `recover_swaps` (before a log loads),
and the named crash points of the swap (`CRASH_POINTS`, for tests and the simulator:
`apply_clean` raises CleanCrash at the one named; nothing in production names one).

Invariant: after any crash, recovery leaves either a clean's old segments or its new ones,
never both for one offset and never neither: the recovery point past the cleaned range is
durable before the commit point (a `.log.swap`), and the renames reach the disk in the order
they were made.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ackly.log.clean_plan import write_first_dirty
from ackly.log.cleaner import CLEANED_SUFFIX, CleanedSegment, CleanJob
from ackly.log.disk import Disk, DiskFile
from ackly.log.index import CorruptIndexError, OffsetIndex, TimeIndex
from ackly.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
    file_name,
)
from ackly.log.txn_index import TXN_INDEX_SUFFIX
from ackly.protocol.records import HEADER_SIZE, read_header

if TYPE_CHECKING:  # partition_log imports this module (recover_swaps)
    from ackly.log.partition_log import PartitionLog

logger = logging.getLogger(__name__)

SWAP_SUFFIX = ".swap"
_SEGMENT_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, LOG_SUFFIX)
CRASH_POINTS = ("after-prepare", "after-swap-rename", "after-old-deleted", "after-new-renamed")


class CleanCrash(Exception):
    """Raised at a named crash point: the test then crashes the disk."""


def _cleaned_paths(dir_path: str, base_offset: int, suffix: str) -> tuple[str, str, str]:
    final = os.path.join(dir_path, file_name(base_offset, suffix))
    return final + CLEANED_SUFFIX, final + SWAP_SUFFIX, final


def discard(job: CleanJob) -> None:
    """Remove the `.cleaned` files of a job that will not be applied (event loop), without an
    fsync: one a crash brings back is removed before the log loads (`recover_swaps`)."""
    for group in job.groups:
        if group.segment is not None:
            group.segment.file.close()
        for suffix in _SEGMENT_SUFFIXES:
            cleaned = _cleaned_paths(job.dir_path, group.base_offset, suffix)[0]
            try:
                if job.disk.exists(cleaned):
                    job.disk.remove(cleaned, durable=False)
            except OSError as exc:  # the directory went with its topic
                logger.debug("%s: %s", cleaned, exc)


def _fits(log: PartitionLog, job: CleanJob) -> bool:
    """The log is still the one the job was planned on (not truncated, no segment of the
    range deleted, not closed)."""
    return (
        not log.is_closed
        and job.stats is not None
        and job.truncations == log.truncation_count
        and log.segments[: len(job.sources)] == job.sources
    )


def prepare_swap(log: PartitionLog, job: CleanJob) -> bool:
    """Step 1 of the swap (event loop): take the job's flush, then write the checkpoints
    without an fsync and owe their sync (`PartitionLog.owe_sync`): the swap waits until a
    flush job synced them (`swap_due`). False if the log changed under the job: it is then
    discarded and the log is as it was.

    Why a wait: recovery must take the cleaned segments' holes for compaction, never for
    lost writes, so the recovery point past them must be durable before the commit point;
    a flush writes the recovery point without an fsync."""
    if not _fits(log, job):
        discard(job)
        return False
    if job.flush is not None:
        log.complete_flush(job.flush)
        job.flush = None
    log.write_checkpoints(durable=False)
    job.swap_after = log.owe_sync()
    return True


def swap_due(log: PartitionLog, job: CleanJob) -> bool:
    """The checkpoints `prepare_swap` wrote are durable: `apply_swap` may run."""
    return job.swap_after is not None and log.synced_through(job.swap_after)


def apply_swap(log: PartitionLog, job: CleanJob, crash_at: str | None = None) -> int | None:
    """Step 2 of the swap (event loop, once `swap_due`): the renames of the protocol, in
    its order, each without an fsync; the log owes them to its next flush job (one
    directory fsync however many renames). Returns the new first dirty offset, or None if
    the log changed under the job (then discarded, the log as it was).

    No fsync separates the renames: a crash keeps them in the order they were made (a
    journaling file system, ext4 or XFS, replays its journal in order and any fsync
    commits every earlier directory change with it; SimDisk's `ordered_dir_ops` models
    exactly that), and the protocol is safe at every point of that order: before the
    `.log.swap` exists the old segments are whole, after it `recover_swaps` completes the
    swap. The `.cleaned` files were made durable by the job itself."""
    assert job.swap_after is not None, "apply_swap before prepare_swap"
    if not _fits(log, job):
        discard(job)
        return None
    assert job.stats is not None
    disk = job.disk
    unchanged = set(job.stats.unchanged)
    changed = [g for g in job.groups if g.base_offset not in unchanged]
    # 1. `.cleaned` -> `.swap`, the indexes of every group first, then the `.log`s: a
    # `.log.swap` is the commit point, so its indexes come before it.
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
    write_first_dirty(log.syncs, job.dir_path, job.end_offset)
    _crash_point(crash_at, "after-new-renamed")
    return job.end_offset


def apply_clean(log: PartitionLog, job: CleanJob, crash_at: str | None = None) -> int | None:
    """Both steps at once, with the flush between them run here, where the caller is (tools,
    tests): the broker runs that flush in its sync pool. Durable on return: a crash at any
    point leaves the old segments or the new ones."""
    if not prepare_swap(log, job):
        return None
    _crash_point(crash_at, "after-prepare")
    log.flush_now()
    end = apply_swap(log, job, crash_at)
    log.flush_now()
    return end


def _rename_all(
    disk: Disk, dir_path: str, groups: list[CleanedSegment], from_suffix: str, to_suffix: str
) -> None:
    """Rename the files of `groups` from `<name><from>` to `<name><to>`, without an fsync:
    every index file, then every `.log`."""
    for suffixes in (_SEGMENT_SUFFIXES[:-1], _SEGMENT_SUFFIXES[-1:]):
        for group in groups:
            for suffix in suffixes:
                final = os.path.join(dir_path, file_name(group.base_offset, suffix))
                if disk.exists(final + from_suffix):
                    disk.rename(final + from_suffix, final + to_suffix, durable=False)


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
