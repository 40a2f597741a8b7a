"""Records inside a v2 record batch (Kafka's DefaultRecord), encoded and decoded.

The broker's produce and fetch paths never come here: they move batches as bytes
(`records`). This module is for the places that need the records themselves: coordinators
writing their own batches, control batches (transaction markers), tools and tests.

Record layout (Kafka's DefaultRecord; varints are zigzag-encoded, as protobuf's sint):
    length varint             bytes of the record after this field
    attributes int8           unused, 0
    timestampDelta varlong    timestamp - batch baseTimestamp
    offsetDelta varint        offset - batch baseOffset
    keyLength varint, key     -1 = null key
    valueLength varint, value -1 = null value
    headerCount varint, then per header: keyLength varint, key (UTF-8, never null),
                                         valueLength varint, value (-1 = null)

The records section (everything after the 61-byte header) is what gets compressed.

Invariants:
- `encode_batch` writes a batch `records.validate_batches` accepts: right batchLength,
  CRC-32C over bytes 21..end, recordsCount and lastOffsetDelta matching the records.
- `decode_batch` raises KafkaError(CORRUPT_MESSAGE) for every malformed batch (bad CRC,
  lengths out of bounds, varints too long, records not filling the section exactly) and
  never lets another exception type out. Its work is bounded by the batch size and by
  the decompression bound.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.compression import DEFAULT_MAX_BYTES, compress, decompress
from ackly.protocol.records import (
    CONTROL_FLAG,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_FLAG,
    BatchHeader,
    crc_of,
    pack_header,
    read_header,
)

Headers = tuple[tuple[str, bytes | None], ...]

# The smallest record: length, attributes, timestampDelta, offsetDelta, keyLength,
# valueLength, headerCount, one byte each. Bounds the record count a section can claim.
_MIN_RECORD_SIZE = 7
_CRC = struct.Struct(">I")
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
_CONTROL_KEY_VERSION = 0
_END_TXN_MARKER_VERSION = 0


@dataclass(frozen=True)
class Record:
    """A record to write. `timestamp_ms` None means "now" (the encoder's `now_ms`)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class DecodedRecord:
    """A record read from a batch, with its absolute offset and timestamp."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


class ControlType(enum.IntEnum):
    """Kafka's ControlRecordType values for transaction markers."""

    ABORT = 0
    COMMIT = 1


class ControlRecord(NamedTuple):
    kind: ControlType
    coordinator_epoch: int


# --- varints -----------------------------------------------------------------------------


def _put_varint(buf: bytearray, value: int) -> None:
    """Append a zigzag varint/varlong (Kafka's ByteUtils.writeVarint/writeVarlong)."""
    unsigned = (value << 1) ^ (value >> 63)
    while unsigned > 0x7F:
        buf.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    buf.append(unsigned)


def _corrupt(why: str) -> KafkaError:
    return KafkaError(ErrorCode.corrupt_message, why)


def read_varint(buf: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """A zigzag varint at `pos` of at most `max_bytes` bytes (5 varint, 10 varlong)."""
    unsigned = 0
    shift = 0
    limit = min(end, pos + max_bytes)
    while pos < limit:
        byte = buf[pos]
        pos += 1
        unsigned |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (unsigned >> 1) ^ -(unsigned & 1), pos
        shift += 7
    if pos >= end:
        raise _corrupt("truncated varint in record")
    raise _corrupt("varint too long in record")


def _get_bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    """A varint-length-prefixed nullable byte string."""
    size, pos = read_varint(buf, pos, end, 5)
    if size < 0:
        if size != -1:
            raise _corrupt(f"negative {what} length {size}")
        return None, pos
    if pos + size > end:
        raise _corrupt(f"{what} runs past the record")
    return buf[pos : pos + size], pos + size


# --- encoding ----------------------------------------------------------------------------


def _put_nullable(buf: bytearray, data: bytes | None) -> None:
    if data is None:
        buf.append(1)  # zigzag(-1)
    else:
        _put_varint(buf, len(data))
        buf += data


def _encode_records(records: Sequence[Record], timestamps: Sequence[int], base_ts: int) -> bytes:
    out = bytearray()
    body = bytearray()
    for offset_delta, (record, timestamp) in enumerate(zip(records, timestamps, strict=True)):
        body.clear()
        body.append(0)  # attributes: unused since magic 2
        _put_varint(body, timestamp - base_ts)
        _put_varint(body, offset_delta)
        _put_nullable(body, record.key)
        _put_nullable(body, record.value)
        _put_varint(body, len(record.headers))
        for header_key, header_value in record.headers:
            encoded_key = header_key.encode("utf-8")
            _put_varint(body, len(encoded_key))
            body += encoded_key
            _put_nullable(body, header_value)
        _put_varint(out, len(body))
        out += body
    return bytes(out)


def encode_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    compression: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    partition_leader_epoch: int = -1,
    now_ms: int = 0,
    log_append_time: bool = False,
) -> bytes:
    """One v2 record batch holding `records` at offsets base_offset, base_offset + 1, ...

    baseTimestamp is the first record's timestamp and maxTimestamp the largest, as Kafka's
    MemoryRecordsBuilder writes them. With `log_append_time` every record is stamped
    `now_ms` and the batch's timestamp type is LogAppendTime.
    """
    assert records, "a record batch holds at least one record"
    if log_append_time:
        timestamps = [now_ms] * len(records)
    else:
        timestamps = [now_ms if r.timestamp_ms is None else r.timestamp_ms for r in records]
    base_ts = timestamps[0]
    section = _encode_records(records, timestamps, base_ts)
    if compression:
        section = compress(compression, section)
    attributes = compression
    if log_append_time:
        attributes |= TIMESTAMP_TYPE_MASK
    if transactional:
        attributes |= TRANSACTIONAL_FLAG
    if control:
        attributes |= CONTROL_FLAG
    size = HEADER_SIZE + len(section)
    header = BatchHeader(
        base_offset=base_offset,
        batch_length=size - LOG_OVERHEAD,
        partition_leader_epoch=partition_leader_epoch,
        magic=MAGIC_V2,
        crc=0,
        attributes=attributes,
        last_offset_delta=len(records) - 1,
        base_timestamp=base_ts,
        max_timestamp=max(timestamps),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        records_count=len(records),
    )
    batch = bytearray(pack_header(header))
    batch += section
    _CRC.pack_into(batch, 17, crc_of(batch, 0, size))
    return bytes(batch)


def encode_control_batch(
    kind: ControlType,
    *,
    producer_id: int,
    producer_epoch: int,
    base_offset: int = 0,
    coordinator_epoch: int = 0,
    now_ms: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A transaction marker: one control record, as Kafka's EndTransactionMarker writes it.

    Key: version int16 0, type int16. Value: version int16 0, coordinator epoch int32.
    """
    record = Record(
        key=_CONTROL_KEY.pack(_CONTROL_KEY_VERSION, int(kind)),
        value=_CONTROL_VALUE.pack(_END_TXN_MARKER_VERSION, coordinator_epoch),
        timestamp_ms=now_ms,
    )
    return encode_batch(
        [record],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        transactional=True,
        control=True,
        partition_leader_epoch=partition_leader_epoch,
        now_ms=now_ms,
    )


# --- decoding ----------------------------------------------------------------------------


def _decode_records(section: bytes, header: BatchHeader) -> list[DecodedRecord]:
    count = header.records_count
    if count < 0 or count * _MIN_RECORD_SIZE > len(section):
        raise _corrupt(f"record count {count} does not fit in {len(section)} bytes")
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    decoded: list[DecodedRecord] = []
    pos = 0
    end = len(section)
    for _ in range(count):
        size, pos = read_varint(section, pos, end, 5)
        if size < 0 or pos + size > end:
            raise _corrupt(f"record length {size} out of bounds")
        record_end = pos + size
        pos += 1  # attributes
        timestamp_delta, pos = read_varint(section, pos, record_end, 10)
        offset_delta, pos = read_varint(section, pos, record_end, 5)
        key, pos = _get_bytes(section, pos, record_end, "key")
        value, pos = _get_bytes(section, pos, record_end, "value")
        header_count, pos = read_varint(section, pos, record_end, 5)
        if header_count < 0 or header_count * 2 > record_end - pos:
            raise _corrupt(f"invalid record header count {header_count}")
        headers: list[tuple[str, bytes | None]] = []
        for _h in range(header_count):
            header_key, pos = _get_bytes(section, pos, record_end, "header key")
            if header_key is None:
                raise _corrupt("null record header key")
            header_value, pos = _get_bytes(section, pos, record_end, "header value")
            # Kafka decodes header keys leniently (new String(bytes, UTF_8)); so do we.
            headers.append((header_key.decode("utf-8", "replace"), header_value))
        if pos != record_end:
            raise _corrupt("record length does not match its fields")
        if log_append_time:
            timestamp = header.max_timestamp
        else:
            timestamp = header.base_timestamp + timestamp_delta
        decoded.append(
            DecodedRecord(
                offset=header.base_offset + offset_delta,
                timestamp_ms=timestamp,
                key=key,
                value=value,
                headers=tuple(headers),
            )
        )
    if pos != end:
        # Kafka: "Incorrect declared batch size, records still remaining in file".
        raise _corrupt("bytes left after the declared records")
    return decoded


def decode_batch(
    batch: bytes | bytearray | memoryview,
    *,
    verify_crc: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[BatchHeader, list[DecodedRecord]]:
    """The header and records of the batch at the start of `batch` (bytes after it are not
    read). Decompresses as needed, at most `max_bytes` of records.

    Timestamps follow Kafka's DefaultRecordBatch: for a LogAppendTime batch every record
    takes the batch's maxTimestamp.
    """
    if len(batch) < HEADER_SIZE:
        raise _corrupt("record batch shorter than its header")
    header = read_header(batch, 0)
    if header.magic != MAGIC_V2:
        raise _corrupt(f"record batch magic {header.magic} != 2")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or header.size > len(batch):
        raise _corrupt("record batch length out of bounds")
    if verify_crc and crc_of(batch, 0, header.size) != header.crc:
        raise _corrupt("record batch CRC-32C mismatch")
    section: bytes | bytearray | memoryview = memoryview(batch)[HEADER_SIZE : header.size]
    if header.compression:
        section = decompress(header.compression, section, max_bytes=max_bytes)
    return header, _decode_records(bytes(section), header)


def decode_batches(
    buf: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[tuple[BatchHeader, list[DecodedRecord]]]:
    """Every batch in `buf`, which must hold whole batches only."""
    view = memoryview(buf)
    out: list[tuple[BatchHeader, list[DecodedRecord]]] = []
    pos = 0
    while pos < len(view):
        header, records = decode_batch(view[pos:], max_bytes=max_bytes)
        out.append((header, records))
        pos += header.size
    return out


def decode_control_record(record: DecodedRecord | Record) -> ControlRecord:
    """The marker a control record carries (Kafka's ControlRecordType + EndTransactionMarker).

    Versions above 0 are read for their leading fields, as Kafka does. Control types other
    than ABORT and COMMIT (KRaft's LEADER_CHANGE, snapshots) never appear in a data
    partition and are refused as corrupt.
    """
    key, value = record.key, record.value
    if key is None or len(key) < _CONTROL_KEY.size:
        raise _corrupt("control record key shorter than 4 bytes")
    key_version, kind = _CONTROL_KEY.unpack_from(key, 0)
    if key_version < 0:
        raise _corrupt(f"control record key version {key_version}")
    if kind not in (ControlType.ABORT, ControlType.COMMIT):
        raise _corrupt(f"control record type {kind} is not a transaction marker")
    if value is None or len(value) < _CONTROL_VALUE.size:
        raise _corrupt("transaction marker value shorter than 6 bytes")
    value_version, coordinator_epoch = _CONTROL_VALUE.unpack_from(value, 0)
    if value_version < 0:
        raise _corrupt(f"transaction marker version {value_version}")
    return ControlRecord(ControlType(kind), coordinator_epoch)


def decode_control_batch(
    batch: bytes | bytearray | memoryview,
) -> tuple[BatchHeader, ControlRecord]:
    """The header and marker of a control batch (exactly one control record)."""
    header, records = decode_batch(batch)
    if not header.is_control or len(records) != 1:
        raise _corrupt("not a control batch of one record")
    return header, decode_control_record(records[0])


__all__ = [
    "ControlRecord",
    "ControlType",
    "DecodedRecord",
    "Headers",
    "Record",
    "decode_batch",
    "decode_batches",
    "decode_control_batch",
    "decode_control_record",
    "encode_batch",
    "encode_control_batch",
]
