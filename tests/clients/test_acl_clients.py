"""ACLs with real clients against real brokers, all as User:ANONYMOUS (the principal of every
PLAINTEXT connection until authentication exists): `ackly acl add|list|remove` drives
CreateAcls, DescribeAcls and DeleteAcls through confluent-kafka's AdminClient; confluent-kafka
producers and consumers meet Kafka's errors. The brokers run Kafka's StandardAuthorizer
settings with allow.everyone.if.no.acl.found=true, so that ANONYMOUS may manage ACLs while
no ACL names the cluster (the way to start before authenticated super users exist)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.testing.broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]

TIMEOUT_S = 30
ACL_CONFIGS = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}


def acl_cli(bootstrap: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "ackly", "acl", *args, "--bootstrap", bootstrap],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def create(bootstrap: str, name: str, replication_factor: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, replication_factor)])[name].result(TIMEOUT_S)


def produce_error(bootstrap: str, topic: str, acks: str = "all") -> int | None:
    """Produce one message; its delivery error code, or None when it was acknowledged."""
    outcome: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "message.timeout.ms": 20_000})
    producer.produce(topic, b"v", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(TIMEOUT_S)
    assert len(outcome) == 1, "no delivery report"
    return None if outcome[0] is None else int(outcome[0].code())


def consume_outcome(bootstrap: str, topic: str) -> int | bytes:
    """The first message's value, or the first error code the consumer reports."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return int(msg.error().code())
            value: bytes = msg.value()
            return value
        raise AssertionError("nothing consumed and no error within the deadline")
    finally:
        consumer.close()


@pytest.fixture
def broker(ackly_process: Callable[..., BrokerProcess]) -> BrokerProcess:
    return ackly_process(configs=ACL_CONFIGS)


def test_a_deny_write_acl_refuses_produce_until_it_is_removed(broker: BrokerProcess) -> None:
    create(broker.bootstrap, "orders")
    assert produce_error(broker.bootstrap, "orders") is None
    added = acl_cli(broker.bootstrap, "add", "--deny-principal", "User:ANONYMOUS", "--operation", "WRITE",
                    "--topic", "orders")
    assert added == ["added\tTOPIC\torders\tLITERAL\tUser:ANONYMOUS\t*\tWRITE\tDENY"]
    assert acl_cli(broker.bootstrap, "list") == [added[0].removeprefix("added\t")]
    assert produce_error(broker.bootstrap, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Once an ACL names the topic, allow.everyone.if.no.acl.found no longer applies to it:
    # ANONYMOUS, allowed nothing on it, may not read it either (Kafka's rule).
    assert consume_outcome(broker.bootstrap, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    removed = acl_cli(broker.bootstrap, "remove", "--topic", "orders", "--resource-pattern-type", "ANY")
    assert removed == [added[0].replace("added", "removed", 1)]
    assert acl_cli(broker.bootstrap, "list") == []
    assert produce_error(broker.bootstrap, "orders") is None


def test_a_prefixed_allow_read_lets_anonymous_consume(broker: BrokerProcess) -> None:
    create(broker.bootstrap, "pfx-data")
    assert produce_error(broker.bootstrap, "pfx-data") is None
    # An ACL for someone else on the prefix: the topic now has ACLs, and ANONYMOUS has none.
    acl_cli(broker.bootstrap, "add", "--allow-principal", "User:bob", "--operation", "READ",
            "--topic", "pfx-", "--resource-pattern-type", "PREFIXED")
    assert consume_outcome(broker.bootstrap, "pfx-data") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    acl_cli(broker.bootstrap, "add", "--allow-principal", "User:ANONYMOUS", "--operation", "READ",
            "--topic", "pfx-", "--resource-pattern-type", "PREFIXED")
    assert consume_outcome(broker.bootstrap, "pfx-data") == b"v"
    match = acl_cli(broker.bootstrap, "list", "--topic", "pfx-data", "--resource-pattern-type", "MATCH")
    assert len(match) == 2 and all("\tPREFIXED\t" in line for line in match)


def test_acls_reach_every_broker_of_a_cluster_within_a_second(ackly_cluster_processes: Any) -> None:
    """Three brokers on etcd with the authorizer: replication (acks=all, min ISR 2) works, and
    an ACL written through one broker is enforced by another within a second."""
    cluster = ackly_cluster_processes(3, configs={**ACL_CONFIGS, "min.insync.replicas": "2"})
    bootstrap = cluster.bootstrap
    create(bootstrap, "replicated", replication_factor=3)
    assert produce_error(bootstrap, "replicated") is None
    ids = sorted(cluster.brokers)
    first, second = cluster.address(ids[0]), cluster.address(ids[1])
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    watcher = AdminClient({"bootstrap.servers": second})
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    assert watcher.describe_acls(everything).result(TIMEOUT_S) == []  # connected before the change
    acl_cli(first, "add", "--deny-principal", "User:ANONYMOUS", "--operation", "WRITE", "--topic", "replicated")
    started = time.monotonic()
    while not watcher.describe_acls(everything).result(TIMEOUT_S):
        assert time.monotonic() - started < 1.0, "the ACL did not reach the second broker within 1 s"
        time.sleep(0.02)
    assert produce_error(bootstrap, "replicated") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_kafka_python_manages_acls_and_meets_them(broker: BrokerProcess) -> None:
    """kafka-python's KafkaAdminClient speaks CreateAcls, DescribeAcls and DeleteAcls too, and
    its producer sees TOPIC_AUTHORIZATION_FAILED under a DENY."""
    from kafka import KafkaProducer
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import TopicAuthorizationFailedError

    create(broker.bootstrap, "kp")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    deny = ACL("User:ANONYMOUS", "*", ACLOperation.WRITE, ACLPermissionType.DENY,
               ResourcePattern(ResourceType.TOPIC, "kp", ACLResourcePatternType.LITERAL))
    assert admin.create_acls([deny])["failed"] == []
    everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    listed, _ = admin.describe_acls(everything)
    assert [(a.principal, a.operation, a.permission_type) for a in listed] == [
        ("User:ANONYMOUS", ACLOperation.WRITE, ACLPermissionType.DENY)]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("kp", b"v").get(timeout=TIMEOUT_S)
    finally:
        producer.close()
    ((_, deleted, _),) = admin.delete_acls([everything])
    assert len(deleted) == 1
    assert admin.describe_acls(everything)[0] == []
    admin.close()


def test_kcat_meets_a_deny(broker: BrokerProcess) -> None:
    def kcat(*args: str, data: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=data, capture_output=True,
                              text=True, timeout=TIMEOUT_S)

    if subprocess.run(["which", "kcat"], capture_output=True).returncode != 0:
        pytest.skip("kcat is not installed")
    assert kcat("-P", "-t", "kc", data="a\n").returncode == 0
    acl_cli(broker.bootstrap, "add", "--deny-principal", "User:ANONYMOUS", "--operation", "WRITE", "--topic", "kc")
    denied = kcat("-P", "-t", "kc", data="b\n")
    assert denied.returncode != 0 and "Topic authorization failed" in denied.stderr
    # The topic now has an ACL and ANONYMOUS no ALLOW on it: reading is refused as well.
    consumed = kcat("-C", "-t", "kc", "-e", "-o", "beginning")
    assert consumed.returncode != 0 and "Topic authorization failed" in consumed.stderr
