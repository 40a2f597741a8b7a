"""The native record scan (_clean_scan.c) against the Python loops of batch_filter.py: the
same results and the same errors for every section, well-formed or not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.log import batch_filter
from ackly.log.batch_filter import (
    BadRecordsError,
    ScannedRecord,
    py_filter_records,
    py_scan_keys,
    py_scan_records,
    records_section,
)
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import TIMESTAMP_TYPE_MASK, BatchHeader, read_header

native = batch_filter._native
pytestmark = pytest.mark.skipif(native is None, reason="the _clean_scan extension is not built")

keys = st.one_of(st.none(), st.binary(max_size=4), st.binary(min_size=100, max_size=200))
values = st.one_of(st.none(), st.binary(max_size=3), st.binary(min_size=60, max_size=140))
rows = st.lists(st.tuples(keys, values, st.integers(-(2**40), 2**40)), min_size=1, max_size=20)


def _outcome(call):  # type: ignore[no-untyped-def]
    try:
        return ("ok", call())
    except BadRecordsError as exc:
        return ("bad", str(exc))


def _native_scan_keys(section: bytes, header: BatchHeader, into: dict[bytes, int]) -> None:
    try:
        native.scan_keys(section, header.base_offset, header.records_count, into)
    except ValueError as exc:
        raise BadRecordsError(str(exc)) from None


def _native_filter(
    section: bytes, header: BatchHeader, latest: dict[bytes, int] | None, drop: bool
) -> tuple[list[ScannedRecord], bool]:
    try:
        return native.filter_records(
            section, header.base_offset, header.records_count, header.base_timestamp,
            header.max_timestamp, bool(header.attributes & TIMESTAMP_TYPE_MASK), latest, drop,
            ScannedRecord,
        )
    except ValueError as exc:
        raise BadRecordsError(str(exc)) from None


def _check_same(section: bytes, header: BatchHeader, latest: dict[bytes, int], drop: bool) -> None:
    py_map: dict[bytes, int] = dict(latest)
    c_map: dict[bytes, int] = dict(latest)
    assert _outcome(lambda: py_scan_keys(section, header, py_map)) == \
        _outcome(lambda: _native_scan_keys(section, header, c_map))
    assert py_map == c_map  # a failed scan leaves the same keys behind
    assert _outcome(lambda: py_filter_records(section, header, latest, drop)) == \
        _outcome(lambda: _native_filter(section, header, latest, drop))
    expected = _outcome(lambda: py_scan_records(section, header))
    got = _outcome(lambda: _native_filter(section, header, None, False)[0])
    assert expected == got
    if got[0] == "ok":
        assert all(type(r) is ScannedRecord for r in got[1])
    # The native OffsetMap (int64 offsets: every offset a log can hold) answers as the dict.
    if abs(header.base_offset) < 2**62:
        native_map = native.OffsetMap()
        for key, offset in latest.items():
            native_map[key] = offset
        py_map = dict(latest)
        assert _outcome(lambda: py_scan_keys(section, header, py_map)) == \
            _outcome(lambda: _native_scan_keys(section, header, native_map))
        assert dict(native_map.items()) == py_map and len(native_map) == len(py_map)
        assert _outcome(lambda: py_filter_records(section, header, latest, drop)) == \
            _outcome(lambda: _native_filter(section, header, _offset_map(latest), drop))


def _offset_map(entries: dict[bytes, int]):  # type: ignore[no-untyped-def]
    offset_map = native.OffsetMap()
    for key, offset in entries.items():
        offset_map[key] = offset
    return offset_map


def test_offset_map_is_a_mapping_of_bytes_to_int64() -> None:
    offset_map = native.OffsetMap()
    expected: dict[bytes, int] = {}
    for i in range(5000):  # past several growths of its table
        key = b"k%d" % (i % 3000) if i % 7 else b""
        offset_map[key] = expected[key] = i * 7 - 2**40
    assert dict(offset_map.items()) == expected and len(offset_map) == len(expected)
    assert offset_map.get(b"absent") is None and offset_map[b""] == expected[b""]
    with pytest.raises(KeyError):
        offset_map[b"absent"]
    with pytest.raises(OverflowError):
        offset_map[b"x"] = 2**63


@settings(max_examples=80, deadline=None)
@given(
    rows,
    st.integers(0, 2**62),
    st.integers(-(2**62), 2**62),
    st.booleans(),
    st.data(),
)
def test_native_and_python_scans_agree_on_batches(rows, base_offset, base_ts, append_time, data) -> None:
    batch = encode_batch([Record(key=k, value=v, timestamp_ms=base_ts + t) for k, v, t in rows],
                         base_offset=base_offset, log_append_time=append_time, now_ms=base_ts)
    header = read_header(batch)
    section = records_section(batch, header)
    seen = [k for k, _, _ in rows if k is not None]
    latest = {k: base_offset + data.draw(st.integers(-3, len(rows) + 3)) for k in seen
              if data.draw(st.booleans())}
    drop = data.draw(st.booleans())
    _check_same(section, header, latest, drop)
    # The same section, damaged: a byte changed, the end cut, or a wrong record count.
    damaged = bytearray(section)
    position = data.draw(st.integers(0, len(section) - 1))
    damaged[position] = data.draw(st.integers(0, 255))
    _check_same(bytes(damaged), header, latest, drop)
    _check_same(section[: data.draw(st.integers(0, len(section)))], header, latest, drop)
    recount = header._replace(records_count=data.draw(st.integers(-1, len(rows) + 2)))
    _check_same(section, recount, latest, drop)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 6), st.integers(-(2**63), 2**63 - 1),
       st.integers(-(2**63), 2**63 - 1))
def test_native_and_python_scans_agree_on_garbage(section, count, base_offset, base_ts) -> None:
    header = BatchHeader(base_offset, 0, 0, 2, 0, 0, 0, base_ts, base_ts, -1, -1, -1, count)
    _check_same(section, header, {b"": base_offset}, False)


def test_overlong_and_out_of_range_varints_are_refused_alike() -> None:
    # size 6, attributes, a timestamp delta of 11 bytes, then an offset delta of 6 bytes.
    too_long_ts = bytes([12, 0]) + b"\xff" * 10 + b"\x00" + b"\x00\x00\x01\x00"
    too_long_offset = bytes([24, 0, 0]) + b"\xff" * 5 + b"\x00" + b"\x00\x01" + b"\x00" * 6
    out_of_range = bytes([24, 0, 0]) + b"\xff" * 4 + b"\x7f" + b"\x00\x01" + b"\x00" * 7
    header = BatchHeader(0, 0, 0, 2, 0, 0, 0, 0, 0, -1, -1, -1, 1)
    for section in (too_long_ts, too_long_offset, out_of_range):
        _check_same(section, header, {}, False)
        with pytest.raises(BadRecordsError):
            py_scan_records(section, header)
