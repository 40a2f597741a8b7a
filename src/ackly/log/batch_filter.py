"""Rewriting one record batch with some of its records removed, for the log cleaner.

Owns: a lean scan of a v2 batch's records (offset, key, whether the value is null, timestamp)
and the rebuilding of a batch from the records kept, as Kafka's MemoryRecords.filterTo does:
- the base offset, the last offset delta, the producer id, epoch and base sequence stay, so
  every kept record keeps its offset and the producer's last sequence survives (Kafka's
  `overrideLastOffset`);
- the codec stays: a compressed batch is decompressed, filtered and compressed again;
- a batch may be kept with no record at all (an idempotent producer's last batch: Kafka's
  BatchRetention.RETAIN_EMPTY), as Kafka's writeEmptyHeader does;
- the delete horizon of KIP-534: attribute bit 6 says the batch's base timestamp is the time
  after which its tombstones and its transaction marker may be removed; record timestamps
  stay right because their deltas are rewritten against the new base.

A record's bytes are copied untouched unless its timestamp delta must change. Nothing here
reads the clock or a file. The record loops (`scan_records`, `filter_records`, `scan_keys`)
run in C when the optional extension `_clean_scan` is built, else in Python (`py_*`): the
two give the same results and errors for every input.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Protocol

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.compression import compress, decompress
from ackly.protocol.records import (
    COMPRESSION_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    crc_of,
    pack_header,
)

try:
    # The record loops in C (_clean_scan.c), built when a compiler was there at install time.
    from ackly.log import _clean_scan as _native
except ImportError:
    _native = None  # type: ignore[assignment]

# KIP-534: the base timestamp holds the delete horizon (Kafka's DELETE_HORIZON_FLAG_MASK).
DELETE_HORIZON_FLAG = 0x40
_CRC = struct.Struct(">I")


class ScannedRecord(NamedTuple):
    """Where one record lies in its (decompressed) records section, and what the cleaner
    needs of it. A tuple, so that the native scan makes one as cheaply as a tuple."""

    start: int  # its length varint
    end: int
    after_timestamp: int  # first byte after its timestamp delta (offset delta onward)
    offset: int
    timestamp_ms: int
    key: bytes | None
    has_value: bool


class OffsetMap(Protocol):
    """The cleaner's key -> offset map: a dict, or the native `_clean_scan.OffsetMap` (the
    same answers, no Python object per key; offsets within int64)."""

    def get(self, key: bytes, /) -> int | None: ...
    def __setitem__(self, key: bytes, offset: int, /) -> None: ...
    def __len__(self) -> int: ...


def new_offset_map() -> OffsetMap:
    """An empty key -> offset map: the native one when the extension is built."""
    if _native is None:
        return {}
    return _native.OffsetMap()


class BadRecordsError(Exception):
    """A batch whose records do not parse: the cleaner keeps it as it is."""


def has_delete_horizon(header: BatchHeader) -> bool:
    return bool(header.attributes & DELETE_HORIZON_FLAG)


def _varint(buf: bytes, pos: int, bits: int = 32) -> tuple[int, int]:
    """The zigzag varint at `pos` and the position after it. As Kafka's ByteUtils reads
    them: a varint has at most 5 bytes and 32 bits, a varlong (`bits=64`) 10 bytes and 64."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > bits:
            raise BadRecordsError("varint too long")
    if result >> bits:
        raise BadRecordsError("varint out of range")
    return (result >> 1) ^ -(result & 1), pos


def _put_varint(out: bytearray, value: int) -> None:
    unsigned = (value << 1) ^ (value >> 63)
    while unsigned > 0x7F:
        out.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    out.append(unsigned)


def records_section(batch: bytes | memoryview, header: BatchHeader) -> bytes:
    """The batch's records section, decompressed."""
    section = batch[HEADER_SIZE : header.size]
    if header.compression:
        try:
            return decompress(header.compression, section)
        except KafkaError as exc:
            raise BadRecordsError(str(exc)) from None
    return bytes(section)


