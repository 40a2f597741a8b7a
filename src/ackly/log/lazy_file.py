"""A segment's `.log` file opened at its first use, not when its log loads.

Owns: `LazyFile`, a DiskFile over a file found on disk, opened (`Disk.open`) by the first call
that needs the file itself: a read, an append, a truncation, `fileno` (sendfile). Until then
its size comes from the directory (`Disk.file_size`), so a log can check where it ends without
opening it. A start-up after a clean stop therefore opens no segment file, and a broker holds
file descriptors only for the segments used since it started (Kafka's LogSegment opens every
FileRecords at load: with thousands of partitions, thousands of opens and descriptors for
files most of which are never read).

Invariants:
- It is opened only by calls made on the event loop (every call but `flush`). `flush` of a
  file never opened returns at once: nothing was appended through it, and what it held when
  its log loaded was below the recovery point (durable) or was read, so opened, by recovery.
- The path follows the file: `moved` after a rename of a file not yet opened (a segment
  renamed `.deleted` still serves the ranges handed out before).
- A file that is missing when it is first opened raises StorageError (ENOENT): a log never
  silently re-creates an empty segment in place of one it loaded. After `close` every use
  fails as on a closed RealFile (EBADF), and `fileno` is None.
"""

from __future__ import annotations

import errno

from ackly.errors import StorageError
from ackly.log.disk import Disk, DiskFile


class LazyFile:
    """A DiskFile opened by its first use (see the module docstring)."""

    def __init__(self, disk: Disk, path: str) -> None:
        self.path = path
        self._disk = disk
        self._file: DiskFile | None = None
        self._size: int | None = None  # from the directory, while not opened
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._file is not None

    def _opened(self) -> DiskFile:
        file = self._file
        if file is not None:
            return file
        if self._closed:
            raise OSError(errno.EBADF, f"{self.path} is closed")
        if not self._disk.exists(self.path):
            raise StorageError("open", self.path, errno.ENOENT, "the segment file is missing")
        file = self._file = self._disk.open(self.path)
        return file

    def moved(self, path: str) -> None:
        """The file was renamed to `path` (its open handle, if any, follows it by itself)."""
        self.path = path
        if self._file is not None:
            self._file.path = path

    def append(self, data: bytes | bytearray | memoryview) -> int:
        return self._opened().append(data)

    def read(self, position: int, size: int) -> bytes:
        return self._opened().read(position, size)

    def size(self) -> int:
        if self._file is not None:
            return self._file.size()
        if self._size is None:
            if self._closed:
                raise OSError(errno.EBADF, f"{self.path} is closed")
            size = self._disk.file_size(self.path)
            if size is None:
                raise StorageError("open", self.path, errno.ENOENT, "the segment file is missing")
            self._size = size  # nothing but this object changes it
        return self._size

    def flush(self) -> None:
        file = self._file  # read once: a flush runs in a worker thread
        if file is not None:
            file.flush()

    def truncate(self, size: int) -> None:
        self._opened().truncate(size)

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()

    def fileno(self) -> int | None:
        if self._closed and self._file is None:
            return None
        return self._opened().fileno()
