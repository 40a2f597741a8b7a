"""The `Disk` interface: every byte the log reads or writes goes through it.

Owns: the two implementations of `Disk`/`DiskFile`.
- `RealDisk`: the operating system's filesystem, through raw fds (`os.pwrite`/`os.pread`), so
  an append never seeks and `fileno()` can feed `loop.sendfile` (zero copy).
- `SimDisk`: an in-memory disk for tests and the simulator. Each file has the bytes readers see
  and the bytes that are durable; `crash()` throws away what was never flushed and may tear the
  last write, as a power loss does.

On-disk layout: none of its own; it stores whatever paths the log asks for.

Invariants:
- `DiskFile.append` writes at the file's end (the position is kept in memory, never sought);
  the bytes are visible to `read` on return and durable only after `flush`.
- Any failed change (append, flush, truncate, rename, remove, `write_atomic`: EIO, ENOSPC,
  EROFS, ...) raises `StorageError` and trips the disk's `DiskHealth`: from then on every
  change is refused with `StorageError` (reads still work). The log directory is offline until
  the process restarts, so no later fsync can be taken to cover a range an earlier one failed
  on (Linux reports a failed write-back once, then counts the pages as clean). A failed append
  also rolls back what it wrote, so the file holds no bytes the log does not account for.
- `flush` may run in a worker thread while the event loop appends to the same file (fsync on an
  fd is safe against concurrent pwrite); nothing else is called from another thread.
- `write_atomic` is durable on return: temp file, fsync, rename, fsync of the directory.
- `write_atomic_unsynced`, `create`, and `rename` / `remove` with `durable=False` make no
  fsync: what they change is durable only once `sync_file` (the file) and `sync_dir` (its
  directory entry) return. The log uses them on the event loop and has its next flush job
  sync them, in the shell's threads, before anything depends on them (see partition_log.py),
  so no fsync runs on the event loop. `SimDisk.loop_guard` records any sync made outside
  `off_loop()`, for the simulator's check of that rule.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ackly.errors import StorageError

# errnos that mean "this disk cannot take the write": StorageError, and the log directory goes
# offline. Anything else (EBADF, EINVAL, ENOENT, ...) is our own bug and propagates. A failed
# fsync is a StorageError whatever its errno.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG, errno.ENOMEM}
)

TEMP_SUFFIX = ".tmp"


def _storage_error(operation: str, path: str, exc: OSError) -> StorageError:
    return StorageError(operation, path, exc.errno, exc.strerror or str(exc))


class DiskHealth:
    """Whether a disk still takes changes (Kafka's LogDirFailureChannel, for one directory).

    The first failed change trips it (`trip`); from then on `check` refuses every change with a
    StorageError naming that first failure. Nothing resets it but a new process (a new disk
    object): recovery at the next start decides what survived. `failure` is written by the
    flusher thread and read by the event loop; one attribute store is atomic in CPython.
    """

    def __init__(self) -> None:
        self.failure: StorageError | None = None

    def trip(self, error: StorageError) -> StorageError:
        if self.failure is None:
            self.failure = error
        return error

    def check(self, operation: str, path: str) -> None:
        failure = self.failure
        if failure is not None:
            raise StorageError(
                operation, path, failure.errno,
                f"the log directory is offline since {failure.operation} {failure.path} failed: "
                f"{failure.reason}",
            )


class DiskFile(Protocol):
    """One open file. Appends go to the end; reads are positional."""

    path: str

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Write `data` at the end; return the position it starts at.

        Visible to `read` on return; not durable until `flush`. On failure nothing is written
        and StorageError is raised (the disk is then offline).
        """
        ...

    def read(self, position: int, size: int) -> bytes:
        """Up to `size` bytes from `position`; short at the end of the file."""
        ...

    def size(self) -> int: ...

    def flush(self) -> None:
        """Make every byte appended so far durable (fsync). Safe concurrently with `append`.
        StorageError if it fails: then no byte appended since the last successful flush may
        be counted as durable, ever (the disk is offline)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes. Visible at once; durable after the next `flush`.
        StorageError if it fails (the disk is then offline)."""
        ...

    def close(self) -> None: ...

    def fileno(self) -> int | None:
        """A real OS fd for `sendfile`, or None when the file is not an OS file (SimDisk)."""
        ...


class Disk(Protocol):
    """A directory tree of files (the paths are plain strings joined with `os.path.join`).

    Every change (append, flush, truncate, rename, remove, write_atomic, creating a file) that
    fails raises StorageError and takes the disk offline: `failure` is then that first error,
    and every later change raises StorageError too.
    """

    @property
    def failure(self) -> StorageError | None:
        """The first failed change, or None while the disk is healthy."""
        ...

    def open(self, path: str) -> DiskFile:
        """Open `path` for reading and appending, creating it if absent (the new directory
        entry durable on return)."""
        ...

    def create(self, path: str) -> DiskFile:
        """`open`, except that a new directory entry is durable only once `sync_dir` of its
        directory returns."""
        ...

    def exists(self, path: str) -> bool: ...

    def file_size(self, path: str) -> int | None:
        """The size of file `path` without opening it, or None if there is no such file."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) in directory `path`, sorted."""
        ...

    def makedirs(self, path: str) -> None: ...

    def remove(self, path: str, *, durable: bool = True) -> None:
        """Remove a file. Durable on return, or with `durable=False` once `sync_dir` of its
        directory returns (a file nothing depends on staying gone: a deleted segment's)."""
        ...

    def rename(self, src: str, dst: str, *, durable: bool = True) -> None:
        """Rename a file (replacing `dst`); open files keep working. Durable on return, or
        with `durable=False` once `sync_dir` of its directory returns (many renames, one
        directory fsync: the log cleaner's swap)."""
        ...

    def sync_dir(self, path: str) -> None:
        """Make every rename in directory `path` so far durable."""
        ...

    def rmtree(self, path: str) -> None: ...

    def read_file(self, path: str) -> bytes | None:
        """The whole content of a small file, or None if it does not exist."""
        ...

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace `path` with `data` all at once. Durable on return."""
        ...

    def write_atomic_unsynced(self, path: str, data: bytes) -> None:
        """Replace `path` with `data` all at once, without an fsync: after a crash the file may
        hold the old content, the new one, or (on file systems that reorder a rename before
        the data) a torn one. Durable once `sync_file(path)` and `sync_dir` of its directory
        return."""
        ...

    def sync_file(self, path: str) -> None:
        """fsync `path` by name (nothing to do if it is gone: a later change replaced it)."""
        ...


# --------------------------------------------------------------------------- real filesystem


class RealFile:
    """A file on the OS filesystem, reached through a raw fd (see `RealDisk`)."""

    def __init__(self, path: str, fd: int, size: int, health: DiskHealth) -> None:
        self.path = path
        self._fd = fd
        self._health = health
        # The append position is ours, not the kernel's: appends use pwrite at this position,
        # so a failed partial write can be rolled back and never leaves the log torn.
        self._size = size

    def append(self, data: bytes | bytearray | memoryview) -> int:
        if self._health.failure is not None:  # one attribute read on the hot path
            self._health.check("append to", self.path)
        position = self._size
        view = memoryview(data).cast("B")
        total = len(view)
        written = 0
        try:
            while written < total:
                count = os.pwrite(self._fd, view[written:], position + written)
                if count <= 0:
                    raise OSError(errno.EIO, "pwrite wrote nothing")
                written += count
        except OSError as exc:
            if written:
                # Best effort: if this fails too, the junk lies beyond our append position,
                # is never read (reads stop at _size) and is overwritten by the next append.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, position)
            if exc.errno in STORAGE_ERRNOS:
                raise self._health.trip(_storage_error("append to", self.path, exc)) from exc
            raise
        self._size = position + total
        return position

    def read(self, position: int, size: int) -> bytes:
        size = min(size, self._size - position)
        if size <= 0:
            return b""
        first = os.pread(self._fd, size, position)
        if len(first) == size or not first:
            return first
        parts = [first]
        got = len(first)
        while got < size:
            chunk = os.pread(self._fd, size - got, position + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def size(self) -> int:
        return self._size

    def flush(self) -> None:
        fd = self._fd  # read once: close() may run while a flush thread is here
        if fd < 0:
            return
        self._health.check("fsync", self.path)
        try:
            self._sync(fd)
        except OSError as exc:
            if self._fd < 0:
                return  # closed (segment deleted) while we flushed: nothing left to make durable
            raise self._health.trip(_storage_error("fsync", self.path, exc)) from exc

    def _sync(self, fd: int) -> None:
        """The fsync itself (a test-only subclass makes it fail on command)."""
        _fdatasync(fd)

    def truncate(self, size: int) -> None:
        assert 0 <= size <= self._size, (size, self._size)
        self._health.check("truncate", self.path)
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise self._health.trip(_storage_error("truncate", self.path, exc)) from exc
        self._size = size

    def close(self) -> None:
        fd = self._fd
        if fd >= 0:
            self._fd = -1
            os.close(fd)

    def fileno(self) -> int | None:
        return self._fd if self._fd >= 0 else None


def _fdatasync(fd: int) -> None:
    # fdatasync also persists the file size, which is all metadata a log needs back.
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _fsync_dir(path: str) -> None:
    """Make a directory's entries (created, renamed files) durable."""
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RealDisk:
    """The OS filesystem. Directory changes that matter for recovery are fsynced."""

    # The class of the files `open` returns (a test-only subclass fails fsyncs on command).
    file_class: type[RealFile] = RealFile

    def __init__(self) -> None:
        self.health = DiskHealth()

    @property
    def failure(self) -> StorageError | None:
        return self.health.failure

    def _fail(self, operation: str, path: str, exc: OSError) -> None:
        """Raise StorageError for a storage errno (tripping the health), else `exc` itself."""
        if exc.errno in STORAGE_ERRNOS:
            raise self.health.trip(_storage_error(operation, path, exc)) from exc
        raise exc

    def open(self, path: str) -> DiskFile:
        return self._open(path, sync_dir=True)

    def create(self, path: str) -> DiskFile:
        return self._open(path, sync_dir=False)

    def _open(self, path: str, sync_dir: bool) -> DiskFile:
        created = not os.path.exists(path)
        if created:
            self.health.check("create", path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._fail("open", path, exc)
        size = os.fstat(fd).st_size
        if created and sync_dir:
            # A new segment must still exist after a power loss once its data is flushed.
            try:
                _fsync_dir(os.path.dirname(path))
            except OSError as exc:
                os.close(fd)
                raise self.health.trip(_storage_error("fsync directory of", path, exc)) from exc
        return self.file_class(path, fd, size, self.health)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def file_size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove(self, path: str, *, durable: bool = True) -> None:
        self.health.check("remove", path)
        try:
            os.remove(path)
            if durable:
                # A clean-shutdown marker that came back after a power loss would make the
                # next start trust indexes it must rebuild.
                _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            self._fail("remove", path, exc)

    def rename(self, src: str, dst: str, *, durable: bool = True) -> None:
        self.health.check("rename", src)
        try:
            os.replace(src, dst)
            if durable:
                _fsync_dir(os.path.dirname(dst))
        except OSError as exc:
            self._fail("rename", src, exc)

    def sync_dir(self, path: str) -> None:
        self.health.check("fsync", path)
        try:
            _fsync_dir(path)
        except OSError as exc:
            self._fail("fsync", path, exc)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)

    def read_file(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_atomic(self, path: str, data: bytes) -> None:
        self._replace(path, data, sync=True)

    def write_atomic_unsynced(self, path: str, data: bytes) -> None:
        self._replace(path, data, sync=False)

    def _replace(self, path: str, data: bytes, sync: bool) -> None:
        """Write `data` to a temp file and rename it over `path`; with `sync`, the temp file
        is fsynced before the rename and the directory after it (durable on return)."""
        self.health.check("write", path)
        temp = path + TEMP_SUFFIX
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            if sync:
                _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            self._fail("write", path, exc)

    def sync_file(self, path: str) -> None:
        self.health.check("fsync", path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._fail("fsync", path, exc)
        try:
            os.fsync(fd)
        except OSError as exc:
            # Whatever its errno: a failed fsync is a failed write-back (see DiskHealth).
            raise self.health.trip(_storage_error("fsync", path, exc)) from exc
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- simulated disk


@dataclass(frozen=True)
class _PendingWrite:
    position: int
    data: bytes


@dataclass(frozen=True)
class _PendingTruncate:
    size: int


class _SimNode:
    """A file's content: what readers see now, what is durable, and what happened between."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.durable = bytes(data)
        self.pending: list[_PendingWrite | _PendingTruncate] = []
        # Writes whose write-back failed (a failed fsync): never on the disk, even if a later
        # fsync of the file succeeds (Linux counts their pages clean). Until the next crash.
        self.lost: list[_PendingWrite] = []


def _apply(content: bytearray, op: _PendingWrite | _PendingTruncate) -> None:
    if isinstance(op, _PendingTruncate):
        del content[op.size :]
        return
    if op.position > len(content):
        # The earlier writes that filled this gap were lost: a hole reads as zeros.
        content.extend(bytes(op.position - len(content)))
    content[op.position : op.position + len(op.data)] = op.data


@dataclass(frozen=True)
class _DirOp:
    """One directory operation without an fsync (SimDisk's `ordered_dir_ops`): `node` now
    at `path` (None: removed) and before at `old_path` (None: created); `replaced`, the
    node a rename replaced at `path`."""

    path: str | None
    old_path: str | None
    node: _SimNode
    replaced: _SimNode | None


class SimFile:
    """A handle on a `SimDisk` file. Handles die at `SimDisk.crash()` (like the process)."""

    def __init__(self, disk: SimDisk, path: str, node: _SimNode) -> None:
        self.path = path
        self._disk = disk
        self._node = node
        self._generation = disk.generation
        self._closed = False

    def _check(self) -> None:
        assert not self._closed, f"{self.path} used after close"
        assert self._generation == self._disk.generation, f"{self.path} used after a crash"

    def append(self, data: bytes | bytearray | memoryview) -> int:
        self._check()
        self._disk.before_change("append to", self.path)
        chunk = bytes(data)
        self._disk.reserve(len(chunk), self.path)
        node = self._node
        position = len(node.data)
        node.data += chunk
        node.pending.append(_PendingWrite(position, chunk))
        return position

    def read(self, position: int, size: int) -> bytes:
        self._check()
        return bytes(self._node.data[position : position + size])

    def size(self) -> int:
        return len(self._node.data)

    def flush(self) -> None:
        if self._closed:
            return
        self._check()
        node = self._node
        self._disk.synced("fsync", self.path)
        if self._disk.before_change("fsync", self.path):
            # Linux's write-back error: the pages it could not write count as clean from now
            # on, so what was appended since the last good flush can never become durable.
            node.lost.extend(op for op in node.pending if isinstance(op, _PendingWrite))
            node.pending.clear()
            self._disk.raise_injected("fsync", self.path)
        durable = bytearray(node.data)
        for op in node.lost:
            # What the disk holds there: zeros (a later write of the same bytes would fix
            # them; the log never rewrites).
            end = min(op.position + len(op.data), len(durable))
            durable[op.position : end] = bytes(max(end - op.position, 0))
        node.durable = bytes(durable)
        node.pending.clear()

    def truncate(self, size: int) -> None:
        self._check()
        assert 0 <= size <= len(self._node.data)
        self._disk.before_change("truncate", self.path)
        del self._node.data[size:]
        self._node.pending.append(_PendingTruncate(size))

    def close(self) -> None:
        self._closed = True

    def fileno(self) -> int | None:
        return None


class SimDisk:
    """An in-memory disk whose `crash()` behaves like a power loss.

    Model (simplified, as the simulator needs it):
    - directory operations (create, rename, remove) and `write_atomic` are durable at once;
      `write_atomic_unsynced` is durable at `sync_file`: a crash before keeps the old content
      (nothing, for a new file), possibly torn by a prefix of the new one;
    - file content is durable up to the last `flush`; at `crash()` each file keeps its durable
      bytes plus, chosen by the seeded `rng`, either nothing more, or the unflushed writes in
      order up to one that is torn part-way (the page cache wrote back some of them), or only a
      torn prefix of the last write (earlier unflushed bytes read back as zeros);
    - with `ordered_dir_ops`, directory operations made without an fsync (`create`, and
      `rename` / `remove` with `durable=False`) are not durable at once: they reach the disk
      in the order they were made, and any sync makes every one before it durable (a
      journaling file system, ext4 or XFS, commits its journal in order, and an fsync commits
      everything before it); `crash()` keeps a seeded prefix of those made since the last sync;
    - `capacity_bytes`, when set, makes appends beyond it fail like ENOSPC;
    - `fail_next(operation)` makes the next append or fsync (of a file whose path ends with
      `suffix`) fail with `errno`; a failed fsync drops the file's unflushed writes from what a
      crash can keep, as Linux marks pages whose write-back failed clean;
    - any failed change takes the disk offline (`DiskHealth`) until `crash()`, which stands
      for the process restarting on a disk that works again.
    """

    def __init__(
        self, rng: random.Random, capacity_bytes: int | None = None, ordered_dir_ops: bool = False
    ) -> None:
        self._rng = rng
        self.ordered_dir_ops = ordered_dir_ops
        # Directory operations since the last sync, each with what undoes it (see the model).
        self._dir_journal: list[_DirOp] = []
        self._files: dict[str, _SimNode] = {}
        self._dirs: set[str] = {"/", "."}
        self.capacity_bytes = capacity_bytes
        self.generation = 0
        self.health = DiskHealth()
        self._armed: list[tuple[str, str, int]] = []  # (operation, path suffix, errno)
        self._firing = errno.EIO  # the errno of the armed failure firing now
        # The simulator's check that no fsync runs on the event loop: with `loop_guard` set,
        # every sync (a file's flush, a durable directory change, `write_atomic`, ...) made
        # outside `off_loop()` is recorded in `loop_syncs` ("operation path").
        self.loop_guard = False
        self.loop_syncs: list[str] = []
        self._off_loop = 0

    @contextlib.contextmanager
    def off_loop(self) -> Iterator[None]:
        """Syncs made inside run where the shell runs them: in its sync pool, at start-up
        or at a clean stop, never on the event loop between requests."""
        self._off_loop += 1
        try:
            yield
        finally:
            self._off_loop -= 1

    def synced(self, operation: str, path: str) -> None:
        """Called at every sync this disk makes (see `loop_guard`)."""
        if self.loop_guard and not self._off_loop:
            self.loop_syncs.append(f"{operation} {path}")
        self._dir_journal.clear()  # a journal commit: every directory change so far is durable

    def _journal(self, op: _DirOp) -> None:
        if self.ordered_dir_ops:
            self._dir_journal.append(op)

    @property
    def failure(self) -> StorageError | None:
        return self.health.failure

    def fail_next(self, operation: str, suffix: str = "", errno_code: int = errno.EIO) -> None:
        """Make the next `operation` ("append to" or "fsync") of a file whose path ends with
        `suffix` fail with `errno_code` (once)."""
        assert operation in ("append to", "fsync"), operation
        self._armed.append((operation, suffix, errno_code))

    def disarm(self) -> None:
        """Forget the failures armed by `fail_next` that have not fired."""
        self._armed.clear()

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    def before_change(self, operation: str, path: str) -> bool:
        """Refuse a change of an offline disk; True if an armed failure fires on this one (the
        caller then undoes what it must and calls `raise_injected`)."""
        self.health.check(operation, path)
        for i, (armed_operation, suffix, errno_code) in enumerate(self._armed):
            if armed_operation == operation and path.endswith(suffix):
                del self._armed[i]
                self._firing = errno_code
                if operation != "fsync":
                    self.raise_injected(operation, path)
                return True
        return False

    def raise_injected(self, operation: str, path: str) -> None:
        code = self._firing
        raise self.health.trip(StorageError(operation, path, code, os.strerror(code)))

    @staticmethod
    def _norm(path: str) -> str:
        return os.path.normpath(path)

    def _check_parent(self, path: str) -> None:
        parent = os.path.dirname(path) or "."
        if parent not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)

    def used_bytes(self) -> int:
        return sum(len(node.data) for node in self._files.values())

    def reserve(self, size: int, path: str) -> None:
        """Refuse a write that would overflow `capacity_bytes` (a full disk)."""
        if self.capacity_bytes is not None and self.used_bytes() + size > self.capacity_bytes:
            raise self.health.trip(
                _storage_error("append to", path, OSError(errno.ENOSPC, "No space left"))
            )

    def open(self, path: str) -> DiskFile:
        return self._open(path, durable=True)

    def create(self, path: str) -> DiskFile:
        return self._open(path, durable=False)  # directory operations are durable at once

    def _open(self, path: str, durable: bool) -> DiskFile:
        path = self._norm(path)
        node = self._files.get(path)
        if node is None:
            self._check_parent(path)
            self.health.check("create", path)
            node = self._files[path] = _SimNode()
            if durable:
                self.synced("fsync directory of", path)
            else:
                self._journal(_DirOp(path, None, node, None))
        return SimFile(self, path, node)

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self._files or path in self._dirs

    def file_size(self, path: str) -> int | None:
        node = self._files.get(self._norm(path))
        return None if node is None else len(node.data)

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        names = [os.path.basename(p) for p in self._files if os.path.dirname(p) == path]
        names += [os.path.basename(d) for d in self._dirs if d != path and os.path.dirname(d) == path]
        return sorted(names)

    def makedirs(self, path: str) -> None:
        path = self._norm(path)
        while path not in self._dirs:
            self._dirs.add(path)
            parent = os.path.dirname(path)
            if not parent or parent == path:
                break
            path = parent

    def remove(self, path: str, *, durable: bool = True) -> None:
        path = self._norm(path)
        self.health.check("remove", path)
        node = self._files.pop(path, None)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if durable:
            self.synced("fsync directory of", path)
        else:
            self._journal(_DirOp(None, path, node, None))

    def rename(self, src: str, dst: str, *, durable: bool = True) -> None:
        # Directory operations are durable at once in this model (see the class docstring).
        src, dst = self._norm(src), self._norm(dst)
        self.health.check("rename", src)
        if src in self._dirs:
            self._rename_dir(src, dst, durable)
            return
        node = self._files.pop(src, None)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", src)
        self._check_parent(dst)
        replaced = self._files.get(dst)
        self._files[dst] = node
        if durable:
            self.synced("fsync directory of", dst)
        else:
            self._journal(_DirOp(dst, src, node, replaced))

    def _rename_dir(self, src: str, dst: str, durable: bool) -> None:
        """A directory and everything under it, in one step (durable at once: a directory
        rename is not journalled in this model)."""
        assert dst not in self._dirs and dst not in self._files, dst
        self._check_parent(dst)
        prefix = src + os.sep
        for path in [p for p in self._files if p.startswith(prefix)]:
            self._files[dst + path[len(src):]] = self._files.pop(path)
        for path in [d for d in self._dirs if d == src or d.startswith(prefix)]:
            self._dirs.discard(path)
            self._dirs.add(dst + path[len(src):])
        if durable:
            self.synced("fsync directory of", dst)

    def sync_dir(self, path: str) -> None:
        self.health.check("fsync", path)  # directory operations are durable at once here
        self.synced("fsync", path)

    def rmtree(self, path: str) -> None:
        path = self._norm(path)
        prefix = path + os.sep
        for name in [p for p in self._files if p.startswith(prefix)]:
            del self._files[name]
        self._dirs = {d for d in self._dirs if d != path and not d.startswith(prefix)}

    def read_file(self, path: str) -> bytes | None:
        node = self._files.get(self._norm(path))
        return None if node is None else bytes(node.data)

    def write_atomic(self, path: str, data: bytes) -> None:
        path = self._norm(path)
        self._check_parent(path)
        self.health.check("write", path)
        self._files[path] = _SimNode(data)
        self.synced("write", path)

    def write_atomic_unsynced(self, path: str, data: bytes) -> None:
        # The new content is what a crash keeps unless `sync_file` runs first: it stays
        # pending, and the old content (or nothing, for a new file) is what is durable.
        path = self._norm(path)
        self._check_parent(path)
        self.health.check("write", path)
        old = self._files.get(path)
        node = _SimNode(data)
        node.durable = b"" if old is None else old.durable
        node.pending.append(_PendingTruncate(0))
        node.pending.append(_PendingWrite(0, bytes(data)))
        self._files[path] = node

    def sync_file(self, path: str) -> None:
        path = self._norm(path)
        self.health.check("fsync", path)
        self.synced("fsync", path)
        node = self._files.get(path)
        if node is not None:
            node.durable = bytes(node.data)
            node.pending.clear()

    # -- faults

    def crash(self) -> None:
        """Power loss: every file falls back to what reached the disk; open handles die."""
        journal, self._dir_journal = self._dir_journal, []
        kept = self._rng.randint(0, len(journal)) if journal else 0
        for op in reversed(journal[kept:]):  # undone, last first
            if op.path is not None:
                self._files.pop(op.path, None)  # (or gone since, unjournalled: rmtree)
                if op.replaced is not None:
                    self._files[op.path] = op.replaced
            if op.old_path is not None:
                self._files[op.old_path] = op.node
        for node in self._files.values():
            content = self._survivor(node)
            node.data = content
            node.durable = bytes(content)
            node.pending.clear()
            node.lost.clear()
        self.generation += 1
        # The process is gone; the next one finds a disk that takes writes again.
        self.health = DiskHealth()
        self._armed.clear()

    def _survivor(self, node: _SimNode) -> bytearray:
        content = bytearray(node.durable)
        pending = node.pending
        if not pending:
            return content
        rng = self._rng
        if rng.random() < 0.5:
            # Write-back reached the disk in order up to some write, which was torn.
            kept = rng.randint(0, len(pending))
            for op in pending[:kept]:
                _apply(content, op)
            if kept < len(pending):
                torn = pending[kept]
                if isinstance(torn, _PendingWrite) and torn.data:
                    cut = rng.randint(0, len(torn.data) - 1)
                    _apply(content, _PendingWrite(torn.position, torn.data[:cut]))
        else:
            # Only (a prefix of) the last write made it.
            last = pending[-1]
            if isinstance(last, _PendingWrite):
                cut = rng.randint(0, len(last.data))
                if cut:
                    _apply(content, _PendingWrite(last.position, last.data[:cut]))
        return content

    def corrupt(self, path: str, position: int, data: bytes) -> None:
        """Overwrite bytes in place, durably (bit rot, a bad sector): for recovery tests."""
        node = self._files[self._norm(path)]
        node.data[position : position + len(data)] = data
        node.durable = bytes(node.data)
        node.pending.clear()


class PendingSyncs:
    """Files one partition log wrote, and directory entries it made, without an fsync.

    The event loop writes (`write_atomic`, `create`); a flush job takes what is pending
    (`take`) and syncs it in the flusher thread before its completion moves anything that
    relies on it (the recovery point). Each path and directory is synced once however often
    it was written since the last job: a roll's indexes and snapshot, a leader epoch and a
    checkpoint cost one fsync each per flush round, and their directory one.
    """

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.paths: set[str] = set()
        self.dirs: set[str] = set()

    def write_atomic(self, path: str, data: bytes) -> None:
        self.disk.write_atomic_unsynced(path, data)
        self.paths.add(path)
        self.dirs.add(os.path.dirname(path))

    def create(self, path: str) -> DiskFile:
        file = self.disk.create(path)
        self.dirs.add(os.path.dirname(path))
        return file

    def add_dir(self, path: str) -> None:
        """A directory entry made in `path` (a new partition directory in the data directory)."""
        self.dirs.add(path)

    def take(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(paths, dirs) pending now, forgotten here: the caller syncs them."""
        paths, dirs = tuple(sorted(self.paths)), tuple(sorted(self.dirs))
        self.paths.clear()
        self.dirs.clear()
        return paths, dirs

    def __bool__(self) -> bool:
        return bool(self.paths or self.dirs)


def sync_all(disk: Disk, paths: Iterable[str], dirs: Iterable[str]) -> None:
    """fsync every file, then every directory (a file's content before the entry naming it)."""
    for path in paths:
        disk.sync_file(path)
    for path in dirs:
        disk.sync_dir(path)
