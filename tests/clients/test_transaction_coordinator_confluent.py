"""A confluent-kafka transactional producer against a real `ackly serve` (docs/guarantees.md rules
18-20): init, a committed transaction over two partitions, an aborted one, and a second
producer instance with the same transactional.id fencing the first; a read_committed consumer
reads exactly the committed records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]

TOPIC = "txn-smoke"


def producer(bootstrap: str, txn: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn, "linger.ms": 5,
                  "transaction.timeout.ms": 30_000})
    p.init_transactions(30)
    return p


def read_committed(bootstrap: str, expected: int) -> list[tuple[int, bytes]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "smoke", "isolation.level": "read_committed",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(TOPIC, p, 0) for p in (0, 1)])
    got: list[tuple[int, bytes]] = []
    try:
        for _ in range(100):  # bounded: 100 polls of at most 0.2 s
            if len(got) >= expected:
                break
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append((m.partition(), m.value()))
        # One more short look: nothing beyond the committed records may show up.
        for _ in range(5):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append((m.partition(), m.value()))
    finally:
        c.close()
    return got


def test_commit_abort_and_fencing(ackly_process: Callable[..., BrokerProcess]) -> None:
    broker = ackly_process()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=2)])[TOPIC].result(30)

    first = producer(broker.bootstrap, "smoke-txn")
    first.begin_transaction()
    for i in range(3):
        for p in (0, 1):
            first.produce(TOPIC, value=b"commit-%d-%d" % (p, i), partition=p)
    first.commit_transaction(30)

    first.begin_transaction()
    for p in (0, 1):
        first.produce(TOPIC, value=b"abort-%d" % p, partition=p)
    first.flush(30)
    first.abort_transaction(30)

    first.begin_transaction()
    first.produce(TOPIC, value=b"left-open", partition=0)
    first.flush(30)
    # A new instance with the same transactional.id aborts the open transaction and fences the
    # first one (rule 19).
    second = producer(broker.bootstrap, "smoke-txn")
    with pytest.raises(KafkaException) as fenced:
        first.commit_transaction(30)
    assert fenced.value.args[0].fatal() or "fenced" in str(fenced.value).lower()
    second.begin_transaction()
    second.produce(TOPIC, value=b"second", partition=1)
    second.commit_transaction(30)

    got = read_committed(broker.bootstrap, 7)
    values: dict[int, list[bytes]] = {0: [], 1: []}
    for partition, value in got:
        values[partition].append(value)
    assert values[0] == [b"commit-0-%d" % i for i in range(3)]
    assert values[1] == [b"commit-1-%d" % i for i in range(3)] + [b"second"]
    watermarks: Any = None
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm", "isolation.level": "read_committed"})
    try:
        watermarks = [c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10) for p in (0, 1)]
    finally:
        c.close()
    # Every transaction is closed, so the LSO is the log end: partition 0 holds 3 records + a
    # commit marker, 1 + an abort marker, the left-open record + its abort marker (8); partition
    # 1 holds 3 + a commit marker, 1 + an abort marker, the second producer's record + a commit
    # marker (8).
    assert watermarks == [(0, 8), (0, 8)]
