"""A loaded log opens a segment's .log at its first use: a start opens no segment file, a
read opens only the segment it reads, and a segment renamed away before its first use still
reads under its new name."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from ackly.errors import StorageError
from ackly.log.disk import Disk, DiskFile, RealDisk, SimDisk
from ackly.log.lazy_file import LazyFile
from ackly.log.partition_log import PartitionLog
from ackly.log.segment import DELETED_SUFFIX, LOG_SUFFIX

from .helpers import append, batch, config, read_all

SMALL: dict[str, object] = {"segment_bytes": 2_000, "index_interval_bytes": 0}


class OpenCountingDisk(RealDisk):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def open(self, path: str) -> DiskFile:
        self.opened.append(path.rsplit("/", 1)[-1])
        return super().open(path)


def build(disk: Disk, directory: str, segments: int) -> bytes:
    log = PartitionLog.open(disk, directory, config(**SMALL), 1_000)
    while len(log.segments) < segments:
        append(log, batch(3, timestamp_ms=1_000 + log.log_end_offset))
    log.set_high_watermark(log.log_end_offset)  # the producer snapshot then covers the log
    data = read_all(log)
    log.close()
    return data


def test_a_loaded_log_opens_only_the_segments_it_uses(tmp_path: Path) -> None:
    directory = str(tmp_path / "t-0")
    data = build(RealDisk(), directory, 5)
    disk = OpenCountingDisk()
    log = PartitionLog.open(disk, directory, config(**SMALL), 2_000)
    # A log closed alone walks its active segment's tail (a start after the data directory's
    # clean stop does not: tests/unit/broker/test_clean_start_files.py); the others wait.
    active = log.segments[-1].path(LOG_SUFFIX).rsplit("/", 1)[-1]
    assert len(log.segments) == 5 and disk.opened == [active]
    assert all(isinstance(s.file, LazyFile) and not s.file.opened for s in log.segments[:-1])
    third = log.segments[2]
    found = log.read(third.base_offset, 1 << 20, log.log_end_offset)
    assert found.ranges[0].file is third.file
    assert disk.opened == [active, third.path(LOG_SUFFIX).rsplit("/", 1)[-1]]
    append(log, batch(1))
    assert len(disk.opened) == 2
    assert read_all(log).startswith(data)
    log.close()


@pytest.mark.parametrize("real", [True, False])
def test_a_segment_renamed_away_before_its_first_use_still_reads(tmp_path: Path, real: bool) -> None:
    disk: Disk = RealDisk() if real else SimDisk(random.Random(0))
    directory = str(tmp_path / "t-0") if real else "/data/t-0"
    build(disk, directory, 3)
    log = PartitionLog.open(disk, directory, config(**SMALL), 2_000)
    first = log.segments[0]
    expected_size = first.size  # from the directory: not opened
    assert isinstance(first.file, LazyFile) and not first.file.opened
    paths = first.rename_to_deleted()
    assert first.path(LOG_SUFFIX) + DELETED_SUFFIX in paths
    assert len(first.file.read(0, 1 << 20)) == expected_size > 0
    assert first.file.path.endswith(DELETED_SUFFIX)
    log.close()


def test_a_missing_or_closed_file_fails_and_a_flush_opens_nothing(tmp_path: Path) -> None:
    disk = OpenCountingDisk()
    path = str(tmp_path / "00000000000000000000.log")
    missing = LazyFile(disk, path)
    with pytest.raises(StorageError):
        missing.size()
    with pytest.raises(StorageError):
        missing.read(0, 1)
    assert not Path(path).exists(), "a missing segment is never re-created empty"
    Path(path).write_bytes(b"abc")
    file = LazyFile(disk, path)
    file.flush()  # nothing appended through it: nothing to sync, nothing opened
    assert file.size() == 3 and disk.opened == []
    assert file.read(1, 5) == b"bc" and file.opened
    file.close()
    assert file.fileno() is None
    unused = LazyFile(disk, path)
    unused.close()
    assert unused.fileno() is None
    with pytest.raises(OSError) as closed:
        unused.read(0, 1)
    assert closed.value.errno == errno.EBADF
