"""SASL in a cluster: the credentials live in etcd, so a user written offline by `ackly users
set --metadata etcd://...` before the brokers start, or online through one broker, is known
to every broker. Two brokers, each with a PLAINTEXT inter-broker listener and a SASL_PLAINTEXT
client listener; confluent-kafka produces with acks=all to a replicated topic and consumes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism
from confluent_kafka.admin import UserScramCredentialUpsertion as Upsertion

from ackly.testing.cluster_processes import ClusterProcesses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]


def users(*args: str, stdin: str = "") -> str:
    proc = subprocess.run([sys.executable, "-m", "ackly", "users", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def sasl_conf(cluster: ClusterProcesses, broker_id: int, user: str, password: str) -> dict[str, Any]:
    port = cluster.brokers[broker_id].listener_ports["SASL_PLAINTEXT"]
    return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password}


def test_credentials_in_etcd_serve_every_broker(etcd_server: Any, tmp_path: Any) -> None:
    url = etcd_server.client_url
    users("set", "admin", "--password-stdin", "--metadata", url, stdin="admin-pw\n")
    assert "admin\tSCRAM-SHA-512\titerations=4096" in users("list", "--metadata", url)
    cluster = ClusterProcesses(os.path.join(str(tmp_path), "cluster"), 2, etcd=etcd_server, configs={
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "inter.broker.listener.name": "PLAINTEXT",
    })
    cluster.start()
    try:
        topic = f"sasl-{uuid.uuid4().hex[:8]}"
        admin = AdminClient(sasl_conf(cluster, 0, "admin", "admin-pw"))
        admin.create_topics([NewTopic(topic, 1, 2, config={"min.insync.replicas": "2"})])[topic].result(30)
        # A user added online through broker 0 authenticates at broker 1 (etcd's watch).
        for future in admin.alter_user_scram_credentials([
            Upsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"erin-pw"),
        ]).values():
            future.result(30)
        producer = Producer({**sasl_conf(cluster, 1, "erin", "erin-pw"), "acks": "all",
                             "message.timeout.ms": 20_000})
        for i in range(10):
            producer.produce(topic, f"m{i}".encode(), partition=0)
        assert producer.flush(30) == 0
        consumer = Consumer({**sasl_conf(cluster, 1, "admin", "admin-pw"), "group.id": f"g-{topic}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
            if len(got) == 10:
                break
        consumer.close()
        assert got == [f"m{i}".encode() for i in range(10)]
        assert "erin\tSCRAM-SHA-512" in users("list", "--metadata", url)
    finally:
        cluster.stop_all()


def test_three_brokers_with_sasl_ssl_between_them_and_for_clients(etcd_server: Any, tmp_path: Any) -> None:
    """Brokers authenticate to each other with SCRAM-SHA-512 over TLS (their own user, made
    offline in etcd); acks=all with min.insync.replicas=3 is acknowledged only once both
    followers have fetched over those connections, and a client on the SASL_SSL listener
    reads everything back. Then the leader of another topic is killed under an idempotent
    acks=all producer and restarted: nothing acknowledged is lost or doubled, and it rejoins
    the ISR through new, authenticated peer connections."""
    from tests.clients.tlskit import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    url = etcd_server.client_url
    users("set", "broker", "--password-stdin", "--metadata", url, stdin="broker-pw\n")
    users("set", "app", "--password-stdin", "--metadata", url, stdin="app-pw\n")
    cluster = ClusterProcesses(os.path.join(str(tmp_path), "cluster"), 3, etcd=etcd_server, configs={
        # PLAINTEXT first: the test kit's own readiness checks use the first listener.
        "listeners": "PLAINTEXT://127.0.0.1:0,CLIENT://127.0.0.1:0,BROKER://127.0.0.1:0",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CLIENT:SASL_SSL,BROKER:SASL_SSL",
        "inter.broker.listener.name": "BROKER",
        "listener.name.broker.sasl.jaas.config":
            'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="broker-pw";',
        **tls.broker_configs(),
    })
    cluster.start()
    try:
        def conf(broker_id: int) -> dict[str, Any]:
            port = cluster.brokers[broker_id].listener_ports["CLIENT"]
            return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_SSL",
                    "ssl.ca.location": tls.ca, "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app",
                    "sasl.password": "app-pw"}

        topic = f"sasl-ssl-{uuid.uuid4().hex[:8]}"
        admin = AdminClient(conf(0))
        admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "3"})])[topic].result(30)
        producer = Producer({**conf(1), "acks": "all", "message.timeout.ms": 60_000})
        delivered: list[Any] = []
        for i in range(20):
            producer.produce(topic, f"m{i}".encode(), partition=0,
                             on_delivery=lambda err, _m: delivered.append(err))
        assert producer.flush(90) == 0
        assert delivered == [None] * 20
        consumer = Consumer({**conf(2), "group.id": f"g-{topic}", "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        for _ in range(80):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
            if len(got) == 20:
                break
        consumer.close()
        assert got == [f"m{i}".encode() for i in range(20)]

        # Failover: the leader is killed while an idempotent producer writes with acks=all;
        # it comes back (new peer connections, authenticated again) and rejoins the ISR, and
        # every acknowledged record is read back once, in order.
        failover = f"failover-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(failover, 1, 3, config={"min.insync.replicas": "2"})])[failover].result(30)
        everyone = ",".join(conf(b)["bootstrap.servers"] for b in range(3))
        producer = Producer({**conf(0), "bootstrap.servers": everyone, "acks": "all",
                             "enable.idempotence": True, "message.timeout.ms": 90_000})
        acked: list[Any] = []
        for i in range(60):
            producer.produce(failover, f"f{i}".encode(), partition=0,
                             on_delivery=lambda err, _m: acked.append(err))
            if i == 29:
                assert producer.flush(60) == 0
                view = cluster.partition(failover)
                assert view is not None and len(view.isr) == 3
                leader = view.leader
                cluster.kill(leader)
        assert producer.flush(120) == 0
        assert acked == [None] * 60
        cluster.start_broker(leader)
        wait_until(lambda: (v := cluster.partition(failover)) is not None and len(v.isr) == 3, 90,
                   f"broker {leader} back in the ISR of {failover}")
        consumer = Consumer({**conf(0), "bootstrap.servers": everyone, "group.id": f"g-{failover}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(failover, 0, 0)])
        got = []
        for _ in range(120):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
            if len(got) >= 60:
                break
        consumer.close()
        assert got == [f"f{i}".encode() for i in range(60)]
    finally:
        cluster.stop_all()
