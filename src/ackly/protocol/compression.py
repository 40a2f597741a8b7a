"""Kafka's record-batch codecs: compress and decompress the records section of a v2 batch.

Codec ids are Kafka's `CompressionType` ids (the low three bits of a batch's attributes):
0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.

Invariants:
- `decompress` never returns more than `max_bytes` bytes and never holds much more than that
  in memory while decoding, so a small batch that inflates to gigabytes (a zip bomb) is
  refused with CORRUPT_MESSAGE instead of exhausting the broker.
- Every malformed input (bad magic, bad checksum, truncated stream, trailing garbage) ends in
  KafkaError: CORRUPT_MESSAGE, or UNSUPPORTED_COMPRESSION_TYPE for a codec id Kafka lacks.
  No codec library's exception type escapes this module.
- What `compress` writes every client can read: gzip members, raw snappy, LZ4 frames with
  independent 64 KiB blocks, single zstd frames.

What each client sends (see docs/clients.md): librdkafka sends raw snappy and zstd frames without a
content size; kafka-python sends xerial-framed snappy; the Java client sends xerial-framed
snappy and LZ4 frames with independent blocks (Kafka's KafkaLZ4BlockOutputStream).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Final

import cramjam
import lz4.frame
import zstandard

from ackly.errors import ErrorCode, KafkaError

NONE: Final = 0
GZIP: Final = 1
SNAPPY: Final = 2
LZ4: Final = 3
ZSTD: Final = 4
CODECS: Final = (NONE, GZIP, SNAPPY, LZ4, ZSTD)
CODEC_NAMES: Final = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024

Buffer = bytes | bytearray | memoryview

# gzip only (wbits 16 + 15), as Kafka's GZIPInputStream: a zlib or raw deflate stream in a
# batch that says gzip is corrupt.
_GZIP_WBITS = 31
# Output is taken from the decompressors in slices of this size, so a bound is checked
# long before a bomb has inflated far past it.
_READ_SLICE = 1 << 20

# Xerial snappy framing (snappy-java's SnappyOutputStream, used by kafka-python and the Java
# client): an 8-byte magic, int32 version, int32 minimum compatible version, then blocks,
# each an int32 big-endian length followed by that many bytes of raw snappy.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16
_INT32 = struct.Struct(">i")

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
_ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
_ZSTD_LEVEL = 3
_LZ4_FAST = 0  # the library's fast mode, for batches this broker writes itself
_GZIP_LEVEL = 6  # zlib's default, the level Kafka's Java client uses too


def _corrupt(codec: str, why: str) -> KafkaError:
    return KafkaError(ErrorCode.corrupt_message, f"{codec}: {why}")


def _too_large(codec: str, max_bytes: int) -> KafkaError:
    return _corrupt(codec, f"decompressed size exceeds {max_bytes} bytes")


# --- compress ----------------------------------------------------------------------------


def _gzip_compress(data: Buffer, level: int | None) -> bytes:
    # Kafka's -1 is Deflater.DEFAULT_COMPRESSION, zlib's 6.
    chosen = _GZIP_LEVEL if level is None or level < 0 else level
    compressor = zlib.compressobj(chosen, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def _snappy_compress(data: Buffer, level: int | None) -> bytes:
    return bytes(cramjam.snappy.compress_raw(bytes(data)))  # snappy has no levels


def _lz4_compress(data: Buffer, level: int | None) -> bytes:
    # Independent blocks: Kafka's own LZ4 reader (KafkaLZ4BlockInputStream) decodes every
    # block without the previous one as dictionary, so linked blocks would break Java
    # consumers. Levels above 2 are LZ4 HC, as in Kafka (KIP-390); the library caps them at
    # its highest.
    return bytes(
        lz4.frame.compress(
            data,
            compression_level=_LZ4_FAST if level is None else level,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    )


def _zstd_compress(data: Buffer, level: int | None) -> bytes:
    chosen = _ZSTD_LEVEL if level is None else level
    compressor = _ZSTD_COMPRESSORS.get(chosen)
    if compressor is None:
        compressor = _ZSTD_COMPRESSORS[chosen] = zstandard.ZstdCompressor(level=chosen)
    return bytes(compressor.compress(data))


# One compressor per level, reused (building one costs more than compressing a small batch).
_ZSTD_COMPRESSORS: dict[int, zstandard.ZstdCompressor] = {}


def _copy(data: Buffer, level: int | None) -> bytes:
    return bytes(data)


_COMPRESSORS: Final[dict[int, Callable[[Buffer, int | None], bytes]]] = {
    NONE: _copy,
    GZIP: _gzip_compress,
    SNAPPY: _snappy_compress,
    LZ4: _lz4_compress,
    ZSTD: _zstd_compress,
}


def compress(codec: int, data: Buffer, level: int | None = None) -> bytes:
    """`data` compressed with Kafka codec `codec` (0 returns the bytes unchanged), at `level`
    (None: gzip 6 and zstd 3, Kafka's defaults, and lz4's fast mode; snappy has no levels).
    The topic's compression.*.level (Kafka's defaults: gzip -1, lz4 9, zstd 3) is passed by
    the recompressing produce path."""
    compressor = _COMPRESSORS.get(codec)
    if compressor is None:
        raise _unsupported(codec)
    return compressor(data, level)


# --- decompress --------------------------------------------------------------------------


def _gzip_decompress(data: Buffer, max_bytes: int) -> bytes:
    out: list[bytes] = []
    produced = 0
    pending: Buffer = data
    # A gzip stream may hold several members back to back (GZIPInputStream reads them all).
    while True:
        decompressor = zlib.decompressobj(_GZIP_WBITS)
        chunk_input = pending
        try:
            while not decompressor.eof:
                chunk = decompressor.decompress(chunk_input, _READ_SLICE)
                produced += len(chunk)
                if produced > max_bytes:
                    raise _too_large("gzip", max_bytes)
                out.append(chunk)
                chunk_input = decompressor.unconsumed_tail
                # All input consumed and the slice not filled: nothing is pending inside
                # zlib, so a stream without its end is truncated.
                if not chunk_input and len(chunk) < _READ_SLICE:
                    break
        except zlib.error as exc:
            raise _corrupt("gzip", str(exc)) from None
        if not decompressor.eof:
            raise _corrupt("gzip", "truncated stream")
        pending = decompressor.unused_data
        if not pending:
            return b"".join(out)


def _snappy_block(block: Buffer, budget: int) -> bytes:
    """One raw snappy block, refused before decoding if its declared length exceeds budget."""
    try:
        size = int(cramjam.snappy.decompress_raw_len(block))
    except Exception as exc:  # cramjam raises its own DecompressionError or ValueError
        raise _corrupt("snappy", str(exc)) from None
    if size > budget:
        raise _corrupt("snappy", f"decompressed size exceeds the {budget}-byte bound")
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except Exception as exc:
        raise _corrupt("snappy", str(exc)) from None


def _snappy_decompress(data: Buffer, max_bytes: int) -> bytes:
    view = memoryview(data)
    if len(view) < _XERIAL_HEADER_SIZE or view[:8] != _XERIAL_MAGIC:
        return _snappy_block(view, max_bytes)
    # Xerial framing. The version fields are not checked: snappy-java itself only refuses
    # a minimum-compatible version above its own, and every writer in the wild writes 1/1.
    out: list[bytes] = []
    produced = 0
    pos = _XERIAL_HEADER_SIZE
    end = len(view)
    while pos < end:
        if end - pos < 4:
            raise _corrupt("snappy", "truncated xerial block length")
        (size,) = _INT32.unpack_from(view, pos)
        pos += 4
        if size < 0 or pos + size > end:
            raise _corrupt("snappy", "xerial block length out of bounds")
        block = _snappy_block(view[pos : pos + size], max_bytes - produced)
        produced += len(block)
        out.append(block)
        pos += size
    return b"".join(out)


def _lz4_decompress(data: Buffer, max_bytes: int) -> bytes:
    out: list[bytes] = []
    produced = 0
    pending: Buffer = data
    try:
        while True:  # one LZ4 frame per turn; Kafka's writers emit exactly one
            decompressor = lz4.frame.LZ4FrameDecompressor()
            chunk_input: Buffer = pending
            while True:
                chunk = decompressor.decompress(chunk_input, max_length=_READ_SLICE)
                produced += len(chunk)
                if produced > max_bytes:
                    raise _too_large("lz4", max_bytes)
                out.append(chunk)
                chunk_input = b""
                if decompressor.eof or decompressor.needs_input:
                    break
            if not decompressor.eof:
                raise _corrupt("lz4", "truncated frame")
            pending = decompressor.unused_data
            if not pending:
                return b"".join(out)
    except KafkaError:
        raise
    except Exception as exc:  # lz4 raises RuntimeError for every malformed frame
        raise _corrupt("lz4", str(exc)) from None


def _zstd_frames_end(view: memoryview) -> None:
    """Check that `view` is whole zstd frames: no truncated frame, no trailing garbage.

    zstandard's streaming readers stop quietly at the end of their input even in the middle
    of a frame, so the frame boundaries are walked here (RFC 8878 s.3.1) without decoding:
    frame header, then block headers (last-block bit, type, size), then the checksum.
    """
    pos = 0
    end = len(view)
    if end == 0:
        raise _corrupt("zstd", "no frame")
    while pos < end:
        if end - pos < 4:
            raise _corrupt("zstd", "truncated frame magic")
        magic = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE_MAGIC:
            if end - pos < 4:
                raise _corrupt("zstd", "truncated skippable frame")
            pos += 4 + int.from_bytes(view[pos : pos + 4], "little")
            if pos > end:
                raise _corrupt("zstd", "truncated skippable frame")
            continue
        if magic != _ZSTD_MAGIC:
            raise _corrupt("zstd", "bad frame magic")
        if pos >= end:
            raise _corrupt("zstd", "truncated frame header")
        descriptor = view[pos]
        pos += 1
        content_size_flag = descriptor >> 6
        single_segment = (descriptor >> 5) & 1
        has_checksum = (descriptor >> 2) & 1
        dict_id_flag = descriptor & 3
        pos += (0 if single_segment else 1) + (0, 1, 2, 4)[dict_id_flag]
        pos += (single_segment, 2, 4, 8)[content_size_flag]
        while True:
            if end - pos < 3:
                raise _corrupt("zstd", "truncated block header")
            block_header = int.from_bytes(view[pos : pos + 3], "little")
            pos += 3
            block_type = (block_header >> 1) & 3
            if block_type == 3:
                raise _corrupt("zstd", "reserved block type")
            pos += 1 if block_type == 1 else block_header >> 3  # RLE blocks carry one byte
            if block_header & 1:
                break
        pos += 4 if has_checksum else 0
        if pos > end:
            raise _corrupt("zstd", "truncated frame")


def _zstd_decompress(data: Buffer, max_bytes: int) -> bytes:
    view = memoryview(data)
    _zstd_frames_end(view)
    # The streaming reader, not the one-shot `decompress()`: librdkafka's frames carry no
    # content size, which the one-shot call needs. Of the streaming APIs, `stream_reader`
    # is used rather than `decompressobj` because its `read(n)` bounds each step's output;
    # `decompressobj().decompress()` inflates all the input it is given at once (a 4-byte
    # RLE block is 128 KiB of output), so bounding it would mean feeding tiny slices, which
    # measured about 3x slower on a 2.5 MB batch. The window a frame may declare keeps
    # libzstd's default limit (128 MiB, as zstd-jni in Kafka's Java client), so every frame a
    # client may send is read; its buffer is reserved, not touched, until output fills it.
    out: list[bytes] = []
    produced = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(view, read_across_frames=True) as reader:
            while True:
                chunk = reader.read(_READ_SLICE)
                if not chunk:
                    return b"".join(out)
                produced += len(chunk)
                if produced > max_bytes:
                    raise _too_large("zstd", max_bytes)
                out.append(chunk)
    except zstandard.ZstdError as exc:
        raise _corrupt("zstd", str(exc)) from None


_DECOMPRESSORS: Final[dict[int, Callable[[Buffer, int], bytes]]] = {
    GZIP: _gzip_decompress,
    SNAPPY: _snappy_decompress,
    LZ4: _lz4_decompress,
    ZSTD: _zstd_decompress,
}


def _unsupported(codec: int) -> KafkaError:
    return KafkaError(ErrorCode.unsupported_compression_type, f"unknown compression codec {codec}")


def decompress(codec: int, data: Buffer, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """`data` decompressed with Kafka codec `codec`; at most `max_bytes` bytes come out.

    Raises KafkaError: UNSUPPORTED_COMPRESSION_TYPE for an unknown codec id, CORRUPT_MESSAGE
    for anything the codec cannot decode or that inflates past `max_bytes`.
    """
    if codec == NONE:
        if len(data) > max_bytes:
            raise _too_large("none", max_bytes)
        return bytes(data)
    decompressor = _DECOMPRESSORS.get(codec)
    if decompressor is None:
        raise _unsupported(codec)
    return decompressor(data, max_bytes)
