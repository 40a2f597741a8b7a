"""Broker-side recompression (protocol/recompression.py): every codec into every other, the
records intact, the producer fields kept, a CRC that validates, zero copy when nothing changes."""

from __future__ import annotations

import pytest

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol import recompression
from ackly.protocol.batch_validation import validate_client_batches
from ackly.protocol.compression import CODECS, LZ4, NONE, ZSTD
from ackly.protocol.recompression import recompress_batches
from ackly.protocol.record_codec import Record, decode_batches, encode_batch
from ackly.protocol.records import HEADER_SIZE, validate_batches

MAX = 64 << 20


def batches(codec: int) -> bytes:
    first = encode_batch([Record(key=b"k%d" % i, value=b"value %d " % i * 20, timestamp_ms=1000 + i)
                          for i in range(10)], compression=codec, producer_id=7, producer_epoch=2,
                         base_sequence=40, transactional=True, now_ms=1000)
    second = encode_batch([Record(key=None, value=b"x" * 500, headers=(("h", b"1"),))],
                          compression=codec, now_ms=2000)
    return first + second


def records_of(data: bytes | bytearray) -> list[tuple[object, ...]]:
    return [(r.offset, r.timestamp_ms, r.key, r.value, r.headers)
            for _, records in decode_batches(data) for r in records]


@pytest.mark.parametrize("source", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_every_codec_into_every_other_keeps_records_and_fields(source: int, target: int) -> None:
    data = batches(source)
    headers = validate_batches(data, 1 << 20)
    result = recompress_batches(data, headers, target, None, MAX)
    if source == target:
        assert result is None  # zero copy: the caller keeps the request's bytes
        return
    assert result is not None
    out, new_headers = result
    assert validate_batches(out, 1 << 20) == new_headers  # framing and CRC-32C are right
    for old, new in zip(headers, new_headers, strict=True):
        assert new.compression == target
        assert (new.producer_id, new.producer_epoch, new.base_sequence, new.is_transactional,
                new.records_count, new.last_offset_delta, new.base_timestamp,
                new.max_timestamp) == (old.producer_id, old.producer_epoch, old.base_sequence,
                                       old.is_transactional, old.records_count,
                                       old.last_offset_delta, old.base_timestamp,
                                       old.max_timestamp)
    assert records_of(out) == records_of(data)


def test_only_batches_in_another_codec_are_rebuilt() -> None:
    zstd_one = encode_batch([Record(key=None, value=b"a" * 300)], compression=ZSTD, now_ms=1)
    lz4_one = encode_batch([Record(key=None, value=b"b" * 300)], compression=LZ4, now_ms=1)
    data = zstd_one + lz4_one
    result = recompress_batches(data, validate_batches(data, 1 << 20), ZSTD, 19, MAX)
    assert result is not None
    out, headers = result
    assert bytes(out[:len(zstd_one)]) == zstd_one  # copied as it came
    assert [h.compression for h in headers] == [ZSTD, ZSTD]


def test_levels_change_the_bytes_not_the_records() -> None:
    data = batches(NONE)
    headers = validate_batches(data, 1 << 20)
    fast = recompress_batches(data, headers, ZSTD, 1, MAX)
    best = recompress_batches(data, headers, ZSTD, 19, MAX)
    assert fast is not None and best is not None
    assert records_of(fast[0]) == records_of(best[0]) == records_of(data)


def test_a_section_that_does_not_decode_is_corrupt() -> None:
    data = bytearray(encode_batch([Record(key=None, value=b"z" * 400)], compression=LZ4, now_ms=1))
    data[HEADER_SIZE + 8] ^= 0xFF  # inside the lz4 frame; the CRC is not checked here
    headers = validate_batches(bytes(encode_batch([Record(key=None, value=b"z" * 400)],
                                                  compression=LZ4, now_ms=1)), 1 << 20)
    with pytest.raises(KafkaError) as caught:
        recompress_batches(data, headers, ZSTD, None, MAX)
    assert caught.value.code == ErrorCode.corrupt_message


@pytest.mark.parametrize("source", [c for c in CODECS if c != NONE])
def test_the_sections_validation_decompressed_are_reused_not_decompressed_again(
    source: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = batches(source)
    headers = validate_batches(data, 1 << 20)
    sections: dict[int, bytes] = {}
    validate_client_batches(data, headers, 1000, None, MAX, sections)
    assert sorted(sections) == [0, 1]
    expected = recompress_batches(data, headers, ZSTD if source != ZSTD else LZ4, None, MAX)

    def no_second_decompression(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decompressed a second time")

    monkeypatch.setattr(recompression, "decompress", no_second_decompression)
    reused = recompress_batches(data, headers, ZSTD if source != ZSTD else LZ4, None, MAX, sections)
    assert reused == expected
