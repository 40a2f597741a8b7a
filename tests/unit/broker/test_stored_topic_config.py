"""A stored topic config that does not validate keeps the topic's partitions offline; nothing
falls back to the broker's defaults. A key this version does not know is ignored, as Kafka's
LogConfig.fromProps ignores it."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from ackly.broker.node import BrokerNode
from ackly.cluster.store import Put
from ackly.config import BrokerConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import RealDisk
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches
from ackly.types import TopicPartition

NOW_MS = 1_700_000_000_000


def make_node(data_dir: Path) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=RealDisk(), data_dir=str(data_dir),
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


def append(node: BrokerNode, topic: str, value: bytes) -> None:
    p = node.leader_partition(topic, 0)
    data = bytearray(encode_batch([Record(key=None, value=value)], now_ms=NOW_MS))
    p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
    node.after_append(p, NOW_MS)
    jobs = node.take_flush_jobs()
    for _, job in jobs:
        job.run()
    node.complete_flush(jobs, NOW_MS)


def store_configs(node: BrokerNode, topic: str, configs: dict[str, str]) -> None:
    """Write a topic's stored configs as another writer would (a newer version, a hand edit):
    straight into the metadata store, past the validation of AlterConfigs."""
    store = node._local_store
    assert store is not None
    info = dataclasses.replace(node.metadata.topics[topic], configs=configs)
    store.submit("other-writer", Put(1, node.member.keys.topic(topic), info.encode()))
    store.drain("other-writer")
    node.pump(NOW_MS)


def offline_error(node: BrokerNode, topic: str) -> str:
    with pytest.raises(KafkaError) as caught:
        node.leader_partition(topic, 0)
    assert caught.value.code == ErrorCode.kafka_storage_error
    return str(caught.value)


def test_a_bad_stored_value_keeps_the_partitions_offline_across_restarts(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("t", 1, {"min.insync.replicas": "1", "retention.ms": "-1"}, NOW_MS)
    append(node, "t", b"kept")
    store_configs(node, "t", {"min.insync.replicas": "abc", "retention.ms": "-1"})

    message = offline_error(node, "t")
    assert "'t'" in message and "min.insync.replicas='abc'" in message, message
    assert TopicPartition("t", 0) not in node.replicas.partitions
    with pytest.raises(KafkaError):  # no effective config at all, not the broker's defaults
        _ = node.topics["t"].config
    node.close()

    again = make_node(tmp_path)  # the durable store keeps the bad value: still offline
    assert "min.insync.replicas='abc'" in offline_error(again, "t")
    assert TopicPartition("t", 0) not in again.replicas.partitions

    fixed: list[ErrorCode] = []
    again.admin.alter_configs("t", {"min.insync.replicas": "1", "retention.ms": "-1"}, NOW_MS, 10_000,
                              lambda code, _message: fixed.append(code))
    again.pump(NOW_MS)
    assert fixed == [ErrorCode.none]
    p = again.leader_partition("t", 0)
    assert (p.log_end_offset, p.high_watermark) == (1, 1), "the log was kept while offline"
    assert p.config.retention_ms == -1 and p.config.min_insync_replicas == 1
    append(again, "t", b"after")
    again.close()


def test_a_value_turning_bad_at_run_time_takes_the_partition_offline(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("t", 1, {}, NOW_MS)
    append(node, "t", b"one")
    store_configs(node, "t", {"cleanup.policy": "shred"})
    assert "cleanup.policy='shred'" in offline_error(node, "t")
    store_configs(node, "t", {"cleanup.policy": "delete"})
    assert node.leader_partition("t", 0).log_end_offset == 1
    node.close()


def test_an_unknown_stored_key_is_ignored_and_the_rest_applies(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.create_topic("u", 1, {}, NOW_MS)
    store_configs(node, "u", {"retention.ms": "-1", "min.insync.replicas": "2",
                              "a.key.from.a.newer.version": "x"})
    config = node.leader_partition("u", 0).config
    assert config.retention_ms == -1 and config.min_insync_replicas == 2, "no key fell back"
    assert "a.key.from.a.newer.version" not in config.overrides
    node.close()
    again = make_node(tmp_path)
    assert again.leader_partition("u", 0).config.min_insync_replicas == 2
    again.close()


def test_in_a_cluster_every_replica_stays_offline_until_the_config_is_fixed(tmp_path: Path) -> None:
    """Three brokers (core_cluster.py): the bad value reaches every broker through the shared
    store; none opens a replica, the leader answers KAFKA_STORAGE_ERROR, and a fixed value
    brings every replica back with the data and the ISR it had."""
    from .core_cluster import CoreCluster, batch, log_values
    from .test_cluster_core import create, produce, result

    def send(value: bytes) -> ErrorCode:
        return result(c.wait(produce(c, c.leader("t"), "t", batch(value))))[0]

    c = CoreCluster(tmp_path, [1, 2, 3])
    assert create(c, 1, "t", rf=3, configs={"min.insync.replicas": "2"}).topics[0].error_code == 0
    c.settle()
    assert send(b"one") == ErrorCode.none
    c.settle()

    def store(configs: dict[str, str]) -> None:
        info = dataclasses.replace(c.node(1).metadata.topics["t"], configs=configs)
        c.store.submit("other-writer", Put(1, c.node(1).member.keys.topic("t"), info.encode()))
        c.store.drain("other-writer")
        c.settle()

    store({"min.insync.replicas": "two"})
    for b in c.running:
        assert TopicPartition("t", 0) not in c.node(b).replicas.partitions
    assert send(b"refused") == ErrorCode.kafka_storage_error

    store({"min.insync.replicas": "2"})
    c.until(lambda: all(TopicPartition("t", 0) in c.node(b).replicas.partitions for b in c.running))
    c.until(lambda: set(c.state("t").isr) == {1, 2, 3})
    assert send(b"two") == ErrorCode.none
    c.settle()
    assert all(log_values(c.node(b), "t") == [b"one", b"two"] for b in c.running)
