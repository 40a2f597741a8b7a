"""Admin APIs with real clients against a real `ackly serve` process.

confluent-kafka (librdkafka) drives CreatePartitions, DeleteRecords, DescribeConfigs,
AlterConfigs, IncrementalAlterConfigs and DescribeCluster; kafka-python's KafkaAdminClient
drives DescribeConfigs, AlterConfigs (legacy and incremental) and CreatePartitions.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TIMEOUT_S = 30
WEEK_MS = str(7 * 24 * 3600 * 1000)


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    return {"log.segment.bytes": "1048576"}


@pytest.fixture
def broker(shared_broker: BrokerProcess) -> BrokerProcess:
    """One broker for the module: every test names topics of its own and changes only their
    configs, never the broker's."""
    return shared_broker


@pytest.fixture
def admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(admin: AdminClient, name: str, partitions: int = 1,
           configs: dict[str, str] | None = None) -> None:
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})])
    futures[name].result(TIMEOUT_S)


def partition_count(admin: AdminClient, name: str) -> int:
    return len(admin.list_topics(name, timeout=TIMEOUT_S).topics[name].partitions)


def topic_configs(admin: AdminClient, name: str) -> dict[str, Any]:
    resource = ConfigResource(ResourceType.TOPIC, name)
    (future,) = admin.describe_configs([resource]).values()
    result: dict[str, Any] = future.result(TIMEOUT_S)
    return result


def single_result(futures: dict[Any, Any]) -> Any:
    (future,) = futures.values()
    return future.result(TIMEOUT_S)


def kafka_error(excinfo: pytest.ExceptionInfo[KafkaException]) -> KafkaError:
    error = excinfo.value.args[0]
    assert isinstance(error, KafkaError)
    return error


# --- confluent-kafka ----------------------------------------------------------------------

def test_create_partitions(admin: AdminClient) -> None:
    create(admin, "grow", 1)
    single_result(admin.create_partitions([NewPartitions("grow", 3)]))
    assert partition_count(admin, "grow") == 3
    with pytest.raises(KafkaException) as excinfo:
        single_result(admin.create_partitions([NewPartitions("grow", 2)]))
    assert kafka_error(excinfo).code() == KafkaError.INVALID_PARTITIONS
    with pytest.raises(KafkaException) as excinfo:
        single_result(admin.create_partitions([NewPartitions("no-such-topic", 2)]))
    assert kafka_error(excinfo).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    single_result(admin.create_partitions([NewPartitions("grow", 8)], validate_only=True))
    assert partition_count(admin, "grow") == 3


def test_delete_records(broker: BrokerProcess, admin: AdminClient) -> None:
    create(admin, "trim", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                         "linger.ms": 0})
    failures: list[Any] = []
    for i in range(10):
        producer.produce("trim", value=b"record-%d" % i, partition=0,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
        producer.flush(TIMEOUT_S)  # one batch per record: offsets 0..9 in separate batches
    assert not failures
    deleted = single_result(admin.delete_records([TopicPartition("trim", 0, 4)]))
    assert deleted.low_watermark == 4
    low, high = _watermarks(broker, "trim")
    assert (low, high) == (4, 10)
    with pytest.raises(KafkaException) as excinfo:
        single_result(admin.delete_records([TopicPartition("trim", 0, 11)]))
    assert kafka_error(excinfo).code() == KafkaError.OFFSET_OUT_OF_RANGE
    # -1 (OFFSET_END) means "up to the high watermark"
    deleted = single_result(admin.delete_records([TopicPartition("trim", 0, -1)]))
    assert deleted.low_watermark == 10


def _watermarks(broker: BrokerProcess, topic: str) -> tuple[int, int]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks",
                         "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S)
        return int(low), int(high)
    finally:
        consumer.close()


def test_describe_topic_and_broker_configs(admin: AdminClient) -> None:
    create(admin, "described", 1, {"retention.ms": "3600000"})
    configs = topic_configs(admin, "described")
    retention = configs["retention.ms"]
    assert retention.value == "3600000"
    assert ConfigSource(retention.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not retention.is_read_only
    segment = configs["segment.bytes"]
    assert segment.value == "1048576"
    assert ConfigSource(segment.source) == ConfigSource.STATIC_BROKER_CONFIG
    policy = configs["cleanup.policy"]
    assert (policy.value, ConfigSource(policy.source)) == ("delete", ConfigSource.DEFAULT_CONFIG)

    broker_resource = ConfigResource(ResourceType.BROKER, "0")
    broker_configs = single_result(admin.describe_configs([broker_resource]))
    assert broker_configs["broker.id"].value == "0"
    broker_segment = broker_configs["log.segment.bytes"]
    assert broker_segment.value == "1048576"
    assert ConfigSource(broker_segment.source) == ConfigSource.STATIC_BROKER_CONFIG
    assert broker_segment.is_read_only

    with pytest.raises(KafkaException) as excinfo:
        topic_configs(admin, "no-such-topic")
    assert kafka_error(excinfo).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_alter_configs_replaces_overrides(admin: AdminClient) -> None:
    create(admin, "legacy", 1, {"segment.ms": "60000"})
    resource = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "1000"})
    single_result(admin.alter_configs([resource]))
    configs = topic_configs(admin, "legacy")
    assert configs["retention.ms"].value == "1000"
    assert configs["segment.ms"].value == WEEK_MS  # not named, so reset (legacy semantics)
    assert ConfigSource(configs["segment.ms"].source) == ConfigSource.DEFAULT_CONFIG

    bad = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "abc"})
    with pytest.raises(KafkaException) as excinfo:
        single_result(admin.alter_configs([bad]))
    error = kafka_error(excinfo)
    assert error.code() == KafkaError.INVALID_CONFIG
    assert "retention.ms" in error.str()
    assert topic_configs(admin, "legacy")["retention.ms"].value == "1000"

    broker_resource = ConfigResource(ResourceType.BROKER, "0",
                                     set_config={"log.retention.ms": "1000"})
    with pytest.raises(KafkaException) as excinfo:
        single_result(admin.alter_configs([broker_resource]))
    assert kafka_error(excinfo).code() == KafkaError.INVALID_REQUEST


