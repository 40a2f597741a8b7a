"""confluent-kafka through the fault proxy: lost Produce responses, then a stalled Fetch.

Without idempotence, a Produce whose response is lost is retried and lands twice: the topic
then holds every record at least once, and some more than once. Seeing duplicates shows the
proxy really cost the producer its responses (and that librdkafka followed the rewritten
Metadata through the proxy rather than going to the broker directly).
"""

from __future__ import annotations

import collections
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kio.schema.errors import ErrorCode

from ackly.testing.wire import WireClient
from tests.integration import wire_requests as rq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RECORDS = 300
DROPPED_RESPONSES = 3
STALL_MS = 1500


def latest_offset(bootstrap: str, topic: str) -> int:
    with WireClient(bootstrap) as direct:
        part = direct.request(rq.list_offsets(topic, -1)).topics[0].partitions[0]
        assert part.error_code == ErrorCode.none
        return int(part.offset)


def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
        "retries": 20, "retry.backoff.ms": 50, "reconnect.backoff.ms": 20,
        "linger.ms": 5, "batch.num.messages": 25, "max.in.flight.requests.per.connection": 1,
        "request.timeout.ms": 10_000, "message.timeout.ms": 60_000,
    })
    delivered: list[bytes] = []
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            failed.append(err)
        else:
            delivered.append(msg.value())  # type: ignore[attr-defined]

    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still undelivered after 60 s"
    assert not failed, f"delivery errors: {failed[:5]}"
    assert sorted(delivered) == sorted(values)


def consume_to(bootstrap: str, topic: str, end_offset: int) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "ackly-tests-unused",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
        # Small fetches, so the stall falls in the middle of the topic, not after it.
        "max.partition.fetch.bytes": 2048,
    })
    values: list[bytes] = []
    next_offset = 0
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while next_offset < end_offset and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                values.append(msg.value())
                next_offset = msg.offset() + 1
    finally:
        consumer.close()
    assert next_offset == end_offset, f"consumed up to {next_offset} of {end_offset}"
    return values


def test_confluent_through_dropped_produce_responses_and_a_stalled_fetch(ackly_broker, fault_proxy) -> None:
    topic = "through-the-proxy"
    with WireClient(ackly_broker.bootstrap) as direct:
        assert direct.request(rq.create_topic(topic)).topics[0].error_code == ErrorCode.none
    proxy = fault_proxy(ackly_broker.bootstrap)
    values = [b"record-%05d" % i for i in range(RECORDS)]

    drops = proxy.add_rule(0, "drop_response", after=1, count=DROPPED_RESPONSES)
    produce_all(proxy.bootstrap, topic, values)
    assert drops.fired == DROPPED_RESPONSES

    end = latest_offset(ackly_broker.bootstrap, topic)
    stall = proxy.add_rule(1, "stall", after=2, count=1, duration_ms=STALL_MS)
    started = time.monotonic()
    consumed = consume_to(proxy.bootstrap, topic, end)
    assert time.monotonic() - started >= STALL_MS / 1000
    assert stall.fired == 1

    copies = collections.Counter(consumed)
    assert set(copies) == set(values), "every acknowledged record is in the log"
    duplicates = len(consumed) - len(values)
    assert duplicates > 0, "lost responses caused retries, which land twice without idempotence"
    assert duplicates == sum(n - 1 for n in copies.values())

    stats = proxy.stats()
    print(f"{duplicates} duplicates in {len(consumed)} records; proxy stats: {stats}")
    assert stats.faults == {"drop_response": DROPPED_RESPONSES, "stall": 1}
    assert stats.rewritten > 0 and stats.errors == ()
    assert stats.requests[0] >= DROPPED_RESPONSES + 2 and stats.requests[1] >= 2