def py_scan_records(section: bytes, header: BatchHeader) -> list[ScannedRecord]:
    """`scan_records` in Python: one-byte varints (most of a record's) are decoded inline."""
    out: list[ScannedRecord] = []
    append = out.append
    pos = 0
    end = len(section)
    base_offset = header.base_offset
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    base_ts = header.base_timestamp
    max_ts = header.max_timestamp
    try:
        for _ in range(header.records_count):
            start = pos
            byte = section[pos]
            if byte < 0x80:
                size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            elif section[pos + 1] < 0x80:
                size = (byte & 0x7F) | (section[pos + 1] << 7)
                size, pos = (size >> 1) ^ -(size & 1), pos + 2
            else:
                size, pos = _varint(section, pos)
            record_end = pos + size
            if size < 6 or record_end > end:
                raise BadRecordsError("record length out of bounds")
            pos += 1  # attributes
            byte = section[pos]
            if byte < 0x80:
                ts_delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                ts_delta, pos = _varint(section, pos, 64)
            after_ts = pos
            byte = section[pos]
            if byte < 0x80:
                offset_delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                offset_delta, pos = _varint(section, pos)
            byte = section[pos]
            if byte < 0x80:
                key_len, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                key_len, pos = _varint(section, pos)
            key: bytes | None = None
            if key_len >= 0:
                key = section[pos : pos + key_len]
                pos += key_len
            if pos >= record_end:
                raise BadRecordsError("record fields out of bounds")
            # A null value's length is -1: the one-byte varint 0x01 (any other negative
            # length is malformed, and the record is copied as it is anyway).
            append(ScannedRecord(
                start, record_end, after_ts, base_offset + offset_delta,
                max_ts if log_append_time else base_ts + ts_delta, key, section[pos] != 0x01,
            ))
            pos = record_end
    except IndexError:
        raise BadRecordsError("records section ends inside a record") from None
    if pos != end:
        raise BadRecordsError("bytes left after the declared records")
    return out


def py_filter_records(
    section: bytes, header: BatchHeader, latest: OffsetMap, drop_tombstones: bool
) -> tuple[list[ScannedRecord], bool]:
    """`filter_records` in Python: the same parse as `py_scan_records`, but a dropped record
    costs no object (in a log of overwritten keys most records are dropped)."""
    out: list[ScannedRecord] = []
    append = out.append
    pos = 0
    end = len(section)
    base_offset = header.base_offset
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    base_ts = header.base_timestamp
    max_ts = header.max_timestamp
    tombstones = False
    try:
        for _ in range(header.records_count):
            start = pos
            byte = section[pos]
            if byte < 0x80:
                size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            elif section[pos + 1] < 0x80:
                size = (byte & 0x7F) | (section[pos + 1] << 7)
                size, pos = (size >> 1) ^ -(size & 1), pos + 2
            else:
                size, pos = _varint(section, pos)
            record_end = pos + size
            if size < 6 or record_end > end:
                raise BadRecordsError("record length out of bounds")
            pos += 1  # attributes
            byte = section[pos]
            if byte < 0x80:
                ts_delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                ts_delta, pos = _varint(section, pos, 64)
            after_ts = pos
            byte = section[pos]
            if byte < 0x80:
                offset_delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                offset_delta, pos = _varint(section, pos)
            byte = section[pos]
            if byte < 0x80:
                key_len, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                key_len, pos = _varint(section, pos)
            key: bytes | None = None
            if key_len >= 0:
                key = section[pos : pos + key_len]
                pos += key_len
            if pos >= record_end:
                raise BadRecordsError("record fields out of bounds")
            # A null value's length is -1: the one-byte varint 0x01 (any other negative
            # length is malformed, and the record is copied as it is anyway).
            offset = base_offset + offset_delta
            has_value = section[pos] != 0x01
            pos = record_end
            if key is None:
                continue  # a compacted log has no use for a record without a key
            newer = latest.get(key)
            if newer is not None and newer > offset:
                continue
            if not has_value:
                if drop_tombstones:
                    continue
                tombstones = True
            append(ScannedRecord(
                start, record_end, after_ts, offset,
                max_ts if log_append_time else base_ts + ts_delta, key, has_value,
            ))
    except IndexError:
        raise BadRecordsError("records section ends inside a record") from None
    if pos != end:
        raise BadRecordsError("bytes left after the declared records")
    return out, tombstones


def py_scan_keys(section: bytes, header: BatchHeader, into: OffsetMap) -> None:
    """`scan_keys` in Python."""
    pos = 0
    end = len(section)
    base_offset = header.base_offset
    try:
        for _ in range(header.records_count):
            byte = section[pos]
            if byte < 0x80:
                size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            elif section[pos + 1] < 0x80:
                size = (byte & 0x7F) | (section[pos + 1] << 7)
                size, pos = (size >> 1) ^ -(size & 1), pos + 2
            else:
                size, pos = _varint(section, pos)
            record_end = pos + size
            if size < 6 or record_end > end:
                raise BadRecordsError("record length out of bounds")
            pos += 1
            byte = section[pos]
            if byte < 0x80:
                pos += 1
            else:
                pos = _varint(section, pos, 64)[1]
            byte = section[pos]
            if byte < 0x80:
                offset_delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                offset_delta, pos = _varint(section, pos)
            byte = section[pos]
            if byte < 0x80:
                key_len, pos = (byte >> 1) ^ -(byte & 1), pos + 1
            else:
                key_len, pos = _varint(section, pos)
            if key_len >= 0:
                if pos + key_len > record_end:
                    raise BadRecordsError("key out of bounds")
                into[section[pos : pos + key_len]] = base_offset + offset_delta
            pos = record_end
    except IndexError:
        raise BadRecordsError("records section ends inside a record") from None
    if pos != end:
        raise BadRecordsError("bytes left after the declared records")


