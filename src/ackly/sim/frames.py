"""Kafka frames for the simulated network: kio request objects in, real frames out, and back.

Owns: how a simulated client or broker turns a kio request into the bytes a broker reads (size
prefix, request header v1 or v2, body by kio's writer) and a response frame into a kio object.
Everything the simulator sends goes through these, so the broker's decoding path (frame
prefix, header, kio body) runs exactly as it does behind a socket.

Invariants: `encode_request` produces one complete frame; `decode_response` reads exactly one
frame's payload (without the size prefix) and returns the correlation id it carries.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from kio.serial import entity_reader, entity_writer

from ackly.protocol.headers import API_VERSIONS_KEY
from ackly.protocol.messages import build_entity, header_version, is_flexible, request_type, response_type

_PREFIX = struct.Struct(">hhih")
_SIZE = struct.Struct(">i")


def request(api_key: int, version: int, fields: dict[str, Any]) -> Any:
    """A kio request of this API version from plain data (nested dicts for entities)."""
    return build_entity(request_type(api_key, version), fields)


def api_of(request_obj: Any) -> tuple[int, int]:
    return int(request_obj.__api_key__), int(request_obj.__version__)


def encode_request(request_obj: Any, correlation_id: int, client_id: str) -> bytes:
    """The size-prefixed frame of a kio request."""
    api_key, version = api_of(request_obj)
    cid = client_id.encode()
    header = _PREFIX.pack(api_key, version, correlation_id, len(cid)) + cid
    if header_version(api_key, version) >= 2:
        header += b"\x00"  # no tagged fields
    body = io.BytesIO()
    entity_writer(type(request_obj))(body, request_obj)
    payload = header + body.getvalue()
    return _SIZE.pack(len(payload)) + payload


def split_frame(frame: bytes) -> bytes:
    """The payload of a size-prefixed frame (what a broker's frame decoder hands on)."""
    (size,) = _SIZE.unpack_from(frame, 0)
    assert size == len(frame) - 4, f"frame says {size} bytes, has {len(frame) - 4}"
    return frame[4:]


def decode_response(api_key: int, version: int, payload: bytes) -> tuple[int, Any]:
    """(correlation id, kio response) from a response frame's payload."""
    (correlation_id,) = _SIZE.unpack_from(payload, 0)
    offset = 4
    if is_flexible(api_key, version) and api_key != API_VERSIONS_KEY:
        offset += 1  # response header v1: empty tagged fields
    value: Any
    value, _ = entity_reader(response_type(api_key, version))(payload, offset)
    return correlation_id, value
