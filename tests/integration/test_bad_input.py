"""Bad input gets a clear Kafka error or closes only the offending connection; nothing is lost."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow


def api_versions(client: WireClient) -> object:
    return client.request(ApiVersionsRequest(client_software_name="t", client_software_version="1"))


def assert_closed(client: WireClient) -> None:
    with pytest.raises((ConnectionError, OSError)):
        client.read_frame()


def latest(client: WireClient, topic: str) -> int:
    resp = client.request(rq.list_offsets(topic, -1))
    part = resp.topics[0].partitions[0]
    assert part.error_code == ErrorCode.none
    return int(part.offset)


@pytest.fixture
def broker(ackly_broker):  # type: ignore[no-untyped-def]
    return ackly_broker


def test_frame_over_socket_request_max_bytes_closes_only_that_connection(broker) -> None:
    with WireClient(broker.bootstrap) as bad, WireClient(broker.bootstrap) as good:
        bad.send_raw(struct.pack(">i", 100 * 1024 * 1024 + 1))
        assert_closed(bad)
        assert api_versions(good).error_code == ErrorCode.none


def test_negative_frame_size_closes_the_connection(broker) -> None:
    with WireClient(broker.bootstrap) as bad, WireClient(broker.bootstrap) as good:
        bad.send_raw(struct.pack(">i", -7))
        assert_closed(bad)
        assert api_versions(good).error_code == ErrorCode.none


def test_truncated_request_body_closes_the_connection_and_writes_nothing(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("trunc")).topics[0].error_code == ErrorCode.none
    with WireClient(broker.bootstrap) as bad:
        frame = bad.frame(rq.produce("trunc", rq.batch(b"x")))
        body = frame[4:-20]
        bad.send_raw(struct.pack(">i", len(body)) + body)
        assert_closed(bad)
    with WireClient(broker.bootstrap) as c:
        assert latest(c, "trunc") == 0


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=64))
def test_garbage_frames_never_stop_the_broker(broker, payload: bytes) -> None:
    with WireClient(broker.bootstrap, timeout_s=5) as bad:
        bad.send_raw(struct.pack(">i", len(payload)) + payload)
        with contextlib.suppress(ConnectionError, OSError):
            bad.read_frame()  # an error answer is fine, so is a closed connection
    with WireClient(broker.bootstrap) as good:
        assert api_versions(good).error_code == ErrorCode.none


def test_unknown_api_key_gets_unsupported_version(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.send_raw(struct.pack(">ihhih", 10, 9999, 0, 42, -1))
        frame = c.read_frame()
        assert struct.unpack(">ih", frame) == (42, ErrorCode.unsupported_version)
        assert api_versions(c).error_code == ErrorCode.none  # the connection still works


def test_unknown_version_gets_unsupported_version(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.send_raw(struct.pack(">ihhih", 10, 3, 999, 43, -1))  # Metadata v999
        assert struct.unpack(">ih", c.read_frame()) == (43, ErrorCode.unsupported_version)


def test_api_versions_too_new_falls_back_to_v0_with_the_table(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.send_raw(struct.pack(">ihhih", 10, 18, 99, 44, -1) + b"")
        _, resp = c.decode(18, 0, c.read_frame())
        assert resp.error_code == ErrorCode.unsupported_version
        keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
        assert keys[18] == (0, 4)
        assert keys[0][0] == 3


def _corrupt_crc(data: bytes) -> bytes:
    b = bytearray(data)
    b[-1] ^= 0xFF
    return bytes(b)


def _bad_magic(data: bytes) -> bytes:
    b = bytearray(data)
    b[16] = 1
    return bytes(b)


@pytest.mark.parametrize("spoil", [_corrupt_crc, _bad_magic], ids=["crc", "magic"])
def test_corrupt_batch_is_refused_and_nothing_is_written(broker, spoil) -> None:
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("corrupt")).topics[0].error_code == ErrorCode.none
        good = rq.batch(b"a", b"b")
        resp = c.request(rq.produce("corrupt", good + spoil(rq.batch(b"c"))))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.corrupt_message
        assert latest(c, "corrupt") == 0
        resp = c.request(rq.produce("corrupt", good))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
        assert latest(c, "corrupt") == 2


def _base_offset_five(data: bytes) -> bytes:
    return struct.pack(">q", 5) + data[8:]  # outside the CRC: only the meaning is wrong


def _count_off_by_one(data: bytes) -> bytes:
    from ackly.protocol.records import crc_of

    b = bytearray(data)
    struct.pack_into(">i", b, 57, struct.unpack_from(">i", b, 57)[0] + 1)
    struct.pack_into(">I", b, 17, crc_of(b, 0, len(b)))
    return bytes(b)


@pytest.mark.parametrize("spoil", [_base_offset_five, _count_off_by_one], ids=["base-offset", "count"])
def test_invalid_batch_is_refused_and_nothing_is_written(broker, spoil) -> None:
    """Kafka's LogValidator: a well-framed batch whose fields disagree is INVALID_RECORD, and the
    whole record set of that partition is refused."""
    with WireClient(broker.bootstrap) as c:
        assert c.request(rq.create_topic("invalid")).topics[0].error_code == ErrorCode.none
        good = rq.batch(b"a", b"b")
        resp = c.request(rq.produce("invalid", good + spoil(rq.batch(b"c"))))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.invalid_record
        assert latest(c, "invalid") == 0


def test_produce_to_missing_topic_without_auto_create(tmp_path) -> None:
    from ackly.testing.inprocess import InProcessBroker

    b = InProcessBroker(str(tmp_path / "d"), {"auto.create.topics.enable": "false"}).start()
    try:
        with WireClient(b.bootstrap) as c:
            resp = c.request(rq.produce("nope", rq.batch(b"x")))
            code = resp.responses[0].partition_responses[0].error_code
            assert code == ErrorCode.unknown_topic_or_partition
            md = c.request(rq.metadata("nope"))
            assert md.topics[0].error_code == ErrorCode.unknown_topic_or_partition
    finally:
        b.stop()


def test_invalid_topic_name_and_config(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        resp = c.request(rq.create_topic("bad/name"))
        assert resp.topics[0].error_code == ErrorCode.invalid_topic_exception
        assert "illegal characters" in resp.topics[0].error_message
        assert c.request(rq.metadata("bad name")).topics[0].error_code == (
            ErrorCode.invalid_topic_exception
        )
        resp = c.request(rq.create_topic("t", configs={"retention.ms": "soon"}))
        assert resp.topics[0].error_code == ErrorCode.invalid_config
        assert "retention.ms" in resp.topics[0].error_message
        # nothing was created
        md = c.request(rq.metadata("t", auto_create=False))
        assert md.topics[0].error_code == ErrorCode.unknown_topic_or_partition


def test_bad_config_is_refused_at_start_up(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ackly", "serve", "--port", "0", "--data-dir", str(tmp_path),
         "--config", "log.retention.ms=forever"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "log.retention.ms" in proc.stderr and "not an integer" in proc.stderr


def test_second_broker_on_a_data_dir_in_use_is_refused(ackly_process, tmp_path) -> None:
    first = ackly_process()
    proc = subprocess.run(
        [sys.executable, "-m", "ackly", "serve", "--port", "0", "--data-dir", first.data_dir],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "in use by another ackly process" in proc.stderr
    assert first.proc is not None and first.proc.poll() is None
    assert first.stop() == 0


def _header(api_key: int, version: int, flexible_header: bool) -> bytes:
    return struct.pack(">hhih", api_key, version, 7, 1) + b"x" + (b"\x00" if flexible_header else b"")


# Frames that declare an array far longer than the frame: kio's native decoder would size the
# array's storage from the count (hundreds of GB) and abort the process.
HUGE_ARRAYS = {
    "legacy int32 count": _header(3, 1, False) + struct.pack(">i", 2**31 - 1),  # Metadata v1 topics
    "flexible varint count": _header(37, 3, True) + b"\xff\xff\xff\xff\x0f",  # CreatePartitions v3
    "nested count": _header(0, 9, True) + b"\x00" + struct.pack(">hi", -1, 1000)
    + b"\x02" + b"\x02t" + b"\xff\xff\xff\xff\x0f",  # Produce v9: one topic, 2**32 - 2 partitions
}


@pytest.fixture(scope="module")
def huge_array_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A process, not an in-process broker: a decoder that sized storage from the count would
    abort the process. One for the three frames: each test checks it survived its frame."""
    broker = BrokerProcess(str(tmp_path_factory.mktemp("huge-arrays") / "data")).start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.mark.parametrize("frame", HUGE_ARRAYS.values(), ids=HUGE_ARRAYS.keys())
def test_a_huge_declared_array_closes_that_connection_only(huge_array_broker: BrokerProcess, frame: bytes) -> None:
    """Kafka refuses such a frame ("Error reading array of size N, only M bytes available");
    ackly does too, before any decoder allocates for it (protocol/request_shape.py)."""
    broker = huge_array_broker
    assert broker.proc is not None and broker.proc.poll() is None, "the broker died before this frame"
    with WireClient(broker.bootstrap, timeout_s=10) as bad:
        bad.send_raw(struct.pack(">i", len(frame)) + frame)
        assert_closed(bad)
    assert broker.proc is not None and broker.proc.poll() is None, "the broker died"
    with WireClient(broker.bootstrap) as good:
        assert api_versions(good).error_code == ErrorCode.none
