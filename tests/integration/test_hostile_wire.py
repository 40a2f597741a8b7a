"""Hostile clients on the wire against real brokers: a raw client that poses as an in-sync
follower while an acks=all produce waits for that (paused) follower, and a raw client that
writes transaction markers. Neither can make the broker acknowledge what is not replicated or
end someone else's transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.errors import ErrorCode
from ackly.protocol.messages import build_request
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.wire import WireClient

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]
TIMEOUT_S = 30


def high_watermark(bootstrap: str, topic: str) -> int:
    request = build_request(2, 5, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    with WireClient(bootstrap) as client:
        (t,) = client.request(request).topics
        (p,) = t.partitions
        assert int(p.error_code) == 0
        return int(p.offset)


def forged_fetch(topic_id: Any, topic: str, follower: int, leader_epoch: int, fetch_offset: int,
                 version: int, broker_epoch: int) -> Any:
    partition = {"partition": 0, "current_leader_epoch": leader_epoch, "fetch_offset": fetch_offset,
                 "last_fetched_epoch": leader_epoch, "log_start_offset": 0, "partition_max_bytes": 1 << 20}
    return build_request(1, version, {
        "replica_id": follower, "replica_state": {"replica_id": follower, "replica_epoch": broker_epoch},
        "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "session_epoch": -1,
        "topics": [{"topic_id": topic_id, "topic": topic, "partitions": [partition]}],
    })


def test_a_forged_follower_fetch_cannot_acknowledge_an_acks_all_produce(ackly_cluster_processes: Any) -> None:
    cluster = ackly_cluster_processes(2, configs={"min.insync.replicas": "2",
                                                  "replica.lag.time.max.ms": "120000"})
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic("t", 1, 2)])["t"].result(TIMEOUT_S)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "message.timeout.ms": 120_000, "request.timeout.ms": 120_000})
    delivered: list[Any] = []
    producer.produce("t", b"first", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(TIMEOUT_S)
    assert delivered == [None]
    view = cluster.partition("t")
    assert view is not None and len(view.isr) == 2
    leader, (follower,) = view.leader, [b for b in view.replicas if b != view.leader]
    leader_address = cluster.address(leader)
    assert high_watermark(leader_address, "t") == 1
    metadata = cluster.metadata(leader, "t")
    (topic,) = metadata.topics

    cluster.pause(follower)  # SIGSTOP: still in the ISR, fetching nothing
    producer.produce("t", b"must-be-replicated", on_delivery=lambda err, msg: delivered.append(err))
    producer.poll(1.0)
    assert len(delivered) == 1, "acknowledged while the only other ISR member was stopped"
    with WireClient(leader_address) as client:
        # The follower's id, with no epoch (v12) or a wrong one (v15), at the leader's LEO.
        for version, epoch in ((12, -1), (15, -1), (15, 0)):
            response = client.request(forged_fetch(topic.topic_id, "t", follower, int(view.leader_epoch),
                                                   2, version, epoch))
            codes = [int(p.error_code) for r in response.responses for p in r.partitions]
            assert codes == [ErrorCode.not_leader_or_follower], (version, epoch, codes)
    producer.poll(1.0)
    assert len(delivered) == 1 and high_watermark(leader_address, "t") == 1

    cluster.resume(follower)
    deadline = time.monotonic() + TIMEOUT_S
    while len(delivered) < 2 and time.monotonic() < deadline:
        producer.poll(0.2)
    assert delivered == [None, None]
    assert high_watermark(leader_address, "t") == 2


def test_write_txn_markers_from_a_client_is_refused(ackly_process: Callable[..., BrokerProcess]) -> None:
    broker = ackly_process(configs={
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"})
    request = build_request(27, 1, {"markers": [
        {"producer_id": 7, "producer_epoch": 0, "transaction_result": True, "coordinator_epoch": 0,
         "topics": [{"name": "t", "partition_indexes": [0]}]}]})
    with WireClient(broker.bootstrap) as client:
        response = client.request(request)
    codes = [int(p.error_code) for m in response.markers for t in m.topics for p in t.partitions]
    assert codes == [ErrorCode.cluster_authorization_failed]
