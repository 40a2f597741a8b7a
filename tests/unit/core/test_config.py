import pytest

from ackly.config import BrokerConfig, Source, TopicConfig, parse_properties
from ackly.errors import ConfigError


def test_topic_config_falls_back_to_broker_synonym_then_default() -> None:
    broker = BrokerConfig.from_properties({"log.retention.ms": "1000"})
    cfg = TopicConfig.resolve(broker, {"segment.bytes": "2048"})
    assert cfg.retention_ms == 1000
    assert cfg.segment_bytes == 2048
    assert cfg.flush_policy == "always"
    assert cfg.source_of("segment.bytes", broker) is Source.TOPIC
    assert cfg.source_of("retention.ms", broker) is Source.BROKER_STATIC
    assert cfg.source_of("retention.bytes", broker) is Source.DEFAULT


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("retention.ms", "abc", "not an integer"),
        ("retention.ms", "-5", "below the minimum"),
        ("flush.policy", "sometimes", "not one of"),
        ("cleanup.policy", "delete,shred", "not one of"),
        ("unclean.leader.election.enable", "yes", "not true or false"),
        ("no.such.config", "1", "unknown topic config"),
    ],
)
def test_bad_topic_configs_are_refused_with_key_and_reason(key: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        TopicConfig.resolve(BrokerConfig.from_properties({}), {key: value})
    assert info.value.key == key


def test_bad_broker_config_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_properties({"socket.request.max.bytes": "lots"})
    assert "socket.request.max.bytes" in str(info.value)
    with pytest.raises(ConfigError, match="unknown broker config"):
        BrokerConfig.from_properties({"num.partition": "3"})


def test_parse_properties() -> None:
    assert parse_properties(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_properties(["novalue"])
