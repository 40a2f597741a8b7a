"""record_codec: round trips, kafka-python's builder and reader as a second implementation,
control batches, and corrupt batches."""

from __future__ import annotations

import contextlib
import struct

import cramjam
import kafka.codec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol import records
from ackly.protocol.compression import CODECS
from ackly.protocol.record_codec import (
    ControlRecord,
    ControlType,
    DecodedRecord,
    Record,
    decode_batch,
    decode_batches,
    decode_control_batch,
    decode_control_record,
    encode_batch,
    encode_control_batch,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
TIMESTAMPS = st.integers(0, 2**45)
nullable_bytes = st.none() | st.binary(max_size=64)
header_keys = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
record_strategy = st.builds(
    Record,
    key=nullable_bytes,
    value=nullable_bytes,
    headers=st.lists(st.tuples(header_keys, nullable_bytes), max_size=3).map(tuple),
    timestamp_ms=st.none() | TIMESTAMPS,
)


class _PythonSnappy:
    """python-snappy's raw codec over cramjam, so kafka.codec's snappy code can run."""

    @staticmethod
    def compress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.compress_raw(data))

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.decompress_raw(data))


@pytest.fixture(autouse=True)
def kafka_python_snappy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.codec, "snappy", _PythonSnappy)


def _expected(recs: list[Record], base_offset: int, now_ms: int, log_append_time: bool):
    return [
        DecodedRecord(
            offset=base_offset + i,
            timestamp_ms=now_ms if log_append_time or r.timestamp_ms is None else r.timestamp_ms,
            key=r.key,
            value=r.value,
            headers=r.headers,
        )
        for i, r in enumerate(recs)
    ]


@given(
    recs=st.lists(record_strategy, min_size=1, max_size=8),
    codec=st.sampled_from(CODECS),
    base_offset=st.integers(0, 2**62),
    producer_id=st.integers(-1, 2**62),
    producer_epoch=st.integers(-1, 2**15 - 1),
    base_sequence=st.integers(-1, 2**31 - 1),
    transactional=st.booleans(),
    leader_epoch=st.integers(-1, 2**31 - 1),
    now_ms=TIMESTAMPS,
    log_append_time=st.booleans(),
)
def test_round_trip(
    recs: list[Record],
    codec: int,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool,
    leader_epoch: int,
    now_ms: int,
    log_append_time: bool,
) -> None:
    batch = encode_batch(
        recs,
        base_offset=base_offset,
        compression=codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
        partition_leader_epoch=leader_epoch,
        now_ms=now_ms,
        log_append_time=log_append_time,
    )
    [checked] = records.validate_batches(batch, len(batch))
    header, decoded = decode_batch(batch)
    assert header == checked
    assert header.size == len(batch)
    assert header.compression == codec
    assert header.is_transactional == transactional
    assert not header.is_control
    assert header.records_count == len(recs)
    assert header.last_offset == base_offset + len(recs) - 1
    assert (header.producer_id, header.producer_epoch) == (producer_id, producer_epoch)
    assert header.base_sequence == base_sequence
    assert header.partition_leader_epoch == leader_epoch
    assert decoded == _expected(recs, base_offset, now_ms, log_append_time)
    assert header.max_timestamp == max(r.timestamp_ms for r in decoded)

    # kafka-python's reader is an independent implementation of the same format.
    theirs = DefaultRecordBatch(bytearray(batch))
    assert theirs.validate_crc()
    assert theirs.compression_type == codec
    assert [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in theirs] == [
        (r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in decoded
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_reads_kafka_python_builder(codec: int) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=True,
        producer_id=1234,
        producer_epoch=5,
        base_sequence=77,
        batch_size=1 << 20,
    )
    sent = []
    for i in range(200):
        key = None if i % 7 == 0 else b"key-%d" % i
        value = None if i % 11 == 0 else b"value %d " % i * 10
        headers = [("trace", b"%d" % i), ("empty", None)] if i % 3 == 0 else []
        builder.append(i, 1_700_000_000_000 + i * 3, key, value, headers)
        sent.append((i, 1_700_000_000_000 + i * 3, key, value, tuple(headers)))
    batch = bytes(builder.build())
    records.validate_batches(batch, len(batch))
    header, decoded = decode_batch(batch)
    assert header.compression == codec  # kafka-python sends uncompressed if it does not pay
    assert header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (1234, 5, 77)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in decoded] == sent


def test_decode_batches() -> None:
    first = encode_batch([Record(b"a", b"1")], base_offset=0)
    second = encode_batch([Record(b"b", b"2"), Record(None, b"3")], base_offset=1, compression=1)
    got = decode_batches(first + second)
    assert [r.offset for _h, recs in got for r in recs] == [0, 1, 2]
    with pytest.raises(KafkaError):
        decode_batches(first + second[:-1])


