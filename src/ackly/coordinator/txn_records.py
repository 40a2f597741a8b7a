"""The records of `__transaction_state`, in Kafka's own binary format.

Kafka's tools (kafka-dump-log --transaction-log-decoder) read these bytes, so ackly writes
what Kafka's TransactionLog writes and reads every version Kafka writes
(TransactionLogKey.json / TransactionLogValue.json):

    key     int16 record type 0 (TRANSACTION_LOG), then transactional_id string
            (int16 length, UTF-8; key schema version 0, never flexible)
    value   int16 version, then
            v0: producer_id int64, producer_epoch int16, transaction_timeout_ms int32,
                status int8, partitions (nullable int32-counted array of topic string and
                int32-counted partition ids), last_update_timestamp_ms int64,
                start_timestamp_ms int64
            v1: v0 made flexible (compact strings and arrays, tagged fields), with tagged
                previous_producer_id (tag 0), next_producer_id (tag 1) and
                client_transaction_version (tag 2), written by Kafka only with
                transaction.version 2 (KIP-890 part 2)

ackly writes v0 when the three v1 fields are at their defaults (every transaction of a client
before transaction version 2, unless its producer id was rotated), and v1 otherwise, so the
previous and next producer ids and the client's transaction version survive a failover. A
tagged field is written only when it differs from its default, as Kafka's generated writers
do. A null value is a
tombstone: the transactional id expired (transactional.id.expiration.ms). The partitions are
null exactly in state Empty (Kafka's valueToBytes writes them so).

Status bytes are Kafka's TransactionState ids: Empty 0, Ongoing 1, PrepareCommit 2,
PrepareAbort 3, CompleteCommit 4, CompleteAbort 5, Dead 6, PrepareEpochFence 7.

Invariant: `decode_*` of what `encode_*` wrote returns an equal value; malformed bytes raise
RecordFormatError, never another exception type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ackly.coordinator.records import RecordFormatError
from ackly.types import NO_PRODUCER_ID, TopicPartition

TRANSACTION_LOG_KEY = 0
TRANSACTION_LOG_VALUE_VERSION = 0
_FLEXIBLE_VALUE_VERSION = 1

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

__all__ = ["RecordFormatError", "TransactionLogValue", "decode_key", "decode_value",
           "encode_key", "encode_value"]


@dataclass(frozen=True)
class TransactionLogValue:
    """One transactional id's metadata as the log holds it (Kafka's TxnTransitMetadata)."""

    producer_id: int
    producer_epoch: int
    timeout_ms: int
    status: int  # a TransactionState id
    partitions: tuple[TopicPartition, ...]  # sorted; empty (null on disk) in state Empty
    last_update_ms: int
    start_ms: int  # -1: no transaction started
    # v1 only (tagged fields); v0 has none of them.
    previous_producer_id: int = NO_PRODUCER_ID
    next_producer_id: int = NO_PRODUCER_ID
    client_transaction_version: int = 0


def encode_key(transactional_id: str) -> bytes:
    data = transactional_id.encode("utf-8")
    return _I16.pack(TRANSACTION_LOG_KEY) + _I16.pack(len(data)) + data


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tagged(value: TransactionLogValue) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    if value.previous_producer_id != NO_PRODUCER_ID:
        fields[0] = _I64.pack(value.previous_producer_id)
    if value.next_producer_id != NO_PRODUCER_ID:
        fields[1] = _I64.pack(value.next_producer_id)
    if value.client_transaction_version != 0:
        fields[2] = _I16.pack(value.client_transaction_version)
    return fields


def encode_value(value: TransactionLogValue, empty: bool) -> bytes:
    """Value v0, or v1 when a v1 field is set (module docstring). `empty`: the state is Empty,
    whose partitions Kafka writes as null."""
    tagged = _tagged(value)
    flexible = bool(tagged)
    out = bytearray(_I16.pack(_FLEXIBLE_VALUE_VERSION if flexible else TRANSACTION_LOG_VALUE_VERSION))
    out += _I64.pack(value.producer_id)
    out += _I16.pack(value.producer_epoch)
    out += _I32.pack(value.timeout_ms)
    out += _I8.pack(value.status)
    if empty:
        assert not value.partitions, "an Empty transaction has no partitions"
        out += _uvarint(0) if flexible else _I32.pack(-1)
    else:
        by_topic = _by_topic(value.partitions)
        out += _uvarint(len(by_topic) + 1) if flexible else _I32.pack(len(by_topic))
        for topic, ids in by_topic:
            name = topic.encode("utf-8")
            if flexible:
                out += _uvarint(len(name) + 1) + name + _uvarint(len(ids) + 1)
            else:
                out += _I16.pack(len(name)) + name + _I32.pack(len(ids))
            for i in ids:
                out += _I32.pack(i)
            if flexible:
                out += _uvarint(0)  # no tagged fields in a partition entry
    out += _I64.pack(value.last_update_ms)
    out += _I64.pack(value.start_ms)
    if flexible:
        out += _uvarint(len(tagged))
        for tag in sorted(tagged):
            out += _uvarint(tag) + _uvarint(len(tagged[tag])) + tagged[tag]
    return bytes(out)


def _by_topic(partitions: tuple[TopicPartition, ...]) -> list[tuple[str, list[int]]]:
    topics: dict[str, list[int]] = {}
    for tp in sorted(partitions):
        topics.setdefault(tp.topic, []).append(tp.partition)
    return list(topics.items())


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, s: struct.Struct) -> int:
        if self.pos + s.size > len(self.data):
            raise RecordFormatError("transaction log record is truncated")
        (v,) = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return int(v)

    def i8(self) -> int:
        return self._take(_I8)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def i64(self) -> int:
        return self._take(_I64)

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            if self.pos >= len(self.data) or shift > 28:
                raise RecordFormatError("bad unsigned varint in transaction log record")
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RecordFormatError("transaction log record is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self, n: int) -> str:
        try:
            return self.raw(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordFormatError(f"bad string in transaction log record: {exc}") from None

    def string(self) -> str:
        n = self.i16()
        if n < 0:
            raise RecordFormatError("null string in transaction log record")
        return self.text(n)

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        if n < 0:
            raise RecordFormatError("null string in transaction log record")
        return self.text(n)

    def tagged(self) -> dict[int, bytes]:
        fields: dict[int, bytes] = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            fields[tag] = self.raw(self.uvarint())
        return fields

    def done(self) -> None:
        if self.pos != len(self.data):
            raise RecordFormatError(f"{len(self.data) - self.pos} bytes after the record")


def decode_key(key: bytes) -> str:
    """The transactional id of a `__transaction_state` key."""
    r = _Reader(key)
    record_type = r.i16()
    if record_type != TRANSACTION_LOG_KEY:
        raise RecordFormatError(f"unknown transaction log key type {record_type}")
    transactional_id = r.string()
    r.done()
    return transactional_id


def decode_value(value: bytes) -> TransactionLogValue:
    r = _Reader(value)
    version = r.i16()
    if version not in (TRANSACTION_LOG_VALUE_VERSION, _FLEXIBLE_VALUE_VERSION):
        raise RecordFormatError(f"unknown transaction log value version {version}")
    flexible = version == _FLEXIBLE_VALUE_VERSION
    producer_id = r.i64()
    producer_epoch = r.i16()
    timeout_ms = r.i32()
    status = r.i8()
    count = r.uvarint() - 1 if flexible else r.i32()
    partitions: list[TopicPartition] = []
    for _ in range(max(count, 0)):
        topic = r.compact_string() if flexible else r.string()
        ids = r.uvarint() - 1 if flexible else r.i32()
        if ids < 0:
            raise RecordFormatError("null partition list in transaction log record")
        partitions.extend(TopicPartition(topic, r.i32()) for _ in range(ids))
        if flexible:
            r.tagged()
    last_update_ms = r.i64()
    start_ms = r.i64()
    previous = nxt = NO_PRODUCER_ID
    client_version = 0
    if flexible:
        try:
            for tag, raw in r.tagged().items():
                if tag == 0:
                    (previous,) = _I64.unpack(raw)
                elif tag == 1:
                    (nxt,) = _I64.unpack(raw)
                elif tag == 2:
                    (client_version,) = _I16.unpack(raw)
        except struct.error as exc:
            raise RecordFormatError(f"bad tagged field in transaction log record: {exc}") from None
    r.done()
    return TransactionLogValue(
        producer_id=producer_id, producer_epoch=producer_epoch, timeout_ms=timeout_ms,
        status=status, partitions=tuple(sorted(set(partitions))), last_update_ms=last_update_ms,
        start_ms=start_ms, previous_producer_id=previous, next_producer_id=nxt,
        client_transaction_version=client_version,
    )
