"""Replication with a real client: an in-process 3-broker cluster (ackly_cluster) and
confluent-kafka (librdkafka) producing with acks=all, idempotence on, min ISR 2.

docs/guarantees.md rules 7-13 and 16-17, as a user sees them: the leader is stopped abruptly while
the producer writes; leadership moves (a new leader epoch); every acknowledged record is
consumed exactly once, in order; the stopped broker comes back and rejoins the ISR; followers'
logs are byte-identical to the leader's. With the ISR below min ISR, acks=all is refused with
NOT_ENOUGH_REPLICAS and the log does not grow, while acks=1 still works.

Each scenario runs twice (the `kit` fixture): over PLAINTEXT, and with SASL_SSL (SCRAM-SHA-512
over TLS) both on the listener the clients use and on the inter-broker listener, the brokers
authenticating to each other as their own user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.server.etcd_process import free_port
from ackly.testing.cluster import InProcessCluster

pytestmark = [pytest.mark.slow, pytest.mark.clients]

TOPIC = "replicated"


@dataclass
class Kit:
    """How a scenario starts its cluster and what its clients add to `bootstrap.servers`."""

    start: Callable[[int], InProcessCluster]
    client: dict[str, str]

    def conf(self, cluster: InProcessCluster) -> dict[str, Any]:
        return {"bootstrap.servers": cluster.bootstrap, **self.client}


@pytest.fixture(params=["plaintext", "sasl_ssl"])
def kit(request: Any, ackly_cluster: Any, tmp_path: Path) -> Kit:
    if request.param == "plaintext":
        return Kit(lambda brokers: ackly_cluster(brokers), {})
    from tests.clients.tlskit import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    properties = {
        "listener.security.protocol.map": "CLIENT:SASL_SSL,BROKER:SASL_SSL",
        "inter.broker.listener.name": "BROKER",
        "listener.name.broker.sasl.jaas.config":
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="broker-pw";',
        **tls.broker_configs(),
    }

    def start(brokers: int) -> InProcessCluster:
        # CLIENT first: the cluster's `bootstrap` is each broker's first listener. Fixed ports,
        # so that a restarted broker is found where it was.
        listeners = {b: {"listeners": f"CLIENT://127.0.0.1:{free_port()},BROKER://127.0.0.1:{free_port()}"}
                     for b in range(1, brokers + 1)}
        cluster: InProcessCluster = ackly_cluster(brokers, properties, broker_properties=listeners,
                                                  scram_users={"broker": "broker-pw", "app": "app-pw"})
        return cluster

    return Kit(start, {"security.protocol": "SASL_SSL", "ssl.ca.location": tls.ca,
                       "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app", "sasl.password": "app-pw"})


def create_topic(kit: Kit, cluster: InProcessCluster, name: str, partitions: int = 1, min_isr: int = 2) -> None:
    admin = AdminClient(kit.conf(cluster))
    futures = admin.create_topics([NewTopic(name, partitions, 3, config={"min.insync.replicas": str(min_isr)})],
                                  operation_timeout=10)
    futures[name].result(timeout=30)
    cluster.wait_until(
        lambda: all(len(s.isr) == 3 for s in [cluster.partition_state(name, p) for p in range(partitions)] if s)
        and all(cluster.partition_state(name, p) is not None for p in range(partitions)),
        what="the topic's partitions have their full ISR",
    )


def consume_all(conf: dict[str, Any], topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    """Partition 0 from its first offset. Assigned, not subscribed: a group needs
    __consumer_offsets, which a cluster creates only with offsets.topic.replication.factor (3)
    brokers alive, and the scenarios read while one is down."""
    consumer = Consumer({
        **conf, "group.id": f"check-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                continue
            values.append(message.value())
    finally:
        consumer.close()
    return values


def log_bytes(cluster: InProcessCluster, broker: int, topic: str, partition: int = 0) -> bytes:
    def read() -> bytes:
        p = cluster.server(broker).node.partition(topic, partition)
        return b"".join(s.file.read(0, s.size) for s in p.log.segments)

    return cluster.call(read)


def test_leader_killed_mid_stream_loses_no_acknowledged_record(kit: Kit) -> None:
    cluster = kit.start(3)
    create_topic(kit, cluster, TOPIC)
    leader = cluster.leader(TOPIC)
    epoch_before = cluster.partition_state(TOPIC).leader_epoch  # type: ignore[union-attr]
    acked: list[bytes] = []
    failed: list[Any] = []

    def on_delivery(err: Any, message: Any) -> None:
        if err is None:
            acked.append(message.value())
        else:
            failed.append(err)

    producer = Producer({
        **kit.conf(cluster), "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "message.timeout.ms": 60_000, "retry.backoff.ms": 50,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    total = 600
    for i in range(total):
        producer.produce(TOPIC, value=b"m%05d" % i, on_delivery=on_delivery)
        producer.poll(0)
        if i == total // 3:
            # Abrupt, with records in flight: sockets closed, no hand-over, lease revoked.
            cluster.kill(leader)
        if i % 50 == 0:
            time.sleep(0.01)  # pace the stream so the kill lands mid-stream
    assert producer.flush(60) == 0, "every record was answered"
    assert not failed, failed[:5]
    assert acked == [b"m%05d" % i for i in range(total)], "idempotent: acknowledged in send order"

    state = cluster.partition_state(TOPIC)
    assert state is not None and state.leader != leader and state.leader_epoch > epoch_before

    values = consume_all(kit.conf(cluster), TOPIC, len(acked))
    assert values == acked, "every acknowledged record exactly once, in order"

    cluster.start(leader)
    cluster.wait_until(lambda: leader in cluster.partition_state(TOPIC).isr, 60,  # type: ignore[union-attr]
                       "the restarted broker rejoins the ISR")
    new_leader = cluster.leader(TOPIC)
    cluster.wait_until(
        lambda: all(
            cluster.server(b).node.partition(TOPIC, 0).log_end_offset
            == cluster.server(new_leader).node.partition(TOPIC, 0).log_end_offset
            for b in cluster.running()
        ), 30, "followers caught up",
    )
    reference = log_bytes(cluster, new_leader, TOPIC)
    for b in cluster.running():
        assert log_bytes(cluster, b, TOPIC) == reference, f"broker {b}'s log differs from the leader's"


def test_isr_below_min_isr_refuses_acks_all_and_acks_1_still_works(kit: Kit) -> None:
    cluster = kit.start(3)
    create_topic(kit, cluster, TOPIC)
    leader = cluster.leader(TOPIC)
    for b in cluster.running():
        if b != leader:
            cluster.kill(b)
    cluster.wait_until(lambda: cluster.partition_state(TOPIC).isr == (leader,), 30,  # type: ignore[union-attr]
                       "the ISR is the leader alone")

    def leo() -> int:
        return cluster.call(lambda: cluster.server(leader).node.partition(TOPIC, 0).log_end_offset)

    before = leo()
    results: list[Any] = []
    strict = Producer({**kit.conf(cluster), "acks": "all", "retries": 0,
                       "message.timeout.ms": 10_000})
    strict.produce(TOPIC, value=b"refused", on_delivery=lambda err, msg: results.append(err))
    strict.flush(30)
    assert len(results) == 1 and results[0] is not None
    assert results[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, results[0]
    assert leo() == before, "a refused acks=all write does not reach the log"

    results.clear()
    relaxed = Producer({**kit.conf(cluster), "acks": 1})
    relaxed.produce(TOPIC, value=b"accepted", on_delivery=lambda err, msg: results.append(err))
    relaxed.flush(30)
    assert results == [None]
    assert leo() == before + 1


def test_committed_offsets_survive_the_loss_of_the_coordinators_broker(kit: Kit) -> None:
    from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, partition_for

    cluster = kit.start(3)
    create_topic(kit, cluster, "events")
    producer = Producer({**kit.conf(cluster), "acks": "all", "enable.idempotence": True})
    for i in range(100):
        producer.produce("events", value=b"e%03d" % i)
    assert producer.flush(30) == 0

    group = "survivors"
    first = Consumer({**kit.conf(cluster), "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
    first.subscribe(["events"])
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < 40 and time.monotonic() < deadline:
        message = first.poll(0.5)
        if message is not None and not message.error():
            seen.append(message.value())
    assert len(seen) >= 40
    first.commit(asynchronous=False)
    committed = len(seen)
    first.close()

    partitions = cluster.call(lambda: cluster.server(cluster.running()[0]).node.topics[OFFSETS_TOPIC].partition_count)
    coordinator = cluster.leader(OFFSETS_TOPIC, partition_for(group, partitions))
    assert coordinator in cluster.running()
    cluster.kill(coordinator)
    cluster.wait_until(lambda: cluster.leader(OFFSETS_TOPIC, partition_for(group, partitions)) not in (-1, coordinator),
                       30, "a new coordinator")

    second = Consumer({**kit.conf(cluster), "group.id": group,
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    second.subscribe(["events"])
    resumed: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(resumed) < 100 - committed and time.monotonic() < deadline:
        message = second.poll(0.5)
        if message is not None and not message.error():
            resumed.append(message.value())
    second.close()
    assert resumed == [b"e%03d" % i for i in range(committed, 100)], "resumed at the committed offset"
