"""Kafka messages through kio: request decoding, response building and encoding.

kio holds Kafka's own message schemas, generated, one class per API version. This module is
the only place that knows kio's calling conventions; handlers build responses from plain
dicts with `build`, which drops fields a version lacks and fills the ones a handler did not
give with their zero value, so one handler serves every version of its API.
Produce and Fetch responses, the hot ones, are encoded by hand in `produce_codec` and
`fetch_codec` instead.
"""

from __future__ import annotations

import datetime
import io
import struct
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.headers import API_VERSIONS_KEY, response_header
from ackly.protocol.request_shape import check_shape

_SIZE = struct.Struct(">i")


def known_versions(api_key: int) -> tuple[int, ...]:
    """Versions kio has schemas for (the upper bound of what ackly can advertise)."""
    name = api_key_map.get(api_key)  # type: ignore[call-overload]
    if name is None:
        return ()
    return tuple(sorted(v for v, e in schema_name_map[name].items() if EntityType.request in e))


@cache
def request_type(api_key: int, version: int) -> type:
    return load_request_schema(api_key, version)


@cache
def response_type(api_key: int, version: int) -> type:
    return load_response_schema(api_key, version)


@cache
def header_version(api_key: int, version: int) -> int:
    """Request header version: 2 for flexible versions, else 1."""
    cls: Any = request_type(api_key, version)
    return int(cls.__header_schema__.__version__)


def is_flexible(api_key: int, version: int) -> bool:
    cls: Any = request_type(api_key, version)
    return bool(cls.__flexible__)


@cache
def _reader(cls: type) -> Any:
    return entity_reader(cls)


def decode_request(api_key: int, version: int, frame: bytes | memoryview, offset: int) -> Any:
    """Decode a request body. Trailing bytes are ignored, as Kafka does (librdkafka sends some).

    Every declared length is checked against the frame first (protocol/request_shape.py): kio
    allocates an array's storage from its declared count, and an absurd count aborts the
    process instead of raising."""
    cls = request_type(api_key, version)
    check_shape(cls, frame, offset)
    try:
        value, _size = _reader(cls)(frame, offset)
    except KafkaError:
        raise
    except Exception as exc:  # kio raises several types for malformed input
        raise KafkaError(ErrorCode.corrupt_message, f"malformed request body: {exc}") from None
    return value


def encode_response(api_key: int, version: int, correlation_id: int, response: Any) -> bytes:
    """Encode a kio response with its header and size prefix."""
    flexible_header = is_flexible(api_key, version) and api_key != API_VERSIONS_KEY
    buf = io.BytesIO()
    buf.write(b"\x00\x00\x00\x00")
    buf.write(response_header(correlation_id, flexible_header))
    entity_writer(type(response))(buf, response)
    data = bytearray(buf.getbuffer())
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


# --- building responses from plain data ---------------------------------------------------

_ZERO_BY_KAFKA_TYPE: Mapping[str, Any] = {
    "int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "uint32": 0, "uint64": 0,
    "float64": 0.0, "bool": False, "string": "", "bytes": b"", "records": None,
    "uuid": uuid.UUID(int=0), "error_code": ErrorCode.none,
    "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
    "datetime_i64": None,
}


def _entity_of(tp: Any) -> type | None:
    """The entity class inside `tuple[Entity, ...]`, `Entity` or `Entity | None`."""
    if isinstance(tp, type) and is_dataclass(tp):
        return tp
    origin = typing.get_origin(tp)
    if origin in (tuple, types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and is_dataclass(arg):
                return arg
    return None


def _is_array(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _is_nullable(tp: Any) -> bool:
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in typing.get_args(tp)


def _convert(kafka_type: str | None, tp: Any, value: Any) -> Any:
    if _is_nullable(tp):
        # `X | None`: convert as X (e.g. a nullable array of entities).
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            tp = inner[0]
    if kafka_type == "timedelta_i32" or kafka_type == "timedelta_i64":
        return value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=value)
    if kafka_type == "datetime_i64" and isinstance(value, int):
        if value < 0:
            return None
        return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
    if kafka_type == "error_code" and not isinstance(value, ErrorCode):
        return ErrorCode(value)
    entity = _entity_of(tp)
    if entity is not None:
        if _is_array(tp):
            return tuple(_build(entity, item) if isinstance(item, Mapping) else item for item in value)
        if isinstance(value, Mapping):
            return _build(entity, value)
    if _is_array(tp) and isinstance(value, list):
        return tuple(value)
    return value


@cache
def _field_plan(cls: type) -> tuple[tuple[str, str | None, Any, bool, Any], ...]:
    plan = []
    for f in fields(cls):
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        plan.append((f.name, f.metadata.get("kafka_type"), f.type, has_default, f))
    return tuple(plan)


def _zero(kafka_type: str | None, tp: Any) -> Any:
    if _is_array(tp):
        return ()
    if _is_nullable(tp):
        return None
    if kafka_type is None:
        entity = _entity_of(tp)
        return _build(entity, {}) if entity is not None else None
    return _ZERO_BY_KAFKA_TYPE.get(kafka_type, 0)


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, kafka_type, tp, has_default, _f in _field_plan(cls):
        if name in data and data[name] is not None:
            kwargs[name] = _convert(kafka_type, tp, data[name])
        elif name in data and _is_nullable(tp):
            kwargs[name] = None
        elif not has_default:
            kwargs[name] = _zero(kafka_type, tp)
    return cls(**kwargs)


def build(api_key: int, version: int, data: Mapping[str, Any]) -> Any:
    """A kio response of this version from a dict; unknown keys are dropped."""
    return _build(response_type(api_key, version), data)


def build_request(api_key: int, version: int, data: Mapping[str, Any]) -> Any:
    """A kio request of this version from a dict (for requests a broker sends to its peers)."""
    return _build(request_type(api_key, version), data)


def build_entity(cls: type, data: Mapping[str, Any]) -> Any:
    return _build(cls, data)
