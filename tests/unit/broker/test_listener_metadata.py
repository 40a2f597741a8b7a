"""Addresses by listener: Metadata, DescribeCluster and FindCoordinator answer each broker's
endpoint on the listener the request came in on (Kafka's MetadataCache rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kio.schema.metadata.v5.request import MetadataRequestTopic as MetadataRequestTopicV5
from kio.schema.metadata.v12.request import MetadataRequestTopic

from ackly.errors import ErrorCode
from ackly.listeners import Listener

from .core_cluster import CoreCluster
from .test_cluster_core import create

METADATA, FIND_COORDINATOR, DESCRIBE_CLUSTER = 3, 10, 60


def cluster(tmp_path: Path) -> CoreCluster:
    """Brokers 1 and 2 have an EXTERNAL listener; broker 3 only the INTERNAL one."""
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"}, start=False)
    for b in (1, 2, 3):
        internal = Listener("INTERNAL", "127.0.0.1", 19000 + b, "PLAINTEXT")
        external = Listener("EXTERNAL", f"b{b}.example", 29000 + b, "SSL")
        c.endpoints[b] = (internal, external) if b != 3 else (internal,)
        c.start(b)
    c.settle()
    return c


def metadata(c: CoreCluster, broker: int, listener: str) -> Any:
    return c.wait(c.call(broker, METADATA, 12, listener_name=listener,
                         topics=(MetadataRequestTopic(topic_id=None, name="t"),),
                         allow_auto_topic_creation=False, include_topic_authorized_operations=False))


def test_each_listener_sees_its_own_addresses_and_not_the_brokers_without_it(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    create(c, 1, "t", partitions=6, rf=1)
    c.until(lambda: all(c.state("t", p) is not None for p in range(6)))
    internal = metadata(c, 1, "INTERNAL")
    assert sorted((int(b.node_id), b.host, int(b.port)) for b in internal.brokers) == [
        (1, "127.0.0.1", 19001), (2, "127.0.0.1", 19002), (3, "127.0.0.1", 19003)]
    assert all(p.error_code == ErrorCode.none for p in internal.topics[0].partitions)

    external = metadata(c, 2, "EXTERNAL")
    assert sorted((int(b.node_id), b.host, int(b.port)) for b in external.brokers) == [
        (1, "b1.example", 29001), (2, "b2.example", 29002)]
    on_three = [p for p in external.topics[0].partitions
                if c.state("t", int(p.partition_index)).leader == 3]
    assert on_three, "placement put no partition on broker 3"
    for p in on_three:
        assert (p.error_code, int(p.leader_id)) == (ErrorCode.listener_not_found, -1)
    for p in external.topics[0].partitions:
        if p not in on_three:
            assert p.error_code == ErrorCode.none and int(p.leader_id) in (1, 2)


def test_before_v6_a_leader_without_the_listener_is_leader_not_available(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    create(c, 1, "t", partitions=6, rf=1)
    c.until(lambda: all(c.state("t", p) is not None for p in range(6)))
    response = c.wait(c.call(1, METADATA, 5, listener_name="EXTERNAL",
                             topics=(MetadataRequestTopicV5(name="t"),), allow_auto_topic_creation=False))
    codes = {int(p.partition_index): p.error_code for p in response.topics[0].partitions}
    for index, code in codes.items():
        expected = ErrorCode.leader_not_available if c.state("t", index).leader == 3 else ErrorCode.none
        assert code == expected


def test_describe_cluster_and_find_coordinator_answer_on_the_listener(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    described = c.wait(c.call(1, DESCRIBE_CLUSTER, 1, listener_name="EXTERNAL",
                              include_cluster_authorized_operations=False, endpoint_type=1))
    assert sorted((int(b.broker_id), b.host) for b in described.brokers) == [
        (1, "b1.example"), (2, "b2.example")]

    def coordinator(key: str, listener: str) -> Any:
        return c.wait(c.call(1, FIND_COORDINATOR, 3, listener_name=listener, key=key, key_type=0))

    coordinator("g", "INTERNAL")  # creates __consumer_offsets
    c.until(lambda: all(c.state("__consumer_offsets", p) is not None for p in range(50)))
    c.settle(2000)
    seen: dict[int, Any] = {}
    for i in range(60):
        key = f"group-{i}"
        internal = coordinator(key, "INTERNAL")
        assert internal.error_code == ErrorCode.none
        seen[int(internal.node_id)] = (key, internal)
    assert set(seen) == {1, 2, 3}
    for broker, (key, internal) in seen.items():
        external = coordinator(key, "EXTERNAL")
        assert (internal.host, int(internal.port)) == ("127.0.0.1", 19000 + broker)
        if broker == 3:
            assert external.error_code == ErrorCode.coordinator_not_available
        else:
            assert (external.error_code, external.host, int(external.port)) == (
                ErrorCode.none, f"b{broker}.example", 29000 + broker)

