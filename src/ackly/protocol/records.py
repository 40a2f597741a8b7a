"""Record batches (magic v2) as bytes: header views, CRC-32C checks, in-place patching.

A batch is kept on disk exactly as the producer sent it. The broker reads only the 61-byte
header, checks the CRC-32C (which covers bytes 21..end: attributes onward), and patches the
two fields outside the CRC, the base offset and the partition leader epoch, in place.
Records inside a batch are decoded only where a feature needs them (see `record_codec`).

Header layout (Kafka's DefaultRecordBatch):
    0  baseOffset int64        8  batchLength int32      12 partitionLeaderEpoch int32
    16 magic int8              17 crc uint32             21 attributes int16
    23 lastOffsetDelta int32   27 baseTimestamp int64    35 maxTimestamp int64
    43 producerId int64        51 producerEpoch int16    53 baseSequence int32
    57 recordsCount int32      61 records...
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

from ackly.errors import ErrorCode, KafkaError

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted by batchLength
CRC_START = 21
MAGIC_V2 = 2

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20

_HEADER = struct.Struct(">qiibIhiqqqhii")
_OFFSET_AND_LENGTH = struct.Struct(">qi")
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_MAX_TIMESTAMP = struct.Struct(">q")


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes this batch takes in a log or a request."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) % (2**31)


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the batch header at `pos`; the caller has checked 61 bytes are there."""
    return BatchHeader._make(_HEADER.unpack_from(buf, pos))


def pack_header(header: BatchHeader) -> bytes:
    """The 61 header bytes of `header`, exactly as `read_header` parses them."""
    return _HEADER.pack(*header)


def peek_offset_and_size(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Base offset and total size of the batch at `pos` (needs only 12 bytes)."""
    base_offset, batch_length = _OFFSET_AND_LENGTH.unpack_from(buf, pos)
    return base_offset, batch_length + LOG_OVERHEAD


def crc_of(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    view = memoryview(buf)[pos + CRC_START : pos + size]
    return int(crc32c.crc32c(view))


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each complete batch; stop at the first incomplete one."""
    pos = 0
    end = len(buf)
    while end - pos >= HEADER_SIZE:
        header = read_header(buf, pos)
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or pos + header.size > end:
            return
        yield pos, header
        pos += header.size


def validate_batches(
    buf: bytes | bytearray | memoryview, max_batch_bytes: int, *, allow_empty: bool = False
) -> list[BatchHeader]:
    """Check every batch of a produce request: framing, magic, CRC, size, record count.

    Raises KafkaError (CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, UNSUPPORTED_FOR_MESSAGE_FORMAT is
    not used: magic other than 2 is corrupt for Produce v3+) and leaves `buf` untouched, so a
    bad request writes nothing. `allow_empty` accepts batches of no record: a compacted log
    keeps an idempotent producer's last batch emptied, and followers copy it.
    """
    headers: list[BatchHeader] = []
    pos = 0
    end = len(buf)
    if end == 0:
        raise KafkaError(ErrorCode.corrupt_message, "empty record set")
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise KafkaError(ErrorCode.corrupt_message, "truncated record batch header")
        header = read_header(buf, pos)
        if header.magic != MAGIC_V2:
            raise KafkaError(ErrorCode.corrupt_message, f"record batch magic {header.magic} != 2")
        if header.batch_length < HEADER_SIZE - LOG_OVERHEAD or pos + header.size > end:
            raise KafkaError(ErrorCode.corrupt_message, "record batch length out of bounds")
        if header.size > max_batch_bytes:
            raise KafkaError(
                ErrorCode.message_too_large,
                f"batch of {header.size} bytes exceeds max.message.bytes {max_batch_bytes}",
            )
        if crc_of(buf, pos, header.size) != header.crc:
            raise KafkaError(ErrorCode.corrupt_message, "record batch CRC-32C mismatch")
        if header.records_count < 0 or header.last_offset_delta < 0 or (
            header.records_count == 0 and not allow_empty
        ):
            raise KafkaError(ErrorCode.corrupt_message, "record batch with no records")
        headers.append(header)
        pos += header.size
    return headers


def patch_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Set the base offset in place (outside the CRC)."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def patch_leader_epoch(buf: bytearray | memoryview, pos: int, leader_epoch: int) -> None:
    """Set the partition leader epoch in place (outside the CRC)."""
    _LEADER_EPOCH.pack_into(buf, pos + 12, leader_epoch)


def patch_log_append_time(buf: bytearray | memoryview, pos: int, size: int, now_ms: int) -> None:
    """Switch a batch to LogAppendTime: set the flag and maxTimestamp, then re-sign the CRC."""
    header = read_header(buf, pos)
    struct.pack_into(">h", buf, pos + 21, header.attributes | TIMESTAMP_TYPE_MASK)
    _MAX_TIMESTAMP.pack_into(buf, pos + 35, now_ms)
    struct.pack_into(">I", buf, pos + 17, crc_of(buf, pos, size))
