"""The records of `__consumer_offsets`, in Kafka's own binary formats.

Kafka's tools (kafka-console-consumer with the offsets formatter, kafka-dump-log
--offsets-decoder) read these bytes, so ackly writes exactly what Kafka's GroupMetadataManager
writes and reads every version Kafka ever wrote. Each record's key starts with an int16 record
type, then the key fields (non-flexible, version 0 of the key schema):

    type 0 or 1  OffsetCommitKey     group string, topic string, partition int32
    type 2       GroupMetadataKey    group string

The value starts with its own int16 version:

    OffsetCommitValue   v0: offset int64, metadata string, commit_timestamp int64
                        v1: v0 + expire_timestamp int64 (written only when a client asked for
                            a retention time, OffsetCommit v2-v4)
                        v2: as v0
                        v3: offset int64, leader_epoch int32, metadata string, commit_timestamp
                        v4: v3, flexible (compact strings, tagged fields)
    GroupMetadataValue  protocol_type string, generation int32, protocol string?, leader
                        string?, current_state_timestamp int64 (v2+), then members:
                        member_id, group_instance_id? (v3+), client_id, client_host,
                        rebalance_timeout int32 (v1+), session_timeout int32, subscription
                        bytes, assignment bytes. v4 is v3, flexible.

ackly writes OffsetCommitValue v3 (v1 when there is an expire timestamp) and
GroupMetadataValue v3, as Kafka 3.x does. A null value is a tombstone: it deletes the key.

Invariant: `decode_key`/`decode_*_value` of what `encode_*` wrote returns an equal value, and
malformed bytes raise RecordFormatError, never another exception type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ackly.errors import AcklyError

OFFSET_COMMIT_KEY_LEGACY = 0
OFFSET_COMMIT_KEY = 1
GROUP_METADATA_KEY = 2

OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_WITH_EXPIRY = 1
GROUP_METADATA_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class RecordFormatError(AcklyError):
    """Bytes in `__consumer_offsets` that are not a record this module knows."""


@dataclass(frozen=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupMetadataKey:
    group: str


CoordinatorKey = OffsetCommitKey | GroupMetadataKey


@dataclass(frozen=True)
class OffsetCommitValue:
    offset: int
    leader_epoch: int  # -1: unknown
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int = -1  # -1: none; expire by offsets.retention.minutes instead


@dataclass(frozen=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes  # the member's metadata for the selected protocol
    assignment: bytes


@dataclass(frozen=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp_ms: int  # -1: unknown
    members: tuple[MemberMetadata, ...]


# --- writing -------------------------------------------------------------------------------


class _Writer:
    """Non-flexible Kafka encoding: int16-length strings, int32-length bytes and arrays."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def i16(self, v: int) -> None:
        self.buf += _I16.pack(v)

    def i32(self, v: int) -> None:
        self.buf += _I32.pack(v)

    def i64(self, v: int) -> None:
        self.buf += _I64.pack(v)

    def string(self, v: str | None) -> None:
        if v is None:
            self.i16(-1)
            return
        raw = v.encode("utf-8")
        if len(raw) > 0x7FFF:
            raise RecordFormatError(f"string of {len(raw)} bytes does not fit an int16 length")
        self.i16(len(raw))
        self.buf += raw

    def bytes_(self, v: bytes) -> None:
        self.i32(len(v))
        self.buf += v


def encode_key(key: CoordinatorKey) -> bytes:
    w = _Writer()
    if isinstance(key, OffsetCommitKey):
        w.i16(OFFSET_COMMIT_KEY)
        w.string(key.group)
        w.string(key.topic)
        w.i32(key.partition)
    else:
        w.i16(GROUP_METADATA_KEY)
        w.string(key.group)
    return bytes(w.buf)


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    """v3, or v1 when the commit carries an expire timestamp (only v1 has the field)."""
    w = _Writer()
    if value.expire_timestamp_ms >= 0:
        w.i16(OFFSET_COMMIT_VALUE_WITH_EXPIRY)
        w.i64(value.offset)
        w.string(value.metadata)
        w.i64(value.commit_timestamp_ms)
        w.i64(value.expire_timestamp_ms)
    else:
        w.i16(OFFSET_COMMIT_VALUE_VERSION)
        w.i64(value.offset)
        w.i32(value.leader_epoch)
        w.string(value.metadata)
        w.i64(value.commit_timestamp_ms)
    return bytes(w.buf)


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    w = _Writer()
    w.i16(GROUP_METADATA_VALUE_VERSION)
    w.string(value.protocol_type)
    w.i32(value.generation)
    w.string(value.protocol)
    w.string(value.leader)
    w.i64(value.current_state_timestamp_ms)
    w.i32(len(value.members))
    for m in value.members:
        w.string(m.member_id)
        w.string(m.group_instance_id)
        w.string(m.client_id)
        w.string(m.client_host)
        w.i32(m.rebalance_timeout_ms)
        w.i32(m.session_timeout_ms)
        w.bytes_(m.subscription)
        w.bytes_(m.assignment)
    return bytes(w.buf)


# --- reading -------------------------------------------------------------------------------


