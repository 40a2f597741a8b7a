"""Kafka 4's configuration surface: every topic config known with Kafka's type, default and
synonym; unsupported ones refused unless default; Kafka broker keys ignored (named once),
refused as unsupported, or unknown; Kafka's coarser synonyms and KRaft's names."""

from __future__ import annotations

import pytest

from ackly import kafka_broker_keys
from ackly.config import BROKER_CONFIGS, TOPIC_CONFIGS, BrokerConfig, TopicConfig, validate_topic_overrides
from ackly.errors import ConfigError

# Kafka 4's LogConfig: every topic config, its default as DescribeConfigs renders it, and its
# broker synonym (None: topic-only).
KAFKA_4_TOPIC_CONFIGS = {
    "cleanup.policy": ("delete", "log.cleanup.policy"),
    "compression.type": ("producer", "compression.type"),
    "compression.gzip.level": ("-1", "compression.gzip.level"),
    "compression.lz4.level": ("9", "compression.lz4.level"),
    "compression.zstd.level": ("3", "compression.zstd.level"),
    "delete.retention.ms": ("86400000", "log.cleaner.delete.retention.ms"),
    "file.delete.delay.ms": ("60000", "log.segment.delete.delay.ms"),
    "flush.messages": (str(2**63 - 1), "log.flush.interval.messages"),
    "flush.ms": (str(2**63 - 1), "log.flush.interval.ms"),
    "follower.replication.throttled.replicas": ("", None),
    "index.interval.bytes": ("4096", "log.index.interval.bytes"),
    "leader.replication.throttled.replicas": ("", None),
    "local.retention.bytes": ("-2", "log.local.retention.bytes"),
    "local.retention.ms": ("-2", "log.local.retention.ms"),
    "max.compaction.lag.ms": (str(2**63 - 1), "log.cleaner.max.compaction.lag.ms"),
    "max.message.bytes": ("1048588", "message.max.bytes"),
    "message.timestamp.after.max.ms": ("3600000", "log.message.timestamp.after.max.ms"),
    "message.timestamp.before.max.ms": (str(2**63 - 1), "log.message.timestamp.before.max.ms"),
    "message.timestamp.type": ("CreateTime", "log.message.timestamp.type"),
    "min.cleanable.dirty.ratio": ("0.5", "log.cleaner.min.cleanable.ratio"),
    "min.compaction.lag.ms": ("0", "log.cleaner.min.compaction.lag.ms"),
    "min.insync.replicas": ("1", "min.insync.replicas"),
    "preallocate": ("false", "log.preallocate"),
    "remote.log.copy.disable": ("false", None),
    "remote.log.delete.on.disable": ("false", None),
    "remote.storage.enable": ("false", None),
    "retention.bytes": ("-1", "log.retention.bytes"),
    "retention.ms": ("604800000", "log.retention.ms"),
    "segment.bytes": ("1073741824", "log.segment.bytes"),
    "segment.index.bytes": ("10485760", "log.index.size.max.bytes"),
    "segment.jitter.ms": ("0", "log.roll.jitter.ms"),
    "segment.ms": ("604800000", "log.roll.ms"),
    "unclean.leader.election.enable": ("false", "unclean.leader.election.enable"),
}


def test_every_kafka_4_topic_config_is_known_with_its_default_and_synonym() -> None:
    for name, (default, synonym) in KAFKA_4_TOPIC_CONFIGS.items():
        d = TOPIC_CONFIGS[name]
        assert (d.render(d.default), d.broker_synonym) == (default, synonym), name
        if synonym is not None:
            assert BROKER_CONFIGS[synonym].default == d.default, synonym
    defaults = BrokerConfig.from_properties({}).topic_defaults()
    for name, (default, _) in KAFKA_4_TOPIC_CONFIGS.items():
        assert TOPIC_CONFIGS[name].render(defaults.get(name)) == default, name
    # ackly's own, beside Kafka's.
    assert set(TOPIC_CONFIGS) - set(KAFKA_4_TOPIC_CONFIGS) == {"flush.policy", "flush.interval.ms"}


