"""What the leader checks of a client's record batches before it writes any of them (Kafka's
LogValidator, for record batch v2).

`records.validate_batches` already checked each batch's framing, magic, size and CRC. This
module adds the checks that need the batch's meaning, each refused as Kafka refuses it:

- INVALID_RECORD (Kafka's InvalidRecordException): a base offset other than 0 (a client's
  batch is numbered by the leader, LogValidator.validateBatch); a record count that differs
  from lastOffsetDelta + 1; a producer id with a negative sequence or epoch, or a
  transactional batch without a producer id; in a compressed batch, records whose offset
  deltas are not 0, 1, 2, ... (the inner offsets of validateMessagesAndAssignOffsetsCompressed).
- CORRUPT_MESSAGE: a compressed batch that does not decompress, or whose records do not fill
  the decompressed section exactly, record for record as the header counts them.
- INVALID_TIMESTAMP (KIP-937): with message.timestamp.type=CreateTime, a timestamp earlier than
  now - message.timestamp.before.max.ms or later than now + message.timestamp.after.max.ms.
  Uncompressed batches are checked on their header (base timestamp and max timestamp), which
  bounds every record a client writes (their deltas count up from the base); compressed ones
  record by record, since they are decoded anyway.

Every check reads the bytes and writes nothing, so a refused request leaves the log as it
was (a batch refused here refuses the whole partition's record set, as Kafka does).
Uncompressed batches cost no per-record work on this path: their records are checked where
they are decoded (coordinators, compaction, clients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.compression import decompress
from ackly.protocol.record_codec import read_varint
from ackly.protocol.records import HEADER_SIZE, BatchHeader

NO_TIMESTAMP = -1
_VARINT_MAX_BYTES = 5
_VARLONG_MAX_BYTES = 10


@dataclass(frozen=True)
class TimestampRule:
    """KIP-937's window for CreateTime timestamps (None: the topic keeps LogAppendTime)."""

    before_max_ms: int
    after_max_ms: int

    def check(self, timestamp: int, now_ms: int) -> None:
        if timestamp == NO_TIMESTAMP:
            return
        if timestamp < now_ms - self.before_max_ms or timestamp > now_ms + self.after_max_ms:
            raise KafkaError(
                ErrorCode.invalid_timestamp,
                f"timestamp {timestamp} is out of range: the broker accepts "
                f"[now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms] = "
                f"[{now_ms - self.before_max_ms}, {now_ms + self.after_max_ms}]",
            )


def validate_client_batches(buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader],
                            now_ms: int, timestamps: TimestampRule | None,
                            max_decompressed_bytes: int,
                            sections: dict[int, bytes] | None = None) -> None:
    """Raise KafkaError for the first batch of a produce request's record set that Kafka's
    LogValidator would refuse; `headers` are those `records.validate_batches` returned.
    `sections`, when given, receives the decompressed records section of every compressed
    batch, by its index in `headers`: recompression reuses them instead of decompressing the
    batches a second time (protocol/recompression.py)."""
    pos = 0  # the batches lie back to back: no header is parsed twice on the produce path
    for index, header in enumerate(headers):
        _check_header(header)
        if header.compression:
            section = _check_compressed(buf, pos, header, now_ms, timestamps,
                                        max_decompressed_bytes)
            if sections is not None:
                sections[index] = section
        elif timestamps is not None:
            timestamps.check(header.base_timestamp, now_ms)
            timestamps.check(header.max_timestamp, now_ms)
        pos += header.size


def _invalid(why: str) -> KafkaError:
    return KafkaError(ErrorCode.invalid_record, why)


def _check_header(h: BatchHeader) -> None:
    if h.base_offset != 0:
        raise _invalid(f"the base offset of a client's record batch must be 0, not {h.base_offset}")
    if h.records_count != h.last_offset_delta + 1:
        raise _invalid(f"inconsistent batch: {h.records_count} records for offset deltas "
                       f"0..{h.last_offset_delta}")
    if h.producer_id >= 0:
        if h.base_sequence < 0:
            raise _invalid(f"sequence {h.base_sequence} in a batch of producer id {h.producer_id}")
        if h.producer_epoch < 0:
            raise _invalid(f"epoch {h.producer_epoch} in a batch of producer id {h.producer_id}")
    elif h.is_transactional:
        raise _invalid("a transactional batch without a producer id")


def _check_compressed(buf: bytes | bytearray | memoryview, pos: int, h: BatchHeader, now_ms: int,
                      timestamps: TimestampRule | None, max_bytes: int) -> bytes:
    """Decompress the records section and walk it: lengths, offset deltas, timestamps.
    Returns the decompressed section."""
    section = decompress(h.compression, memoryview(buf)[pos + HEADER_SIZE:pos + h.size],
                         max_bytes=max_bytes)
    end = len(section)
    at = 0
    count = 0
    lowest = highest = 0  # timestamp deltas: the window is checked once, at the extremes
    # Per record: length, attributes, timestampDelta, offsetDelta. Most varints here take one
    # byte (a zigzag value below 64), read inline; longer ones go through read_varint.
    while at < end:
        byte = section[at]
        if byte < 0x80:
            length, at = (byte >> 1) ^ -(byte & 1), at + 1
        else:
            length, at = read_varint(section, at, end, _VARINT_MAX_BYTES)
        record_end = at + length
        if length < 3 or record_end > end:
            raise _corrupt(f"record {count} of length {length} does not fit its batch")
        at += 1  # attributes
        byte = section[at]
        if byte < 0x80:
            timestamp_delta, at = (byte >> 1) ^ -(byte & 1), at + 1
        else:
            timestamp_delta, at = read_varint(section, at, record_end, _VARLONG_MAX_BYTES)
        byte = section[at] if at < record_end else 0x80
        if byte < 0x80:
            offset_delta = (byte >> 1) ^ -(byte & 1)
        else:
            offset_delta, _ = read_varint(section, at, record_end, _VARINT_MAX_BYTES)
        if offset_delta != count:
            raise _invalid(f"record {count} of a compressed batch has offset delta {offset_delta}")
        if timestamp_delta < lowest:
            lowest = timestamp_delta
        elif timestamp_delta > highest:
            highest = timestamp_delta
        count += 1
        at = record_end
    if count != h.records_count:
        raise _corrupt(f"compressed batch holds {count} records, its header says {h.records_count}")
    if timestamps is not None:
        timestamps.check(h.base_timestamp + lowest, now_ms)
        timestamps.check(h.base_timestamp + highest, now_ms)
    return section


def _corrupt(why: str) -> KafkaError:
    return KafkaError(ErrorCode.corrupt_message, why)
