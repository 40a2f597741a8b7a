"""Request and response headers (v0-v2), parsed and written by hand.

Which header version a request uses follows from its API's first flexible version: flexible
requests carry header v2 (with tagged fields), others v1. Responses to flexible requests use
response header v1, except ApiVersions, whose response header is always v0 so that a client
can read it before the versions are agreed (KIP-511).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ackly.errors import ErrorCode, KafkaError

_PREFIX = struct.Struct(">hhih")
_INT32 = struct.Struct(">i")

API_VERSIONS_KEY = 18


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """An unsigned varint at `pos`: (value, next position)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise KafkaError(ErrorCode.corrupt_message, "truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise KafkaError(ErrorCode.corrupt_message, "varint too long")


def skip_tagged_fields(buf: bytes | memoryview, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise KafkaError(ErrorCode.corrupt_message, "truncated tagged field")
    return pos


def parse_prefix(frame: bytes | memoryview) -> RequestHeader:
    """The header fields every version shares (enough to answer even an unknown API)."""
    if len(frame) < _PREFIX.size:
        raise KafkaError(ErrorCode.corrupt_message, "frame shorter than a request header")
    api_key, api_version, correlation_id, client_id_len = _PREFIX.unpack_from(frame, 0)
    pos = _PREFIX.size
    client_id: str | None = None
    if client_id_len >= 0:
        if pos + client_id_len > len(frame):
            raise KafkaError(ErrorCode.corrupt_message, "truncated client id")
        client_id = bytes(frame[pos : pos + client_id_len]).decode("utf-8", "replace")
    return RequestHeader(api_key, api_version, correlation_id, client_id)


def body_offset(frame: bytes | memoryview, header_version: int) -> int:
    """Where the request body starts, for header v1 or v2."""
    client_id_len: int = struct.unpack_from(">h", frame, 8)[0]
    pos = _PREFIX.size + max(client_id_len, 0)
    if header_version >= 2:
        pos = skip_tagged_fields(frame, pos)
    return pos


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """Response header v0 (correlation id) or v1 (plus empty tagged fields)."""
    return _INT32.pack(correlation_id) + (b"\x00" if flexible else b"")
