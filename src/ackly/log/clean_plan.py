"""Which part of a log a clean takes (Kafka's LogCleanerManager.cleanableOffsets and
Cleaner.groupSegmentsBySize), and the job made for it (see cleaner.py for the rules).

Owns: the cleanable range of a log (whole segments below the active one, the LSO and
min.compaction.lag.ms), the dirty ratio and max.compaction.lag.ms, the bound the key map puts
on one clean, the grouping of small segments into one output, and the
`cleaner-offset-checkpoint` file (where the last clean ended) of a partition directory.

Deterministic: reads the log's state and headers only; the clock comes in as `now_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.config import TopicConfig
from ackly.log.checkpoint import OffsetCheckpoint
from ackly.log.cleaner import CleanedSegment, CleanerSettings, CleanJob
from ackly.log.disk import Disk, PendingSyncs
from ackly.log.index import INT32_MAX
from ackly.log.segment import (
    LogSegment,
)
from ackly.types import NO_TIMESTAMP

if TYPE_CHECKING:
    from ackly.log.partition_log import PartitionLog

CLEANER_OFFSET_FILE = "cleaner-offset-checkpoint"

def read_first_dirty(disk: Disk, dir_path: str) -> int | None:
    return OffsetCheckpoint(disk, dir_path, CLEANER_OFFSET_FILE).read()


def write_first_dirty(syncs: PendingSyncs, dir_path: str, offset: int) -> None:
    """Durable once `syncs` are synced (the log's next flush job). Only an optimisation: a
    lost one makes the next clean map more."""
    OffsetCheckpoint(syncs.disk, dir_path, CLEANER_OFFSET_FILE).write_unsynced(offset, syncs)


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
