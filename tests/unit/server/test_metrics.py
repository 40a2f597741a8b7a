"""The admin listener's pieces without processes: histograms, error counting in responses,
ISR change counting, the cluster-health view, and the collector's cardinality limit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ackly.broker.stats import BrokerStats
from ackly.cluster.health import cluster_health
from ackly.cluster.metadata import NO_LEADER, BrokerInfo, ClusterMetadata, ControllerInfo, PartitionState, TopicInfo
from ackly.config import BrokerConfig, parse_host_port
from ackly.errors import ConfigError, ErrorCode
from ackly.server.metrics import BrokerCollector, Histogram, RequestMetrics
from ackly.testing.inprocess import InProcessBroker
from ackly.types import TopicPartition


def test_histogram_buckets_are_cumulative_and_sum_the_observations() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 5.0):
        h.observe(value)
    assert h.buckets() == [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.sum_s == 6.05


@dataclass
class _Partition:
    partition_index: int
    error_code: int = 0


@dataclass
class _Topic:
    name: str
    partitions: tuple[_Partition, ...] = field(default_factory=tuple)


@dataclass
class _Response:
    error_code: int = 0
    topics: tuple[_Topic, ...] = field(default_factory=tuple)


def test_error_codes_are_counted_at_every_level_of_a_response_but_not_none() -> None:
    rm = RequestMetrics()
    rm.count_errors(0, _Response(topics=(
        _Topic("a", (_Partition(0, int(ErrorCode.not_leader_or_follower)), _Partition(1))),
        _Topic("b", (_Partition(0, int(ErrorCode.not_leader_or_follower)),)),
    )))
    rm.count_errors(3, _Response(error_code=int(ErrorCode.unknown_topic_or_partition)))
    rm.count_errors(3, _Response())
    assert rm.errors == {("Produce", "NOT_LEADER_OR_FOLLOWER"): 2, ("Metadata", "UNKNOWN_TOPIC_OR_PARTITION"): 1}


def test_request_latency_is_per_api_and_unknown_keys_share_one_label() -> None:
    rm = RequestMetrics()
    rm.observe(1, 0.002)
    rm.observe(1, 0.2)
    rm.observe(9999, 0.001)
    assert rm.requests == {"Fetch": 2, "unknown": 1}
    assert rm.latency["Fetch"].counts[-1] == 0 and sum(rm.latency["Fetch"].counts) == 2


def test_isr_changes_count_shrinks_and_expands() -> None:
    stats = BrokerStats()
    stats.on_isr_change(frozenset({0, 1, 2}), frozenset({0, 1}))
    stats.on_isr_change(frozenset({0, 1}), frozenset({0, 1, 2}))
    stats.on_isr_change(frozenset({0, 1}), frozenset({0, 2}))  # one out, one in: both
    stats.on_isr_change(frozenset({0}), frozenset({0}))
    assert (stats.isr_shrinks, stats.isr_expands) == (2, 2)


def test_topic_series_are_dropped_with_their_topic() -> None:
    stats = BrokerStats()
    stats.topic("a").bytes_in += 5
    stats.topic("b").bytes_in += 7
    stats.forget_topics({"b"})
    assert set(stats.traffic) == {"b"}


def _view() -> ClusterMetadata:
    m = ClusterMetadata()
    rev = 1
    for b in (0, 1):  # broker 2 is down
        m = m.with_broker(BrokerInfo(b, "127.0.0.1", 9092 + b), rev)
        rev += 1
    m = m.with_controller(ControllerInfo(0), rev)
    topic = TopicInfo("t", uuid.uuid4(), ((0, 1, 2), (0, 1, 2), (2,), (0, 1)))
    m = m.with_topic(topic, rev + 1)
    states = [
        PartitionState(topic.topic_id, (0, 1, 2), (0, 1), 0),  # under-replicated, at min ISR 2
        PartitionState(topic.topic_id, (0, 1, 2), (0,), 0),  # under-replicated, under min ISR
        PartitionState(topic.topic_id, (2,), (2,), NO_LEADER),  # offline, in sync otherwise
        PartitionState(topic.topic_id, (0, 1), (0, 1), 1),  # healthy, at min ISR
    ]
    for i, state in enumerate(states):
        m = m.with_partition(TopicPartition("t", i), state, rev + 2 + i)
    return m


def test_cluster_health_names_brokers_down_and_each_kind_of_partition_problem() -> None:
    health = cluster_health(_view(), lambda topic: 2)
    assert health.brokers == [0, 1] and health.controller_id == 0
    assert health.brokers_down == [2]
    assert health.offline == [TopicPartition("t", 2)]
    assert health.under_replicated == [TopicPartition("t", 0), TopicPartition("t", 1)]
    assert health.under_min_isr == [TopicPartition("t", 1), TopicPartition("t", 2)]
    assert health.at_min_isr == [TopicPartition("t", 0), TopicPartition("t", 3)]
    assert health.preferred_imbalance == 1, "t-3 is led by its second replica"
    assert not health.healthy
    reasons = " / ".join(health.reasons())
    assert "brokers down: 2" in reasons and "1 leaderless" in reasons and "2 under-replicated" in reasons


def test_a_view_without_problems_is_healthy() -> None:
    m = ClusterMetadata().with_broker(BrokerInfo(0, "h", 1), 1).with_controller(ControllerInfo(0), 2)
    topic = TopicInfo("t", uuid.uuid4(), ((0,),))
    m = m.with_topic(topic, 3).with_partition(TopicPartition("t", 0), PartitionState(topic.topic_id, (0,), (0,), 0), 4)
    health = cluster_health(m, lambda topic: 1)
    assert health.healthy and health.reasons() == [] and health.to_json()["is_healthy"] is True


def test_admin_listener_config_is_checked_at_start_up() -> None:
    assert parse_host_port("127.0.0.1:9644") == ("127.0.0.1", 9644)
    assert parse_host_port("[::1]:0") == ("::1", 0)
    assert BrokerConfig.from_properties({"admin.listener": ""}).get("admin.listener") == ""
    for bad, why in (("9644", "is not host:port"), ("localhost:http", "not a port number"),
                     ("h:70000", "out of range")):
        try:
            BrokerConfig.from_properties({"admin.listener": bad})
        except ConfigError as exc:
            assert "admin.listener" in str(exc) and why in str(exc), exc
        else:
            raise AssertionError(f"{bad!r} was accepted")


def _scrape(collector: BrokerCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_collector_reads_the_node_and_caps_per_topic_and_per_partition_series(tmp_path) -> None:
    broker = InProcessBroker(str(tmp_path), {"num.partitions": "2"}).start()
    try:
        server = broker.server
        assert server is not None

        def setup() -> None:
            node = server.node
            for name in ("a", "b", "c"):
                node.create_topic(name, 2, {}, server.now_ms())
                node.stats.topic(name).bytes_in += 10

        broker.call(setup)
        wide = broker.call(lambda: _scrape(BrokerCollector(server, max_topics=10, max_partition_series=100)))
        assert {labels["topic"] for labels, _ in wide["ackly_topic_bytes_in_total"]} == {"a", "b", "c"}
        assert len(wide["ackly_log_size_bytes"]) == 6
        assert wide["ackly_leader_partitions"] == [({}, 6.0)]
        assert wide["ackly_under_replicated_partitions"] == [({}, 0.0)]
        assert wide["ackly_active_controller"] == [({}, 1.0)]
        assert {labels["operation"] for labels, _ in wide["ackly_purgatory_size"]} == {
            "Produce", "Fetch", "CoordinatorWrite", "TxnMarkers", "Other"}
        assert wide["ackly_metrics_series_dropped"] == [({}, 0.0)]

        narrow = broker.call(lambda: _scrape(BrokerCollector(server, max_topics=2, max_partition_series=4)))
        assert "ackly_topic_bytes_in_total" not in narrow, "per-topic series off above the topic limit"
        assert narrow["ackly_bytes_in_total"] == [({}, 30.0)], "the aggregate stays"
        assert len(narrow["ackly_log_size_bytes"]) == 4
        assert narrow["ackly_metrics_series_dropped"] == [({}, 3.0 + 2.0)]
    finally:
        broker.stop()


def test_ackly_cluster_gives_each_broker_its_own_admin_port() -> None:
    from ackly.cli.cluster import per_broker_configs

    configs = ["admin.listener=127.0.0.1:9644", "num.partitions=3"]
    assert per_broker_configs(configs, 0) == configs
    assert per_broker_configs(configs, 2) == ["admin.listener=127.0.0.1:9646", "num.partitions=3"]
    assert per_broker_configs(["admin.listener=127.0.0.1:0"], 2) == ["admin.listener=127.0.0.1:0"]
