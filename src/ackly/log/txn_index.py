"""The aborted-transaction index of one segment (Kafka's TransactionIndex, `.txnindex`).

Owns: `TransactionIndex`: the aborted transactions whose ABORT marker lies in one segment, in
marker order, in memory and in `<base offset>.txnindex` next to the segment's `.log`.
A read_committed fetch lists, from these, every aborted transaction that overlaps what it
returns (KIP-98), and the consumer drops those producers' records up to their marker.

On-disk layout, Kafka's own (AbortedTxn), one 34-byte entry per aborted transaction, back to
back, big-endian:
    version int16 (0) | producer_id int64 | first_offset int64 | last_offset int64
    | last_stable_offset int64
`first_offset` is the transaction's first offset on this partition, `last_offset` its ABORT
marker's offset, and `last_stable_offset` the LSO just after the marker was written (the first
offset of the oldest other transaction still open, else the marker's offset + 1): a search for
aborted transactions below some offset can stop at the first entry whose LSO passes it.

Invariants:
- Entries are sorted by `last_offset`, strictly increasing, each inside its segment's range.
- The file holds exactly the in-memory entries, or (before a flush) a prefix of them; the
  file is written only by appends at its end and by truncation.
- Durability: an entry is durable once the file is flushed; the partition log flushes it with
  its segment, so an index below the recovery point is complete, and recovery rebuilds the
  index of every segment it re-scans (from the log, which is the truth).

Deterministic: files only through `Disk`; no clock.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ackly.log.disk import Disk, DiskFile, PendingSyncs

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size  # 34
_VERSION = 0


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction of one producer on this partition (Kafka's AbortedTxn)."""

    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset
    last_stable_offset: int


class CorruptTxnIndexError(Exception):
    """A .txnindex whose bytes are not entries this module wrote."""


def encode_entry(entry: AbortedTxn) -> bytes:
    return _ENTRY.pack(
        _VERSION, entry.producer_id, entry.first_offset, entry.last_offset,
        entry.last_stable_offset,
    )


def decode_entries(data: bytes) -> list[AbortedTxn]:
    """Entries of a .txnindex file; CorruptTxnIndexError if it is torn or not one."""
    if len(data) % ENTRY_SIZE:
        raise CorruptTxnIndexError(f"size {len(data)} is not a multiple of {ENTRY_SIZE}")
    entries: list[AbortedTxn] = []
    last = -1
    for position in range(0, len(data), ENTRY_SIZE):
        version, pid, first, last_offset, lso = _ENTRY.unpack_from(data, position)
        if version != _VERSION:
            raise CorruptTxnIndexError(f"entry version {version} at {position}")
        if last_offset <= last or first > last_offset or pid < 0:
            raise CorruptTxnIndexError(f"entry out of order at {position}")
        last = last_offset
        entries.append(AbortedTxn(pid, first, last_offset, lso))
    return entries


class TransactionIndex:
    """The aborted transactions whose markers are in one segment.

    The file is opened only when the first entry is written or the index is truncated, so a
    partition with many segments and no aborted transactions holds no extra descriptors.
    """

    def __init__(
        self, disk: Disk, dir_path: str, base_offset: int, syncs: PendingSyncs | None = None
    ) -> None:
        self.disk = disk
        # With PendingSyncs (a partition log's), a new file's directory entry is synced by the
        # log's next flush job rather than here, on the event loop (an ABORT marker's append).
        self._syncs = syncs
        self.base_offset = base_offset
        self.path = os.path.join(dir_path, f"{base_offset:020d}{TXN_INDEX_SUFFIX}")
        self._entries: list[AbortedTxn] = []
        self._file: DiskFile | None = None

    # -- state

    @property
    def entries(self) -> tuple[AbortedTxn, ...]:
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last_offset(self) -> int:
        """The last entry's marker offset, -1 if there is none."""
        return self._entries[-1].last_offset if self._entries else -1

    def _open(self) -> DiskFile:
        if self._file is None:
            if self._syncs is None:
                self._file = self.disk.open(self.path)
            else:
                self._file = self._syncs.create(self.path)
        return self._file

    @property
    def file(self) -> DiskFile | None:
        """The open file, for a flush; None while nothing was written through this object."""
        return self._file

    # -- loading

    def load(self) -> bool:
        """Read the file (a missing one is an empty index). False if it is corrupt: the index
        is then empty and the caller rebuilds it from the log."""
        data = self.disk.read_file(self.path)
        if data is None:
            self._entries = []
            return True
        try:
            self._entries = decode_entries(data)
        except CorruptTxnIndexError:
            self._entries = []
            return False
        return True

    def reset(self) -> None:
        """Empty the index and its file (before a rebuild). Visible at once; durable after
        the next flush."""
        self._entries = []
        if self._file is not None or self.disk.exists(self.path):
            self._open().truncate(0)

    # -- changes

    def append(self, entry: AbortedTxn) -> None:
        """Add the entry of an ABORT marker later than every entry here. Visible at once;
        durable after the next flush of this index."""
        assert entry.last_offset > self.last_offset, (entry, self.last_offset)
        assert entry.last_offset >= self.base_offset, (entry, self.base_offset)
        self._open().append(encode_entry(entry))
        self._entries.append(entry)

    def add_if_absent(self, entry: AbortedTxn) -> bool:
        """Append `entry` unless an entry at or after its marker is already here (a replay over
        a range the index already covers). Returns True if it was added."""
        if entry.last_offset <= self.last_offset:
            return False
        self.append(entry)
        return True

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose marker is at or above `offset` (Kafka's
        TransactionIndex.truncateTo). Visible at once; durable after the next flush."""
        keep = 0
        while keep < len(self._entries) and self._entries[keep].last_offset < offset:
            keep += 1
        if keep == len(self._entries):
            return
        self._entries = self._entries[:keep]
        self._open().truncate(keep * ENTRY_SIZE)

    def flush(self) -> None:
        """fsync the file if this object wrote to it: every entry is durable on return."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- reads

    def overlapping(self, start_offset: int, upper_offset: int) -> Iterator[AbortedTxn]:
        """Entries of transactions that hold an offset in [start_offset, upper_offset)."""
        for entry in self._entries:
            if entry.last_offset >= start_offset and entry.first_offset < upper_offset:
                yield entry

    def __repr__(self) -> str:
        return f"TransactionIndex({self.path!r}, entries={len(self._entries)})"
