"""The `__consumer_offsets` records of consumer groups (KIP-848), in Kafka's binary formats.

Kafka's group coordinator writes a consumer group as these records; the record type is the
key's leading int16 (records.py holds the classic types 0-2). Keys are non-flexible (int16
length strings); values start with their int16 version (0 for all of these) and are flexible
(compact strings and arrays, tagged fields):

    3  ConsumerGroupMetadataKey(group)                 -> epoch int32, tagged 0: metadata hash
    5  ConsumerGroupMemberMetadataKey(group, member)   -> instance id?, rack id?, client id,
                                                          client host, subscribed topic names,
                                                          subscribed topic regex?, rebalance
                                                          timeout int32, server assignor?
    6  ConsumerGroupTargetAssignmentMetadataKey(group) -> assignment epoch int32
    7  ConsumerGroupTargetAssignmentMemberKey(group, member) -> [topic id uuid, [partition]]
    8  ConsumerGroupCurrentMemberAssignmentKey(group, member) -> member epoch, previous member
                                                          epoch, state int8, assigned
                                                          partitions, partitions pending
                                                          revocation

Type 4 (ConsumerGroupPartitionMetadata) is not written: ackly tracks the subscribed topics'
metadata by the hash in the group's metadata record, as Kafka 4.1 does (KIP-1101); a type-4
record read from a log is skipped. A null value is a tombstone.

Invariant: decoding what the encoders wrote gives an equal value; malformed bytes raise
RecordFormatError.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from ackly.coordinator.records import RecordFormatError, _Reader, _Writer

CONSUMER_GROUP_METADATA = 3
CONSUMER_GROUP_PARTITION_METADATA = 4
CONSUMER_GROUP_MEMBER_METADATA = 5
CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA = 6
CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER = 7
CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT = 8

RECORD_TYPES = frozenset(range(3, 9))

# A member's assignment: topic id -> partitions.
Assignment = dict[uuid.UUID, frozenset[int]]


@dataclass(frozen=True)
class ConsumerGroupKey:
    """A consumer group record's key: its type, the group, and the member (None for group-wide
    records)."""

    record_type: int
    group: str
    member_id: str | None = None


@dataclass(frozen=True)
class GroupMetadataRecord:
    epoch: int
    metadata_hash: int = 0


@dataclass(frozen=True)
class MemberMetadataRecord:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None


@dataclass(frozen=True)
class TargetAssignmentMetadataRecord:
    assignment_epoch: int


@dataclass(frozen=True)
class TargetAssignmentMemberRecord:
    partitions: tuple[tuple[uuid.UUID, tuple[int, ...]], ...]


@dataclass(frozen=True)
class CurrentAssignmentRecord:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned: tuple[tuple[uuid.UUID, tuple[int, ...]], ...]
    pending_revocation: tuple[tuple[uuid.UUID, tuple[int, ...]], ...]


ConsumerGroupValue = (GroupMetadataRecord | MemberMetadataRecord | TargetAssignmentMetadataRecord
                      | TargetAssignmentMemberRecord | CurrentAssignmentRecord)

_MEMBER_KEYS = frozenset({CONSUMER_GROUP_MEMBER_METADATA, CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER,
                          CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT})


def as_tuples(assignment: Assignment) -> tuple[tuple[uuid.UUID, tuple[int, ...]], ...]:
    """An assignment in the records' order: topics by id, partitions ascending."""
    return tuple((t, tuple(sorted(ps))) for t, ps in sorted(assignment.items(), key=lambda i: i[0].bytes) if ps)


def from_tuples(parts: tuple[tuple[uuid.UUID, tuple[int, ...]], ...]) -> Assignment:
    return {t: frozenset(ps) for t, ps in parts if ps}


class _FlexWriter(_Writer):
    """Flexible Kafka encoding for the values (compact strings and arrays, tagged fields); the
    keys keep the int16-length strings of `_Writer`."""

    def i8(self, v: int) -> None:
        self.buf += struct.pack(">b", v)

    def uvarint(self, v: int) -> None:
        while v >= 0x80:
            self.buf.append((v & 0x7F) | 0x80)
            v >>= 7
        self.buf.append(v)

    def string(self, v: str | None) -> None:
        if v is None:
            self.uvarint(0)
            return
        raw = v.encode("utf-8")
        self.uvarint(len(raw) + 1)
        self.buf += raw

    def key_string(self, v: str) -> None:
        _Writer.string(self, v)

    def array_length(self, n: int) -> None:
        self.uvarint(n + 1)

    def no_tags(self) -> None:
        self.uvarint(0)

    def topic_partitions(self, parts: tuple[tuple[uuid.UUID, tuple[int, ...]], ...]) -> None:
        self.array_length(len(parts))
        for topic_id, partitions in parts:
            self.buf += topic_id.bytes
            self.array_length(len(partitions))
            for p in partitions:
                self.i32(p)
            self.no_tags()


