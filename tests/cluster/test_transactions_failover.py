"""Failover in the middle of a transaction (docs/guarantees.md rules 18, 20, 22), on three
`ackly serve` processes with etcd and confluent-kafka: of the transaction coordinator during
the transaction commit, and of a data partition's leader while the transaction is open.

A transactional producer writes to three partitions (RF 3, min ISR 2) and asks for the
transaction commit while the leader of one data partition is paused (SIGSTOP), so the
coordinator can write its decision (PrepareCommit in `__transaction_state`, replicated once
the paused broker leaves the ISR) but cannot finish the markers. The test sees PrepareCommit
through DescribeTransactions, then kills the coordinator (SIGKILL) and resumes the paused
broker. The broker that takes over the transaction's `__transaction_state` partition loads the
decision and completes it: every data partition gets its commit marker, the LSO reaches the
HW, and a read_committed consumer reads every record of the transaction.

Timing: replica.lag.time.max.ms is short (the paused broker leaves the ISR in ~3 s) and the
session long enough (15 s) that the pause does not cost the paused broker its leadership;
the killed coordinator's partitions move when its session expires. Every wait is bounded.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from ackly.testing.cluster_processes import ClusterProcesses
from tests.clients.txnkit import (
    COMMIT_MARKER,
    COORDINATOR_TRANSACTION,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    create_replicated_topics,
    describe_transaction,
    fetch_all,
    find_coordinator,
    list_offset,
    read_records,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(300)]

CONFIGS = {
    "broker.session.timeout.ms": "15000",
    "broker.heartbeat.interval.ms": "1000",
    "replica.lag.time.max.ms": "3000",
    "replica.fetch.backoff.ms": "200",
    "log.flush.policy": "never",  # durability here is by replication, not fsync
    "transaction.state.log.num.partitions": "5",
}
PARTITIONS = 3
PER_PARTITION = 5
WAIT_S = 90.0


def leader_address(cluster: ClusterProcesses, topic: str, partition: int) -> str | None:
    view = cluster.partition(topic, partition)
    if view is None or view.error_code != 0 or view.leader < 0 or not cluster.running(view.leader):
        return None
    return cluster.address(view.leader)


def test_coordinator_killed_after_prepare_commit_the_transaction_completes(ackly_cluster_processes: Any) -> None:
    cluster: ClusterProcesses = ackly_cluster_processes(3, configs=CONFIGS)
    topic = f"txn-failover-{uuid.uuid4().hex[:8]}"
    create_replicated_topics(cluster, (topic, PARTITIONS), timeout_s=WAIT_S)
    tid = f"failover-{topic}"
    errors: list[Any] = []
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap, "transactional.id": tid, "linger.ms": 5,
        "transaction.timeout.ms": 120_000, "message.timeout.ms": 60_000, "log_level": 4,
    })
    producer.init_transactions(WAIT_S)
    coordinator = find_coordinator(cluster.address(0), tid, COORDINATOR_TRANSACTION)
    producer.begin_transaction()
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(topic, value=b"v-%d-%d" % (p, i), partition=p,
                             on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, f"transactional records not acknowledged: {errors}"

    leaders = {p: cluster.partition(topic, p).leader for p in range(PARTITIONS)}  # type: ignore[union-attr]
    slow = next((leader for leader in leaders.values() if leader != coordinator), None)
    assert slow is not None, f"every data partition is led by the coordinator {coordinator}: {leaders}"
    other = next(b for b in range(3) if b not in (slow, coordinator))

    outcome: dict[str, Any] = {}

    def commit() -> None:
        try:
            producer.commit_transaction(WAIT_S * 2)
            outcome["ok"] = True
        except Exception as exc:
            outcome["error"] = exc

    cluster.pause(slow)  # the markers for its partitions cannot be written now
    committer = threading.Thread(target=commit, daemon=True)
    try:
        committer.start()
        wait_until(lambda: describe_transaction(cluster.address(coordinator), tid).transaction_state
                   == "PrepareCommit", WAIT_S, f"coordinator {coordinator} to decide PrepareCommit")
        cluster.kill(coordinator)
    finally:
        cluster.resume(slow)

    def moved() -> int | None:
        c = find_coordinator(cluster.address(other), tid, COORDINATOR_TRANSACTION)
        return c if c != coordinator else None

    new_coordinator = wait_until(moved, WAIT_S, "a new transaction coordinator")

    def completed() -> bool:
        try:
            state = describe_transaction(cluster.address(new_coordinator), tid).transaction_state
        except (OSError, ConnectionError, AssertionError):
            return False
        return state == "CompleteCommit"

    wait_until(completed, WAIT_S, f"the new coordinator {new_coordinator} to complete the transaction commit")
    committer.join(WAIT_S * 2)
    assert outcome.get("ok"), f"commit_transaction did not succeed: {outcome}"

    for p in range(PARTITIONS):
        def settled(p: int = p) -> bool:
            address = leader_address(cluster, topic, p)
            if address is None:
                return False
            try:
                return list_offset(address, topic, p, READ_COMMITTED) == list_offset(address, topic, p,
                                                                                   READ_UNCOMMITTED)
            except (OSError, ConnectionError, AssertionError):
                return False

        wait_until(settled, WAIT_S, f"{topic}-{p}: the LSO to reach the HW")
        address = leader_address(cluster, topic, p)
        assert address is not None
        markers = fetch_all(address, topic, p, READ_UNCOMMITTED).control_types
        assert list(markers.values()) == [COMMIT_MARKER], f"{topic}-{p}: markers {markers}"

    got = read_records("confluent", cluster.bootstrap, [(topic, p) for p in range(PARTITIONS)], READ_COMMITTED,
                       PARTITIONS * PER_PARTITION, timeout_s=WAIT_S)
    assert sorted(r.value for r in got) == sorted(b"v-%d-%d" % (p, i) for p in range(PARTITIONS)
                                                  for i in range(PER_PARTITION)), got


def test_data_leader_killed_mid_transaction_new_leader_keeps_it_open_then_commits(
        ackly_cluster_processes: Any) -> None:
    """A data partition's leader is killed while a transaction is open on it (its records
    replicated, acks=all). The new leader, a former follower, must know the transaction is
    open: its LSO stays at the transaction's first offset (no early read, rule 20) until the
    transaction commit's marker, which the coordinator then writes to the new leader."""
    cluster: ClusterProcesses = ackly_cluster_processes(3, configs={**CONFIGS, "broker.session.timeout.ms": "3000",
                                                                    "broker.heartbeat.interval.ms": "500"})
    topic = f"txn-leader-{uuid.uuid4().hex[:8]}"
    create_replicated_topics(cluster, (topic, PARTITIONS), timeout_s=WAIT_S)
    tid = f"leader-{topic}"
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap, "transactional.id": tid, "linger.ms": 5, "acks": "all",
        "transaction.timeout.ms": 120_000, "message.timeout.ms": 60_000, "log_level": 4,
    })
    producer.init_transactions(WAIT_S)
    coordinator = find_coordinator(cluster.address(0), tid, COORDINATOR_TRANSACTION)
    views = {p: cluster.partition(topic, p) for p in range(PARTITIONS)}
    partition = next((p for p, v in views.items() if v is not None and v.leader != coordinator), None)
    assert partition is not None, f"every partition is led by the coordinator {coordinator}: {views}"
    old_leader = views[partition].leader  # type: ignore[union-attr]

    errors: list[Any] = []
    # First an aborted transaction (its record at 0, its marker at 1): the new leader must keep
    # filtering it out too.
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted", partition=partition)
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(PER_PARTITION):
        producer.produce(topic, value=b"open-%d" % i, partition=partition,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, f"transactional records not acknowledged: {errors}"
    first_offset = 2
    hw = first_offset + PER_PARTITION

    cluster.kill(old_leader)

    def new_leader_address() -> str | None:
        view = cluster.partition(topic, partition)
        if view is None or view.leader in (-1, old_leader):
            return None
        return cluster.address(view.leader)

    address = wait_until(new_leader_address, WAIT_S, f"a new leader for {topic}-{partition}")

    def offsets() -> tuple[int, int] | None:
        try:
            return (list_offset(address, topic, partition, READ_UNCOMMITTED),
                    list_offset(address, topic, partition, READ_COMMITTED))
        except (OSError, ConnectionError, AssertionError):
            return None

    high, stable = wait_until(lambda: (o := offsets()) is not None and o[0] == hw and o, WAIT_S,
                              "the new leader to answer ListOffsets with the old HW")
    assert stable == first_offset, (
        f"{topic}-{partition}: the new leader's LSO is {stable} (HW {high}); the open transaction starts at "
        f"{first_offset}")
    served = fetch_all(address, topic, partition, READ_COMMITTED)
    assert all(b.base_offset + b.last_offset_delta < first_offset for b in served.batches), (
        "the new leader serves the open transaction to read_committed")

    producer.commit_transaction(WAIT_S)
    wait_until(lambda: (o := offsets()) is not None and o[0] == o[1] == hw + 1, WAIT_S,
               "the commit marker on the new leader (LSO = HW)")
    got = read_records("confluent", cluster.bootstrap, [(topic, partition)], READ_COMMITTED, PER_PARTITION,
                       timeout_s=WAIT_S)
    assert [r.value for r in got] == [b"open-%d" % i for i in range(PER_PARTITION)], got
