"""What a power loss would leave of a broker's files: the bytes its last completed fsync covered.

Owns: `RecordingDisk` (a `RealDisk` for test brokers only, installed by
`ackly.testing.faulty_serve --record-flushes PATH`) and `drop_unflushed`, which cuts a stopped
broker's files back to what the record says is durable (the nemesis's "lose-unflushed" fault).

The record is a side file of lines `<path relative to the record's directory> <length>`, or
`<path> -` once the file is gone; the last line about a path wins. It is appended to, never
rewritten, and needs no fsync: it is read after a SIGKILL, which the page cache survives.

Invariants:
- only files opened through `Disk.open` / `Disk.create` are recorded (segments' .log and .txnindex files);
  files written with `write_atomic` (checkpoints, indexes, snapshots) are durable on return and
  never recorded, so `drop_unflushed` leaves them alone;
- a recorded length never exceeds what an fsync made durable: a flush records the size taken
  before its fsync started (lowered by any truncation while it ran); a new file starts at 0;
  a file found on open counts as durable as it is (recovery flushes what it accepts);
- a truncation lowers the recorded length at once (a power loss may keep the cut).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from ackly.log.disk import DiskFile, RealDisk

RECORD_FILE = "flushed-lengths"
GONE = "-"


class _Record:
    """The side file and the last length written for each path (one lock for both)."""

    def __init__(self, record_path: str) -> None:
        self.base = os.path.dirname(os.path.abspath(record_path))
        os.makedirs(self.base, exist_ok=True)
        self._fd = os.open(record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.lock = threading.Lock()
        self.flushed: dict[str, int] = {}

    def key(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self.base)

    def set(self, path: str, length: int | None) -> None:
        """Record `length` for `path` (None: gone). Call with `lock` held."""
        key = self.key(path)
        if length is None:
            self.flushed.pop(key, None)
        else:
            self.flushed[key] = length
        os.write(self._fd, f"{key} {GONE if length is None else length}\n".encode())

    def get(self, path: str) -> int | None:
        return self.flushed.get(self.key(path))


class RecordingFile:
    """A `DiskFile` that records the length each completed flush made durable."""

    def __init__(self, inner: DiskFile, record: _Record) -> None:
        self.path = inner.path
        self._inner = inner
        self._record = record
        self._low = inner.size()  # the lowest size since the current flush began

    def append(self, data: bytes | bytearray | memoryview) -> int:
        return self._inner.append(data)

    def read(self, position: int, size: int) -> bytes:
        return self._inner.read(position, size)

    def size(self) -> int:
        return self._inner.size()

    def flush(self) -> None:
        with self._record.lock:
            before = self._inner.size()
            self._low = before
        self._inner.flush()
        with self._record.lock:
            durable = min(before, self._low)
            if durable > (self._record.get(self.path) or 0):
                self._record.set(self.path, durable)

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)
        with self._record.lock:
            self._low = min(self._low, size)
            flushed = self._record.get(self.path)
            if flushed is None or flushed > size:
                self._record.set(self.path, size)

    def close(self) -> None:
        self._inner.close()

    def fileno(self) -> int | None:
        return self._inner.fileno()


class RecordingDisk(RealDisk):
    """`RealDisk` whose files record their flushed lengths in `record_path`."""

    def __init__(self, record_path: str) -> None:
        super().__init__()
        self._record = _Record(record_path)

    def open(self, path: str) -> DiskFile:
        return self._recorded(path, super().open)

    def create(self, path: str) -> DiskFile:
        return self._recorded(path, super().create)

    def _recorded(self, path: str, opener: Callable[[str], DiskFile]) -> DiskFile:
        existed = os.path.exists(path)
        inner = opener(path)
        with self._record.lock:
            self._record.set(path, inner.size() if existed else 0)
        return RecordingFile(inner, self._record)

    def remove(self, path: str, *, durable: bool = True) -> None:
        super().remove(path, durable=durable)
        with self._record.lock:
            if self._record.get(path) is not None:
                self._record.set(path, None)

    def rename(self, src: str, dst: str, *, durable: bool = True) -> None:
        super().rename(src, dst, durable=durable)
        with self._record.lock:
            flushed = self._record.get(src)
            if flushed is not None:
                self._record.set(src, None)
                self._record.set(dst, flushed)

    def rmtree(self, path: str) -> None:
        super().rmtree(path)
        prefix = self._record.key(path) + os.sep
        with self._record.lock:
            for key in [k for k in self._record.flushed if k.startswith(prefix)]:
                self._record.set(os.path.join(self._record.base, key), None)


def read_flushed_lengths(record_path: str) -> dict[str, int]:
    """Absolute path -> its last recorded flushed length (files recorded as gone left out)."""
    base = os.path.dirname(os.path.abspath(record_path))
    out: dict[str, int] = {}
    try:
        with open(record_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        key, sep, value = line.rpartition(" ")
        if not sep or not key:
            continue  # a line torn by the SIGKILL
        path = os.path.join(base, key)
        if value == GONE:
            out.pop(path, None)
        elif value.isdigit():
            out[path] = int(value)
    return out


def drop_unflushed(record_path: str) -> dict[str, tuple[int, int]]:
    """Cut every recorded file to its flushed length, as a power loss would (the broker must
    not be running). Returns path -> (size before, size after) for each file it cut."""
    cut: dict[str, tuple[int, int]] = {}
    for path, flushed in sorted(read_flushed_lengths(record_path).items()):
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue
        if size > flushed:
            os.truncate(path, flushed)
            cut[path] = (size, flushed)
    return cut
