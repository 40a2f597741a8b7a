"""Recovery (LogLoader) on the real filesystem, and a full disk on the append path."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import Disk, DiskFile, RealDisk, SimDisk
from ackly.log.partition_log import PartitionLog
from ackly.protocol.records import read_header

from .helpers import append, batch, config, read_all

SIZE = len(batch())


def kill(log: PartitionLog) -> None:
    """A process kill: no flush, no checkpoints, no marker; the fds just go away."""
    for segment in log.segments:
        segment.file.close()


def segment_path(directory: Path, base_offset: int, suffix: str = ".log") -> Path:
    return directory / f"{base_offset:020d}{suffix}"


def build(directory: Path, batches: int, **overrides: object) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(RealDisk(), str(directory), config(**overrides), 1_000)
    stored = []
    for i in range(batches):
        _, data = append(log, batch(1 + i % 3, timestamp_ms=1_000 + i))
        stored.append(bytes(data))
    return log, stored


def reopen(directory: Path, **overrides: object) -> PartitionLog:
    return PartitionLog.open(RealDisk(), str(directory), config(**overrides), 2_000)


def index_state(log: PartitionLog) -> list[tuple[bytes, bytes]]:
    return [(s.offset_index.to_bytes(), s.time_index.to_bytes()) for s in log.segments]


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00" * 5,  # less than a header
        b"\xff" * 200,  # garbage framing
        "half",  # the first half of a real batch
    ],
)
def test_torn_tail_is_cut_and_indexes_rebuilt(tmp_path: Path, tail: bytes | str) -> None:
    log, stored = build(tmp_path, 10, index_interval_bytes=0)
    log.flush_now()
    expected_indexes = index_state(log)
    leo = log.log_end_offset
    kill(log)
    garbage = stored[0][: len(stored[0]) // 2] if tail == "half" else tail
    assert isinstance(garbage, bytes)
    with open(segment_path(tmp_path, 0), "ab") as f:
        f.write(garbage)
    log = reopen(tmp_path, index_interval_bytes=0)
    assert log.log_end_offset == leo
    assert read_all(log) == b"".join(stored)
    assert os.path.getsize(segment_path(tmp_path, 0)) == sum(map(len, stored))
    assert index_state(log) == expected_indexes
    # What recovery accepted waits for the first flush, like an append (no fsync at start-up).
    assert log.recovery_point < leo and log.needs_flush
    log.flush_now()
    assert log.recovery_point == leo
    assert append(log, batch())[0].first_offset == leo
    log.close()


def test_corrupt_crc_in_the_middle_of_the_last_segment(tmp_path: Path) -> None:
    log, stored = build(tmp_path, 10, segment_bytes=500)
    assert len(log.segments) == 2
    last = log.segments[-1]
    kill(log)
    # Flip a byte inside the records of the second batch of the last segment.
    path = segment_path(tmp_path, last.base_offset)
    first_size = read_header(path.read_bytes()).size
    raw = bytearray(path.read_bytes())
    raw[first_size + 70] ^= 0xFF
    path.write_bytes(bytes(raw))
    log = reopen(tmp_path)
    assert log.log_end_offset == last.base_offset + read_header(raw).last_offset_delta + 1
    assert os.path.getsize(path) == first_size
    prefix = b"".join(stored)
    assert read_all(log) == prefix[: len(read_all(log))]
    log.close()


def test_torn_earlier_segment_drops_the_later_ones(tmp_path: Path) -> None:
    log, stored = build(tmp_path, 12, segment_bytes=3 * SIZE * 2)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 3
    kill(log)  # recovery point is 0: every segment is scanned
    path = segment_path(tmp_path, bases[1])
    path.write_bytes(path.read_bytes()[:-3])  # the tail of the second segment was torn
    log = reopen(tmp_path, segment_bytes=3 * SIZE * 2)
    assert [s.base_offset for s in log.segments] == bases[:2]
    assert not segment_path(tmp_path, bases[2]).exists()
    data = read_all(log)
    assert b"".join(stored).startswith(data)
    assert log.log_end_offset < bases[2]
    log.close()


def test_segments_below_the_recovery_point_are_trusted(tmp_path: Path) -> None:
    log, _ = build(tmp_path, 12, segment_bytes=3 * SIZE * 2)
    log.flush_now()
    bases = [s.base_offset for s in log.segments]
    kill(log)
    # Damage below the recovery point's segment is not rescanned (Kafka does the same);
    # damage at or above it is.
    active = segment_path(tmp_path, bases[-1])
    active.write_bytes(active.read_bytes() + b"junk")
    log = reopen(tmp_path, segment_bytes=3 * SIZE * 2)
    assert [s.base_offset for s in log.segments] == bases
    assert os.path.getsize(active) == log.segments[-1].size
    log.close()


def test_clean_shutdown_still_checks_the_active_tail(tmp_path: Path) -> None:
    log, stored = build(tmp_path, 5)
    log.close()
    with open(segment_path(tmp_path, 0), "ab") as f:
        f.write(b"\x01" * 100)
    log = reopen(tmp_path)
    assert read_all(log) == b"".join(stored)
    log.close()


def test_garbled_index_after_clean_shutdown_is_rebuilt(tmp_path: Path) -> None:
    log, stored = build(tmp_path, 20, segment_bytes=8 * 3 * SIZE, index_interval_bytes=0)
    log.close()
    expected = index_state(log)
    segment_path(tmp_path, 0, ".index").write_bytes(b"\x00\x00\x00\x09\x00\x00\x00")
    segment_path(tmp_path, 0, ".timeindex").unlink()
    log = reopen(tmp_path, segment_bytes=8 * 3 * SIZE, index_interval_bytes=0)
    assert index_state(log) == expected
    assert read_all(log) == b"".join(stored)
    log.close()


def test_garbled_checkpoints_read_as_absent(tmp_path: Path) -> None:
    log, stored = build(tmp_path, 4)
    log.set_high_watermark(4)
    log.close()
    (tmp_path / "high-watermark").write_bytes(b"0\n4x\n")
    (tmp_path / "log-start-offset").write_bytes(b"7\n")
    log = reopen(tmp_path)
    assert log.high_watermark == 0  # absent: the log start
    assert log.log_start_offset == 0
    assert read_all(log) == b"".join(stored)
    log.close()


def test_leftovers_are_removed(tmp_path: Path) -> None:
    log, _ = build(tmp_path, 2)
    log.close()
    for name in ("00000000000000000099.log.deleted", "recovery-point.tmp", "00000000000000000042.index"):
        (tmp_path / name).write_bytes(b"x")
    log = reopen(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert "00000000000000000099.log.deleted" not in names
    assert "recovery-point.tmp" not in names
    assert "00000000000000000042.index" not in names
    log.close()


def test_log_start_above_the_recovered_end_restarts_there() -> None:
    restarted = 0
    for seed in range(30):
        disk = SimDisk(random.Random(seed))
        log = PartitionLog.open(disk, "/d", config(), 0)
        append(log, batch())
        log.flush_now()
        for _ in range(4):
            append(log, batch())
        log.set_high_watermark(5)
        log.delete_records_before(4)
        # The flush job syncs the new log start (and the directory) before the segment
        # files: a crash in between leaves it durable while offsets 1..4 are not.
        log.sync_pending()
        disk.crash()
        log = PartitionLog.open(disk, "/d", config(), 0)
        assert log.log_start_offset == 4
        assert log.log_end_offset >= 4
        if [s.base_offset for s in log.segments] == [4]:
            restarted += 1  # offset 4 was lost: the log restarts empty at its start
            assert log.log_end_offset == 4
        assert append(log, batch())[0].first_offset == log.log_end_offset - 1
    assert restarted


# ------------------------------------------------------------------ full disk


class FullDisk:
    """Wraps a Disk; while `full` is set, appends to .log files fail with ENOSPC after
    writing part of the data (as a real short write on a full disk would)."""

    def __init__(self, inner: Disk) -> None:
        self.inner = inner
        self.full = False

    def open(self, path: str) -> DiskFile:
        return FullDiskFile(self, self.inner.open(path))

    def create(self, path: str) -> DiskFile:
        return FullDiskFile(self, self.inner.create(path))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class FullDiskFile:
    def __init__(self, disk: FullDisk, inner: DiskFile) -> None:
        self.disk = disk
        self.inner = inner
        self.path = inner.path

    def append(self, data: bytes | bytearray | memoryview) -> int:
        if self.disk.full:
            self.inner.append(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.inner.append(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("real", [True, False])
def test_full_disk_fails_the_append_and_writes_nothing(tmp_path: Path, real: bool) -> None:
    inner: Disk = RealDisk() if real else SimDisk(random.Random(0))
    disk = FullDisk(inner)
    directory = str(tmp_path / "p") if real else "/p"
    log = PartitionLog.open(disk, directory, config(), 1_000)  # type: ignore[arg-type]
    _, first = append(log, batch())
    disk.full = True
    with pytest.raises(KafkaError) as caught:
        append(log, batch(3))
    assert caught.value.code == ErrorCode.kafka_storage_error
    assert log.log_end_offset == 1
    assert log.segments[-1].size == len(first)
    assert read_all(log) == bytes(first)
    disk.full = False
    result, second = append(log, batch(2))
    assert (result.first_offset, result.last_offset) == (1, 2)
    assert read_all(log) == bytes(first) + bytes(second)
    log.close()
    log = PartitionLog.open(disk, directory, config(), 2_000)  # type: ignore[arg-type]
    assert read_all(log) == bytes(first) + bytes(second)
    log.close()


def test_bit_rot_on_sim_disk_is_cut_at_the_bad_batch() -> None:
    disk = SimDisk(random.Random(0))
    log = PartitionLog.open(disk, "/d", config(), 0)
    stored = [bytes(append(log, batch(2))[1]) for _ in range(5)]
    log.flush_now()
    disk.corrupt("/d/00000000000000000000.log", len(stored[0]) * 2 + 65, b"\xee")
    disk.crash()
    log = PartitionLog.open(disk, "/d", config(), 0)
    assert log.log_end_offset == 4
    assert read_all(log) == b"".join(stored[:2])
