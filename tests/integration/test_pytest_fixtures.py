"""The pytest plugin's fixtures as a user's suite uses them (docs/testing.md).

In-process brokers: each test here costs a few tens of milliseconds, except those that drive
confluent-kafka (marked slow and clients).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from ackly.errors import ErrorCode
from ackly.testing.cluster_processes import wait_until
from ackly.testing.inprocess import InProcessBroker
from ackly.testing.topics import TopicError
from ackly.testing.topics import create_topic as create_topic_on
from ackly.testing.topics import read_topic as read_topic_on
from ackly.testing.wire import WireClient
from tests.integration.wire_requests import batch, metadata, produce


def _flush_policy(broker: InProcessBroker) -> str:
    return str(broker.call(lambda: broker.server.config.get("log.flush.policy")))  # type: ignore[union-attr]


def test_create_topic_then_read_topic_round_trip(create_topic, read_topic, bootstrap_servers) -> None:
    topic = create_topic(partitions=3)
    with WireClient(bootstrap_servers) as client:
        for partition in range(3):
            response = client.request(produce(topic, batch(b"a%d" % partition, b"b%d" % partition),
                                              partition=partition))
            assert response.responses[0].partition_responses[0].error_code == 0
        described = client.request(metadata(topic, auto_create=False)).topics[0]
    assert len(described.partitions) == 3
    records = read_topic(topic)
    assert [(r.partition, r.offset, r.value) for r in records] == [
        (p, o, v) for p in range(3) for o, v in enumerate((b"a%d" % p, b"b%d" % p))
    ]
    assert read_topic(topic, partitions=[1])[0].value == b"a1"


def test_create_topic_names_a_fresh_topic_and_refuses_an_existing_one(create_topic) -> None:
    first, second = create_topic(), create_topic()
    assert first != second
    with pytest.raises(TopicError, match="TOPIC_ALREADY_EXISTS"):
        create_topic(first)
    with pytest.raises(TopicError, match=r"INVALID_CONFIG|INVALID_REQUEST"):
        create_topic(configs={"cleanup.policy": "sometimes"})


def test_read_topic_of_an_unknown_topic_is_an_error(read_topic) -> None:
    with pytest.raises(TopicError, match="UNKNOWN_TOPIC_OR_PARTITION"):
        read_topic("no-such-topic", timeout_s=0.5)


def test_default_broker_config(ackly_broker) -> None:
    assert _flush_policy(ackly_broker) == "always"


@pytest.mark.ackly_config({"log.flush.policy": "never"})
def test_marker_sets_broker_configs(ackly_broker, bootstrap_servers) -> None:
    assert bootstrap_servers == ackly_broker.bootstrap
    assert _flush_policy(ackly_broker) == "never"


@pytest.mark.parametrize("ackly_broker_config", [{"log.flush.policy": "interval"}, {}], indirect=True)
def test_indirect_parametrization_sets_broker_configs(ackly_broker, ackly_broker_config) -> None:
    assert _flush_policy(ackly_broker) == ackly_broker_config.get("log.flush.policy", "always")


_SESSION_PORTS: set[str] = set()


@pytest.mark.parametrize("run", [1, 2])
def test_session_broker_is_shared_by_the_session(ackly_session_broker, run: int) -> None:
    _SESSION_PORTS.add(ackly_session_broker.bootstrap)
    assert len(_SESSION_PORTS) == 1


@pytest.mark.slow
@pytest.mark.clients
def test_real_client_topic_configs_and_read_committed(create_topic, read_topic, bootstrap_servers) -> None:
    topic = create_topic(partitions=2, configs={"cleanup.policy": "compact", "retention.ms": "60000"})
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    resource = ConfigResource("topic", topic)
    described = admin.describe_configs([resource])[resource].result(10)
    assert described["cleanup.policy"].value == "compact"
    assert described["retention.ms"].value == "60000"

    producer = Producer({"bootstrap.servers": bootstrap_servers, "transactional.id": "t-fixtures",
                         "linger.ms": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted", partition=0)
    producer.flush(10)
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed", partition=0, headers=[("h", b"1")])
    producer.commit_transaction(10)

    # The commit's markers are written after EndTxn answers (as in Kafka), so the last stable
    # offset passes the transaction a moment later.
    deadline = time.monotonic() + 10
    committed = read_topic(topic, isolation="read_committed")
    while not committed and time.monotonic() < deadline:
        time.sleep(0.02)
        committed = read_topic(topic, isolation="read_committed")
    assert [(r.partition, r.key, r.value, r.headers) for r in committed] == [(0, b"k", b"committed", (("h", b"1"),))]
    assert [r.value for r in read_topic(topic)] == [b"aborted", b"committed"]

    # And what a client reads agrees with the helper.
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "g-fixtures",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    try:
        consumer.subscribe([topic])
        message = None
        for _ in range(100):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"committed"
        assert message.offset() == committed[0].offset
    finally:
        consumer.close()


@pytest.mark.slow
def test_cluster_cut_between_two_brokers_shrinks_then_heals_the_isr(ackly_cluster) -> None:
    cluster = ackly_cluster(3, {"replica.lag.time.max.ms": "1000"}, peer_faults=True)
    topic = create_topic_on(cluster.bootstrap, partitions=1, replication_factor=3)
    cluster.wait_until(lambda: len(_isr(cluster, topic)) == 3, 20, "full ISR")
    leader = cluster.leader(topic)
    follower = next(b for b in cluster.broker_ids if b != leader)
    other = next(b for b in cluster.broker_ids if b not in (leader, follower))

    cluster.cut(leader, follower)
    # A follower leaves the ISR once it lags the leader's LEO for replica.lag.time.max.ms
    # (Kafka's Partition.isFollowerOutOfSync): give the leader a record it cannot fetch.
    with WireClient(f"127.0.0.1:{cluster.ports[leader]}") as client:
        answer = client.request(produce(topic, batch(b"during the cut"), acks=1))
        assert answer.responses[0].partition_responses[0].error_code == 0
    cluster.wait_until(lambda: _isr(cluster, topic) == {leader, other}, 20, "the cut follower leaves the ISR")
    # Clients still reach every broker, and the helpers still work through the proxy.
    with WireClient(cluster.bootstrap.split(",")[0]) as client:
        assert client.request(metadata(topic, auto_create=False)).topics[0].error_code == 0

    cluster.heal(leader, follower)
    cluster.wait_until(lambda: len(_isr(cluster, topic)) == 3, 20, "the follower rejoins the ISR")

    cluster.restart(other)
    cluster.wait_until(lambda: len(_isr(cluster, topic)) == 3, 20, "the restarted broker rejoins the ISR")
    assert [r.value for r in read_topic_on(cluster.bootstrap, topic)] == [b"during the cut"]


def _isr(cluster, topic: str) -> set[int]:
    state = cluster.partition_state(topic)
    return set() if state is None else set(state.isr)


PROCESS_FAILOVER = {
    "broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "1000", "replica.fetch.wait.max.ms": "100",
}


@pytest.mark.slow
def test_process_cluster_kill_restart_pause_and_cut(ackly_cluster_processes) -> None:
    """One cluster fixture with every lever a user's failover test pulls."""
    cluster = ackly_cluster_processes(3, configs=PROCESS_FAILOVER, peer_faults=True)
    topic = create_topic_on(cluster.bootstrap, partitions=1, replication_factor=3)

    def isr() -> set[int]:
        view = cluster.partition(topic)
        return set() if view is None else set(view.isr)

    def leader() -> int:
        view = cluster.partition(topic)
        return -1 if view is None else view.leader

    wait_until(lambda: isr() == {0, 1, 2}, 30, "full ISR")
    first = leader()
    follower, other = (b for b in range(3) if b != first)

    def write(value: bytes) -> None:
        # As a client does: NOT_LEADER_OR_FOLLOWER (the metadata read named a broker that has
        # not taken, or has just handed over, the leadership, e.g. the preferred leader coming
        # back after a restart) means ask again for the leader, within a bound.
        deadline = time.monotonic() + 30
        while True:
            with WireClient(cluster.address(leader())) as client:
                answer = client.request(produce(topic, batch(value), acks=1))
            code = answer.responses[0].partition_responses[0].error_code
            if code != ErrorCode.not_leader_or_follower or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert code == 0

    cluster.cut(first, follower)
    write(b"cut")
    wait_until(lambda: isr() == {first, other}, 30, "the cut follower leaves the ISR")
    cluster.heal(first, follower)
    wait_until(lambda: isr() == {0, 1, 2}, 30, "the follower rejoins after the heal")

    cluster.pause(first)  # alive, answering nothing: its session expires, leadership moves
    wait_until(lambda: leader() not in (-1, first), 30, "a new leader while the old one is paused")
    cluster.resume(first)

    second = leader()
    cluster.kill(second)
    wait_until(lambda: leader() not in (-1, second), 30, "a new leader after the kill")
    cluster.restart(second)
    write(b"after")
    wait_until(lambda: isr() == {0, 1, 2}, 30, "every broker back in the ISR")
    assert [r.value for r in read_topic_on(cluster.bootstrap, topic)] == [b"cut", b"after"]
