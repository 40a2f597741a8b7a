"""Broker-side recompression of a producer's record batches (Kafka's LogValidator when a
topic's compression.type is a codec rather than `producer`).

A batch whose codec differs from the topic's is rebuilt: its records section is decompressed
(if compressed) and compressed with the topic's codec at the topic's level (KIP-390,
compression.gzip.level / compression.lz4.level / compression.zstd.level), the header keeps
every field but the codec bits, the length and the CRC-32C, which is computed anew. The
records themselves are not re-encoded: validation (batch_validation.py) already checked that a
compressed batch's inner offset deltas are 0, 1, 2, ..., which is what Kafka assigns inside the
new batch, and the leader patches the base offset at the append as for any batch.

Invariants:
- A batch already in the topic's codec is copied as it is; a request whose batches all are
  returns None, so the caller keeps the zero-copy path (no bytes copied or rewritten).
- Producer id, epoch, base sequence, the transactional flag, timestamps and record count are
  kept, so idempotence, transactions and LogAppendTime work on the new batch unchanged.
- Reads its input and writes only a new buffer: a refusal (CORRUPT_MESSAGE from the codec)
  leaves the request's bytes as they were.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from ackly.protocol.compression import GZIP, LZ4, NONE, SNAPPY, ZSTD, compress, decompress
from ackly.protocol.records import (
    COMPRESSION_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    crc_of,
    pack_header,
)

# compression.type values and the codec id each asks for (None: keep the producer's).
TOPIC_CODECS: dict[str, int | None] = {
    "producer": None, "uncompressed": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4,
    "zstd": ZSTD,
}
_CRC = struct.Struct(">I")
_CRC_AT = 17


def recompress_batches(
    buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader], codec: int,
    level: int | None, max_decompressed_bytes: int,
    sections: Mapping[int, bytes] | None = None,
) -> tuple[bytearray, list[BatchHeader]] | None:
    """The batches of `buf` in `codec` (and their new headers), or None when every batch is
    in it already. Raises KafkaError (CORRUPT_MESSAGE) for a section that does not decode.
    `sections`: decompressed records sections by batch index, as validation produced them
    (batch_validation.validate_client_batches), used instead of decompressing again."""
    if all(h.compression == codec for h in headers):
        return None
    view = memoryview(buf)
    out = bytearray()
    new_headers: list[BatchHeader] = []
    pos = 0
    for index, h in enumerate(headers):
        if h.compression == codec:
            out += view[pos:pos + h.size]
            new_headers.append(h)
            pos += h.size
            continue
        section = view[pos + HEADER_SIZE:pos + h.size]
        raw: bytes | memoryview | None = None if sections is None else sections.get(index)
        if raw is None:
            raw = (decompress(h.compression, section, max_bytes=max_decompressed_bytes)
                   if h.compression else section)
        body = compress(codec, raw, level)
        new = h._replace(
            batch_length=HEADER_SIZE - LOG_OVERHEAD + len(body),
            attributes=(h.attributes & ~COMPRESSION_MASK) | codec,
            crc=0,
        )
        start = len(out)
        out += pack_header(new)
        out += body
        crc = crc_of(out, start, new.size)
        _CRC.pack_into(out, start + _CRC_AT, crc)
        new_headers.append(new._replace(crc=crc))
        pos += h.size
    return out, new_headers
