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

from ackly.testing.cluster_processes import ClusterProcesses

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
