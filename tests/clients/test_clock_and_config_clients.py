"""Real clients against the two clocks and a stored topic config that does not validate.

The broker's deadlines run on a monotonic clock, but the times Kafka stores are wall-clock
times: a LogAppendTime record read back by confluent-kafka carries the broker's wall time.
A topic whose stored config does not validate is offline: kafka-python's producer hears
KAFKA_STORAGE_ERROR, and librdkafka's admin client hears why DescribeConfigs cannot answer.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from kafka import KafkaProducer
from kafka.errors import KafkaStorageError

from ackly.broker.node import BrokerNode
from ackly.cluster.store import Put
from ackly.testing.inprocess import InProcessBroker

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TIMEOUT_S = 30


def create(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=configs)])[name].result(TIMEOUT_S)


def test_log_append_time_is_the_brokers_wall_clock(ackly_broker: InProcessBroker) -> None:
    create(ackly_broker.bootstrap, "appended", {"message.timestamp.type": "LogAppendTime"})
    before_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": ackly_broker.bootstrap})
    producer.produce("appended", b"v", timestamp=1_000)  # replaced by the broker's time
    assert producer.flush(TIMEOUT_S) == 0
    after_ms = int(time.time() * 1000)
    consumer = Consumer({"bootstrap.servers": ackly_broker.bootstrap, "group.id": "clock",
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["appended"])
        deadline = time.monotonic() + TIMEOUT_S
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
        assert msg is not None and msg.error() is None
        kind, timestamp_ms = msg.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before_ms - 1_000 <= timestamp_ms <= after_ms + 1_000, (before_ms, timestamp_ms)
    finally:
        consumer.close()


def _store_configs(node: BrokerNode, topic: str, configs: dict[str, str]) -> None:
    """As a newer version or a hand edit would: straight into the metadata store."""
    store = node._local_store
    assert store is not None
    info = dataclasses.replace(node.metadata.topics[topic], configs=configs)
    store.submit("other-writer", Put(1, node.member.keys.topic(topic), info.encode()))
    store.drain("other-writer")
    node.pump(0)


def test_a_topic_with_a_bad_stored_config_is_offline_to_clients(ackly_broker: InProcessBroker) -> None:
    create(ackly_broker.bootstrap, "misconfigured", {"min.insync.replicas": "1"})
    assert ackly_broker.server is not None
    ackly_broker.call(_store_configs, ackly_broker.server.node, "misconfigured",
                      {"min.insync.replicas": "abc"})

    producer = KafkaProducer(bootstrap_servers=ackly_broker.bootstrap, retries=0,
                             request_timeout_ms=5_000, max_block_ms=10_000)
    try:
        with pytest.raises(KafkaStorageError):
            producer.send("misconfigured", b"refused").get(timeout=TIMEOUT_S)
    finally:
        producer.close()

    admin = AdminClient({"bootstrap.servers": ackly_broker.bootstrap})
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "misconfigured")]).values()
    with pytest.raises(KafkaException) as caught:
        future.result(TIMEOUT_S)
    assert "min.insync.replicas='abc'" in str(caught.value)
