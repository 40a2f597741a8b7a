"""Start etcd and three `ackly serve` processes, then create an RF=3 topic at once, in a loop.

As a script that starts a cluster and uses it would: wait only until each broker listens, not
until they have formed a cluster, then create the topic with confluent-kafka's AdminClient
(its default operation timeout). Every run must be answered, with the topic created. Before
brokers waited to join before listening, about one run in four was never answered: the last
broker's Metadata listed no broker and no controller, and librdkafka's admin client waited
for a controller it never asked about again. (The deterministic version of this race, over
many start orders, is tests/unit/broker/test_start_then_create.py; bench/start_then_create.py
times the same loop.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.server.etcd_process import EtcdProcess, etcd_binary
from ackly.testing.broker_process import BrokerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (Debian: etcd-server)"),
]

RUNS = 3  # the race over many start orders is tests/unit/broker/test_start_then_create.py
ANSWER_WAIT_S = 20.0  # far above the ~0.1 s an answer takes: a miss means no answer at all
CONFIGS = {"broker.session.timeout.ms": "6000", "broker.heartbeat.interval.ms": "500"}


def test_every_create_sent_as_soon_as_the_brokers_listen_is_answered_with_the_topic(tmp_path: Path) -> None:
    for run in range(RUNS):
        base = tmp_path / f"run-{run}"
        etcd = EtcdProcess(os.path.join(base, "etcd"))
        brokers: list[BrokerProcess] = []
        try:
            etcd.start()
            for b in range(3):
                proc = BrokerProcess(os.path.join(base, f"broker-{b}"), broker_id=b, configs=CONFIGS,
                                     metadata=etcd.client_url)
                brokers.append(proc)
                proc.start()  # returns once the broker prints that it listens
            admin = AdminClient({"bootstrap.servers": ",".join(p.bootstrap for p in brokers)})
            future = admin.create_topics([NewTopic("t", 1, 3, config={"min.insync.replicas": "2"})])["t"]
            future.result(ANSWER_WAIT_S)  # raises on no answer (TimeoutError) or an error
            topic = admin.list_topics("t", timeout=10).topics["t"]
            assert topic.error is None and sorted(topic.partitions[0].replicas) == [0, 1, 2], f"run {run}"
        finally:
            for proc in brokers:
                proc.stop()
            etcd.stop()
