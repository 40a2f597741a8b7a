"""Small state files of one partition directory: offset checkpoints and the clean-shutdown marker.

Owns: reading and writing `recovery-point`, `high-watermark` and `log-start-offset` (the idea of
Kafka's OffsetCheckpointFile, one value per file), and the `clean-shutdown` marker of a log
closed alone. A broker's clean stop records every log in the data directory's files instead
(log_dir.py); these per-log files are what a start after a crash reads.

On-disk layout of an offset checkpoint (ASCII, as Kafka's checkpoint files are):
    0\\n            version
    <offset>\\n     a non-negative decimal integer, no sign, no spaces
The marker holds the single line `0\\n`.

Invariants:
- Every write replaces the file whole (atomically): `write` is durable on return;
  `write_unsynced` only once its `PendingSyncs` are synced (a crash before then may leave the
  previous value, which is never above the new one where the log uses it, or a garbled file).
- Parsing is strict; a garbled file reads as absent (None), so recovery falls back to the safe
  value (scan everything / derive it from the segments) instead of trusting garbage.
"""

from __future__ import annotations

import os
import re

from ackly.log.disk import Disk, PendingSyncs

CHECKPOINT_VERSION = 0
RECOVERY_POINT_FILE = "recovery-point"
HIGH_WATERMARK_FILE = "high-watermark"
LOG_START_OFFSET_FILE = "log-start-offset"
CLEAN_SHUTDOWN_FILE = "clean-shutdown"

_CHECKPOINT = re.compile(rb"0\n(0|[1-9][0-9]{0,18})\n")
_MARKER = b"0\n"


class OffsetCheckpoint:
    """One offset kept in one file of a partition directory."""

    def __init__(self, disk: Disk, dir_path: str, name: str) -> None:
        self._disk = disk
        self.path = os.path.join(dir_path, name)
        self._written: int | None = None  # the value in the file (maybe not durable yet)
        self._durable = False  # whether `_written` is durable

    def read(self) -> int | None:
        """The checkpointed offset, or None if the file is absent or garbled."""
        data = self._disk.read_file(self.path)
        if data is None:
            # Absent reads as 0 wherever a checkpoint is used (recovery from the start, the log
            # start and HW at the first segment's base): writing a 0 to it would change nothing,
            # so a new partition costs no checkpoint writes (three fsynced files per partition
            # made creating thousands of partitions slow).
            self._written, self._durable = 0, True
            return None
        match = _CHECKPOINT.fullmatch(data)
        if match is None:
            return None
        value = int(match.group(1))
        self._written, self._durable = value, True
        return value

    def write(self, offset: int) -> None:
        """Durably record `offset` (skipped when it is already the value on disk)."""
        assert offset >= 0, offset
        if offset == self._written and self._durable:
            return
        self._disk.write_atomic(self.path, _encode(offset))
        self._written, self._durable = offset, True

    def write_unsynced(self, offset: int, syncs: PendingSyncs) -> None:
        """Record `offset`, durable once `syncs` are synced (skipped when already written)."""
        assert offset >= 0, offset
        if offset == self._written:
            return
        syncs.write_atomic(self.path, _encode(offset))
        self._written, self._durable = offset, False


def _encode(offset: int) -> bytes:
    return f"{CHECKPOINT_VERSION}\n{offset}\n".encode("ascii")


class CleanShutdownMarker:
    """Present only between a clean close and the next open of the partition."""

    def __init__(self, disk: Disk, dir_path: str) -> None:
        self._disk = disk
        self.path = os.path.join(dir_path, CLEAN_SHUTDOWN_FILE)

    def is_present(self) -> bool:
        return self._disk.read_file(self.path) == _MARKER

    def write(self) -> None:
        """Durable on return; write it last, after everything it vouches for is durable."""
        self._disk.write_atomic(self.path, _MARKER)

    def remove(self) -> None:
        if self._disk.exists(self.path):
            self._disk.remove(self.path)
