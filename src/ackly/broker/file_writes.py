"""Small files a broker replaces whole and durably (Disk.write_atomic: temp file, fsync, rename,
fsync of the directory), written off the event loop: a single broker's metadata store
(`metadata.json`, cluster/durable_store.py) and its dynamic broker configs
(broker/dynamic_config.py); and the directories of deleted partitions, removed with a sync of
the data directory (`remove`, partition_log.remove_deleted_dir).

Owns: the writes asked for and not yet durable, per path, and the batch the shell's writer
thread is running. The node asks (`write`), the shell takes a batch (`take`), runs every
FileWrite of it in one thread, one after the other, and reports (`done`); each write's
callbacks then learn that their content is durable, or the error that stopped it.

Invariants:
- One writer: at most one batch is out at a time, so two writes of one path reach the disk
  in the order they were asked.
- Coalescing: a write asked while an earlier one of the same path is still waiting replaces
  its content (nobody can have seen the earlier content as durable) and inherits its
  callbacks, which then wait for the later content.
- A callback runs only after the content it was given with, or a later one of that path, is
  durable; or with the StorageError that stopped it (the caller takes the log directory
  offline: no later write is ever taken as covering a failed one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ackly.errors import StorageError
from ackly.log.disk import Disk
from ackly.log.partition_log import remove_deleted_dir

Durable = Callable[[StorageError | None], None]


@dataclass
class FileWrite:
    """One file's next content, or (`data` None) a deleted partition's directory to remove;
    `run` does it durably (in the shell's writer thread)."""

    disk: Disk
    path: str
    data: bytes | None
    then: list[Durable] = field(default_factory=list)

    def run(self) -> None:
        if self.data is None:
            remove_deleted_dir(self.disk, self.path)
        else:
            self.disk.write_atomic(self.path, self.data)


class FileWrites:
    """The pending writes of one broker (see the module docstring)."""

    def __init__(self, disk: Disk) -> None:
        self._disk = disk
        self._waiting: dict[str, FileWrite] = {}  # by path, in the order first asked
        self._out: list[FileWrite] | None = None
        self.writes = 0  # files written (tests check coalescing)

    def write(self, path: str, data: bytes, then: Durable | None = None) -> None:
        """Ask for `path` to hold `data`; `then(None)` once it is durable."""
        pending = self._waiting.get(path)
        if pending is None:
            pending = self._waiting[path] = FileWrite(self._disk, path, data)
        else:
            pending.data = data  # the earlier content was never written: the later replaces it
        if then is not None:
            pending.then.append(then)

    def remove(self, path: str) -> None:
        """Ask for the directory `path` (a deleted partition's, renamed away) to be removed."""
        self._waiting.setdefault(path, FileWrite(self._disk, path, None))

    @property
    def has_work(self) -> bool:
        """A batch can be taken now."""
        return self._out is None and bool(self._waiting)

    @property
    def busy(self) -> bool:
        return self._out is not None or bool(self._waiting)

    def take(self) -> list[FileWrite]:
        """The next batch (empty while one is out); the shell runs it and calls `done`."""
        if not self.has_work:
            return []
        batch = list(self._waiting.values())
        self._waiting.clear()
        self._out = batch
        return batch

    def done(self, batch: list[FileWrite], error: StorageError | None) -> None:
        """The batch ran: every write of it is durable, or `error` stopped it."""
        assert batch is self._out, "not the batch that is out"
        self._out = None
        if error is None:
            self.writes += len(batch)
        for w in batch:
            for then in w.then:
                then(error)

    def run_all(self, batch: list[FileWrite]) -> None:
        """Run a batch where it is (start-up, tests without a writer thread)."""
        error: StorageError | None = None
        try:
            for w in batch:
                w.run()
        except StorageError as exc:
            error = exc
        self.done(batch, error)


def run_batch(batch: list[FileWrite]) -> None:
    """In the shell's writer thread: every write of a batch, in order (raises StorageError)."""
    for w in batch:
        w.run()
