"""Hostile clients against replication (core cluster, virtual clock): a Fetch that names an
in-sync follower, and WriteTxnMarkers, sent by a client. While an acks=all produce waits for
its follower, a forged follower Fetch is refused and HW does not move: with an authorizer
because the client lacks CLUSTER_ACTION, without one because the fetch does not carry the
follower's registered broker epoch (KIP-903). The real follower then completes the produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ackly.errors import ErrorCode
from ackly.protocol.messages import build_request
from ackly.types import TopicPartition

from .core_cluster import CoreCluster, batch
from .test_cluster_core import create, produce, result

AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
              # The brokers reach each other as User:ANONYMOUS until SASL or mTLS carries theirs.
              "super.users": "User:ANONYMOUS"}
TP = TopicPartition("t", 0)


def forged_fetch(c: CoreCluster, leader: int, follower: int, epoch: int, version: int = 15) -> dict[str, Any]:
    node = c.node(leader)
    p = node.partition("t", 0)
    partition = {"partition": 0, "current_leader_epoch": p.leader_epoch, "fetch_offset": p.log_end_offset,
                 "last_fetched_epoch": p.leader_epoch, "log_start_offset": 0, "partition_max_bytes": 1 << 20}
    data: dict[str, Any] = {"max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "session_epoch": -1,
                            "replica_state": {"replica_id": follower, "replica_epoch": epoch},
                            "replica_id": follower}
    if version >= 13:
        data["topics"] = [{"topic_id": node.topics["t"].topic_id, "partitions": [partition]}]
    else:
        data["topics"] = [{"topic": "t", "partitions": [partition]}]
    return build_request(1, version, data)


def codes(response: Any) -> list[int]:
    return [int(p.error_code) for t in response.responses for p in t.partitions]


def start_waiting_produce(c: CoreCluster) -> tuple[int, int, Any]:
    response = create(c, 1, "t", rf=2, configs={"min.insync.replicas": "2"})
    assert response.topics[0].error_code == ErrorCode.none
    c.settle()
    state = c.state("t")
    assert len(state.isr) == 2
    leader = state.leader
    (follower,) = [b for b in state.replicas if b != leader]
    c.partitioned = {follower}  # the real follower stops fetching; still in the ISR for now
    reply = produce(c, leader, "t", batch(b"must-be-replicated"))
    c.pump()
    p = c.node(leader).partition("t", 0)
    assert not reply.done and p.log_end_offset == 1 and p.high_watermark == 0
    return leader, follower, reply


@pytest.mark.parametrize("principal", ["User:mallory", "User:ANONYMOUS"])
def test_a_forged_follower_fetch_does_not_move_hw(tmp_path: Path, principal: str) -> None:
    """With an authorizer: a client principal without CLUSTER_ACTION is refused even with the
    right epoch; the brokers' own principal with a wrong epoch is refused too."""
    c = CoreCluster(tmp_path, [1, 2], props=AUTHORIZER)
    leader, follower, reply = start_waiting_produce(c)
    epoch = c.node(leader).metadata.brokers[follower].epoch
    p = c.node(leader).partition("t", 0)
    tries = [epoch] if principal != "User:ANONYMOUS" else [epoch + 1, epoch - 1, -1]
    for guess in tries:
        answer = c.wait(c.send_as(leader, forged_fetch(c, leader, follower, guess), principal))
        expected = (ErrorCode.topic_authorization_failed if principal != "User:ANONYMOUS"
                    else ErrorCode.not_leader_or_follower)
        assert codes(answer) == [expected]
        assert p.high_watermark == 0 and not reply.done
    c.partitioned = set()
    assert result(c.wait(reply)) == (ErrorCode.none, 0)
    assert p.high_watermark == 1


@pytest.mark.parametrize("version", [12, 15])
def test_without_an_authorizer_a_fetch_without_the_registered_epoch_is_refused(
    tmp_path: Path, version: int,
) -> None:
    c = CoreCluster(tmp_path, [1, 2])
    leader, follower, reply = start_waiting_produce(c)
    epoch = c.node(leader).metadata.brokers[follower].epoch
    p = c.node(leader).partition("t", 0)
    guesses = [epoch + 1, -1] if version >= 15 else [-1]  # before v15 no epoch travels at all
    for guess in guesses:
        answer = c.wait(c.send_as(leader, forged_fetch(c, leader, follower, guess, version), "User:ANONYMOUS"))
        assert codes(answer) == [ErrorCode.not_leader_or_follower]
        assert p.high_watermark == 0 and not reply.done
    # A replica id that is not assigned the partition at all.
    answer = c.wait(c.send_as(leader, forged_fetch(c, leader, 7, epoch), "User:ANONYMOUS"))
    assert codes(answer) == [ErrorCode.unknown_leader_epoch]
    assert p.high_watermark == 0 and not reply.done
    c.partitioned = set()
    assert result(c.wait(reply)) == (ErrorCode.none, 0)


def test_write_txn_markers_from_a_client_is_refused(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2], props=AUTHORIZER)
    create(c, 1, "t", rf=2)
    c.settle()
    leader = c.state("t").leader
    markers = build_request(27, 1, {"markers": [
        {"producer_id": 42, "producer_epoch": 0, "transaction_result": True, "coordinator_epoch": 0,
         "topics": [{"name": "t", "partition_indexes": [0]}]}]})
    end = c.node(leader).partition("t", 0).log_end_offset
    answer = c.wait(c.send_as(leader, markers, "User:mallory"))
    assert [int(p.error_code) for m in answer.markers for t in m.topics for p in t.partitions] == [
        ErrorCode.cluster_authorization_failed]
    assert c.node(leader).partition("t", 0).log_end_offset == end  # no marker was written
