"""A real disk whose fsync fails on command: the "disk-error" fault of test broker processes.

Owns: `FailingFile` (a `RealFile` whose fsync can be made to fail with EIO), `arm_on_signal`
(SIGUSR1 arms the failure of the next fsync of a `.log` file, SIGUSR2 withdraws it) and
`drop_lost_pages` (run as the process exits). Installed only by `ackly.testing.faulty_serve --fault disk-error`; `ackly
serve` has no way to reach it.

What it models: Linux's write-back error (the "fsyncgate" case). The fsync fails once with
EIO; the pages it could not write are then counted as clean, so a later fsync succeeds and the
bytes appended since the last good fsync are gone from the disk while the page cache still
shows them. The broker must never acknowledge them. To make that loss real for the test, the
files whose fsync failed are cut back to what their last good fsync covered when the process
exits (after the broker stopped): a restart then finds exactly what the disk would hold.

Invariants:
- at most one armed failure fires per SIGUSR1; it fires on a `.log` file only, and only on an
  fsync with bytes beyond the file's last good fsync (so the failure always loses something);
- a file's recorded durable length is the size it had before its last successful fsync
  started, lowered by any truncation since (so the cut never removes fsynced bytes).
"""

from __future__ import annotations

import atexit
import errno
import os
import signal
import threading

from ackly.log.disk import RealFile

_armed = threading.Event()
_lock = threading.Lock()
# path -> the length its last good fsync made durable, for files whose fsync failed
_lost: dict[str, int] = {}


class FailingFile(RealFile):
    """A `RealFile` whose next fsync fails with EIO once a failure is armed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._durable = self.size()  # what was there at open counts as durable

    def _sync(self, fd: int) -> None:
        with _lock:
            before = self.size()
            # Only an fsync that has unflushed bytes to lose fails: one with nothing new would
            # lose nothing, and the test could not tell an acknowledgement that leaned on it.
            fire = _armed.is_set() and self.path.endswith(".log") and before > self._durable
            if fire:
                _armed.clear()
                _lost[self.path] = self._durable
        if fire:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super()._sync(fd)
        with _lock:
            self._durable = max(self._durable, min(before, self.size()))

    def truncate(self, size: int) -> None:
        super().truncate(size)
        with _lock:
            self._durable = min(self._durable, size)


def arm() -> None:
    """Make the next fsync of a `.log` file fail (once)."""
    _armed.set()


def disarm() -> None:
    """Withdraw an armed failure that has not fired."""
    _armed.clear()


def arm_on_signal(sig: int = signal.SIGUSR1, disarm_sig: int = signal.SIGUSR2) -> None:
    """Arm a failure each time the process receives `sig` (withdraw it on `disarm_sig`); cut
    lost pages at exit."""
    signal.signal(sig, lambda _signum, _frame: arm())
    signal.signal(disarm_sig, lambda _signum, _frame: disarm())
    atexit.register(drop_lost_pages)


def drop_lost_pages() -> dict[str, tuple[int, int]]:
    """Cut every file whose fsync failed back to its last good fsync (the process is about to
    exit, its files are closed). Returns path -> (size before, size after) for each cut."""
    cut: dict[str, tuple[int, int]] = {}
    with _lock:
        lost = dict(_lost)
    for path, durable in lost.items():
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue
        if size > durable:
            os.truncate(path, durable)
            cut[path] = (size, durable)
            print(f"ackly test broker: lost pages of {path}: {size} -> {durable} bytes", flush=True)
    return cut