def encode_key(key: ConsumerGroupKey) -> bytes:
    w = _FlexWriter()
    w.i16(key.record_type)
    w.key_string(key.group)
    if key.record_type in _MEMBER_KEYS:
        assert key.member_id is not None
        w.key_string(key.member_id)
    return bytes(w.buf)


def encode_value(value: ConsumerGroupValue) -> bytes:
    w = _FlexWriter()
    w.i16(0)
    if isinstance(value, GroupMetadataRecord):
        w.i32(value.epoch)
        if value.metadata_hash:
            w.uvarint(1)
            w.uvarint(0)  # tag 0: MetadataHash
            w.uvarint(8)
            w.i64(value.metadata_hash)
            return bytes(w.buf)
    elif isinstance(value, MemberMetadataRecord):
        w.string(value.instance_id)
        w.string(value.rack_id)
        w.string(value.client_id)
        w.string(value.client_host)
        w.array_length(len(value.subscribed_topic_names))
        for name in value.subscribed_topic_names:
            w.string(name)
        w.string(value.subscribed_topic_regex)
        w.i32(value.rebalance_timeout_ms)
        w.string(value.server_assignor)
    elif isinstance(value, TargetAssignmentMetadataRecord):
        w.i32(value.assignment_epoch)
    elif isinstance(value, TargetAssignmentMemberRecord):
        w.topic_partitions(value.partitions)
    else:
        w.i32(value.member_epoch)
        w.i32(value.previous_member_epoch)
        w.i8(value.state)
        w.topic_partitions(value.assigned)
        w.topic_partitions(value.pending_revocation)
    w.no_tags()
    return bytes(w.buf)


def is_consumer_group_key(data: bytes) -> bool:
    return len(data) >= 2 and struct.unpack_from(">h", data)[0] in RECORD_TYPES


def decode_key(data: bytes) -> ConsumerGroupKey:
    r = _Reader(data)
    kind = r.i16()
    if kind not in RECORD_TYPES:
        raise RecordFormatError(f"record type {kind} is not a consumer group record")
    group = r.string()
    member = r.string() if kind in _MEMBER_KEYS else None
    return ConsumerGroupKey(kind, group, member)


def _read_topic_partitions(r: _Reader) -> tuple[tuple[uuid.UUID, tuple[int, ...]], ...]:
    out = []
    for _ in range(r.array_length()):
        topic_id = uuid.UUID(bytes=bytes(r._take(16)))
        partitions = tuple(r.i32() for _ in range(r.array_length()))
        r.tagged_fields()
        out.append((topic_id, partitions))
    return tuple(out)


def decode_value(record_type: int, data: bytes) -> ConsumerGroupValue | None:
    """The value of a record of `record_type`; None for a type ackly does not keep (4)."""
    r = _Reader(data, flexible=True)
    version = r.i16()
    if version != 0:
        raise RecordFormatError(f"consumer group record type {record_type} version {version}")
    value: ConsumerGroupValue | None
    if record_type == CONSUMER_GROUP_METADATA:
        epoch = r.i32()
        metadata_hash = 0
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            raw = r._take(size)
            if tag == 0 and size == 8:
                metadata_hash = struct.unpack(">q", raw)[0]
        return GroupMetadataRecord(epoch, metadata_hash)
    if record_type == CONSUMER_GROUP_PARTITION_METADATA:
        return None
    if record_type == CONSUMER_GROUP_MEMBER_METADATA:
        instance_id = r.nullable_string()
        rack_id = r.nullable_string()
        client_id = r.string()
        client_host = r.string()
        names = tuple(r.string() for _ in range(r.array_length()))
        regex = r.nullable_string()
        rebalance_timeout_ms = r.i32()
        assignor = r.nullable_string()
        value = MemberMetadataRecord(instance_id, rack_id, client_id, client_host, names, regex,
                                     rebalance_timeout_ms, assignor)
    elif record_type == CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA:
        value = TargetAssignmentMetadataRecord(r.i32())
    elif record_type == CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER:
        value = TargetAssignmentMemberRecord(_read_topic_partitions(r))
    else:
        member_epoch = r.i32()
        previous = r.i32()
        state = struct.unpack(">b", r._take(1))[0]
        assigned = _read_topic_partitions(r)
        pending = _read_topic_partitions(r)
        value = CurrentAssignmentRecord(member_epoch, previous, state, assigned, pending)
    r.tagged_fields()
    return value
