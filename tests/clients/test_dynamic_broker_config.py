"""confluent-kafka's IncrementalAlterConfigs on a BROKER resource: a dynamic key changes every
topic that follows the default at once, survives a kill -9 and a restart, and a static key
is refused as Kafka refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)

from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TIMEOUT_S = 30


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(str(tmp_path / "data"), configs={"log.retention.ms": "5000"}).start()
    try:
        yield proc
    finally:
        proc.kill()


def _alter_broker(admin: AdminClient, *entries: ConfigEntry) -> None:
    resource = ConfigResource(ResourceType.BROKER, "0", incremental_configs=list(entries))
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)


def _retention(admin: AdminClient, topic: str) -> tuple[str, ConfigSource]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entry = admin.describe_configs([resource])[resource].result(TIMEOUT_S)["retention.ms"]
    return entry.value, ConfigSource(entry.source)


def test_a_dynamic_default_applies_now_and_after_a_restart(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("dyn", 1, 1)])["dyn"].result(TIMEOUT_S)
    assert _retention(admin, "dyn") == ("5000", ConfigSource.STATIC_BROKER_CONFIG)

    _alter_broker(admin, ConfigEntry("log.retention.ms", "9000",
                                     incremental_operation=AlterConfigOpType.SET))
    assert _retention(admin, "dyn") == ("9000", ConfigSource.DYNAMIC_BROKER_CONFIG)

    broker.restart()  # kill -9, then the same command line
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert _retention(admin, "dyn") == ("9000", ConfigSource.DYNAMIC_BROKER_CONFIG)

    _alter_broker(admin, ConfigEntry("log.retention.ms", None,
                                     incremental_operation=AlterConfigOpType.DELETE))
    assert _retention(admin, "dyn") == ("5000", ConfigSource.STATIC_BROKER_CONFIG)


def test_a_static_key_is_refused(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(KafkaException) as excinfo:
        _alter_broker(admin, ConfigEntry("log.segment.bytes", "1048576",
                                         incremental_operation=AlterConfigOpType.SET))
    error = excinfo.value.args[0]
    assert error.code() == KafkaError.INVALID_REQUEST
    assert "Cannot update these configs dynamically" in error.str()
