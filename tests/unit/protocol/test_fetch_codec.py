"""fetch_codec: byte-for-byte equal to kio's encoder for every FetchResponse version, with
records given as bytes or as file-range chunks."""

from __future__ import annotations

import datetime
import itertools
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader

from ackly.errors import ErrorCode
from ackly.protocol import messages
from ackly.protocol.fetch_codec import (
    MAX_VERSION,
    MIN_VERSION,
    Chunk,
    FetchPartitionData,
    encode_fetch_response,
)

FETCH = 1
VERSIONS = range(MIN_VERSION, MAX_VERSION + 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
topic_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60)
error_codes = st.sampled_from([int(code) for code in ErrorCode])


@dataclass(frozen=True, eq=False)
class FileRange:
    """What the server passes for records it will sendfile: only the size matters here."""

    size: int
    fill: int = 0xAB


def _bytes_of(piece: bytes | Chunk) -> bytes:
    if isinstance(piece, bytes):
        return piece
    assert isinstance(piece, FileRange)
    return bytes([piece.fill]) * piece.size


record_pieces = st.lists(
    st.binary(max_size=40) | st.builds(FileRange, st.integers(0, 300), st.integers(0, 255)),
    max_size=4,
)
partitions = st.builds(
    FetchPartitionData,
    partition_index=INT32,
    error_code=error_codes,
    high_watermark=INT64,
    last_stable_offset=INT64,
    log_start_offset=INT64,
    aborted_transactions=st.none() | st.lists(st.tuples(INT64, INT64), max_size=3),
    preferred_read_replica=INT32,
    records=record_pieces,
    diverging_epoch=st.none() | st.tuples(INT32, INT64),
    current_leader=st.none() | st.tuples(INT32, INT32),
)


def kio_fetch_response(
    version: int,
    correlation_id: int,
    topics: list[tuple[Any, list[FetchPartitionData]]],
    throttle_time_ms: int,
    error_code: int,
    session_id: int,
) -> bytes:
    """The same response from kio's generated classes, chunks replaced by their bytes."""
    response_cls = messages.response_type(FETCH, version)
    schema = sys.modules[response_cls.__module__]

    def partition(p: FetchPartitionData) -> Any:
        aborted = p.aborted_transactions
        fields: dict[str, Any] = {
            "partition_index": p.partition_index,
            "error_code": ErrorCode(p.error_code),
            "high_watermark": p.high_watermark,
            "last_stable_offset": p.last_stable_offset,
            "aborted_transactions": None
            if aborted is None
            else tuple(schema.AbortedTransaction(producer_id=pid, first_offset=first)
                       for pid, first in aborted),
            "records": b"".join(_bytes_of(piece) for piece in p.records),
        }
        if version >= 5:
            fields["log_start_offset"] = p.log_start_offset
        if version >= 11:
            fields["preferred_read_replica"] = p.preferred_read_replica
        if version >= 12 and p.diverging_epoch is not None:
            epoch, end_offset = p.diverging_epoch
            fields["diverging_epoch"] = schema.EpochEndOffset(epoch=epoch, end_offset=end_offset)
        if version >= 12 and p.current_leader is not None:
            leader_id, leader_epoch = p.current_leader
            fields["current_leader"] = schema.LeaderIdAndEpoch(leader_id=leader_id, leader_epoch=leader_epoch)
        return schema.PartitionData(**fields)

    key = "topic_id" if version >= 13 else "topic"
    response_fields: dict[str, Any] = {
        "throttle_time": datetime.timedelta(milliseconds=throttle_time_ms),
        "responses": tuple(
            schema.FetchableTopicResponse(
                **{key: topic}, partitions=tuple(partition(p) for p in parts)
            )
            for topic, parts in topics
        ),
    }
    if version >= 7:
        response_fields["error_code"] = ErrorCode(error_code)
        response_fields["session_id"] = session_id
    return messages.encode_response(FETCH, version, correlation_id, response_cls(**response_fields))


def _topics(version: int) -> st.SearchStrategy[list[tuple[Any, list[FetchPartitionData]]]]:
    keys = st.uuids() if version >= 13 else topic_names
    return st.lists(st.tuples(keys, st.lists(partitions, max_size=4)), max_size=3)


def _check_pieces(pieces: list[bytes | Chunk], topics: list[tuple[Any, list[FetchPartitionData]]]
                  ) -> None:
    """The shape promised to the server: prefix first, bytes merged, chunks in order."""
    first = pieces[0]
    assert isinstance(first, bytes)
    total = sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)
    assert int.from_bytes(first[:4], "big", signed=True) == total - 4
    for before, after in itertools.pairwise(pieces):
        assert not (isinstance(before, bytes) and isinstance(after, bytes))
    given_chunks = [
        piece for _t, parts in topics for p in parts for piece in p.records
        if not isinstance(piece, bytes)
    ]
    returned_chunks = [piece for piece in pieces if not isinstance(piece, bytes)]
    assert len(returned_chunks) == len(given_chunks)
    assert all(a is b for a, b in zip(returned_chunks, given_chunks, strict=True))


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=30)
@given(
    data=st.data(),
    correlation_id=INT32,
    throttle_time_ms=st.integers(0, 2**31 - 1),
    error_code=error_codes,
    session_id=INT32,
)
def test_matches_kio(version: int, data: st.DataObject, correlation_id: int,
                     throttle_time_ms: int, error_code: int, session_id: int) -> None:
    topics = data.draw(_topics(version))
    pieces = encode_fetch_response(
        version,
        correlation_id,
        topics,
        throttle_time_ms=throttle_time_ms,
        error_code=error_code,
        session_id=session_id,
    )
    _check_pieces(pieces, topics)
    ours = b"".join(_bytes_of(piece) for piece in pieces)
    expected = kio_fetch_response(
        version, correlation_id, topics, throttle_time_ms, error_code, session_id
    )
    assert ours == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_records_are_empty_not_null(version: int) -> None:
    topic: Any = uuid.UUID(int=7) if version >= 13 else "t"
    pieces = encode_fetch_response(version, 1, [(topic, [FetchPartitionData(0)])])
    [frame] = pieces
    assert isinstance(frame, bytes)
    body_start = 4 + 4 + (1 if version >= 12 else 0)
    decoded, _size = entity_reader(messages.response_type(FETCH, version))(frame, body_start)
    assert decoded.responses[0].partitions[0].records == b""


def test_chunk_only_response_layout() -> None:
    chunk = FileRange(1000)
    # Before v12 nothing follows the last partition's records: the response ends in the chunk.
    head, last = encode_fetch_response(11, 9, [("t", [FetchPartitionData(0, records=[chunk])])])
    assert last is chunk
    assert isinstance(head, bytes)
    assert int.from_bytes(head[:4], "big") == len(head) + 1000 - 4
    assert int.from_bytes(head[-4:], "big") == 1000  # the records length right before it
    # Flexible versions end with the partition's, topic's and response's tagged fields.
    pieces = encode_fetch_response(12, 9, [("t", [FetchPartitionData(0, records=[chunk])])])
    assert len(pieces) == 3 and pieces[1] is chunk and pieces[2] == b"\x00\x00\x00"


def test_flexible_records_length_is_a_compact_uvarint() -> None:
    chunk = FileRange(300)  # 301 = 0xAD 0x02 as an unsigned varint
    pieces = encode_fetch_response(12, 9, [("t", [FetchPartitionData(0, records=[chunk])])])
    head = pieces[0]
    assert isinstance(head, bytes) and head.endswith(b"\xad\x02")
