"""A segment truncated while a fetch answer is being sent never misframes the connection.

The fetch handler resolves file ranges and the response's size fields promise their bytes;
the connection reads or sendfiles them afterwards. A truncation in between (a follower's
truncation, a retention delete) makes the read short. The client must then get either the
whole well-formed response or a closed connection, and never bytes that belong to the next
answer counted into this one.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from ackly.broker.context import RequestContext
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow

FETCH_ID, VERSIONS_ID = 100, 101


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    b = InProcessBroker(str(tmp_path_factory.mktemp("short") / "data")).start()
    yield b
    b.stop()


def _fill(c: WireClient, topic: str, batches: int, value_bytes: int) -> None:
    assert c.request(rq.create_topic(topic)).topics[0].error_code == ErrorCode.none
    for i in range(batches):
        r = c.request(rq.produce(topic, rq.batch(bytes([65 + i % 26]) * value_bytes)))
        assert r.responses[0].partition_responses[0].error_code == ErrorCode.none


def _truncate_next_fetch(broker: InProcessBroker) -> Callable[[], None]:
    """Make the broker cut the first file range of the next Fetch answer to half its size,
    after the answer is encoded and before the connection writes it. Returns the undo."""
    assert broker.server is not None
    node = broker.server.node
    original = node.handle_frame

    def handle_frame(ctx: RequestContext, frame: bytes | memoryview) -> None:
        if ctx.header.api_key == 1:
            sink = ctx.sink

            def truncating_sink(pieces: Any) -> None:
                ranges = [p for p in pieces or () if not isinstance(p, (bytes, bytearray, memoryview))]
                assert ranges, "the fetch answer holds a file range"
                ranges[0].file.truncate(ranges[0].position + ranges[0].size // 2)
                sink(pieces)

            ctx.sink = truncating_sink
        original(ctx, frame)

    broker.call(setattr, node, "handle_frame", handle_frame)
    return lambda: broker.call(delattr, node, "handle_frame")


def _read_until_closed(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            raise AssertionError(
                f"after {len(data)} bytes the connection neither completed its answers nor closed"
            ) from None
        if not chunk:
            return bytes(data)
        data += chunk


def _check_framing(c: WireClient, data: bytes) -> list[int]:
    """Cut `data` into frames; every complete one must decode as the answer to the request
    it claims (in request order). Only the last may be incomplete (the connection closed).
    Returns the correlation ids of the complete frames."""
    ids: list[int] = []
    pos = 0
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        frame = data[pos + 4:pos + 4 + size]
        if len(frame) < size:
            break  # cut off by the close
        api_key, version = (1, 12) if not ids else (18, 3)
        correlation_id, response = c.decode(api_key, version, frame)
        assert correlation_id == (FETCH_ID, VERSIONS_ID)[len(ids)]
        if api_key == 1:
            records = response.responses[0].partitions[0].records
            assert records, "a complete fetch answer carries its batches"
        ids.append(correlation_id)
        pos += 4 + size
    return ids


def _fetch_then_versions(c: WireClient, topic: str) -> None:
    fetch = c.frame(rq.fetch(topic, 0), correlation_id=FETCH_ID)
    versions = c.frame(ApiVersionsRequest(client_software_name="t", client_software_version="1"),
                       correlation_id=VERSIONS_ID)
    c.send_raw(fetch + versions)


@pytest.mark.parametrize(("mode", "batches", "value_bytes", "use_sendfile"), [
    ("inline read", 4, 1000, True),  # one range below INLINE_RANGE_BYTES: read and written at once
    ("sendfile", 6, 40_000, True),  # a large range: zero-copy by the writer task
    ("large read", 6, 40_000, False),  # a large range read by the writer task
])
def test_a_range_truncated_underneath_closes_the_connection_cleanly(
    broker: InProcessBroker, mode: str, batches: int, value_bytes: int, use_sendfile: bool,
) -> None:
    topic = "short-" + mode.replace(" ", "-")
    assert broker.server is not None
    broker.call(setattr, broker.server, "use_sendfile", use_sendfile)
    with WireClient(broker.bootstrap) as c:
        _fill(c, topic, batches, value_bytes)
        undo = _truncate_next_fetch(broker)
        try:
            _fetch_then_versions(c, topic)
            data = _read_until_closed(c.sock)
        finally:
            undo()
        ids = _check_framing(c, data)
        # The fetch answer cannot be whole (half its range is gone), so the connection closed
        # before it completed, and no later answer was written behind it.
        assert ids == [], f"{mode}: complete frames {ids} in {len(data)} bytes"
    with WireClient(broker.bootstrap) as c:  # the broker itself goes on serving
        assert c.request(rq.metadata(topic)).topics[0].error_code == ErrorCode.none


@pytest.mark.parametrize(("batches", "value_bytes", "use_sendfile"), [
    (4, 1000, True), (6, 40_000, True), (6, 40_000, False),
])
def test_untouched_ranges_frame_both_answers(
    broker: InProcessBroker, batches: int, value_bytes: int, use_sendfile: bool,
) -> None:
    """The control for the check above: without a truncation both answers arrive whole."""
    topic = f"whole-{batches}-{value_bytes}-{use_sendfile}"
    assert broker.server is not None
    broker.call(setattr, broker.server, "use_sendfile", use_sendfile)
    with WireClient(broker.bootstrap) as c:
        _fill(c, topic, batches, value_bytes)
        _fetch_then_versions(c, topic)
        frames = [c.read_frame(), c.read_frame()]
        data = b"".join(struct.pack(">i", len(f)) + f for f in frames)
        assert _check_framing(c, data) == [FETCH_ID, VERSIONS_ID]