@pytest.mark.parametrize("kind", list(ControlType))
def test_control_batch(kind: ControlType) -> None:
    batch = encode_control_batch(
        kind, producer_id=42, producer_epoch=3, base_offset=100, coordinator_epoch=9, now_ms=555
    )
    records.validate_batches(batch, len(batch))
    header, marker = decode_control_batch(batch)
    assert marker == ControlRecord(kind, 9)
    assert header.is_control and header.is_transactional
    assert (header.base_offset, header.producer_id, header.producer_epoch) == (100, 42, 3)
    assert header.base_timestamp == header.max_timestamp == 555
    [record] = decode_batch(batch)[1]
    assert record.key == struct.pack(">hh", 0, kind)
    assert record.value == struct.pack(">hi", 0, 9)
    # kafka-python reads it as Kafka's ControlRecord.
    theirs = DefaultRecordBatch(bytearray(batch))
    assert theirs.is_control_batch and theirs.is_transactional
    [control] = list(theirs)
    assert control.type == int(kind)


def test_decode_control_record_refuses_bad_markers() -> None:
    good_value = struct.pack(">hi", 0, 1)
    for key, value in [
        (None, good_value),
        (b"\x00\x00\x00", good_value),
        (struct.pack(">hh", -1, 0), good_value),
        (struct.pack(">hh", 0, 2), good_value),  # LEADER_CHANGE: not in data partitions
        (struct.pack(">hh", 0, 1), None),
        (struct.pack(">hh", 0, 1), b"\x00\x00\x00"),
    ]:
        with pytest.raises(KafkaError) as err:
            decode_control_record(Record(key, value))
        assert err.value.code == ErrorCode.corrupt_message
    # Later versions add fields after the ones Kafka 2.x wrote; they are read the same way.
    newer = Record(struct.pack(">hhx", 1, 0), struct.pack(">hix", 1, 4))
    assert decode_control_record(newer) == ControlRecord(ControlType.ABORT, 4)


def test_crc_mismatch_is_corrupt() -> None:
    batch = bytearray(encode_batch([Record(b"k", b"v")]))
    batch[-1] ^= 1
    with pytest.raises(KafkaError) as err:
        decode_batch(bytes(batch))
    assert err.value.code == ErrorCode.corrupt_message


def test_base_offset_and_leader_epoch_lie_outside_the_crc() -> None:
    batch = bytearray(encode_batch([Record(b"k", b"v")] * 3))
    records.patch_base_offset(batch, 0, 1000)
    records.patch_leader_epoch(batch, 0, 7)
    header, decoded = decode_batch(bytes(batch))
    assert header.partition_leader_epoch == 7
    assert [r.offset for r in decoded] == [1000, 1001, 1002]


def test_patched_log_append_time_is_read_as_such() -> None:
    batch = bytearray(encode_batch([Record(b"k", b"v", timestamp_ms=5)] * 2))
    records.patch_log_append_time(batch, 0, len(batch), 999)
    _header, decoded = decode_batch(bytes(batch))
    assert [r.timestamp_ms for r in decoded] == [999, 999]


def _resign(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, records.crc_of(batch, 0, len(batch)))
    return bytes(batch)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:60],  # shorter than a header
        lambda b: b[:-1],  # shorter than batchLength says
        lambda b: b[:16] + b"\x01" + b[17:],  # magic 1
    ],
)
def test_framing_errors_are_corrupt(mangle) -> None:  # type: ignore[no-untyped-def]
    batch = encode_batch([Record(b"key", b"value")])
    with pytest.raises(KafkaError) as err:
        decode_batch(mangle(batch))
    assert err.value.code == ErrorCode.corrupt_message


def test_records_count_larger_than_the_records_is_corrupt() -> None:
    batch = bytearray(encode_batch([Record(b"key", b"value")]))
    struct.pack_into(">i", batch, 57, 2)
    with pytest.raises(KafkaError):
        decode_batch(_resign(batch))
    struct.pack_into(">i", batch, 57, 2**31 - 1)
    with pytest.raises(KafkaError):
        decode_batch(_resign(batch))


def test_bytes_after_the_records_are_corrupt() -> None:
    batch = bytearray(encode_batch([Record(b"key", b"value")]))
    batch += b"\x00"
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    with pytest.raises(KafkaError):
        decode_batch(_resign(batch))


@given(
    recs=st.lists(record_strategy, min_size=1, max_size=4),
    codec=st.sampled_from(CODECS),
    flips=st.lists(st.integers(0, 2**20), min_size=1, max_size=4),
    cut=st.none() | st.integers(0, 400),
)
def test_mangled_records_raise_only_kafka_error(
    recs: list[Record], codec: int, flips: list[int], cut: int | None
) -> None:
    # Flip bits in the records section and re-sign the CRC, so that the record parser (or
    # the decompressor), not the CRC check, meets the damage.
    batch = bytearray(encode_batch(recs, compression=codec))
    section = len(batch) - records.HEADER_SIZE
    for flip in flips:
        bit = flip % (section * 8)
        batch[records.HEADER_SIZE + bit // 8] ^= 1 << (bit % 8)
    if cut is not None:
        del batch[records.HEADER_SIZE + min(cut, section) :]
        struct.pack_into(">i", batch, 8, len(batch) - 12)
    try:
        decode_batch(_resign(batch))
    except KafkaError as exc:
        assert exc.code in (ErrorCode.corrupt_message, ErrorCode.unsupported_compression_type)


@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_kafka_error(data: bytes) -> None:
    with contextlib.suppress(KafkaError):
        decode_batch(data, verify_crc=False)
