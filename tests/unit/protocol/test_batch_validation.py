"""protocol/batch_validation.py: what the leader refuses of a client's record batches, as Kafka's
LogValidator does, and that every such batch is refused before anything reads further."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol import records
from ackly.protocol.batch_validation import TimestampRule, validate_client_batches
from ackly.protocol.compression import compress
from ackly.protocol.record_codec import Record, encode_batch

NOW_MS = 1_800_000_000_000
HOUR_MS = 3_600_000
KAFKA_DEFAULT = TimestampRule(before_max_ms=2**63 - 1, after_max_ms=HOUR_MS)
CODECS = (1, 2, 3, 4)  # gzip, snappy, lz4, zstd


def check(batch: bytes, rule: TimestampRule | None = KAFKA_DEFAULT) -> None:
    headers = records.validate_batches(batch, len(batch))  # framing and CRC hold
    validate_client_batches(batch, headers, NOW_MS, rule, 1 << 24)


def refused(batch: bytes, rule: TimestampRule | None = KAFKA_DEFAULT) -> ErrorCode:
    with pytest.raises(KafkaError) as info:
        check(batch, rule)
    return info.value.code


def resign(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, records.crc_of(batch, 0, len(batch)))
    return bytes(batch)


def with_field(batch: bytes, fmt: str, at: int, value: int) -> bytes:
    b = bytearray(batch)
    struct.pack_into(fmt, b, at, value)
    return resign(b)


def values(n: int, ts: int = NOW_MS) -> list[Record]:
    return [Record(b"k%d" % i, b"v%d" % i, timestamp_ms=ts + i) for i in range(n)]


@pytest.mark.parametrize("codec", (0, *CODECS))
def test_well_formed_batches_pass(codec: int) -> None:
    check(encode_batch(values(5), compression=codec))
    check(encode_batch(values(3), compression=codec, producer_id=7, producer_epoch=0, base_sequence=0,
                       transactional=True))
    check(encode_batch(values(1), log_append_time=True, now_ms=NOW_MS), None)


def test_a_base_offset_other_than_zero_is_invalid() -> None:
    assert refused(encode_batch(values(2), base_offset=5)) == ErrorCode.invalid_record


def test_a_count_that_disagrees_with_the_last_offset_delta_is_invalid() -> None:
    batch = encode_batch(values(3))
    assert refused(with_field(batch, ">i", 23, 1)) == ErrorCode.invalid_record  # lastOffsetDelta
    assert refused(with_field(batch, ">i", 57, 4)) == ErrorCode.invalid_record  # recordsCount


def test_producer_fields_must_agree() -> None:
    no_sequence = encode_batch(values(1), producer_id=3, producer_epoch=0, base_sequence=-1)
    assert refused(no_sequence) == ErrorCode.invalid_record
    no_epoch = encode_batch(values(1), producer_id=3, producer_epoch=-1, base_sequence=0)
    assert refused(no_epoch) == ErrorCode.invalid_record
    transactional_without_id = encode_batch(values(1), transactional=True)
    assert refused(transactional_without_id) == ErrorCode.invalid_record


@pytest.mark.parametrize("codec", (0, *CODECS))
def test_create_time_outside_the_kip_937_window_is_refused(codec: int) -> None:
    future = encode_batch(values(2, ts=NOW_MS + 2 * HOUR_MS), compression=codec)
    assert refused(future) == ErrorCode.invalid_timestamp
    check(encode_batch(values(2, ts=NOW_MS + HOUR_MS - 10), compression=codec))
    old = encode_batch(values(2, ts=NOW_MS - 10 * HOUR_MS), compression=codec)
    check(old)  # Kafka's default: any age
    assert refused(old, TimestampRule(before_max_ms=HOUR_MS, after_max_ms=HOUR_MS)) == ErrorCode.invalid_timestamp
    check(future, None)  # LogAppendTime: the leader's clock replaces the client's


def test_a_compressed_record_out_of_place_is_caught() -> None:
    """A timestamp too far ahead on the third record only: only the record walk can see it."""
    recs = [*values(2), Record(b"k", b"v", timestamp_ms=NOW_MS + 3 * HOUR_MS)]
    batch = bytearray(encode_batch(recs, compression=2))
    # The header's maxTimestamp is patched back to the first record's: only the records say it.
    struct.pack_into(">q", batch, 35, NOW_MS)
    assert refused(resign(batch)) == ErrorCode.invalid_timestamp


def test_compressed_records_that_do_not_fill_the_section_are_corrupt() -> None:
    plain = encode_batch(values(3))
    section = plain[records.HEADER_SIZE:]
    for cut in (section[:-1], section + b"\x00", section[:len(section) // 2]):
        compressed = compress(2, cut)
        head = bytearray(plain[:records.HEADER_SIZE])
        struct.pack_into(">h", head, 21, 2)  # lz4
        struct.pack_into(">i", head, 8, records.HEADER_SIZE + len(compressed) - records.LOG_OVERHEAD)
        code = refused(resign(head + compressed))
        assert code in (ErrorCode.corrupt_message, ErrorCode.invalid_record)


def test_records_whose_offset_deltas_skip_are_invalid() -> None:
    recs = values(3)
    plain = bytearray(encode_batch(recs))
    # Record 1's offsetDelta (zigzag 1 = 0x02) becomes 2 (0x04): lengths stay the same.
    second = records.HEADER_SIZE + 1 + plain[records.HEADER_SIZE] // 2
    # length, attributes, timestampDelta, then offsetDelta
    assert plain[second + 3] == 0x02
    plain[second + 3] = 0x04
    section = bytes(plain[records.HEADER_SIZE:])
    compressed = compress(4, section)
    head = bytearray(plain[:records.HEADER_SIZE])
    struct.pack_into(">h", head, 21, 4)
    struct.pack_into(">i", head, 8, records.HEADER_SIZE + len(compressed) - records.LOG_OVERHEAD)
    assert refused(resign(head + compressed)) == ErrorCode.invalid_record


@given(st.binary(min_size=0, max_size=200), st.sampled_from(CODECS), st.integers(1, 5))
def test_garbage_in_a_compressed_section_is_refused_cleanly(garbage: bytes, codec: int, count: int) -> None:
    """Whatever the section holds, the only outcomes are success or a KafkaError."""
    compressed = compress(codec, garbage)
    head = bytearray(encode_batch(values(count))[:records.HEADER_SIZE])
    struct.pack_into(">h", head, 21, codec)
    struct.pack_into(">i", head, 8, records.HEADER_SIZE + len(compressed) - records.LOG_OVERHEAD)
    try:
        check(resign(head + compressed))
    except KafkaError as exc:
        assert exc.code in (ErrorCode.corrupt_message, ErrorCode.invalid_record, ErrorCode.invalid_timestamp)