class _Reader:
    """Kafka's encodings, non-flexible or flexible (compact lengths, tagged fields)."""

    def __init__(self, buf: bytes, pos: int = 0, flexible: bool = False) -> None:
        self.buf = buf
        self.pos = pos
        self.flexible = flexible

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise RecordFormatError("record shorter than its fields")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def _fixed(self, s: struct.Struct) -> int:
        value: int = s.unpack(self._take(s.size))[0]
        return value

    def i16(self) -> int:
        return self._fixed(_I16)

    def i32(self) -> int:
        return self._fixed(_I32)

    def i64(self) -> int:
        return self._fixed(_I64)

    def uvarint(self) -> int:
        value = 0
        for shift in range(0, 35, 7):
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise RecordFormatError("varint too long")

    def _length(self, fixed: struct.Struct) -> int:
        """A length: -1 means null. Compact lengths are stored plus one (0 = null)."""
        if self.flexible:
            return self.uvarint() - 1
        return self._fixed(fixed)

    def nullable_string(self) -> str | None:
        n = self._length(_I16)
        if n < 0:
            return None
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordFormatError(f"string is not UTF-8: {exc}") from None

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise RecordFormatError("null in a non-nullable string field")
        return s

    def bytes_(self) -> bytes:
        n = self._length(_I32)
        return b"" if n < 0 else bytes(self._take(n))

    def array_length(self) -> int:
        n = self._length(_I32)
        if n > len(self.buf) - self.pos:  # each element takes at least one byte
            raise RecordFormatError(f"array of {n} elements cannot fit")
        return max(n, 0)

    def tagged_fields(self) -> None:
        if not self.flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())


# Decoded keys by their bytes. A group commits the same partitions over and over, so a shard's
# load replays a few keys many times (a million commits of 100 partitions: 100 keys); the keys
# are immutable, so the decoding is shared. Bounded: cleared when full.
_KEY_CACHE: dict[bytes, CoordinatorKey] = {}
_KEY_CACHE_ENTRIES = 4096


def decode_key(data: bytes) -> CoordinatorKey:
    if type(data) is not bytes:
        return decode_key_uncached(data)
    key = _KEY_CACHE.get(data)
    if key is None:
        key = decode_key_uncached(data)
        if len(_KEY_CACHE) >= _KEY_CACHE_ENTRIES:
            _KEY_CACHE.clear()
        _KEY_CACHE[data] = key
    return key


def decode_key_uncached(data: bytes) -> CoordinatorKey:
    r = _Reader(data)
    kind = r.i16()
    if kind in (OFFSET_COMMIT_KEY_LEGACY, OFFSET_COMMIT_KEY):
        return OffsetCommitKey(r.string(), r.string(), r.i32())
    if kind == GROUP_METADATA_KEY:
        return GroupMetadataKey(r.string())
    raise RecordFormatError(f"unknown record type {kind} in __consumer_offsets")


_V3_HEAD = struct.Struct(">hqih")  # version 3, offset, leader epoch, metadata length


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    """As `decode_offset_commit_value_general`, with a shortcut for the version this broker
    writes (3, exactly its fields): a load decodes one per commit replayed."""
    size = len(data)
    if size >= 24 and data[0] == 0 and data[1] == OFFSET_COMMIT_VALUE_VERSION:
        _, offset, leader_epoch, metadata_len = _V3_HEAD.unpack_from(data)
        if metadata_len >= 0 and size == 24 + metadata_len:
            try:
                metadata = data[16 : 16 + metadata_len].decode("utf-8")
            except UnicodeDecodeError:
                pass  # the general reader says what is wrong
            else:
                (commit_timestamp,) = _I64.unpack_from(data, 16 + metadata_len)
                return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, -1)
    return decode_offset_commit_value_general(data)


def decode_offset_commit_value_general(data: bytes) -> OffsetCommitValue:
    r = _Reader(data)
    version = r.i16()
    if not 0 <= version <= 4:
        raise RecordFormatError(f"OffsetCommitValue version {version}")
    r.flexible = version >= 4
    offset = r.i64()
    leader_epoch = r.i32() if version >= 3 else -1
    metadata = r.string()
    commit_timestamp = r.i64()
    expire_timestamp = r.i64() if version == 1 else -1
    r.tagged_fields()
    return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    r = _Reader(data)
    version = r.i16()
    if not 0 <= version <= 4:
        raise RecordFormatError(f"GroupMetadataValue version {version}")
    r.flexible = version >= 4
    protocol_type = r.string()
    generation = r.i32()
    protocol = r.nullable_string()
    leader = r.nullable_string()
    state_timestamp = r.i64() if version >= 2 else -1
    members = []
    for _ in range(r.array_length()):
        member_id = r.string()
        instance_id = r.nullable_string() if version >= 3 else None
        client_id = r.string()
        client_host = r.string()
        rebalance_timeout = r.i32() if version >= 1 else -1
        session_timeout = r.i32()
        subscription = r.bytes_()
        assignment = r.bytes_()
        r.tagged_fields()
        if rebalance_timeout < 0:
            rebalance_timeout = session_timeout  # v0 had none: Kafka uses the session timeout
        members.append(MemberMetadata(member_id, instance_id, client_id, client_host,
                                      rebalance_timeout, session_timeout, subscription, assignment))
    r.tagged_fields()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, state_timestamp,
                              tuple(members))


# --- the consumer protocol, read only as far as the coordinator needs it --------------------


def subscribed_topics(subscription: bytes) -> frozenset[str] | None:
    """The topics of a ConsumerProtocolSubscription (any version; its first fields are
    version int16 and topics [string]), or None when the bytes are not one. Used, as Kafka's
    ClassicGroup.computeSubscribedTopics does, for OffsetDelete and offset expiry."""
    try:
        r = _Reader(subscription)
        if r.i16() < 0:
            return None
        return frozenset(r.string() for _ in range(r.array_length()))
    except RecordFormatError:
        return None