def scan_records(section: bytes, header: BatchHeader) -> list[ScannedRecord]:
    """Every record of a records section; BadRecordsError if it does not parse exactly."""
    if _native is None:
        return py_scan_records(section, header)
    try:
        return _native.filter_records(
            section, header.base_offset, header.records_count, header.base_timestamp,
            header.max_timestamp, bool(header.attributes & TIMESTAMP_TYPE_MASK), None, False,
            ScannedRecord,
        )[0]
    except ValueError as exc:
        raise BadRecordsError(str(exc)) from None


def filter_records(
    section: bytes, header: BatchHeader, latest: OffsetMap, drop_tombstones: bool
) -> tuple[list[ScannedRecord], bool]:
    """The records of a section the cleaner keeps, and whether a kept one is a tombstone.

    A record goes if it has no key, if `latest` maps its key to a later offset, or if it is a
    tombstone and `drop_tombstones`. The parse is `scan_records`'."""
    if _native is None:
        return py_filter_records(section, header, latest, drop_tombstones)
    try:
        return _native.filter_records(
            section, header.base_offset, header.records_count, header.base_timestamp,
            header.max_timestamp, bool(header.attributes & TIMESTAMP_TYPE_MASK), latest,
            drop_tombstones, ScannedRecord,
        )
    except ValueError as exc:
        raise BadRecordsError(str(exc)) from None


def scan_keys(section: bytes, header: BatchHeader, into: OffsetMap) -> None:
    """Map every keyed record's key to its offset in `into` (later records win): the offset
    map pass, which needs nothing else. BadRecordsError if the section does not parse (then
    `into` may hold some of the batch's keys: their offsets are real, so no harm)."""
    if _native is None:
        py_scan_keys(section, header, into)
        return
    try:
        _native.scan_keys(section, header.base_offset, header.records_count, into)
    except ValueError as exc:
        raise BadRecordsError(str(exc)) from None


def rebuild_batch(
    header: BatchHeader,
    section: bytes,
    kept: list[ScannedRecord],
    delete_horizon_ms: int | None,
) -> bytes:
    """The batch holding only `kept` (in order) at their offsets, with the same codec and
    producer fields. `delete_horizon_ms` (KIP-534) replaces the base timestamp and sets the
    horizon flag; None keeps the batch's base timestamp and flag as they were."""
    attributes = header.attributes
    base_ts = header.base_timestamp
    if delete_horizon_ms is not None:
        attributes |= DELETE_HORIZON_FLAG
        base_ts = delete_horizon_ms
    log_append_time = bool(attributes & TIMESTAMP_TYPE_MASK)
    body = bytearray()
    if base_ts == header.base_timestamp:
        for record in kept:
            body += section[record.start : record.end]
    else:
        part = bytearray()
        for record in kept:
            part.clear()
            part.append(0)  # record attributes
            # LogAppendTime records read the batch's max timestamp: their deltas are unused.
            delta = 0 if log_append_time else record.timestamp_ms - base_ts
            _put_varint(part, delta)
            part += section[record.after_timestamp : record.end]
            _put_varint(body, len(part))
            body += part
    if kept:
        max_ts = header.max_timestamp if log_append_time else max([r.timestamp_ms for r in kept])
    else:
        max_ts = header.max_timestamp  # as Kafka's writeEmptyHeader keeps it
    codec = attributes & COMPRESSION_MASK
    payload: bytes | bytearray = body
    if codec and kept:
        payload = compress(codec, body)
    elif not kept:
        attributes &= ~COMPRESSION_MASK  # nothing to compress (an empty batch has no section)
    size = HEADER_SIZE + len(payload)
    new_header = header._replace(
        batch_length=size - LOG_OVERHEAD,
        crc=0,
        attributes=attributes,
        base_timestamp=base_ts,
        max_timestamp=max_ts,
        records_count=len(kept),
    )
    out = bytearray(pack_header(new_header))
    out += payload
    _CRC.pack_into(out, 17, crc_of(out, 0, size))
    return bytes(out)


def require_keys(buf: bytes | bytearray | memoryview, headers: list[BatchHeader]) -> None:
    """Refuse a produce to a compacted topic holding a record without a key (Kafka's
    LogValidator: "Compacted topic cannot accept message without key"): KafkaError
    INVALID_RECORD, or CORRUPT_MESSAGE if the records do not parse. Decompresses as needed."""
    view = memoryview(buf)
    position = 0
    for header in headers:
        batch = view[position : position + header.size]
        position += header.size
        try:
            records = scan_records(records_section(batch, header), header)
        except BadRecordsError as exc:
            raise KafkaError(ErrorCode.corrupt_message, f"records do not parse: {exc}") from None
        for record in records:
            if record.key is None:
                raise KafkaError(
                    ErrorCode.invalid_record,
                    f"compacted topic cannot accept a record without a key (offset delta "
                    f"{record.offset - header.base_offset})",
                )
