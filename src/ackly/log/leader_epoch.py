"""The leader-epoch cache of one partition replica: where each leader epoch's records begin.

Owns: the `leader-epoch-checkpoint` file and the list of (epoch, start offset) entries it holds
(Kafka's LeaderEpochFileCache, KIP-101/KIP-279). An entry (E, S) says: the first record written
in leader epoch E has offset S, and every record from S up to the next entry's start offset was
written in epoch E. A leader uses it to answer "where does epoch E end in your log?"
(OffsetsForLeaderEpoch, and the diverging-epoch check of a follower's Fetch, KIP-595 style);
a follower uses the answer to truncate exactly the records that are not on the leader, never
by its own high watermark (rule 11).

On-disk layout of `leader-epoch-checkpoint` (Kafka's text format, written atomically):
    0\\n                      version
    <count>\\n
    <epoch> <start offset>\\n  one line per entry, epochs and offsets strictly increasing

Invariants:
- Epochs and start offsets strictly increase from entry to entry; both are >= 0.
- Without `PendingSyncs` the file equals the entries in memory, durably, after every
  mutating call. With them (a partition log's cache) a change is written only by
  `write_pending`, which the log calls when it begins a flush job (and at close), and is
  durable once that job synced it, before the recovery point passes any record of a new
  entry; recovery re-assigns the epochs of every batch it re-scans after the recovery point
  (as Kafka's LogSegment.recover does), so a crash never leaves a durable record whose epoch
  the cache lacks. A leader's new epoch at a start-up or election then costs no file write.
- The log keeps it aligned: entries at or above LEO are dropped on truncation and after
  recovery; the first entry never starts below the log start offset (truncate_from_start).

Deterministic: no clock, no threads; files only through `Disk`.
"""

from __future__ import annotations

import logging
import os
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from ackly.log.disk import Disk, PendingSyncs

logger = logging.getLogger(__name__)

LEADER_EPOCH_FILE = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
_VERSION = 0
_LINE = re.compile(rb"(0|[1-9][0-9]{0,9}) (0|[1-9][0-9]{0,18})")


@dataclass(frozen=True, slots=True)
class EpochEntry:
    epoch: int
    start_offset: int


def decode_checkpoint(data: bytes) -> list[EpochEntry] | None:
    """The entries of a checkpoint file, or None if it is garbled (not trusted at all)."""
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"" or lines[0] != str(_VERSION).encode():
        return None
    if not lines[1].isdigit():
        return None
    count = int(lines[1])
    body = lines[2:-1]
    if count != len(body):
        return None
    entries: list[EpochEntry] = []
    for line in body:
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        entry = EpochEntry(int(match.group(1)), int(match.group(2)))
        if entries and (entry.epoch <= entries[-1].epoch or entry.start_offset <= entries[-1].start_offset):
            return None
        entries.append(entry)
    return entries


def encode_checkpoint(entries: list[EpochEntry]) -> bytes:
    lines = [str(_VERSION), str(len(entries))] + [f"{e.epoch} {e.start_offset}" for e in entries]
    return ("\n".join(lines) + "\n").encode("ascii")


