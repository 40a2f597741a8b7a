"""Kafka's topic configuration surface through real admin clients, on one broker per module.

confluent-kafka (librdkafka) and kafka-python create topics with every compression.type and
with a dozen common configs at once, read them back with DescribeConfigs (values, sources,
synonyms), alter them incrementally (cleanup.policy APPEND and SUBTRACT), and hear
INVALID_CONFIG "not supported" for a config ackly knows but does not implement. Then records
go through broker-side recompression: an lz4 producer into a zstd topic, read back by both
clients, while a raw Fetch shows the stored batches are zstd with a valid CRC.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewTopic as KpNewTopic

from tests.clients.clientkit import (
    CODEC_IDS,
    assert_same_records,
    base_timestamp_ms,
    ck_admin,
    ck_consume,
    ck_create_topic,
    ck_produce,
    fetch_batches,
    kp_consume,
    kp_produce,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(90)]

TIMEOUT_S = 15
COMMON = {
    "cleanup.policy": "delete", "retention.ms": "3600000", "retention.bytes": "104857600",
    "segment.bytes": "16777216", "segment.ms": "600000", "segment.jitter.ms": "1000",
    "max.message.bytes": "2097152", "min.insync.replicas": "1",
    "message.timestamp.type": "CreateTime", "compression.type": "zstd",
    "compression.zstd.level": "6", "flush.messages": "1", "flush.ms": "1000",
    "preallocate": "false", "delete.retention.ms": "3600000",
    "unclean.leader.election.enable": "false",
}


def describe(admin, topic: str) -> dict[str, ConfigEntry]:  # type: ignore[no-untyped-def]
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)  # type: ignore[no-any-return]


def test_librdkafka_creates_with_every_codec_and_a_dozen_configs_and_reads_them_back(
        shared_broker) -> None:  # type: ignore[no-untyped-def]
    admin = ck_admin(shared_broker.bootstrap)
    codecs = ["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]
    topics = {unique_topic(f"codec-{c}"): {"compression.type": c} for c in codecs}
    common = unique_topic("common")
    topics[common] = COMMON
    futures = admin.create_topics([NewTopic(name, 1, 1, config=cfg) for name, cfg in topics.items()],
                                  operation_timeout=10)
    for f in futures.values():
        f.result(timeout=TIMEOUT_S)
    for name, cfg in topics.items():
        assert describe(admin, name)["compression.type"].value == cfg["compression.type"]
    entries = describe(admin, common)
    for key, value in COMMON.items():
        entry = entries[key]
        assert entry.value == value, key
        assert entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, key
        # The chain as Kafka lists it: the topic's value, then the broker default's synonym.
        assert next(iter(entry.synonyms)) == key, (key, list(entry.synonyms))
    assert entries["flush.messages"].synonyms["log.flush.interval.messages"].source == \
        ConfigSource.DEFAULT_CONFIG.value
    assert entries["retention.ms"].synonyms["log.retention.ms"].value == "604800000"
    # Not given: Kafka's defaults, as DEFAULT_CONFIG.
    assert entries["compression.lz4.level"].value == "9"
    assert entries["compression.lz4.level"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["remote.storage.enable"].value == "false"
    assert entries["local.retention.ms"].value == "-2"


def test_a_config_that_is_not_supported_is_refused_with_invalid_config(shared_broker) -> None:  # type: ignore[no-untyped-def]
    admin = ck_admin(shared_broker.bootstrap)
    topic = unique_topic("tiered")
    future = admin.create_topics([NewTopic(topic, 1, 1, config={"remote.storage.enable": "true"})],
                                 operation_timeout=10)[topic]
    with pytest.raises(KafkaException) as caught:
        future.result(timeout=TIMEOUT_S)
    err = caught.value.args[0]
    assert err.name() == "INVALID_CONFIG" and "not supported" in err.str(), err
    # Its default is accepted (tools send every config of a template).
    ck_create_topic(admin, topic, 1, {"remote.storage.enable": "false",
                                      "leader.replication.throttled.replicas": ""})


def test_incremental_alter_appends_and_subtracts_list_items(shared_broker) -> None:  # type: ignore[no-untyped-def]
    admin = ck_admin(shared_broker.bootstrap)
    topic = unique_topic("policy")
    ck_create_topic(admin, topic, 1)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ConfigEntry("compression.type", "lz4", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("flush.ms", "500", incremental_operation=AlterConfigOpType.SET),
    ])
    admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    entries = describe(admin, topic)
    assert entries["cleanup.policy"].value == "delete,compact"
    assert (entries["compression.type"].value, entries["flush.ms"].value) == ("lz4", "500")
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
        ConfigEntry("flush.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    entries = describe(admin, topic)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["flush.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # A level out of Kafka's range is refused and nothing of the resource changes.
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("compression.zstd.level", "99", incremental_operation=AlterConfigOpType.SET),
    ])
    with pytest.raises(KafkaException, match=r"compression\.zstd\.level"):
        admin.incremental_alter_configs([resource])[resource].result(timeout=TIMEOUT_S)
    assert describe(admin, topic)["compression.type"].value == "lz4"


def test_kafka_python_creates_describes_and_alters(shared_broker) -> None:  # type: ignore[no-untyped-def]
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        topics = {unique_topic(f"kp-{c}"): c for c in ("gzip", "snappy", "lz4", "zstd", "uncompressed")}
        admin.create_topics([KpNewTopic(name, 1, 1, topic_configs={
            "compression.type": codec, "compression.gzip.level": "9", "segment.jitter.ms": "5",
        }) for name, codec in topics.items()])
        described = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, name)
                                            for name in topics], include_synonyms=True,
                                           config_filter="all")
        for name, codec in topics.items():
            entries = described["topic"][name]
            assert entries["compression.type"]["value"] == codec
            assert entries["compression.type"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
            assert entries["compression.gzip.level"]["value"] == "9"
            assert entries["segment.jitter.ms"]["synonyms"] == [
                {"name": "segment.jitter.ms", "value": "5", "source": "DYNAMIC_TOPIC_CONFIG"},
                {"name": "log.roll.jitter.ms", "value": "0", "source": "DEFAULT_CONFIG"}]
        name = next(iter(topics))
        # IncrementalAlterConfigs (kafka-python's default): APPEND to a list, SET one key.
        admin.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, name, configs={
            "cleanup.policy": ("APPEND", "compact"), "compression.type": "lz4"})])
        entries = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, name)],
                                         config_filter="all")["topic"][name]
        assert entries["cleanup.policy"]["value"] == "delete,compact"
        assert (entries["compression.type"]["value"], entries["compression.gzip.level"]["value"]
                ) == ("lz4", "9")
        # SUBTRACT, and DELETE back to the broker default.
        admin.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, name, configs={
            "cleanup.policy": ("SUBTRACT", "delete"), "compression.gzip.level": ("DELETE", None)})])
        entries = admin.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, name)],
                                         config_filter="all")["topic"][name]
        assert entries["cleanup.policy"]["value"] == "compact"
        assert entries["compression.gzip.level"]["value"] == "-1"
        assert entries["compression.gzip.level"]["config_source"] == "DEFAULT_CONFIG"
    finally:
        admin.close()


def test_an_lz4_producer_into_a_zstd_topic_stores_zstd_and_every_record_reads_back(
        shared_broker) -> None:  # type: ignore[no-untyped-def]
    bootstrap = shared_broker.bootstrap
    admin = ck_admin(bootstrap)
    topic = unique_topic("recompress")
    ck_create_topic(admin, topic, 2, {"compression.type": "zstd", "compression.zstd.level": "9"})
    records = sample_records(partitions=2, per_partition=30, base_ts_ms=base_timestamp_ms(),
                             value_bytes=1024)
    ck_produce(bootstrap, topic, records[:30], acks="all", **{"compression.type": "lz4",
                                                             "linger.ms": 50})
    kp_produce(bootstrap, topic, records[30:], acks="all", compression_type="lz4", linger_ms=50)
    for partition in range(2):
        batches = fetch_batches(bootstrap, topic, partition)
        assert sum(b.records_count for b in batches) == 30
        assert all(b.crc_ok for b in batches), batches
        assert {b.codec for b in batches} == {CODEC_IDS["zstd"]}, batches
        assert len(batches) < 30, "one record per batch: nothing was compressed"
        # Offsets inside the new batches run on without a gap.
        assert [b.base_offset for b in batches] == [0] + [
            b.base_offset + b.last_offset_delta + 1 for b in batches[:-1]]
    assert_same_records(records, ck_consume(bootstrap, topic, 2, len(records)))
    assert_same_records(records, kp_consume(bootstrap, topic, 2, len(records)))


def test_an_uncompressed_topic_stores_what_a_gzip_producer_sends_uncompressed(
        shared_broker) -> None:  # type: ignore[no-untyped-def]
    bootstrap = shared_broker.bootstrap
    admin = ck_admin(bootstrap)
    topic = unique_topic("plain")
    ck_create_topic(admin, topic, 1, {"compression.type": "uncompressed"})
    records = sample_records(partitions=1, per_partition=20, base_ts_ms=base_timestamp_ms(),
                             value_bytes=300)
    kp_produce(bootstrap, topic, records, acks="all", compression_type="gzip", linger_ms=50)
    batches = fetch_batches(bootstrap, topic, 0)
    assert {b.codec for b in batches} == {0} and all(b.crc_ok for b in batches)
    assert_same_records(records, ck_consume(bootstrap, topic, 1, len(records)))


def _delivery_errors(bootstrap: str, topic: str, values: list[bytes], codec: str) -> list[str]:
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                         "linger.ms": 50, "enable.idempotence": False, "retries": 0,
                         "message.timeout.ms": 10_000})
    errors: list[str] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(
            err.name() if err is not None else "NO_ERROR"))
    assert producer.flush(TIMEOUT_S) == 0
    return errors


def test_max_message_bytes_is_per_topic_and_holds_after_recompression(shared_broker) -> None:  # type: ignore[no-untyped-def]
    bootstrap = shared_broker.bootstrap
    admin = ck_admin(bootstrap)
    small = unique_topic("small")
    ck_create_topic(admin, small, 1, {"max.message.bytes": "2000"})
    assert _delivery_errors(bootstrap, small, [b"x" * 5000], "none") == ["MSG_SIZE_TOO_LARGE"]
    assert _delivery_errors(bootstrap, small, [b"y" * 500], "none") == ["NO_ERROR"]
    # 20 compressible records: about 200 bytes as gzip, 6 KB once the topic stores them
    # uncompressed, which is over its limit (Kafka checks the rebuilt batch too).
    inflating = unique_topic("inflating")
    ck_create_topic(admin, inflating, 1, {"max.message.bytes": "2000",
                                          "compression.type": "uncompressed"})
    values = [b"%03d" % i + b"z" * 297 for i in range(20)]
    assert set(_delivery_errors(bootstrap, inflating, values, "gzip")) == {"MSG_SIZE_TOO_LARGE"}
    assert fetch_batches(bootstrap, inflating, 0) == []  # nothing of it was written
