"""FetchResponse (api key 1), versions 4-18, encoded by hand around file ranges.

The records of a fetch are usually ranges of segment files that the server sends with
`loop.sendfile`, never reading them into memory. So the encoder returns *pieces*: bytes it
wrote, and, where a partition's records go, the caller's own `Chunk` objects untouched. The
server writes the bytes pieces and sendfiles the chunks, in order.

Invariants of the returned list:
- the first piece is bytes and starts with the int32 size prefix, which counts every byte of
  every later piece (a chunk counts its `size`), then the response header;
- bytes pieces never sit next to each other (they are merged), so the number of writes is
  at most 2 * chunks + 1;
- a partition with no records gets an empty, not null, records field, as Kafka's broker
  writes it (MemoryRecords.EMPTY).

Schema, as kio's generated classes (the tests compare with kio byte-for-byte):

    v4      throttle_time_ms, topics[name, partitions[index, error_code, high_watermark,
            last_stable_offset, aborted_transactions[producer_id, first_offset] (nullable),
            records (nullable)]]
    v5+     partition += log_start_offset (after last_stable_offset)
    v7+     response += error_code, session_id (after throttle_time_ms)
    v11+    partition += preferred_read_replica (before records)
    v12+    flexible: compact arrays/strings/records, tagged fields, response header v1;
            partition tags: 0 diverging_epoch [epoch int32, end_offset int64] (a follower's
            log diverges, KIP-595 style), 1 current_leader [leader_id int32, leader_epoch
            int32] (KIP-951), written only when set; 2 snapshot_id never
    v13+    topics keyed by topic_id (uuid) instead of name
    v16+    tagged node_endpoints written absent
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ackly.protocol.produce_codec import INT32, put_array_length, put_topic_key, put_uvarint

MIN_VERSION: Final = 4
MAX_VERSION: Final = 18
FIRST_FLEXIBLE_VERSION: Final = 12
FIRST_TOPIC_ID_VERSION: Final = 13

_HEADER_V0 = struct.Struct(">ii")  # size, correlation id
_THROTTLE_V7 = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_PARTITION_V4 = struct.Struct(">ihqq")  # index, error_code, high_watermark, last_stable_offset
_PARTITION_V5 = struct.Struct(">ihqqq")  # + log_start_offset
_ABORTED = struct.Struct(">qq")  # producer_id, first_offset
_EPOCH_END_OFFSET = struct.Struct(">iqB")  # epoch, end_offset, empty tagged fields
_LEADER_ID_AND_EPOCH = struct.Struct(">iiB")  # leader_id, leader_epoch, empty tagged fields
_DIVERGING_EPOCH_TAG = 0
_CURRENT_LEADER_TAG = 1
_EMPTY_TAGS = b"\x00"
_NULL_ARRAY = INT32.pack(-1)


class Chunk(Protocol):
    """Records the server sends from a file: anything with a byte size that is not bytes."""

    @property
    def size(self) -> int: ...


Piece = bytes | Chunk


@dataclass(slots=True)
class FetchPartitionData:
    """One partition of a fetch response. `records` are its record batches in order:
    bytes, or chunks the server will send from a file. Fields a version lacks are not
    written."""

    partition_index: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    aborted_transactions: Sequence[tuple[int, int]] | None = None  # (producer_id, first_offset)
    preferred_read_replica: int = -1
    records: Sequence[bytes | Chunk] = ()
    diverging_epoch: tuple[int, int] | None = None  # (epoch, end offset), v12+
    current_leader: tuple[int, int] | None = None  # (leader id, leader epoch), v12+


def _records_size(records: Sequence[bytes | Chunk]) -> int:
    total = 0
    for piece in records:
        total += len(piece) if isinstance(piece, bytes | bytearray | memoryview) else piece.size
    return total


def encode_fetch_response(
    version: int,
    correlation_id: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[FetchPartitionData]]],
    *,
    throttle_time_ms: int = 0,
    error_code: int = 0,
    session_id: int = 0,
) -> list[bytes | Chunk]:
    """The whole response frame as pieces to write in order (see the module docstring).

    `topics` are (name, partitions), or (topic id, partitions) from v13.
    """
    assert MIN_VERSION <= version <= MAX_VERSION, f"FetchResponse v{version}"
    flexible = version >= FIRST_FLEXIBLE_VERSION
    by_id = version >= FIRST_TOPIC_ID_VERSION
    with_log_start = version >= 5
    with_session = version >= 7
    with_preferred_replica = version >= 11

    # Bytes go to `out` until a chunk comes; then `out` joins `pieces` and a new one starts.
    pieces: list[bytearray | Chunk] = []
    out = bytearray(_HEADER_V0.pack(0, correlation_id))
    if flexible:
        out += _EMPTY_TAGS  # response header v1
    if with_session:
        out += _THROTTLE_V7.pack(throttle_time_ms, error_code, session_id)
    else:
        out += INT32.pack(throttle_time_ms)
    put_array_length(out, len(topics), flexible)
    for topic, partitions in topics:
        put_topic_key(out, topic, by_id, flexible)
        put_array_length(out, len(partitions), flexible)
        for p in partitions:
            if with_log_start:
                out += _PARTITION_V5.pack(
                    p.partition_index,
                    p.error_code,
                    p.high_watermark,
                    p.last_stable_offset,
                    p.log_start_offset,
                )
            else:
                out += _PARTITION_V4.pack(
                    p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset
                )
            aborted = p.aborted_transactions
            if aborted is None:
                out += b"\x00" if flexible else _NULL_ARRAY
            else:
                put_array_length(out, len(aborted), flexible)
                for producer_id, first_offset in aborted:
                    out += _ABORTED.pack(producer_id, first_offset)
                    if flexible:
                        out += _EMPTY_TAGS
            if with_preferred_replica:
                out += INT32.pack(p.preferred_read_replica)
            records_size = _records_size(p.records)
            if flexible:
                put_uvarint(out, records_size + 1)
            else:
                out += INT32.pack(records_size)
            for piece in p.records:
                if isinstance(piece, bytes | bytearray | memoryview):
                    out += piece
                else:
                    if out:
                        pieces.append(out)
                        out = bytearray()
                    pieces.append(piece)
            if flexible:
                _put_partition_tags(out, p)
        if flexible:
            out += _EMPTY_TAGS
    if flexible:
        out += _EMPTY_TAGS  # node_endpoints (v16+) absent
    if out:
        pieces.append(out)
    total = sum(len(x) if isinstance(x, bytearray) else x.size for x in pieces)
    # The first piece holds the header: it was written before any records.
    first = pieces[0]
    assert isinstance(first, bytearray)
    INT32.pack_into(first, 0, total - 4)
    return [bytes(x) if isinstance(x, bytearray) else x for x in pieces]


def _put_partition_tags(out: bytearray, p: FetchPartitionData) -> None:
    """The partition's tagged fields, in tag order (KIP-482); none set: an empty tag buffer."""
    # A value equal to the schema's default (-1, -1) is written absent, as Kafka does.
    tags: list[tuple[int, bytes]] = []
    if p.diverging_epoch is not None and p.diverging_epoch != (-1, -1):
        tags.append((_DIVERGING_EPOCH_TAG, _EPOCH_END_OFFSET.pack(*p.diverging_epoch, 0)))
    if p.current_leader is not None and p.current_leader != (-1, -1):
        tags.append((_CURRENT_LEADER_TAG, _LEADER_ID_AND_EPOCH.pack(*p.current_leader, 0)))
    put_uvarint(out, len(tags))
    for tag, data in tags:
        put_uvarint(out, tag)
        put_uvarint(out, len(data))
        out += data
