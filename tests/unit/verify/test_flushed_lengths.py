"""The test launcher's flush record and the "lose-unflushed" cut (testing/flushed_lengths.py):
a file keeps exactly the bytes its last completed fsync covered, as after a power loss."""

from __future__ import annotations

import os
from pathlib import Path

from ackly.testing.flushed_lengths import RECORD_FILE, RecordingDisk, drop_unflushed, read_flushed_lengths


def test_each_file_is_cut_to_its_last_flushed_length(tmp_path: Path) -> None:
    record = str(tmp_path / RECORD_FILE)
    disk = RecordingDisk(record)
    disk.makedirs(str(tmp_path / "t-0"))
    flushed = disk.open(str(tmp_path / "t-0" / "00000000000000000000.log"))
    flushed.append(b"a" * 100)
    flushed.flush()
    flushed.append(b"b" * 50)  # never flushed
    never = disk.open(str(tmp_path / "t-0" / "00000000000000000100.log"))
    never.append(b"c" * 30)
    cut_back = disk.open(str(tmp_path / "t-0" / "00000000000000000200.log"))
    cut_back.append(b"d" * 40)
    cut_back.flush()
    cut_back.truncate(10)  # a follower truncation: the cut counts at once
    cut_back.append(b"e" * 5)
    gone = disk.open(str(tmp_path / "t-0" / "gone.log"))
    gone.append(b"f")
    gone.flush()
    disk.remove(gone.path)
    untracked = tmp_path / "t-0" / "recovery-point"
    disk.write_atomic(str(untracked), b"7")  # durable on return: never recorded, never cut

    assert read_flushed_lengths(record) == {flushed.path: 100, never.path: 0, cut_back.path: 10}
    cut = drop_unflushed(record)

    assert cut == {flushed.path: (150, 100), never.path: (30, 0), cut_back.path: (15, 10)}
    assert os.path.getsize(flushed.path) == 100 and Path(flushed.path).read_bytes() == b"a" * 100
    assert os.path.getsize(never.path) == 0
    assert Path(cut_back.path).read_bytes() == b"d" * 10
    assert untracked.read_bytes() == b"7"
    assert drop_unflushed(record) == {}, "a second cut finds nothing left to drop"


def test_a_reopened_file_counts_as_durable_and_renames_carry_the_length(tmp_path: Path) -> None:
    record = str(tmp_path / RECORD_FILE)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(b"x" * 20)  # left by an earlier run, whose recovery flushed it
    disk = RecordingDisk(record)
    f = disk.open(str(path))
    f.append(b"y" * 7)
    disk.rename(str(path), str(path) + ".deleted")
    assert read_flushed_lengths(record) == {str(path) + ".deleted": 20}
    assert drop_unflushed(record) == {str(path) + ".deleted": (27, 20)}


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    record = tmp_path / RECORD_FILE
    record.write_text("t-0/a.log 12\nt-0/b.log 4\nt-0/a.log -\nt-0/c.lo")
    assert read_flushed_lengths(str(record)) == {str(tmp_path / "t-0" / "b.log"): 4}