class LeaderEpochCache:
    """The (epoch, start offset) entries of one partition replica, kept durable."""

    def __init__(self, disk: Disk, dir_path: str, syncs: PendingSyncs | None = None) -> None:
        self._disk = disk
        self._syncs = syncs
        self.path = os.path.join(dir_path, LEADER_EPOCH_FILE)
        self._entries: list[EpochEntry] = []
        self._unwritten = False  # changed since the last `write_pending` (with PendingSyncs)
        self._written: list[EpochEntry] = []  # what the file holds (as far as this run knows)

    # --- loading ---------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the checkpoint; False if it is absent or garbled (then the cache is empty and the
        log rebuilds it from its batches' partition leader epochs)."""
        data = self._disk.read_file(self.path)
        entries = None if data is None else decode_checkpoint(data)
        if entries is None:
            if data is not None:
                logger.warning("%s is garbled; rebuilding it from the log", self.path)
            self._entries = []
            return False
        self._entries = entries
        self._written = list(entries)
        return True

    def replace(self, entries: list[EpochEntry]) -> None:
        """Set every entry at once (a rebuild from the log) and write them durably."""
        self._entries = []
        for entry in entries:
            self._put(entry)
        self._flush()

    # --- queries -----------------------------------------------------------------------------

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int | None:
        return self._entries[-1].epoch if self._entries else None

    @property
    def earliest_entry(self) -> EpochEntry | None:
        return self._entries[0] if self._entries else None

    def start_offset_of(self, epoch: int) -> int | None:
        for entry in self._entries:
            if entry.epoch == epoch:
                return entry.start_offset
        return None

    def epoch_for_offset(self, offset: int) -> int | None:
        """The epoch the record at `offset` was written in, if the cache covers it."""
        starts = [e.start_offset for e in self._entries]
        i = bisect_right(starts, offset) - 1
        return self._entries[i].epoch if i >= 0 else None

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset) for OffsetsForLeaderEpoch (Kafka's LeaderEpochFileCache.endOffsetFor).

        - the latest epoch: (it, LEO) - a leader is still writing it;
        - an older epoch E: (the largest epoch <= E, start offset of the first epoch > E), i.e.
          where the log stopped holding epoch E's records;
        - an epoch below every entry: (E, start of the first entry);
        - an epoch above every entry, or UNDEFINED: (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET).
        """
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        latest = self._entries[-1]
        if requested_epoch == latest.epoch:
            return requested_epoch, log_end_offset
        epochs = [e.epoch for e in self._entries]
        higher = bisect_right(epochs, requested_epoch)
        if higher >= len(self._entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return requested_epoch, self._entries[0].start_offset
        return self._entries[higher - 1].epoch, self._entries[higher].start_offset

    # --- changes (written on return; durable as the module docstring says) ---------------------

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that epoch `epoch` starts at `start_offset` (a leader's new epoch, or the first
        batch of a new epoch that a follower appends). No-op if the latest entry is already
        this epoch at or below this offset. Entries that would break monotonicity (an epoch >=
        this one, or a start offset >= this one) are dropped first, as Kafka does."""
        assert epoch >= 0 and start_offset >= 0, (epoch, start_offset)
        if self._entries:
            latest = self._entries[-1]
            if latest.epoch == epoch and latest.start_offset <= start_offset:
                return
        removed = self._remove_from_end(
            lambda e: e.epoch >= epoch or e.start_offset >= start_offset
        )
        # Replacing one epoch that never had a record (it starts where this one does) is normal:
        # a leader's epoch assigned at LEO, then a newer one. Anything else drops history.
        if len(removed) > 1 or (removed and removed[0].start_offset != start_offset):
            logger.warning("%s: epoch %d at %d replaced entries %s", self.path, epoch, start_offset, removed)
        self._put(EpochEntry(epoch, start_offset))
        self._flush()

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop every entry starting at or above `end_offset` (the log was truncated there)."""
        if self._entries and self._entries[-1].start_offset >= end_offset:
            self._remove_from_end(lambda e: e.start_offset >= end_offset)
            self._flush()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at `start_offset`: drop entries wholly below it and move the first
        remaining epoch's start up to it."""
        if not self._entries or self._entries[0].start_offset >= start_offset:
            return
        starts = [e.start_offset for e in self._entries]
        last_below = bisect_right(starts, start_offset) - 1
        first = self._entries[last_below]
        self._entries = [EpochEntry(first.epoch, start_offset), *self._entries[last_below + 1 :]]
        self._flush()

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._flush()

    # --- plumbing ---------------------------------------------------------------------------

    def _put(self, entry: EpochEntry) -> None:
        if self._entries:
            last = self._entries[-1]
            assert entry.epoch > last.epoch and entry.start_offset > last.start_offset, (last, entry)
        self._entries.append(entry)

    def _remove_from_end(self, predicate: Callable[[EpochEntry], bool]) -> list[EpochEntry]:
        keep = len(self._entries)
        while keep > 0 and predicate(self._entries[keep - 1]):
            keep -= 1
        removed = self._entries[keep:]
        del self._entries[keep:]
        return removed

    def _flush(self) -> None:
        if self._syncs is not None:
            self._unwritten = True
        else:
            self._disk.write_atomic(self.path, encode_checkpoint(self._entries))
            self._written = list(self._entries)

    def write_pending(self, below: int | None = None) -> None:
        """Write the entries if they changed since the last call, to be synced with the
        log's PendingSyncs. With `below` (the end of what the flush job makes durable), not
        while every entry starting below it is already in the file: what changed is only an
        epoch with no batch yet (a leader's new epoch at LEO, as every partition gets at a
        start-up election), which goes with the flush of its first batch. An entry the file
        holds at or above the log end is dropped when the log loads."""
        if not self._unwritten or self._syncs is None:
            return
        if below is not None and (
            [e for e in self._entries if e.start_offset < below]
            == [e for e in self._written if e.start_offset < below]
        ):
            return
        self._syncs.write_atomic(self.path, encode_checkpoint(self._entries))
        self._unwritten = False
        self._written = list(self._entries)

    def __repr__(self) -> str:
        return f"LeaderEpochCache({[(e.epoch, e.start_offset) for e in self._entries]})"


def entries_from_batches(batches: list[tuple[int, int]]) -> list[EpochEntry]:
    """Rebuild entries from (partition leader epoch, base offset) of every batch in log order;
    batches with no epoch (-1, written by pre-KIP-101 clients to old brokers) are skipped."""
    entries: list[EpochEntry] = []
    for epoch, base_offset in batches:
        if epoch < 0:
            continue
        if entries and epoch <= entries[-1].epoch:
            continue  # not monotonic: keep the first start of each epoch
        entries.append(EpochEntry(epoch, base_offset))
    return entries


__all__ = [
    "LEADER_EPOCH_FILE",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochCache",
    "entries_from_batches",
]
