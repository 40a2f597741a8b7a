"""The data directory's clean-shutdown state: one set of checkpoint files for all its logs.

Owns: `LogDirCheckpoints`, the files Kafka's LogManager keeps per log directory, written once
at a clean shutdown for every log that closed cleanly, and read once at the next start:
    recovery-point-offset-checkpoint   every batch below it is durable
    log-start-offset-checkpoint        the log start offset
    replication-offset-checkpoint      the high watermark
    clean-shutdown-leader-epochs       the leader epoch of every log this broker led at the
                                       stop (ackly's own; same format, the epoch in place of
                                       the offset)
    .clean-shutdown                    the marker (Kafka's `.kafka_cleanshutdown`)
A start-up after a clean stop then reads five files, however many partitions there are,
and a clean stop writes five, instead of a marker and three checkpoints per partition.
A single broker resumes leading each listed log in the epoch recorded (no election: nothing
it acknowledged was lost, see ClusterMember's resumed leadership).

Besides them, `log-recovery-checkpoint` records for every log where its recovery point lies
exactly: the offset, the segment holding it and the byte position in that segment's .log
(everything before it was fsynced), with the log start and the HW. The broker rewrites it
every log.flush.offset.checkpoint.interval.ms while it runs (Kafka's LogManager writes its
recovery-point-offset-checkpoint as often) and at a clean stop. A start after a crash reads it
and checks only the bytes after each log's position (LogLoader recovers from the recovery
point too, but from the start of the segment holding it): a log that took no write since the
checkpoint is not scanned at all, so the time to recover is bounded by the unflushed tail,
not by the partition count or the bytes stored.

On-disk layout of each checkpoint file (Kafka's OffsetCheckpointFile, ASCII):
    0\\n                           version
    <count>\\n
    <topic> <partition> <offset>\\n  one line per log
The marker holds the single line `0\\n`.

Invariants:
- The marker is written last, after every checkpoint file is durable, and vouches only for
  the logs the files list: each was flushed, its indexes, producer snapshot and every other
  file made durable, and closed, before the files were written. A log the files do not list
  (one that failed to close) is recovered from its own checkpoints, as after a crash.
- The marker is removed (durably) when it is read, before any log changes, so a crash after
  that start never passes for a clean stop: the checkpoint files stay on disk but are only
  trusted while the marker is there.
- Parsing is strict: a garbled file makes the whole state untrusted (every log recovers).
- `log-recovery-checkpoint` never says more than the truth: its offsets and positions were
  durable when it was written, it is written whole (atomically, without an fsync: a crash may
  leave the previous version, lower, or a garbled one, which is ignored), and it is removed
  (`invalidate`) before any log goes below a value it recorded (a truncation: made durable by
  the truncated log's next flush job, before anything is appended after the cut) or is
  deleted (durably at once: a new log of the same name must not inherit the entry).

Each log keeps its own `recovery-point` / `high-watermark` / `log-start-offset` files too
(checkpoint.py): the truth after a crash, conservative (never above the true value), and
written when a log changes in ways a crash must not undo (truncation, a new log start).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from ackly.log.disk import Disk

logger = logging.getLogger(__name__)

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_CHECKPOINT = "log-start-offset-checkpoint"
HIGH_WATERMARK_CHECKPOINT = "replication-offset-checkpoint"
LEADER_EPOCH_CHECKPOINT = "clean-shutdown-leader-epochs"
CLEAN_SHUTDOWN_MARKER = ".clean-shutdown"
LOG_RECOVERY_CHECKPOINT = "log-recovery-checkpoint"

_VERSION = 0
_MARKER = b"0\n"
_LINE = re.compile(r"(\S+) (0|[1-9][0-9]{0,9}) (0|[1-9][0-9]{0,18})")
_NUMBER = r" (0|[1-9][0-9]{0,18})"
# <topic> <partition> <recovery point> <segment base> <position> <log start> <high watermark>
_RECOVERY_LINE = re.compile(r"(\S+) (0|[1-9][0-9]{0,9})" + _NUMBER * 5)


@dataclass(frozen=True, slots=True)
class CleanLogState:
    """What a log was at its clean close."""

    recovery_point: int
    log_start_offset: int
    high_watermark: int
    # The active segment's base and .log size at the close: where the recovery point lies.
    segment_base: int = -1
    position: int = -1


@dataclass(frozen=True, slots=True)
class RecoveryCheckpoint:
    """Where a running log's recovery point lay at the last checkpoint: every batch below
    `recovery_point` is durable, and they end at byte `position` of the .log of the segment
    based at `segment_base`. The log start and HW were at least these."""

    recovery_point: int
    segment_base: int
    position: int
    log_start_offset: int
    high_watermark: int


def encode_recovery_checkpoint(entries: dict[tuple[str, int], RecoveryCheckpoint]) -> bytes:
    lines = [str(_VERSION), str(len(entries))]
    lines += [
        f"{topic} {partition} {e.recovery_point} {e.segment_base} {e.position} "
        f"{e.log_start_offset} {e.high_watermark}"
        for (topic, partition), e in sorted(entries.items())
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _checkpoint_lines(data: bytes) -> list[str] | None:
    """The entry lines of a checkpoint file (version line, count line, then the entries, each
    ending in a newline), or None if its header, count or encoding is wrong."""
    try:
        lines = data.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    if len(lines) < 3 or lines[-1] != "" or lines[0] != str(_VERSION) or not lines[1].isdigit():
        return None
    body = lines[2:-1]
    return body if int(lines[1]) == len(body) else None


def decode_recovery_checkpoint(data: bytes) -> dict[tuple[str, int], RecoveryCheckpoint] | None:
    """The entries of a log-recovery-checkpoint file, or None if it is garbled."""
    body = _checkpoint_lines(data)
    if body is None:
        return None
    entries: dict[tuple[str, int], RecoveryCheckpoint] = {}
    for line in body:
        match = _RECOVERY_LINE.fullmatch(line)
        if match is None:
            return None
        rp, base, position, start, hw = (int(match.group(i)) for i in range(3, 8))
        if base > rp:
            return None
        entries[(match.group(1), int(match.group(2)))] = RecoveryCheckpoint(
            rp, base, position, start, hw
        )
    return entries


def encode_checkpoint(offsets: dict[tuple[str, int], int]) -> bytes:
    lines = [str(_VERSION), str(len(offsets))]
    lines += [f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(offsets.items())]
    return ("\n".join(lines) + "\n").encode("ascii")


def decode_checkpoint(data: bytes) -> dict[tuple[str, int], int] | None:
    """The offsets of a checkpoint file, or None if it is garbled."""
    body = _checkpoint_lines(data)
    if body is None:
        return None
    offsets: dict[tuple[str, int], int] = {}
    for line in body:
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        offsets[(match.group(1), int(match.group(2)))] = int(match.group(3))
    return offsets


def _key(dir_name: str) -> tuple[str, int] | None:
    """(topic, partition) of a partition directory name `<topic>-<partition>`."""
    topic, sep, partition = dir_name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class LogDirCheckpoints:
    """The clean-shutdown state of every log in one data directory."""

    def __init__(self, disk: Disk, data_dir: str) -> None:
        self._disk = disk
        self._data_dir = data_dir
        self._clean: dict[tuple[str, int], CleanLogState] = {}
        self._recovery: dict[tuple[str, int], RecoveryCheckpoint] = {}
        # (topic, partition) -> the leader epoch this broker led the log in at the clean stop,
        # for the logs the clean state vouches for (empty after a crash).
        self.led_epochs: dict[tuple[str, int], int] = {}
        # Whether log-recovery-checkpoint may be on disk (`invalidate` removes it).
        self._recovery_file_present = True
        # Whether `load` found a valid clean-shutdown marker (the last stop was clean).
        self.clean_start = False

    def _path(self, name: str) -> str:
        return os.path.join(self._data_dir, name)

    def load(self) -> int:
        """Read the state a clean stop left and remove the marker (durably), so a crash from
        here on does not look clean. Returns how many logs it vouches for."""
        marker = self._path(CLEAN_SHUTDOWN_MARKER)
        data = self._disk.read_file(marker)
        if data is None:
            self._load_recovery()
            return 0
        self._disk.remove(marker)
        if data != _MARKER:
            logger.warning("%s is garbled: every log is recovered", marker)
            return 0
        self.clean_start = True
        files = [self._disk.read_file(self._path(name)) for name in
                 (RECOVERY_POINT_CHECKPOINT, LOG_START_CHECKPOINT, HIGH_WATERMARK_CHECKPOINT)]
        decoded = [None if f is None else decode_checkpoint(f) for f in files]
        recovery_points, log_starts, high_watermarks = decoded
        if recovery_points is None or log_starts is None or high_watermarks is None:
            logger.warning("%s: a log-directory checkpoint is missing or garbled: every log is "
                           "recovered", self._data_dir)
            return 0
        # Where each log ended (written with them at the clean stop): its active segment is
        # then trusted without reading anything.
        self._load_recovery()
        ends, self._recovery = self._recovery, {}
        for key, recovery_point in recovery_points.items():
            log_start = log_starts.get(key)
            hw = high_watermarks.get(key)
            if log_start is not None and hw is not None:
                end = ends.get(key)
                if end is not None and end.recovery_point == recovery_point:
                    self._clean[key] = CleanLogState(recovery_point, log_start, hw,
                                                     end.segment_base, end.position)
                else:
                    self._clean[key] = CleanLogState(recovery_point, log_start, hw)
        self._load_led_epochs()
        return len(self._clean)

    def _load_led_epochs(self) -> None:
        """The leader epochs recorded with the clean state, for the logs it vouches for. A
        missing or garbled file costs only the elections the epochs would have spared."""
        data = self._disk.read_file(self._path(LEADER_EPOCH_CHECKPOINT))
        epochs = None if data is None else decode_checkpoint(data)
        if epochs is None:
            if data is not None:
                logger.warning("%s is garbled: every partition is elected in a new epoch",
                               self._path(LEADER_EPOCH_CHECKPOINT))
            return
        self.led_epochs = {key: epoch for key, epoch in epochs.items() if key in self._clean}

    def _load_recovery(self) -> None:
        """After a crash: where each log's recovery point lay at the last checkpoint."""
        data = self._disk.read_file(self._path(LOG_RECOVERY_CHECKPOINT))
        if data is None:
            self._recovery_file_present = False
            return
        entries = decode_recovery_checkpoint(data)
        if entries is None:
            logger.warning("%s is garbled: logs recover from their own checkpoints",
                           self._path(LOG_RECOVERY_CHECKPOINT))
            return
        self._recovery = entries

    def take(self, dir_name: str) -> CleanLogState | RecoveryCheckpoint | None:
        """The clean-close state of the log in directory `dir_name` (or, after a crash, its
        last recovery checkpoint), once: a log opened again later in this process has changed
        since."""
        key = _key(dir_name)
        if key is None:
            return None
        clean = self._clean.pop(key, None)
        return clean if clean is not None else self._recovery.pop(key, None)

    def forget(self) -> None:
        self._clean.clear()
        self._recovery.clear()
        self.led_epochs.clear()

    def invalidate(self, durable: bool = True) -> None:
        """A log is about to go below what the recovery checkpoint says of it (truncation) or
        be deleted: remove the file before that happens, durably on return, or with
        `durable=False` once the caller's flush job syncs this directory (a truncation: see
        PartitionLog._before_truncation). The next checkpoint writes it again with the new
        values. (Entries not taken yet stay valid: each log's own was taken when it opened,
        before it could change.)"""
        if self._recovery_file_present:
            path = self._path(LOG_RECOVERY_CHECKPOINT)
            if self._disk.exists(path):
                self._disk.remove(path, durable=durable)
            self._recovery_file_present = False

    def write_recovery_checkpoint(self, entries: dict[str, RecoveryCheckpoint]) -> None:
        """Record where every listed log's recovery point lies (partition directory name ->
        entry), without an fsync: a crash that loses this write leaves an older version
        (never above the truth) or none."""
        keyed = {key: e for name, e in entries.items() if (key := _key(name)) is not None}
        self._disk.write_atomic_unsynced(
            self._path(LOG_RECOVERY_CHECKPOINT), encode_recovery_checkpoint(keyed)
        )
        self._recovery_file_present = True

    def write_clean_shutdown(self, states: dict[str, CleanLogState],
                             led_epochs: dict[str, int] | None = None) -> None:
        """Write the checkpoint files for `states` (partition directory name -> state) and
        the leader epoch of each log led at the stop (`led_epochs`, by directory name), then
        the marker; each durable on return. Call only once every listed log is closed."""
        keyed = {key: state for name, state in states.items() if (key := _key(name)) is not None}
        epochs = {key: epoch for name, epoch in (led_epochs or {}).items()
                  if (key := _key(name)) is not None and key in keyed}
        # Always written, so that an earlier stop's epochs are never read with these states.
        self._disk.write_atomic(self._path(LEADER_EPOCH_CHECKPOINT), encode_checkpoint(epochs))
        for name, field in ((RECOVERY_POINT_CHECKPOINT, "recovery_point"),
                            (LOG_START_CHECKPOINT, "log_start_offset"),
                            (HIGH_WATERMARK_CHECKPOINT, "high_watermark")):
            offsets = {key: getattr(state, field) for key, state in keyed.items()}
            self._disk.write_atomic(self._path(name), encode_checkpoint(offsets))
        # For a crash after the next start: the recovery points are exact until then.
        recovery = {
            key: RecoveryCheckpoint(s.recovery_point, s.segment_base, s.position,
                                    s.log_start_offset, s.high_watermark)
            for key, s in keyed.items() if s.segment_base >= 0
        }
        self._disk.write_atomic(self._path(LOG_RECOVERY_CHECKPOINT),
                                encode_recovery_checkpoint(recovery))
        self._recovery_file_present = True
        self._disk.write_atomic(self._path(CLEAN_SHUTDOWN_MARKER), _MARKER)
