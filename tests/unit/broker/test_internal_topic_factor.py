"""Internal topics get their configured replication factor (offsets.topic.replication.factor,
transaction.state.log.replication.factor, broker/groups.py): in a cluster with fewer live
brokers than the factor the coordinator is not available (COORDINATOR_NOT_AVAILABLE, as in
Kafka), and once enough brokers are alive the topic is created with the full factor. A lone
broker (no metadata store) creates them with its one replica."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.groups import ensure_offsets_topic
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC
from ackly.coordinator.transaction_coordinator import TRANSACTION_STATE_TOPIC
from ackly.errors import ErrorCode
from ackly.log.disk import RealDisk
from ackly.types import TopicPartition

from .core_cluster import START_MS, CoreCluster

FIND_COORDINATOR = 10
GROUP_KEY, TXN_KEY = 0, 1
PROPS = {
    "offsets.topic.replication.factor": "3", "offsets.topic.num.partitions": "2",
    "transaction.state.log.replication.factor": "3", "transaction.state.log.num.partitions": "2",
    "transaction.state.log.min.isr": "2",
}


def find(c: CoreCluster, broker: int, key: str, key_type: int) -> Any:
    return c.wait(c.call(broker, FIND_COORDINATOR, 3, key=key, key_type=key_type))


@pytest.mark.parametrize(("key_type", "topic"), [(GROUP_KEY, OFFSETS_TOPIC),
                                                 (TXN_KEY, TRANSACTION_STATE_TOPIC)])
def test_coordinator_not_available_until_the_factor_of_brokers_is_alive(
        tmp_path: Path, key_type: int, topic: str) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3], PROPS, start=False)
    c.start(1)
    c.start(2)
    c.settle()
    for _ in range(3):
        r = find(c, 1, "k", key_type)
        assert ErrorCode(r.error_code) is ErrorCode.coordinator_not_available
        assert "replication.factor=3" in r.error_message
        c.advance(200)
    assert c.state(topic, 0) is None, "never created with fewer replicas"

    c.start(3)
    for _ in range(100):
        r = find(c, 1, "k", key_type)
        if ErrorCode(r.error_code) is ErrorCode.none:
            break
        c.advance(100)
    assert ErrorCode(r.error_code) is ErrorCode.none
    for partition in range(2):
        state = c.state(topic, partition)
        assert state is not None and len(state.replicas) == 3, state
    if topic == TRANSACTION_STATE_TOPIC:
        config = c.node(1).topic_config(topic)
        assert config.min_insync_replicas == 2


def test_a_lone_broker_creates_the_internal_topics_with_its_one_replica(tmp_path: Path) -> None:
    node = BrokerNode(config=BrokerConfig.from_properties({**PROPS, "broker.id": "0"}), disk=RealDisk(),
                      data_dir=str(tmp_path), host="127.0.0.1", port=9092, now_ms=START_MS,
                      rng=random.Random(0))
    ensure_offsets_topic(node, START_MS)
    node.transactions.ensure_topic(START_MS)
    for topic in (OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC):
        state = node.metadata.partition(TopicPartition(topic, 0))
        assert state is not None and list(state.replicas) == [0]
    assert node.topic_config(TRANSACTION_STATE_TOPIC).min_insync_replicas == 1
