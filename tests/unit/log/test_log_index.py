"""OffsetIndex and TimeIndex: lookups, truncation, serialisation and sanity checks."""

from __future__ import annotations

import struct

import pytest

from ackly.log.index import CorruptIndexError, OffsetIndex, TimeIndex


def _offset_index() -> OffsetIndex:
    index = OffsetIndex(base_offset=100, max_entries=10)
    for offset, position in [(105, 500), (110, 1000), (120, 2000)]:
        index.append(offset, position)
    return index


def test_offset_lookup_is_a_floor() -> None:
    index = _offset_index()
    assert index.lookup(100) == (100, 0)  # below the first entry: the segment start
    assert index.lookup(104) == (100, 0)
    assert index.lookup(105) == (105, 500)
    assert index.lookup(119) == (110, 1000)
    assert index.lookup(10_000) == (120, 2000)


def test_offset_floor_entry_bounds_offset_and_position() -> None:
    index = _offset_index()
    assert index.floor_entry(offset=200, position=1999) == (110, 1000)
    assert index.floor_entry(offset=109, position=10_000) == (105, 500)
    assert index.floor_entry(offset=104, position=10_000) is None
    assert index.floor_entry(offset=200, position=499) is None


def test_offset_index_full_and_ordering() -> None:
    index = OffsetIndex(base_offset=0, max_entries=2)
    index.append(1, 10)
    assert not index.is_full()
    index.append(2, 20)
    assert index.is_full()
    with pytest.raises(AssertionError):
        OffsetIndex(0, 5).append(-1, 0)  # below the base offset
    ordered = OffsetIndex(0, 5)
    ordered.append(5, 50)
    with pytest.raises(AssertionError):
        ordered.append(5, 60)


def test_offset_index_truncate() -> None:
    index = _offset_index()
    index.truncate_to_offset(110)
    assert index.last_entry() == (105, 500)
    index.truncate_to_offset(0)
    assert len(index) == 0
    assert index.lookup(150) == (100, 0)


def test_offset_index_roundtrip_in_kafka_layout() -> None:
    index = _offset_index()
    data = index.to_bytes()
    assert data[:8] == struct.pack(">ii", 5, 500)  # relative offset, position
    again = OffsetIndex.from_bytes(100, data, 10, log_size=3000)
    assert [again.lookup(o) for o in (104, 105, 130)] == [(100, 0), (105, 500), (120, 2000)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 7,  # not a whole entry
        struct.pack(">iiii", 5, 500, 5, 600),  # offsets not increasing
        struct.pack(">iiii", 5, 500, 6, 400),  # positions not increasing
        struct.pack(">ii", 5, 5000),  # position beyond the log
    ],
)
def test_offset_index_sanity_check(data: bytes) -> None:
    with pytest.raises(CorruptIndexError):
        OffsetIndex.from_bytes(100, data, 10, log_size=3000)


def test_time_index_appends_only_rising_timestamps() -> None:
    index = TimeIndex(base_offset=0, max_entries=3)
    assert index.maybe_append(1000, 0)
    assert not index.maybe_append(1000, 5)
    assert not index.maybe_append(900, 6)
    assert index.maybe_append(2000, 7)
    assert index.maybe_append(3000, 9)
    assert index.is_full()
    assert not index.maybe_append(4000, 12)
    assert index.maybe_append(4000, 12, skip_full_check=True)
    assert index.last_entry() == (4000, 12)


def test_time_index_lookup_and_truncate() -> None:
    index = TimeIndex(base_offset=50, max_entries=10)
    for timestamp, offset in [(100, 50), (200, 60), (300, 70)]:
        index.maybe_append(timestamp, offset)
    assert index.lookup(99) is None
    assert index.lookup(100) == (100, 50)
    assert index.lookup(250) == (200, 60)
    assert index.lookup(10**12) == (300, 70)
    index.truncate_to_offset(61)
    assert index.last_entry() == (200, 60)
    index.truncate_to_offset(60)
    assert index.last_entry() == (100, 50)


def test_time_index_roundtrip_and_sanity_check() -> None:
    index = TimeIndex(base_offset=50, max_entries=10)
    index.maybe_append(100, 50)
    index.maybe_append(200, 60)
    data = index.to_bytes()
    assert data[:12] == struct.pack(">qi", 100, 0)
    again = TimeIndex.from_bytes(50, data, 10, next_offset_bound=61)
    assert again.lookup(150) == (100, 50)
    with pytest.raises(CorruptIndexError):
        TimeIndex.from_bytes(50, data, 10, next_offset_bound=60)  # entry past the segment
    with pytest.raises(CorruptIndexError):
        TimeIndex.from_bytes(50, struct.pack(">qiqi", 200, 0, 100, 1), 10, None)
    with pytest.raises(CorruptIndexError):
        TimeIndex.from_bytes(50, b"\x00" * 13, 10, None)