def _incremental(admin: AdminClient, topic: str, *entries: ConfigEntry) -> None:
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    single_result(admin.incremental_alter_configs([resource]))


def test_incremental_alter_configs_set_then_delete(admin: AdminClient) -> None:
    create(admin, "incr", 1, {"segment.ms": "60000"})
    _incremental(admin, "incr",
                 ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET))
    configs = topic_configs(admin, "incr")
    assert configs["retention.ms"].value == "1000"
    assert configs["segment.ms"].value == "60000"  # untouched
    _incremental(admin, "incr",
                 ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE))
    retention = topic_configs(admin, "incr")["retention.ms"]
    assert retention.value == WEEK_MS
    assert ConfigSource(retention.source) == ConfigSource.DEFAULT_CONFIG
    _incremental(admin, "incr", ConfigEntry("cleanup.policy", "compact",
                                            incremental_operation=AlterConfigOpType.APPEND))
    assert topic_configs(admin, "incr")["cleanup.policy"].value == "delete,compact"


def test_incremental_alter_configs_refuses_bad_values(admin: AdminClient) -> None:
    create(admin, "strict", 1, {"retention.ms": "5000"})
    with pytest.raises(KafkaException) as excinfo:
        _incremental(
            admin, "strict",
            ConfigEntry("segment.ms", "1234", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", "abc", incremental_operation=AlterConfigOpType.SET),
        )
    error = kafka_error(excinfo)
    assert error.code() == KafkaError.INVALID_CONFIG
    assert "retention.ms" in error.str() and "not an integer" in error.str()
    configs = topic_configs(admin, "strict")
    assert configs["retention.ms"].value == "5000"
    assert configs["segment.ms"].value == WEEK_MS  # the good entry was not applied either


def test_describe_cluster(broker: BrokerProcess, admin: AdminClient) -> None:
    # librdkafka answers describe_cluster from a Metadata request (v10+), not DescribeCluster;
    # kafka-python's test below is the one that sends DescribeCluster (key 60).
    result = admin.describe_cluster().result(TIMEOUT_S)
    assert result.cluster_id
    assert result.controller.id == 0
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(0, "127.0.0.1", broker.port)]


# --- kafka-python -------------------------------------------------------------------------

def test_kafka_python_admin(broker: BrokerProcess, admin: AdminClient) -> None:
    from kafka.admin import ConfigResource as KpResource
    from kafka.admin import KafkaAdminClient

    create(admin, "kp", 1, {"segment.ms": "60000"})
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="admin-test")
    try:
        described = client.describe_configs([KpResource("TOPIC", "kp")], config_filter="all")
        configs = described["topic"]["kp"]
        assert configs["segment.ms"]["value"] == "60000"
        assert configs["segment.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert configs["retention.ms"]["config_source"] == "DEFAULT_CONFIG"

        broker_described = client.describe_configs([KpResource("BROKER", "0")],
                                                   config_filter="all")
        assert broker_described["broker"]["0"]["log.segment.bytes"]["value"] == "1048576"

        # Legacy AlterConfigs: kafka-python re-sends the other modified keys itself.
        result = client.alter_configs([KpResource("TOPIC", "kp", {"retention.ms": "2000"})],
                                      incremental=False)
        assert result == {"topic": {"kp": "OK"}}
        # Incremental (the default when the broker offers it).
        result = client.alter_configs([KpResource("TOPIC", "kp", {"retention.bytes": "4096"})])
        assert result == {"topic": {"kp": "OK"}}
        configs = client.describe_configs([KpResource("TOPIC", "kp")])["topic"]["kp"]
        assert {k: v["value"] for k, v in configs.items()} == {
            "segment.ms": "60000", "retention.ms": "2000", "retention.bytes": "4096",
        }

        result = client.alter_configs([KpResource("TOPIC", "kp", {"retention.ms": "abc"})],
                                      incremental=False)
        assert "InvalidConfigurationError" in result["topic"]["kp"]
        assert "retention.ms" in result["topic"]["kp"]

        client.create_partitions({"kp": 4})
        assert partition_count(admin, "kp") == 4

        cluster = client.describe_cluster()  # DescribeCluster (key 60)
        assert cluster["cluster_id"] == admin.list_topics(timeout=TIMEOUT_S).cluster_id
        assert cluster["controller_id"] == 0
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
            (0, "127.0.0.1", broker.port)
        ]
        assert "DESCRIBE" in cluster["authorized_operations"]  # no authorizer: all allowed
    finally:
        client.close()
    assert topic_configs(admin, "kp")["retention.ms"].value == "2000"
