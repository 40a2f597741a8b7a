"""A start-up after a clean stop reads no index of an inactive segment, and what a log writes
without an fsync is synced by its next flush job (the rule that keeps fsyncs off the event loop)."""

from __future__ import annotations

import random
from pathlib import Path

from ackly.log.disk import RealDisk, SimDisk
from ackly.log.partition_log import PartitionLog
from ackly.log.segment import INDEX_SUFFIX, TIME_INDEX_SUFFIX

from .helpers import append, batch, config, read_all

DIR = "/data/t-0"
SMALL: dict[str, object] = {"segment_bytes": 2_000, "index_interval_bytes": 0}


class ReadCountingDisk(RealDisk):
    """RealDisk counting whole-file reads of index files."""

    def __init__(self) -> None:
        super().__init__()
        self.index_reads = 0

    def read_file(self, path: str) -> bytes | None:
        if path.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)):
            self.index_reads += 1
        return super().read_file(path)


def build(directory: str, segments: int) -> None:
    log = PartitionLog.open(RealDisk(), directory, config(**SMALL), 1_000)
    while len(log.segments) < segments:
        append(log, batch(3, timestamp_ms=1_000 + log.log_end_offset))
    log.close()


def test_a_clean_start_reads_only_the_active_segments_indexes(tmp_path: Path) -> None:
    directory = str(tmp_path / "t-0")
    build(directory, 6)
    disk = ReadCountingDisk()
    log = PartitionLog.open(disk, directory, config(**SMALL), 2_000)
    assert len(log.segments) == 6
    assert disk.index_reads == 2  # the active segment's .index and .timeindex
    # A lookup in the third segment reads its indexes, and only its.
    third = log.segments[2]
    found = log.read(third.base_offset + 1, 1 << 20, log.log_end_offset)
    assert found.ranges and found.ranges[0].file is third.file
    assert disk.index_reads == 4
    # The largest timestamp of every segment (retention, ListOffsets -3) loads the rest.
    assert log.max_timestamp() is not None
    assert disk.index_reads == 12
    log.close()


def test_a_start_after_a_data_directory_clean_stop_reads_no_index(tmp_path: Path) -> None:
    directory = str(tmp_path / "t-0")
    log = PartitionLog.open(RealDisk(), directory, config(**SMALL), 1_000)
    while len(log.segments) < 4:
        append(log, batch(3, timestamp_ms=1_000 + log.log_end_offset))
    stored = read_all(log)
    job = log.begin_close()
    job.run()
    state = log.finish_close()  # what the data directory's checkpoints record (log_dir.py)
    assert (state.segment_base, state.position) == (log.segments[-1].base_offset, log.segments[-1].size)
    disk = ReadCountingDisk()
    log = PartitionLog.open(disk, directory, config(**SMALL), 2_000, clean_state=state)
    # Not even the active segment's: the clean stop recorded where the log ends.
    assert disk.index_reads == 0 and log.recovered_bytes == 0
    assert log.log_end_offset == state.recovery_point
    assert log.max_timestamp() is not None  # every segment's indexes, read on demand
    assert disk.index_reads == 8
    append(log, batch(3, timestamp_ms=5_000))
    assert read_all(log).startswith(stored)
    log.close()


def test_a_lost_index_of_an_inactive_segment_is_rebuilt_at_its_first_lookup(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    build(str(directory), 4)
    before = PartitionLog.open(RealDisk(), str(directory), config(**SMALL), 2_000)
    expected = read_all(before)
    second = before.segments[1]
    expected_indexes = (second.offset_index.to_bytes(), second.time_index.to_bytes())
    before.close()
    (directory / f"{second.base_offset:020d}{INDEX_SUFFIX}").write_bytes(b"\x01" * 7)  # torn
    log = PartitionLog.open(RealDisk(), str(directory), config(**SMALL), 3_000)
    assert read_all(log) == expected
    again = log.segments[1]
    assert (again.offset_index.to_bytes(), again.time_index.to_bytes()) == expected_indexes
    assert again.indexes_dirty  # written again at the clean close
    log.close()
    assert (directory / f"{second.base_offset:020d}{INDEX_SUFFIX}").read_bytes() == expected_indexes[0]


def test_a_roll_writes_without_fsync_and_the_next_flush_syncs_it() -> None:
    """A roll's indexes and snapshot, and the new segment's name, are synced by the flush job
    that follows, not by the roll; a crash before it loses nothing that was flushed."""
    disk = SimDisk(random.Random(3))
    log = PartitionLog.open(disk, DIR, config(**SMALL), 1_000)
    for _ in range(4):
        append(log, batch(3))
    log.flush_now()
    flushed = read_all(log)
    while len(log.segments) < 3:
        append(log, batch(3))
    assert log.syncs.paths  # the roll's files wait for the next job
    job = log.begin_flush()
    assert job is not None and job.sync_paths and DIR in job.sync_dirs
    assert not log.syncs
    disk.crash()  # before the job ran: the roll's files may be lost, the flushed data not
    reopened = PartitionLog.open(disk, DIR, config(**SMALL), 2_000)
    assert read_all(reopened)[: len(flushed)] == flushed


def test_a_crash_keeps_every_flushed_batch_after_rolls_synced_by_flush_jobs() -> None:
    for seed in range(20):
        disk = SimDisk(random.Random(seed))
        log = PartitionLog.open(disk, DIR, config(segment_bytes=1_500), 1_000)
        rng = random.Random(seed)
        flushed = b""
        for _ in range(40):
            append(log, batch(rng.randint(1, 4)))
            if rng.random() < 0.3:
                log.flush_now()
                flushed = read_all(log)
        disk.crash()
        reopened = PartitionLog.open(disk, DIR, config(segment_bytes=1_500), 2_000)
        assert read_all(reopened)[: len(flushed)] == flushed, seed
        reopened.close()
