"""compression: round trips, the clients' own encoders, garbage, and the output bound."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import cramjam
import kafka.codec
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol import compression
from ackly.protocol.compression import CODECS, GZIP, LZ4, NONE, SNAPPY, ZSTD, compress, decompress

COMPRESSED = (GZIP, SNAPPY, LZ4, ZSTD)
# Compressible, so that every codec really compresses, and over one LZ4/xerial block.
TEXT = b"".join(b"record %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(3000))


class _PythonSnappy:
    """python-snappy's module API (raw snappy) over cramjam, for kafka.codec.

    kafka-python frames snappy in its own code (xerial blocks around raw snappy) but takes the
    raw codec from python-snappy, which is not installed; cramjam is the same raw format.
    """

    @staticmethod
    def compress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.compress_raw(data))

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return bytes(cramjam.snappy.decompress_raw(data))


@pytest.fixture
def kafka_python_snappy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(kafka.codec, "snappy", _PythonSnappy)
    yield


@pytest.mark.parametrize("codec", CODECS)
@given(data=st.binary(max_size=4096))
def test_round_trip(codec: int, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_large(codec: int) -> None:
    packed = compress(codec, TEXT)
    if codec != NONE:
        assert len(packed) < len(TEXT) // 4
    assert decompress(codec, packed) == TEXT
    assert decompress(codec, memoryview(bytearray(packed))) == TEXT


@given(data=st.binary(max_size=2048) | st.just(TEXT))
def test_reads_kafka_python_encoders(data: bytes) -> None:
    snappy = kafka.codec.snappy
    kafka.codec.snappy = _PythonSnappy
    try:
        assert decompress(GZIP, kafka.codec.gzip_encode(data)) == data
        assert decompress(SNAPPY, kafka.codec.snappy_encode(data)) == data  # xerial
        assert decompress(SNAPPY, kafka.codec.snappy_encode(data, xerial_compatible=False)) == data
        assert decompress(LZ4, kafka.codec.lz4_encode(data)) == data
        assert decompress(ZSTD, kafka.codec.zstd_encode(data)) == data
    finally:
        kafka.codec.snappy = snappy


def test_kafka_python_decoders_read_ours(kafka_python_snappy: None) -> None:
    assert kafka.codec.gzip_decode(compress(GZIP, TEXT)) == TEXT
    assert kafka.codec.snappy_decode(compress(SNAPPY, TEXT)) == TEXT
    assert kafka.codec.lz4_decode(compress(LZ4, TEXT)) == TEXT
    assert kafka.codec.zstd_decode(compress(ZSTD, TEXT)) == TEXT


def test_xerial_snappy_is_many_blocks(kafka_python_snappy: None) -> None:
    framed = kafka.codec.snappy_encode(TEXT, xerial_blocksize=1000)
    assert framed.startswith(b"\x82SNAPPY\x00")
    assert decompress(SNAPPY, framed) == TEXT


def test_zstd_without_content_size() -> None:
    # librdkafka streams its zstd frames, so they carry no content size.
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(TEXT)
    assert zstandard.frame_content_size(frame) == -1
    assert decompress(ZSTD, frame) == TEXT
    assert decompress(ZSTD, frame + frame) == TEXT + TEXT
    checksummed = zstandard.ZstdCompressor(write_checksum=True).compress(TEXT)
    assert decompress(ZSTD, checksummed) == TEXT


def test_multi_member_gzip() -> None:
    assert decompress(GZIP, compress(GZIP, b"ab") + compress(GZIP, b"cd")) == b"abcd"


def test_lz4_blocks_are_independent() -> None:
    # FLG byte bit 5 (block independence) is what Kafka's Java LZ4 reader needs.
    assert compress(LZ4, TEXT)[4] & 0x20


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize(
    "garbage", [b"", b"\xff", b"garbage garbage garbage", b"\x82SNAPPY\x00\x00\x00\x00\x01"]
)
def test_garbage_is_corrupt(codec: int, garbage: bytes) -> None:
    with pytest.raises(KafkaError) as err:
        decompress(codec, garbage)
    assert err.value.code == ErrorCode.corrupt_message


@pytest.mark.parametrize("codec", (GZIP, LZ4, ZSTD, SNAPPY))
def test_truncated_stream_is_corrupt(codec: int) -> None:
    packed = compress(codec, TEXT)
    for cut in (1, 5, len(packed) // 2, len(packed) - 1):
        with pytest.raises(KafkaError) as err:
            decompress(codec, packed[:cut])
        assert err.value.code == ErrorCode.corrupt_message


@pytest.mark.parametrize("codec", (GZIP, ZSTD))
def test_trailing_garbage_is_corrupt(codec: int) -> None:
    with pytest.raises(KafkaError):
        decompress(codec, compress(codec, TEXT) + b"\x01\x02\x03\x04\x05")


@pytest.mark.parametrize("codec", COMPRESSED)
@given(data=st.binary(max_size=300), cut=st.integers(0, 400), flips=st.lists(st.integers(0, 2**16)))
def test_mangled_input_raises_only_kafka_error(
    codec: int, data: bytes, cut: int, flips: list[int]
) -> None:
    mangled = bytearray(compress(codec, data)[:cut])
    for flip in flips:
        if mangled:
            mangled[(flip >> 3) % len(mangled)] ^= 1 << (flip & 7)
    try:
        decompress(codec, bytes(mangled))
    except KafkaError as exc:
        assert exc.code == ErrorCode.corrupt_message


@pytest.mark.parametrize("codec", CODECS)
def test_bound_is_exact(codec: int) -> None:
    packed = compress(codec, TEXT)
    assert decompress(codec, packed, max_bytes=len(TEXT)) == TEXT
    with pytest.raises(KafkaError) as err:
        decompress(codec, packed, max_bytes=len(TEXT) - 1)
    assert err.value.code == ErrorCode.corrupt_message


@pytest.mark.parametrize("codec", COMPRESSED)
def test_bomb_is_refused_without_inflating(codec: int) -> None:
    bomb = compress(codec, bytes(64 << 20))  # 64 MiB of zeros, a few KiB compressed
    max_bytes = 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(KafkaError):
            decompress(codec, bomb, max_bytes=max_bytes)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * max_bytes + len(bomb)


@pytest.mark.parametrize("codec", (5, 7, -1, 99))
def test_unknown_codec(codec: int) -> None:
    for call in (lambda: compress(codec, b"x"), lambda: decompress(codec, b"x")):
        with pytest.raises(KafkaError) as err:
            call()
        assert err.value.code == ErrorCode.unsupported_compression_type


def test_default_bound_is_64_mib() -> None:
    assert compression.DEFAULT_MAX_BYTES == 64 * 1024 * 1024