@pytest.mark.parametrize("key,value", [
    ("remote.storage.enable", "true"), ("local.retention.ms", "1000"),
    ("local.retention.bytes", "5"), ("remote.log.copy.disable", "true"),
    ("remote.log.delete.on.disable", "true"), ("leader.replication.throttled.replicas", "0:1"),
    ("follower.replication.throttled.replicas", "*"),
])
def test_an_unsupported_topic_config_is_refused_unless_default(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        validate_topic_overrides({key: value})
    default = TOPIC_CONFIGS[key].render(TOPIC_CONFIGS[key].default)
    validate_topic_overrides({key: default})


@pytest.mark.parametrize("key,value,why", [
    ("compression.type", "brotli", "not one of"), ("compression.gzip.level", "0", "not -1"),
    ("compression.gzip.level", "10", "not -1"), ("compression.lz4.level", "18", "above"),
    ("compression.zstd.level", "23", "above"), ("compression.zstd.level", "-131073", "below"),
    ("flush.messages", "0", "below"), ("flush.ms", "-1", "below"),
    ("segment.jitter.ms", "-1", "below"), ("preallocate", "yes", "true or false"),
    ("leader.replication.throttled.replicas", "0-1", "partitionId:brokerId"),
])
def test_kafka_validation_refuses_bad_values(key: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        validate_topic_overrides({key: value})


def test_every_codec_and_level_is_accepted() -> None:
    for codec in ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"):
        validate_topic_overrides({"compression.type": codec})
    validate_topic_overrides({"compression.gzip.level": "9", "compression.lz4.level": "17",
                              "compression.zstd.level": "-5"})


def test_flush_messages_one_is_flush_always_and_the_stronger_setting_wins() -> None:
    broker = BrokerConfig.from_properties({"log.flush.policy": "never"})
    never = TopicConfig.resolve(broker, {})
    assert not never.flush_always and never.flush_after_ms is None
    assert never.flush_after_messages is None
    assert TopicConfig.resolve(broker, {"flush.messages": "1"}).flush_always
    some = TopicConfig.resolve(broker, {"flush.messages": "100", "flush.ms": "250"})
    assert (some.flush_always, some.flush_after_messages, some.flush_after_ms) == (False, 100, 250)
    interval = TopicConfig.resolve(broker, {"flush.policy": "interval", "flush.interval.ms": "500",
                                            "flush.ms": "2000"})
    assert interval.flush_after_ms == 500  # the earlier of the two
    # flush.policy=always is never weakened by Kafka's keys.
    assert TopicConfig.resolve(broker, {"flush.policy": "always", "flush.messages": "1000"}).flush_always
    # The broker-wide synonyms apply to every topic without its own value.
    assert BrokerConfig.from_properties({"log.flush.interval.messages": "1"}).topic_defaults().flush_always


def test_kafka_broker_keys_are_ignored_refused_as_unsupported_or_unknown() -> None:
    config = BrokerConfig.from_properties({"num.network.threads": "3", "num.io.threads": "8",
                                           "socket.send.buffer.bytes": "102400",
                                           "principal.builder.class": kafka_broker_keys.UNSUPPORTED[
                                               "principal.builder.class"][0]})
    assert config.ignored == ("num.io.threads", "num.network.threads", "socket.send.buffer.bytes")
    with pytest.raises(ConfigError, match="plugin classes"):
        BrokerConfig.from_properties({"create.topic.policy.class.name": "com.example.Policy"})
    with pytest.raises(ConfigError, match="tiered storage"):
        BrokerConfig.from_properties({"remote.log.storage.system.enable": "true"})
    with pytest.raises(ConfigError, match="unknown broker config"):
        BrokerConfig.from_properties({"num.network.thread": "3"})
    with pytest.raises(ConfigError, match="unknown broker config"):
        BrokerConfig.from_properties({"zookeeper.connect": "localhost:2181"})  # not Kafka 4's
    # No key is in two tables.
    assert not kafka_broker_keys.IGNORED & set(BROKER_CONFIGS)
    assert not set(kafka_broker_keys.UNSUPPORTED) & (set(BROKER_CONFIGS) | kafka_broker_keys.IGNORED)


def test_coarser_synonyms_fill_the_finer_key_as_kafka_does() -> None:
    hours = BrokerConfig.from_properties({"log.retention.hours": "24", "log.roll.hours": "1",
                                          "log.roll.jitter.hours": "1"})
    assert hours.get("log.retention.ms") == 86_400_000
    assert hours.topic_defaults().segment_ms == 3_600_000
    assert hours.topic_defaults().segment_jitter_ms == 3_600_000
    assert "log.retention.ms" in hours.explicit  # described as the static broker setting
    minutes = BrokerConfig.from_properties({"log.retention.hours": "24", "log.retention.minutes": "5"})
    assert minutes.get("log.retention.ms") == 300_000  # minutes win over hours
    ms = BrokerConfig.from_properties({"log.retention.minutes": "5", "log.retention.ms": "7"})
    assert ms.get("log.retention.ms") == 7
    forever = BrokerConfig.from_properties({"log.retention.hours": "-1"})
    assert forever.get("log.retention.ms") == -1


def test_node_id_log_dirs_and_controller_listeners() -> None:
    config = BrokerConfig.from_properties({
        "node.id": "4", "log.dirs": "/var/lib/kafka",
        "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners": "PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    })
    assert config.broker_id == 4
    assert config.log_dir == "/var/lib/kafka"
    assert config.get("listeners") == "PLAINTEXT://127.0.0.1:9092"
    assert config.get("advertised.listeners") == "PLAINTEXT://localhost:9092"
    assert BrokerConfig.from_properties({"log.dir": "/d"}).log_dir == "/d"
    assert BrokerConfig.from_properties({}).log_dir is None
    with pytest.raises(ConfigError, match="one data directory"):
        BrokerConfig.from_properties({"log.dirs": "/a,/b"})
    with pytest.raises(ConfigError, match=r"differs from broker\.id"):
        BrokerConfig.from_properties({"node.id": "1", "broker.id": "2"})
    BrokerConfig.from_properties({"node.id": "2", "broker.id": "2"})


def test_the_data_directory_comes_from_data_dir_or_log_dirs() -> None:
    from ackly.cli.main import _data_dir

    assert _data_dir(None, None) == "./data"
    assert _data_dir(None, "/var/lib/kafka") == "/var/lib/kafka"
    assert _data_dir("/var/lib/kafka/", "/var/lib/kafka") == "/var/lib/kafka/"
    with pytest.raises(ConfigError, match="give one"):
        _data_dir("/elsewhere", "/var/lib/kafka")
