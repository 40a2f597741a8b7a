"""Sparse indexes of one log segment: offset -> file position, and timestamp -> offset.

Owns: `OffsetIndex` (Kafka's kafka.log.OffsetIndex) and `TimeIndex` (kafka.log.TimeIndex).
Both live in memory (two `array('q')` columns each) and are serialised whole to their files.

On-disk layout (big-endian, as Kafka writes them, so `kafka-dump-log` style tools can read them):
    <base offset>.index      entries of  relative offset int32 | position int32     (8 bytes)
    <base offset>.timeindex  entries of  timestamp int64 | relative offset int32    (12 bytes)
Relative offset = offset - segment base offset.

Invariants:
- OffsetIndex: offsets strictly increase, positions strictly increase; every entry names the
  first byte of a batch whose base offset is the entry's offset.
- TimeIndex: timestamps strictly increase and offsets never decrease; an entry (t, o) says
  "the largest timestamp of the batches up to and including the one holding offset o is t".
- Both are sparse and advisory: a lookup gives a place to start scanning batch headers, never
  the answer itself. They are rebuilt from the .log whenever they cannot be trusted (unclean
  shutdown, failed sanity check), so their files need not be flushed on every append: a
  segment writes them (atomically, durably) when it becomes inactive and at close.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_right

INT32_MAX = 2**31 - 1

OFFSET_ENTRY_SIZE = 8
TIME_ENTRY_SIZE = 12


class CorruptIndexError(Exception):
    """An index file that fails its sanity check; the caller rebuilds it from the log."""


def _columns(data: bytes, fmt: str) -> list[tuple[int, ...]]:
    return list(struct.iter_unpack(fmt, data))


class OffsetIndex:
    """Sparse offset -> position map of one segment (kafka.log.OffsetIndex)."""

    def __init__(self, base_offset: int, max_entries: int) -> None:
        self.base_offset = base_offset
        self.max_entries = max_entries
        self._offsets = array("q")
        self._positions = array("q")

    def __len__(self) -> int:
        return len(self._offsets)

    def is_full(self) -> bool:
        return len(self._offsets) >= self.max_entries

    def append(self, offset: int, position: int) -> None:
        """Add an entry for the batch at `position` whose base offset is `offset`."""
        assert 0 <= offset - self.base_offset <= INT32_MAX, (offset, self.base_offset)
        assert 0 <= position <= INT32_MAX, position
        if self._offsets:
            assert offset > self._offsets[-1], (offset, self._offsets[-1])
            assert position > self._positions[-1], (position, self._positions[-1])
        self._offsets.append(offset)
        self._positions.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or below `offset`; (base, 0) if none.

        The batch holding `offset` starts at or after the returned position.
        """
        i = bisect_right(self._offsets, offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self._offsets[i], self._positions[i]

    def floor_entry(self, offset: int, position: int) -> tuple[int, int] | None:
        """The last entry with offset <= `offset` and position <= `position`, if any."""
        i = min(bisect_right(self._offsets, offset), bisect_right(self._positions, position)) - 1
        if i < 0:
            return None
        return self._offsets[i], self._positions[i]

    def last_entry(self) -> tuple[int, int] | None:
        if not self._offsets:
            return None
        return self._offsets[-1], self._positions[-1]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop every entry at or above `offset` (the log was cut there)."""
        keep = bisect_right(self._offsets, offset - 1)
        del self._offsets[keep:]
        del self._positions[keep:]

    def clear(self) -> None:
        del self._offsets[:]
        del self._positions[:]

    def to_bytes(self) -> bytes:
        column = array("i")
        base = self.base_offset
        for offset, position in zip(self._offsets, self._positions, strict=True):
            column.append(offset - base)
            column.append(position)
        if sys.byteorder == "little":
            column.byteswap()
        return column.tobytes()

    @classmethod
    def from_bytes(
        cls, base_offset: int, data: bytes, max_entries: int, log_size: int
    ) -> OffsetIndex:
        """Parse an index file; raise CorruptIndexError unless every invariant holds."""
        if len(data) % OFFSET_ENTRY_SIZE:
            raise CorruptIndexError(f"offset index size {len(data)} is not a multiple of 8")
        index = cls(base_offset, max_entries)
        last_relative = last_position = -1
        for relative, position in _columns(data, ">ii"):
            if relative <= last_relative or position <= last_position or position >= log_size:
                raise CorruptIndexError(f"offset index entry ({relative}, {position}) out of order")
            index._offsets.append(base_offset + relative)
            index._positions.append(position)
            last_relative, last_position = relative, position
        return index


class TimeIndex:
    """Sparse timestamp -> offset map of one segment (kafka.log.TimeIndex)."""

    def __init__(self, base_offset: int, max_entries: int) -> None:
        self.base_offset = base_offset
        self.max_entries = max_entries
        self._timestamps = array("q")
        self._offsets = array("q")

    def __len__(self) -> int:
        return len(self._timestamps)

    def is_full(self) -> bool:
        return len(self._timestamps) >= self.max_entries

    def maybe_append(self, timestamp: int, offset: int, skip_full_check: bool = False) -> bool:
        """Add (timestamp, offset) if it raises the largest timestamp; return whether it did.

        `skip_full_check` lets the final entry of a segment that becomes inactive go in even
        when the index is full, as Kafka's onBecomeInactiveSegment does: it records the
        segment's largest timestamp, which retention and ListOffsets rely on.
        """
        if self._timestamps and timestamp <= self._timestamps[-1]:
            return False
        if not skip_full_check and self.is_full():
            return False
        assert 0 <= offset - self.base_offset <= INT32_MAX, (offset, self.base_offset)
        if self._offsets:
            assert offset >= self._offsets[-1], (offset, self._offsets[-1])
        self._timestamps.append(timestamp)
        self._offsets.append(offset)
        return True

    def lookup(self, timestamp: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the last entry at or below `timestamp`, or None.

        Every batch before the one holding the returned offset has a largest timestamp below
        `timestamp`, so a search for the first record >= `timestamp` may start there.
        """
        i = bisect_right(self._timestamps, timestamp) - 1
        if i < 0:
            return None
        return self._timestamps[i], self._offsets[i]

    def last_entry(self) -> tuple[int, int] | None:
        if not self._timestamps:
            return None
        return self._timestamps[-1], self._offsets[-1]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop every entry whose offset is at or above `offset`."""
        keep = bisect_right(self._offsets, offset - 1)
        del self._timestamps[keep:]
        del self._offsets[keep:]

    def clear(self) -> None:
        del self._timestamps[:]
        del self._offsets[:]

    def to_bytes(self) -> bytes:
        base = self.base_offset
        return b"".join(
            struct.pack(">qi", timestamp, offset - base)
            for timestamp, offset in zip(self._timestamps, self._offsets, strict=True)
        )

    @classmethod
    def from_bytes(
        cls, base_offset: int, data: bytes, max_entries: int, next_offset_bound: int | None
    ) -> TimeIndex:
        """Parse a time index file; raise CorruptIndexError unless every invariant holds.

        `next_offset_bound`, when known, is the segment's next offset: no entry may reach it.
        """
        if len(data) % TIME_ENTRY_SIZE:
            raise CorruptIndexError(f"time index size {len(data)} is not a multiple of 12")
        index = cls(base_offset, max_entries)
        last_timestamp: int | None = None
        last_relative = 0
        for timestamp, relative in _columns(data, ">qi"):
            if relative < last_relative or (
                last_timestamp is not None and timestamp <= last_timestamp
            ):
                raise CorruptIndexError(f"time index entry ({timestamp}, {relative}) out of order")
            if next_offset_bound is not None and base_offset + relative >= next_offset_bound:
                raise CorruptIndexError(f"time index entry offset {relative} beyond the segment")
            index._timestamps.append(timestamp)
            index._offsets.append(base_offset + relative)
            last_timestamp, last_relative = timestamp, relative
        return index
