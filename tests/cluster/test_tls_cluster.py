"""A 3-broker cluster (etcd + 3 `ackly serve` processes) whose brokers talk to each other over
an SSL listener with mutual TLS, and whose clients use another SSL listener.

Every broker has three listeners: PLAINTEXT (the test kit's own checks), SSL (clients) and
BROKER (SSL, `ssl.client.auth=required` on it only, and `inter.broker.listener.name`). A
follower that reached its leader any other way than over TLS with a trusted certificate
would never get into the ISR, and acks=all would time out: with min.insync.replicas=3 every
acknowledged record below was replicated over the BROKER listener.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.testing.cluster_processes import ClusterProcesses, wait_until
from tests.clients.clientkit import Rec, ck_consume, ck_produce
from tests.clients.tlskit import make_tls_files

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]

PARTITIONS = 3
PER_PARTITION = 40


def test_replication_over_an_ssl_inter_broker_listener(tmp_path: Path) -> None:
    from ackly.server.etcd_process import etcd_binary

    if etcd_binary() is None:
        pytest.fail("etcd is not installed (apt-get install etcd-server)")
    tls = make_tls_files(tmp_path / "tls")
    configs = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,BROKER://127.0.0.1:0",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,BROKER:SSL",
        "inter.broker.listener.name": "BROKER",
        **tls.broker_configs(),
        "listener.name.broker.ssl.client.auth": "required",
        "min.insync.replicas": "3",
    }
    with ClusterProcesses(str(tmp_path / "cluster"), 3, configs=configs, log_level="INFO") as cluster:
        client = {"security.protocol": "SSL", "ssl.ca.location": tls.ca}
        bootstrap = ",".join(b.listener_bootstrap("SSL") for b in cluster.brokers.values())
        admin = AdminClient({"bootstrap.servers": bootstrap, **client})
        admin.create_topics([NewTopic("secure", PARTITIONS, 3)], operation_timeout=10)["secure"].result(timeout=30)

        def full_isr() -> bool:
            views = [cluster.partition("secure", p) for p in range(PARTITIONS)]
            return all(v is not None and v.leader >= 0 and len(v.isr) == 3 for v in views)

        wait_until(full_isr, 60, "every partition to have its full ISR")
        leaders = {cluster.partition("secure", p).leader for p in range(PARTITIONS)}  # type: ignore[union-attr]
        now = int(time.time() * 1000)
        records = [Rec(partition=p, key=None, value=b"%d-%d" % (p, i), headers=(), timestamp_ms=now)
                   for p in range(PARTITIONS) for i in range(PER_PARTITION)]
        offsets = ck_produce(bootstrap, "secure", records, acks="all", **client)
        assert sorted(offsets) == [(p, i) for p in range(PARTITIONS) for i in range(PER_PARTITION)]

        # Consumed from each partition's leader (the addresses come from the SSL listener).
        got = ck_consume(bootstrap, "secure", PARTITIONS, len(records), **client)
        assert sorted((r.partition, r.value) for r in got) == sorted((r.partition, r.value) for r in records)

        # The brokers presented their certificates to each other.
        for broker_id in cluster.brokers:
            wait_until(lambda b=broker_id: "on listener BROKER: principal User:CN=broker" in cluster.output(b),
                       10, f"broker {broker_id} to see a peer's certificate")

        # A replica's copy is served when its leader goes: stop one leader, read everything again.
        stopped = next(iter(leaders))
        cluster.stop(stopped)
        survivors = ",".join(cluster.brokers[b].listener_bootstrap("SSL") for b in cluster.brokers if b != stopped)

        def moved() -> bool:
            views = [cluster.partition("secure", p) for p in range(PARTITIONS)]
            return all(v is not None and v.leader not in (-1, stopped) for v in views)

        wait_until(moved, 60, "leadership to leave the stopped broker")
        again: list[Any] = ck_consume(survivors, "secure", PARTITIONS, len(records), **client)
        assert sorted((r.partition, r.value) for r in again) == sorted((r.partition, r.value) for r in records)
