"""kafka-python's consumer uses fetch sessions (KIP-227; its FetchSessionHandler): it opens a
session with a full fetch, then fetches incrementally. Records appended while it polls, on
every partition, all arrive exactly once, and the broker holds the consumer's session."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from ackly.testing.inprocess import InProcessBroker

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

TOPIC = "kp-sessions"
PARTITIONS = 4


def _consumer_sessions(broker: InProcessBroker) -> list[tuple[int, int]]:
    """(session id, partitions) of the sessions of consumers (replica id -1)."""
    def read() -> list[tuple[int, int]]:
        assert broker.server is not None
        cache = broker.server.node.fetch_sessions
        sessions = [cache.get(i) for i in cache.session_ids()]
        return [(s.session_id, len(s.partitions)) for s in sessions if s is not None and s.owner == -1]
    return broker.call(read)  # type: ignore[no-any-return]


def test_a_kafka_python_consumer_reads_everything_through_an_incremental_session(
        ackly_broker: InProcessBroker) -> None:
    bootstrap = ackly_broker.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)], timeout_ms=10_000)
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100)
    try:
        for p in range(PARTITIONS):
            producer.send(TOPIC, value=b"first-%d" % p, partition=p).get(timeout=10)
        partitions = list(range(PARTITIONS))
        tps = [TopicPartition(TOPIC, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        expected = {(p, b"first-%d" % p) for p in range(PARTITIONS)}
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 30
        round_no = 0
        while time.monotonic() < deadline and (len(got) < len(expected) or round_no < 6):
            if round_no < 6:  # appends while the session is open, to one partition at a time
                p = partitions[round_no % len(partitions)]
                value = b"round-%d" % round_no
                producer.send(TOPIC, value=value, partition=p).get(timeout=10)
                expected.add((p, value))
                round_no += 1
            for batch in consumer.poll(timeout_ms=300).values():
                got.extend((m.partition, m.value) for m in batch)
        assert sorted(got) == sorted(expected), "every record once, none missing"
        sessions = _consumer_sessions(ackly_broker)
        assert sessions and all(n == len(partitions) for _, n in sessions), sessions
    finally:
        consumer.close()
        producer.close()
