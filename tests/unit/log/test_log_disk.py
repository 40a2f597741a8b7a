"""RealDisk and SimDisk: append/read/flush semantics, atomic writes, crashes, full disks."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest

from ackly.errors import ErrorCode, KafkaError, StorageError
from ackly.log import disk as disk_module
from ackly.log.disk import Disk, RealDisk, SimDisk


def _disks(tmp_path: Path) -> list[tuple[Disk, str]]:
    sim = SimDisk(random.Random(1))
    sim.makedirs("/d")
    return [(RealDisk(), str(tmp_path)), (sim, "/d")]


def test_append_read_truncate_on_both_disks(tmp_path: Path) -> None:
    for disk, root in _disks(tmp_path):
        f = disk.open(os.path.join(root, "a.log"))
        assert f.size() == 0
        assert f.append(b"hello") == 0
        assert f.append(bytearray(b" world")) == 5
        assert f.append(memoryview(b"!")) == 11
        assert f.read(0, 100) == b"hello world!"  # short read at EOF
        assert f.read(6, 5) == b"world"
        assert f.read(12, 5) == b""
        f.truncate(5)
        assert f.size() == 5
        assert f.append(b"!") == 5
        f.flush()
        f.close()
        again = disk.open(os.path.join(root, "a.log"))
        assert again.read(0, 100) == b"hello!"
        assert again.size() == 6
        again.close()


def test_directory_operations_on_both_disks(tmp_path: Path) -> None:
    for disk, root in _disks(tmp_path):
        sub = os.path.join(root, "x", "y")
        disk.makedirs(sub)
        disk.makedirs(sub)  # idempotent
        path = os.path.join(sub, "state")
        assert disk.read_file(path) is None
        disk.write_atomic(path, b"one")
        disk.write_atomic(path, b"two")
        assert disk.read_file(path) == b"two"
        assert disk.listdir(sub) == ["state"]
        disk.rename(path, path + ".old")
        assert not disk.exists(path) and disk.exists(path + ".old")
        disk.remove(path + ".old")
        assert disk.listdir(sub) == []
        assert "y" in disk.listdir(os.path.join(root, "x"))
        disk.rmtree(os.path.join(root, "x"))
        assert not disk.exists(sub)


def test_open_file_survives_rename(tmp_path: Path) -> None:
    for disk, root in _disks(tmp_path):
        f = disk.open(os.path.join(root, "seg.log"))
        f.append(b"data")
        disk.rename(os.path.join(root, "seg.log"), os.path.join(root, "seg.log.deleted"))
        assert f.read(0, 4) == b"data"
        f.close()


def test_real_file_has_a_fileno_and_sim_file_has_none(tmp_path: Path) -> None:
    real = RealDisk().open(str(tmp_path / "f"))
    assert isinstance(real.fileno(), int)
    real.close()
    assert real.fileno() is None
    real.flush()  # a flush racing with close is harmless
    sim = SimDisk(random.Random(0))
    assert sim.open("/f").fileno() is None


def test_real_append_failing_part_way_leaves_file_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = RealDisk()
    f = disk.open(str(tmp_path / "seg.log"))
    f.append(b"0123456789")
    real_pwrite = os.pwrite
    calls = 0

    def pwrite_then_enospc(fd: int, data: bytes, position: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_pwrite(fd, bytes(data)[:3], position)  # a short write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_module.os, "pwrite", pwrite_then_enospc)
    with pytest.raises(StorageError) as caught:
        f.append(b"abcdefgh")
    assert caught.value.code == ErrorCode.kafka_storage_error
    assert caught.value.errno == errno.ENOSPC and caught.value.path == f.path
    monkeypatch.undo()
    assert f.size() == 10
    assert os.path.getsize(tmp_path / "seg.log") == 10  # the partial bytes were cut back
    assert f.read(0, 20) == b"0123456789"
    # The disk is offline now: every change is refused, reads still work.
    assert disk.failure is caught.value
    with pytest.raises(StorageError, match="offline since append to"):
        f.append(b"X")
    with pytest.raises(StorageError):
        f.flush()
    with pytest.raises(StorageError):
        disk.write_atomic(str(tmp_path / "cp"), b"1")
    with pytest.raises(StorageError):
        disk.rename(f.path, f.path + ".x")
    assert f.read(0, 20) == b"0123456789"
    f.close()


def test_real_failed_fsync_takes_the_disk_offline_and_no_later_fsync_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = RealDisk()
    f = disk.open(str(tmp_path / "seg.log"))
    f.append(b"abc")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(disk_module, "_fdatasync", eio)
    with pytest.raises(StorageError) as caught:
        f.flush()
    assert (caught.value.operation, caught.value.errno) == ("fsync", errno.EIO)
    monkeypatch.undo()
    # The retry would succeed on Linux and prove nothing: it is refused.
    with pytest.raises(StorageError, match="offline since fsync"):
        f.flush()
    assert disk.failure is caught.value
    f.close()


def test_real_append_bug_errno_is_not_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = RealDisk().open(str(tmp_path / "seg.log"))

    def bad_fd(fd: int, data: bytes, position: int) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(disk_module.os, "pwrite", bad_fd)
    with pytest.raises(OSError):
        f.append(b"x")
    f.close()


def test_sim_crash_keeps_flushed_bytes_and_at_most_a_prefix_of_the_rest() -> None:
    for seed in range(200):
        disk = SimDisk(random.Random(seed))
        f = disk.open("/a")
        f.append(b"durable-")
        f.flush()
        f.append(b"first-")
        f.append(b"second")
        disk.crash()
        content = disk.read_file("/a")
        assert content is not None
        assert content.startswith(b"durable-")
        tail = content[len(b"durable-") :]
        in_order = b"first-second"
        only_last = bytes(len(b"first-")) + b"second"
        assert in_order.startswith(tail) or only_last.startswith(tail), (seed, tail)


def test_sim_crash_tears_writes_in_some_seeds() -> None:
    outcomes = set()
    for seed in range(100):
        disk = SimDisk(random.Random(seed))
        f = disk.open("/a")
        f.append(b"0123456789")
        disk.crash()
        outcomes.add(len(disk.read_file("/a") or b""))
    assert 0 in outcomes
    assert len(outcomes) > 3  # torn at many places, not all or nothing


def test_sim_handles_die_at_crash_and_state_becomes_durable() -> None:
    disk = SimDisk(random.Random(3))
    f = disk.open("/a")
    f.append(b"abc")
    disk.crash()
    with pytest.raises(AssertionError):
        f.read(0, 1)
    g = disk.open("/a")
    survived = g.read(0, 10)
    disk.crash()  # whatever survived one crash is on the disk
    assert disk.open("/a").read(0, 10) == survived


def test_sim_truncate_is_not_durable_until_flush() -> None:
    disk = SimDisk(random.Random(0))
    f = disk.open("/a")
    f.append(b"abcdef")
    f.flush()
    f.truncate(2)
    assert f.read(0, 10) == b"ab"
    f.flush()
    disk.crash()
    assert disk.read_file("/a") == b"ab"


def test_sim_write_atomic_and_directories_are_durable_at_once() -> None:
    disk = SimDisk(random.Random(0))
    disk.makedirs("/p/q")
    disk.write_atomic("/p/q/cp", b"v")
    disk.open("/p/q/new.log")
    disk.crash()
    assert disk.read_file("/p/q/cp") == b"v"
    assert disk.listdir("/p/q") == ["cp", "new.log"]
    with pytest.raises(FileNotFoundError):
        disk.open("/missing/dir/file")


def test_sim_full_disk_refuses_appends() -> None:
    disk = SimDisk(random.Random(0), capacity_bytes=10)
    f = disk.open("/a")
    f.append(b"12345678")
    with pytest.raises(KafkaError) as caught:
        f.append(b"too much")
    assert caught.value.code == ErrorCode.kafka_storage_error
    assert f.size() == 8


def test_sim_failed_fsync_loses_the_unflushed_writes_and_takes_the_disk_offline() -> None:
    for seed in range(50):
        disk = SimDisk(random.Random(seed))
        f = disk.open("/a.log")
        f.append(b"durable")
        f.flush()
        f.append(b"-lost")
        disk.fail_next("fsync", suffix=".log")
        with pytest.raises(StorageError) as caught:
            f.flush()
        assert (caught.value.operation, caught.value.errno) == ("fsync", errno.EIO)
        assert disk.failure is caught.value
        assert f.read(0, 100) == b"durable-lost"  # the page cache still shows them
        changes: list[tuple[Any, tuple[Any, ...]]] = [
            (f.flush, ()), (f.append, (b"x",)), (f.truncate, (0,)),
            (disk.write_atomic, ("/cp", b"1")), (disk.rename, ("/a.log", "/b")),
        ]
        for change, args in changes:
            with pytest.raises(StorageError, match=r"offline since fsync /a\.log"):
                change(*args)
        disk.crash()  # the write-back never happens: only the flushed bytes are left
        assert disk.read_file("/a.log") == b"durable"
        assert disk.failure is None  # a new process on a working disk
        disk.open("/a.log").append(b"!")


def test_sim_armed_failure_waits_for_a_matching_file() -> None:
    disk = SimDisk(random.Random(0))
    disk.makedirs("/p")
    index = disk.open("/p/0.index")
    disk.fail_next("append to", suffix=".log", errno_code=errno.ENOSPC)
    index.append(b"ok")
    index.flush()
    assert disk.armed and disk.failure is None
    with pytest.raises(StorageError) as caught:
        disk.open("/p/0.log").append(b"x")
    assert caught.value.errno == errno.ENOSPC and not disk.armed
    assert disk.read_file("/p/0.log") == b""
