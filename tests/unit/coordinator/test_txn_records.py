"""`__transaction_state` records against Kafka's byte layout (TransactionLogKey.json,
TransactionLogValue.json): the bytes are written out field by field here, independently of
the encoder."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.coordinator.txn_records import (
    RecordFormatError,
    TransactionLogValue,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from ackly.types import TopicPartition


def test_key_is_type_0_then_the_transactional_id() -> None:
    assert encode_key("tx-1") == b"\x00\x00" + b"\x00\x04" + b"tx-1"
    assert decode_key(b"\x00\x00\x00\x04tx-1") == "tx-1"
    assert decode_key(encode_key("é€")) == "é€"


def test_value_v0_layout_of_an_ongoing_transaction() -> None:
    value = TransactionLogValue(
        producer_id=7, producer_epoch=3, timeout_ms=60_000, status=1,
        partitions=(TopicPartition("a", 0), TopicPartition("a", 2), TopicPartition("b", 1)),
        last_update_ms=1_700_000_000_123, start_ms=1_700_000_000_000,
    )
    expected = (
        struct.pack(">h", 0)            # value version 0
        + struct.pack(">q", 7)          # ProducerId
        + struct.pack(">h", 3)          # ProducerEpoch
        + struct.pack(">i", 60_000)     # TransactionTimeoutMs
        + struct.pack(">b", 1)          # TransactionStatus: Ongoing
        + struct.pack(">i", 2)          # TransactionPartitions: 2 topics
        + struct.pack(">h", 1) + b"a" + struct.pack(">iii", 2, 0, 2)
        + struct.pack(">h", 1) + b"b" + struct.pack(">ii", 1, 1)
        + struct.pack(">q", 1_700_000_000_123)  # TransactionLastUpdateTimestampMs
        + struct.pack(">q", 1_700_000_000_000)  # TransactionStartTimestampMs
    )
    assert encode_value(value, empty=False) == expected
    assert decode_value(expected) == value


def test_empty_state_writes_null_partitions() -> None:
    value = TransactionLogValue(5, 0, 1000, 0, (), 42, -1)
    data = encode_value(value, empty=True)
    assert data[2 + 8 + 2 + 4 + 1:][:4] == b"\xff\xff\xff\xff"
    assert decode_value(data) == value


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_value_v1_flexible_with_tagged_fields_is_read() -> None:
    data = (
        struct.pack(">hqhib", 1, 9, 4, 30_000, 2)            # version 1, PrepareCommit
        + _uvarint(1 + 1)                                     # one topic (compact array)
        + _uvarint(len(b"topic") + 1) + b"topic"
        + _uvarint(2 + 1) + struct.pack(">ii", 0, 3)
        + b"\x00"                                             # the topic's tagged fields
        + struct.pack(">qq", 200, 100)
        + _uvarint(3)                                         # three tagged fields
        + _uvarint(0) + _uvarint(8) + struct.pack(">q", 8)    # PreviousProducerId
        + _uvarint(1) + _uvarint(8) + struct.pack(">q", 10)   # NextProducerId
        + _uvarint(2) + _uvarint(2) + struct.pack(">h", 2)    # ClientTransactionVersion
    )
    value = decode_value(data)
    assert value == TransactionLogValue(
        producer_id=9, producer_epoch=4, timeout_ms=30_000, status=2,
        partitions=(TopicPartition("topic", 0), TopicPartition("topic", 3)),
        last_update_ms=200, start_ms=100, previous_producer_id=8, next_producer_id=10,
        client_transaction_version=2,
    )


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x00\x02" + b"\x00" * 40, b"\x00\x00" + b"\x00" * 10,
    encode_value(TransactionLogValue(1, 0, 1, 1, (TopicPartition("t", 0),), 0, 0), empty=False) + b"x",
])
def test_malformed_values_raise_record_format_error(data: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_value(data)


@pytest.mark.parametrize("key", [b"", b"\x00\x01\x00\x01a", b"\x00\x00\x00\x05ab", b"\x00\x00\x00\x01\xff"])
def test_malformed_keys_raise_record_format_error(key: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_key(key)


_partitions = st.lists(
    st.builds(TopicPartition, st.text(min_size=1, max_size=8), st.integers(0, 1000)), max_size=6,
).map(lambda ps: tuple(sorted(set(ps))))


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(1, 2**31 - 1),
       st.integers(1, 7), _partitions, st.integers(-1, 2**62), st.integers(-1, 2**62))
def test_roundtrip(pid: int, epoch: int, timeout: int, status: int, parts: tuple[TopicPartition, ...],
                   last: int, start: int) -> None:
    value = TransactionLogValue(pid, epoch, timeout, status, parts, last, start)
    assert decode_value(encode_value(value, empty=False)) == value


@given(st.binary(max_size=80))
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(RecordFormatError):
        decode_value(data)
    with contextlib.suppress(RecordFormatError):
        decode_key(data)
