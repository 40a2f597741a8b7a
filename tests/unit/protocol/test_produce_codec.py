"""produce_codec: byte-for-byte equal to kio's encoder for every ProduceResponse version."""

from __future__ import annotations

import datetime
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader

from ackly.errors import ErrorCode
from ackly.protocol import messages
from ackly.protocol.produce_codec import (
    MAX_VERSION,
    MIN_VERSION,
    PartitionProduceResult,
    encode_produce_response,
)

PRODUCE = 0
VERSIONS = range(MIN_VERSION, MAX_VERSION + 1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
topic_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60)
error_codes = st.sampled_from([int(code) for code in ErrorCode])
partition_results = st.builds(
    PartitionProduceResult,
    index=INT32,
    error_code=error_codes,
    base_offset=INT64,
    # kio models the time as an aware datetime (or None for -1), so only those round-trip.
    log_append_time_ms=st.just(-1) | st.integers(0, 2**43),
    log_start_offset=INT64,
    error_message=st.none() | texts,
    record_errors=st.lists(st.tuples(INT32, st.none() | texts), max_size=3).map(tuple),
)


def kio_produce_response(
    version: int,
    correlation_id: int,
    topics: list[tuple[Any, list[PartitionProduceResult]]],
    throttle_time_ms: int,
) -> bytes:
    """The same response built from kio's generated classes and encoded by kio."""
    response_cls = messages.response_type(PRODUCE, version)
    schema = sys.modules[response_cls.__module__]

    def partition(p: PartitionProduceResult) -> Any:
        fields: dict[str, Any] = {
            "index": p.index,
            "error_code": ErrorCode(p.error_code),
            "base_offset": p.base_offset,
            "log_append_time": None
            if p.log_append_time_ms == -1
            else EPOCH + datetime.timedelta(milliseconds=p.log_append_time_ms),
        }
        if version >= 5:
            fields["log_start_offset"] = p.log_start_offset
        if version >= 8:
            fields["error_message"] = p.error_message
            fields["record_errors"] = tuple(
                schema.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=m)
                for i, m in p.record_errors
            )
        return schema.PartitionProduceResponse(**fields)

    key = "topic_id" if version >= 13 else "name"
    response = response_cls(
        responses=tuple(
            schema.TopicProduceResponse(
                **{key: topic}, partition_responses=tuple(partition(p) for p in parts)
            )
            for topic, parts in topics
        ),
        throttle_time=datetime.timedelta(milliseconds=throttle_time_ms),
    )
    return messages.encode_response(PRODUCE, version, correlation_id, response)


def _topics(version: int) -> st.SearchStrategy[list[tuple[Any, list[PartitionProduceResult]]]]:
    keys = st.uuids() if version >= 13 else topic_names
    return st.lists(st.tuples(keys, st.lists(partition_results, max_size=4)), max_size=4)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40)
@given(data=st.data(), correlation_id=INT32, throttle_time_ms=st.integers(0, 2**31 - 1))
def test_matches_kio(version: int, data: st.DataObject, correlation_id: int,
                     throttle_time_ms: int) -> None:
    topics = data.draw(_topics(version))
    ours = encode_produce_response(version, correlation_id, topics, throttle_time_ms)
    assert ours == kio_produce_response(version, correlation_id, topics, throttle_time_ms)


@pytest.mark.parametrize("version", VERSIONS)
def test_typical_response_matches_kio(version: int) -> None:
    topic: Any = uuid.UUID(int=12345) if version >= 13 else "orders"
    topics = [(topic, [PartitionProduceResult(index=0, base_offset=41, log_start_offset=0),
                       PartitionProduceResult(index=3, error_code=6)])]
    ours = encode_produce_response(version, 7, topics)
    assert ours == kio_produce_response(version, 7, topics, 0)
    # The frame decodes with kio's own response reader.
    body_start = 4 + 4 + (1 if version >= 9 else 0)
    decoded, _size = entity_reader(messages.response_type(PRODUCE, version))(ours, body_start)
    assert decoded.responses[0].partition_responses[0].base_offset == 41


def test_version_outside_range_is_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        encode_produce_response(2, 1, [])
    with pytest.raises(AssertionError):
        encode_produce_response(13, 1, [("name-not-id", [])])
