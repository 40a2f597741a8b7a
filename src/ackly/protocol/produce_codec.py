"""ProduceResponse (api key 0), versions 3-13, encoded by hand.

kio's generated encoder is pure Python and generic (about 27 us for one partition); this one
writes the same bytes with a few precompiled structs. tests/unit/protocol checks it
byte-for-byte against kio for every version on generated inputs, so the schema facts
below are tested, not trusted:

    v3-v4   topics[name, partitions[index, error_code, base_offset, log_append_time_ms]],
            throttle_time_ms
    v5+     partition += log_start_offset
    v8+     partition += record_errors[batch_index, batch_index_error_message], error_message
    v9+     flexible: compact arrays and strings, tagged fields, response header v1
    v10+    tagged current_leader (partition) and node_endpoints (response): written absent,
            which a client reads as "no leader hint" (KIP-951)
    v13     topics keyed by topic_id (uuid) instead of name

The compact-encoding helpers here (`put_uvarint`, `put_compact_string`, ...) are shared
with `fetch_codec`.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MIN_VERSION: Final = 3
MAX_VERSION: Final = 13
FIRST_FLEXIBLE_VERSION: Final = 9
FIRST_TOPIC_ID_VERSION: Final = 13

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
_HEADER_V0 = struct.Struct(">ii")  # size, correlation id
_PARTITION_V3 = struct.Struct(">ihqq")  # index, error_code, base_offset, log_append_time
_PARTITION_V5 = struct.Struct(">ihqqq")  # + log_start_offset
_EMPTY_TAGS = b"\x00"


@dataclass(frozen=True, slots=True)
class PartitionProduceResult:
    """One partition's outcome. Fields a version lacks are not written."""

    index: int
    error_code: int = 0
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    record_errors: tuple[tuple[int, str | None], ...] = ()  # (batch index, message)


# --- shared wire helpers -------------------------------------------------------------------


def put_uvarint(out: bytearray, value: int) -> None:
    """Append an unsigned varint (compact lengths, tag counts; KIP-482)."""
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_string(out: bytearray, value: str) -> None:
    """A non-nullable STRING: int16 length, UTF-8 bytes."""
    data = value.encode()
    out += INT16.pack(len(data))
    out += data


def put_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += b"\xff\xff"
    else:
        put_string(out, value)


def put_compact_string(out: bytearray, value: str) -> None:
    """A non-nullable COMPACT_STRING: uvarint(length + 1), UTF-8 bytes."""
    data = value.encode()
    put_uvarint(out, len(data) + 1)
    out += data


def put_compact_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
    else:
        put_compact_string(out, value)


def put_array_length(out: bytearray, length: int, flexible: bool) -> None:
    """ARRAY (int32 length) or COMPACT_ARRAY (uvarint length + 1) of a non-null array."""
    if flexible:
        put_uvarint(out, length + 1)
    else:
        out += INT32.pack(length)


def put_topic_key(out: bytearray, topic: str | uuid.UUID, by_id: bool, flexible: bool) -> None:
    """A topic's name, or its id for the versions that key topics by id."""
    if by_id:
        assert isinstance(topic, uuid.UUID), "this version keys topics by topic id"
        out += topic.bytes
    else:
        assert isinstance(topic, str), "this version keys topics by name"
        if flexible:
            put_compact_string(out, topic)
        else:
            put_string(out, topic)


# --- the encoder ---------------------------------------------------------------------------


def encode_produce_response(
    version: int,
    correlation_id: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[PartitionProduceResult]]],
    throttle_time_ms: int = 0,
) -> bytes:
    """The whole response frame: size prefix, response header, body.

    `topics` are (name, results), or (topic id, results) for v13.
    """
    assert MIN_VERSION <= version <= MAX_VERSION, f"ProduceResponse v{version}"
    flexible = version >= FIRST_FLEXIBLE_VERSION
    by_id = version >= FIRST_TOPIC_ID_VERSION
    with_log_start = version >= 5
    with_record_errors = version >= 8
    put_str = put_compact_nullable_string if flexible else put_nullable_string

    out = bytearray(_HEADER_V0.pack(0, correlation_id))
    if flexible:
        out += _EMPTY_TAGS  # response header v1
    put_array_length(out, len(topics), flexible)
    for topic, partitions in topics:
        put_topic_key(out, topic, by_id, flexible)
        put_array_length(out, len(partitions), flexible)
        for p in partitions:
            if with_log_start:
                out += _PARTITION_V5.pack(
                    p.index, p.error_code, p.base_offset, p.log_append_time_ms, p.log_start_offset
                )
            else:
                out += _PARTITION_V3.pack(
                    p.index, p.error_code, p.base_offset, p.log_append_time_ms
                )
            if with_record_errors:
                put_array_length(out, len(p.record_errors), flexible)
                for batch_index, message in p.record_errors:
                    out += INT32.pack(batch_index)
                    put_str(out, message)
                    if flexible:
                        out += _EMPTY_TAGS
                put_str(out, p.error_message)
            if flexible:
                out += _EMPTY_TAGS  # current_leader (v10+) absent
        if flexible:
            out += _EMPTY_TAGS
    out += INT32.pack(throttle_time_ms)
    if flexible:
        out += _EMPTY_TAGS  # node_endpoints (v10+) absent
    INT32.pack_into(out, 0, len(out) - 4)
    return bytes(out)
