"""Every length a message declares fits in the bytes that follow it, checked before kio decodes.

kio's native decoder sizes an array's storage from the count the message declares, before it
reads an element: a request that declares an array of 2**31 entries makes it ask for hundreds
of gigabytes, and the failed allocation aborts the whole process. One 40-byte frame from any
client would stop the broker. Kafka's own reader refuses such a message instead ("Error
reading array of size N, only M bytes available", Kafka's protocol Type.ARRAY and
ByteBufferAccessor): so does this module, walking the message's schema (kio's dataclasses)
over the bytes without building anything. A nullable struct carries a one-byte marker first
(KIP-893), as kio writes and reads it.

The walk checks, for every string, byte string, record set and array of every entity (tagged
fields included, inside the size their tag declares), that its declared length is at most the
bytes left in the frame; an array's count must also leave at least one byte per element
(an element's least encoded size, for fixed-size elements). It does not check values: kio
does that, and raises ordinary exceptions that `messages.decode_request` turns into
CORRUPT_MESSAGE. Trailing bytes after the message are allowed, as Kafka allows them.

Cost: one Python step per field and per array element of entity type; the record sets of a
Produce request are skipped in one step, so the hot path pays a few microseconds a request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    is_optional,
)

from ackly.errors import ErrorCode, KafkaError

_FIXED_SIZE = {
    "bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "float64": 8,
    "uuid": 16, "error_code": 2, "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8,
}
# Kafka type -> (length field of a legacy encoding, in bytes): strings have int16 lengths,
# byte strings and record sets int32. Flexible encodings use an unsigned varint (length + 1).
_VARIABLE = {"string": 2, "bytes": 4, "records": 4}

# pos, end -> new pos (raises KafkaError). A walker for one field or one entity.
Step = Callable[[memoryview, int, int], int]


def check_shape(cls: type, frame: bytes | bytearray | memoryview, offset: int) -> None:
    """Raise KafkaError(CORRUPT_MESSAGE) if a length declared in the message of type `cls` at
    `offset` reaches past the end of `frame`."""
    view = memoryview(frame)
    _entity_step(cls)(view, offset, len(view))


def _too_long(what: str, length: int, left: int) -> KafkaError:
    return KafkaError(ErrorCode.corrupt_message,
                      f"malformed message: {what} of {length} declared, only {left} bytes left")


def _uvarint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while pos < end and shift < 35:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise KafkaError(ErrorCode.corrupt_message, "malformed message: truncated or overlong varint")


def _int(buf: memoryview, pos: int, end: int, size: int) -> tuple[int, int]:
    if pos + size > end:
        raise _too_long("a length field", size, end - pos)
    return int.from_bytes(buf[pos:pos + size], "big", signed=True), pos + size


def _length(buf: memoryview, pos: int, end: int, flexible: bool, legacy_size: int) -> tuple[int, int]:
    """A declared length or count; -1 for null."""
    if flexible:
        raw, pos = _uvarint(buf, pos, end)
        return raw - 1, pos
    return _int(buf, pos, end, legacy_size)


def _fixed_step(size: int) -> Step:
    def step(buf: memoryview, pos: int, end: int) -> int:
        if pos + size > end:
            raise _too_long("a field", size, end - pos)
        return pos + size
    return step


def _variable_step(kafka_type: str, flexible: bool) -> Step:
    legacy_size = _VARIABLE[kafka_type]

    def step(buf: memoryview, pos: int, end: int) -> int:
        length, pos = _length(buf, pos, end, flexible, legacy_size)
        if length > end - pos:
            raise _too_long(f"a {kafka_type}", length, end - pos)
        return pos + max(length, 0)
    return step


def _array_step(element: Step, least_size: int, flexible: bool) -> Step:
    def step(buf: memoryview, pos: int, end: int) -> int:
        count, pos = _length(buf, pos, end, flexible, 4)
        if count * least_size > end - pos:
            raise _too_long("an array", count, end - pos)
        for _ in range(count):
            pos = element(buf, pos, end)
        return pos
    return step


def _primitive_step(kafka_type: str, flexible: bool) -> Step:
    size = _FIXED_SIZE.get(kafka_type)
    if size is not None:
        return _fixed_step(size)
    return _variable_step(kafka_type, flexible)


def _nullable_step(inner: Step) -> Step:
    """A nullable struct (KIP-893): an int8 marker, -1 for null, then the struct."""
    def step(buf: memoryview, pos: int, end: int) -> int:
        marker, pos = _int(buf, pos, end, 1)
        return pos if marker < 0 else inner(buf, pos, end)
    return step


def _field_step(field: dataclasses.Field[Any], flexible: bool, tagged: bool) -> Step:
    kind = classify_field(field)
    if isinstance(kind, EntityField):
        # A tagged struct has no null marker: an absent tag is its null.
        if is_optional(field) and not tagged:
            return _nullable_step(_entity_step(kind.type_))
        return _entity_step(kind.type_)
    if isinstance(kind, EntityTupleField):
        return _array_step(_entity_step(kind.type_), 1, flexible)
    kafka_type = field.metadata["kafka_type"]
    element = _primitive_step(kafka_type, flexible)
    if isinstance(kind, PrimitiveTupleField):
        return _array_step(element, _FIXED_SIZE.get(kafka_type, 1), flexible)
    return element


@cache
def _entity_step(cls: type) -> Step:
    flexible = bool(getattr(cls, "__flexible__", False))
    steps: list[Step] = []
    tagged: dict[int, Step] = {}
    for field in dataclasses.fields(cls):
        if "tag" in field.metadata:
            tagged[int(field.metadata["tag"])] = _field_step(field, flexible, tagged=True)
        else:
            steps.append(_field_step(field, flexible, tagged=False))

    def step(buf: memoryview, pos: int, end: int) -> int:
        for field_step in steps:
            pos = field_step(buf, pos, end)
        if flexible:
            pos = _tagged_fields(buf, pos, end, tagged)
        return pos
    return step


def _tagged_fields(buf: memoryview, pos: int, end: int, known: dict[int, Step]) -> int:
    count, pos = _uvarint(buf, pos, end)
    if count > end - pos:
        raise _too_long("a tagged fields section", count, end - pos)
    for _ in range(count):
        tag, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        if size > end - pos:
            raise _too_long(f"tagged field {tag}", size, end - pos)
        field_step = known.get(tag)
        if field_step is not None:
            field_step(buf, pos, pos + size)  # within the size its tag declares
        pos += size
    return pos
