"""Pipelining, answer order, long polls woken by appends, retention moving the log start."""

from __future__ import annotations

import time

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from ackly.testing.inprocess import InProcessBroker
from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = pytest.mark.slow


def wait_until(condition, timeout_s: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll a condition with a deadline (for state the test cannot be told about)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_answers_keep_request_order_behind_a_long_poll(ackly_broker) -> None:
    with WireClient(ackly_broker.bootstrap) as c:
        assert c.request(rq.create_topic("order")).topics[0].error_code == ErrorCode.none
        fetch = c.frame(rq.fetch("order", 0, max_wait_ms=300), correlation_id=100)
        versions = c.frame(ApiVersionsRequest(client_software_name="t",
                                              client_software_version="1"), correlation_id=101)
        c.send_raw(fetch + versions)
        first, second = c.read_frame(), c.read_frame()
        assert int.from_bytes(first[:4], "big") == 100
        assert int.from_bytes(second[:4], "big") == 101


def test_long_poll_is_woken_by_an_append(ackly_broker) -> None:
    with WireClient(ackly_broker.bootstrap) as consumer, WireClient(ackly_broker.bootstrap) as producer:
        assert producer.request(rq.create_topic("wake")).topics[0].error_code == ErrorCode.none
        started = time.monotonic()
        consumer.send_raw(consumer.frame(rq.fetch("wake", 0, max_wait_ms=20_000)))
        resp = producer.request(rq.produce("wake", rq.batch(b"hello")))
        assert resp.responses[0].partition_responses[0].error_code == ErrorCode.none
        _, answer = consumer.decode(1, 12, consumer.read_frame())
        waited = time.monotonic() - started
        part = answer.responses[0].partitions[0]
        assert part.error_code == ErrorCode.none and part.high_watermark == 1
        assert part.records, "the woken fetch carries the appended batch"
        assert waited < 10, f"answered after {waited:.1f}s: by the deadline, not the append"


def test_fetch_waits_until_max_wait_when_nothing_arrives(ackly_broker) -> None:
    with WireClient(ackly_broker.bootstrap) as c:
        c.request(rq.create_topic("idle"))
        started = time.monotonic()
        resp = c.request(rq.fetch("idle", 0, max_wait_ms=400))
        assert time.monotonic() - started >= 0.35
        assert resp.responses[0].partitions[0].records in (None, b"")


def test_retention_moves_the_log_start_offset(tmp_path) -> None:
    broker = InProcessBroker(str(tmp_path / "d"), {
        "log.retention.check.interval.ms": "100", "log.segment.delete.delay.ms": "0",
    }).start()
    try:
        with WireClient(broker.bootstrap) as c:
            resp = c.request(rq.create_topic("ret", configs={
                "segment.bytes": "1024", "retention.bytes": "2048",
            }))
            assert resp.topics[0].error_code == ErrorCode.none
            now_ms = int(time.time() * 1000)  # recent: only retention.bytes applies
            for i in range(40):
                r = c.request(rq.produce("ret", rq.batch(b"%03d" % i + b"x" * 200, timestamp_ms=now_ms)))
                assert r.responses[0].partition_responses[0].error_code == ErrorCode.none

            def earliest() -> int:
                part = c.request(rq.list_offsets("ret", -2)).topics[0].partitions[0]
                return int(part.offset)

            start = wait_until(lambda: earliest() > 0 and earliest(), what="retention")
            assert 0 < start < 40
            resp = c.request(rq.fetch("ret", 0))
            assert resp.responses[0].partitions[0].error_code == ErrorCode.offset_out_of_range
            resp = c.request(rq.fetch("ret", start))
            assert resp.responses[0].partitions[0].records
    finally:
        broker.stop()
