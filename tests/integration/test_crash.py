"""kill -9 mid-stream with acks=1 and flush.policy=always: every acknowledged record survives."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.slow

TOPIC = "crash"


def consume_all(bootstrap: str, topic: str, expected_at_least: int, timeout_s: float = 30) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191 and len(values) >= expected_at_least:  # EOF
                    break
                continue
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_kill_9_loses_no_acknowledged_record(ackly_process) -> None:
    broker = ackly_process(configs={"log.flush.policy": "always", "log.segment.bytes": "65536"})
    acked: list[int] = []
    lock = threading.Lock()
    killed = threading.Event()

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is None:
            with lock:
                acked.append(int(msg.value()))
                if len(acked) == 2000 and not killed.is_set():
                    killed.set()

    producer = Producer({
        "bootstrap.servers": broker.bootstrap, "acks": "1", "linger.ms": 1,
        "message.timeout.ms": 8000, "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1, "retries": 0,
    })
    sent = 0
    deadline = time.monotonic() + 60
    while not killed.is_set() and sent < 200_000:
        assert time.monotonic() < deadline, f"only {len(acked)} records acknowledged in 60 s"
        try:
            producer.produce(TOPIC, value=str(sent).encode(), on_delivery=on_delivery)
        except BufferError:
            # The client's queue is full (a slow machine acknowledges fewer records a second
            # than this loop sends): wait for deliveries, then send the same value again.
            producer.poll(0.05)
            continue
        sent += 1
        if sent % 100 == 0:
            producer.poll(0)
    broker.kill()  # SIGKILL while requests are in flight
    producer.flush(15)  # the rest fail: unacknowledged, may or may not be there
    broker.start()
    with lock:
        acknowledged = list(acked)
    values = [int(v) for v in consume_all(broker.bootstrap, TOPIC, len(acknowledged))]
    assert len(values) == len(set(values)), "a record appears twice"
    assert values == sorted(values), "records are out of order"
    missing = set(acknowledged) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
