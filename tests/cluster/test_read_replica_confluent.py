"""Fetching from the closest replica (KIP-392) with a real client: an in-process 3-broker
cluster in racks a, b and c with the rack-aware replica selector, and a confluent-kafka
(librdkafka) consumer with `client.rack` set to a follower's rack. The leader sends it to that
follower, which serves every record; the leader serves none."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.config import RACK_AWARE_REPLICA_SELECTOR
from ackly.testing.cluster import InProcessCluster

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TOPIC = "nearby"
RACKS = {1: "a", 2: "b", 3: "c"}
COUNT = 200


def _bytes_out(cluster: InProcessCluster, broker: int) -> int:
    return cluster.call(lambda: cluster.server(broker).node.stats.topic(TOPIC).bytes_out)


def test_a_consumer_reads_every_record_from_the_follower_in_its_rack(ackly_cluster: Any) -> None:
    cluster: InProcessCluster = ackly_cluster(
        3, {"replica.selector.class": RACK_AWARE_REPLICA_SELECTOR},
        broker_properties={b: {"broker.rack": rack} for b, rack in RACKS.items()})
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(timeout=30)
    cluster.wait_until(lambda: (s := cluster.partition_state(TOPIC)) is not None and len(s.isr) == 3,
                       what="the ISR is whole")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(COUNT):
        producer.produce(TOPIC, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    leader = cluster.leader(TOPIC)
    follower = next(b for b in RACKS if b != leader)

    consumer = Consumer({
        "bootstrap.servers": cluster.bootstrap, "group.id": "near", "client.rack": RACKS[follower],
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.queue.backoff.ms": 0,
    })
    try:
        consumer.subscribe([TOPIC])
        seen: list[bytes] = []
        for _ in range(300):
            if len(seen) == COUNT:
                break
            msg = consumer.poll(0.2)
            if msg is not None:
                assert msg.error() is None, msg.error()
                seen.append(msg.value())
    finally:
        consumer.close()
    assert seen == [f"v{i}".encode() for i in range(COUNT)]
    assert _bytes_out(cluster, follower) > 0, "the follower in the consumer's rack served it"
    assert _bytes_out(cluster, leader) == 0, "the leader sent it there instead of serving it"
