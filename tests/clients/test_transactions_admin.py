"""Transactions as kafka-python's admin client sees and repairs them (KIP-664 tools, the calls
behind kafka-transactions.sh): ListTransactions and DescribeTransactions at the coordinator,
DescribeProducers at the partition leader, and an administrative abort (WriteTxnMarkers to the
leader) of a hanging transaction that no coordinator knows of (docs/guarantees.md rules 18, 22).
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin._transactions import AbortTransactionSpec

from tests.clients.clientkit import unique_topic
from tests.clients.txnkit import (
    ABORT_MARKER,
    COMMIT_MARKER,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    ConfluentTxn,
    create_topic,
    delayed_produce,
    describe_transaction,
    fetch_all,
    list_offset,
    read_records,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]


def state_name(state: Any) -> str:
    return str(getattr(state, "value", state))


def test_admin_lists_and_describes_transactions_and_producers(broker_factory: Any) -> None:
    bootstrap = broker_factory().bootstrap
    topic = unique_topic("admin")
    create_topic(bootstrap, topic, 2)
    tid = f"admin-{topic}"
    producer = ConfluentTxn(bootstrap, tid)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    try:
        producer.begin()
        producer.send(topic, 0, b"k", b"v0")
        producer.send(topic, 1, b"k", b"v1")
        producer.flush()

        listed = [t for ts in admin.list_transactions().values() for t in ts if t.transactional_id == tid]
        assert [state_name(t.state) for t in listed] == ["Ongoing"], listed
        described = admin.describe_transactions([tid])[tid]
        assert state_name(described.state) == "Ongoing"
        assert set(described.topic_partitions) == {tp0, tp1}, described
        assert described.transaction_timeout_ms == 60_000
        assert listed[0].producer_id == described.producer_id
        producers = admin.describe_producers([tp0])[tp0].active_producers
        mine = [p for p in producers if p.producer_id == described.producer_id]
        assert len(mine) == 1 and mine[0].current_transaction_start_offset == 0, producers

        producer.commit()

        def completed() -> Any:
            d = admin.describe_transactions([tid])[tid]
            return d if state_name(d.state) == "CompleteCommit" else None

        done = wait_until(completed, 15, "CompleteCommit")
        assert not done.topic_partitions, f"a completed transaction lists no partitions: {done}"
        producers = admin.describe_producers([tp0])[tp0].active_producers
        mine = [p for p in producers if p.producer_id == described.producer_id]
        assert len(mine) == 1 and mine[0].current_transaction_start_offset == -1, producers
    finally:
        admin.close()
        producer.close()


def test_admin_aborts_a_hanging_transaction(broker_factory: Any) -> None:
    """With verification off (Kafka before KIP-890), a delayed transactional Produce opens a
    transaction on the partition that its coordinator does not know: the LSO hangs there.
    DescribeProducers shows it, and the admin abort (WriteTxnMarkers to the leader) closes it:
    the LSO moves on and read_committed never sees the hanging record."""
    bootstrap = broker_factory(configs={"transaction.partition.verification.enable": "false"}).bootstrap
    topic = unique_topic("hanging-admin")
    create_topic(bootstrap, topic, 1)
    tid = f"hanging-{topic}"
    producer = ConfluentTxn(bootstrap, tid)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    tp = TopicPartition(topic, 0)
    try:
        producer.begin()
        producer.send(topic, 0, b"k", b"committed")  # offset 0, its marker at 1
        producer.flush()
        producer.commit()
        wait_until(lambda: list_offset(bootstrap, topic, 0, READ_COMMITTED) == 2, 15, "the commit marker")
        state = describe_transaction(bootstrap, tid)
        pid, epoch = int(state.producer_id), int(state.producer_epoch)

        assert delayed_produce(bootstrap, tid, topic, 0, pid, epoch, 1, b"hanging") == 0  # offset 2
        assert list_offset(bootstrap, topic, 0, READ_COMMITTED) == 2, "the LSO hangs at the stray batch"
        producers = admin.describe_producers([tp])[tp].active_producers
        stray = [p for p in producers if p.producer_id == pid]
        assert [p.current_transaction_start_offset for p in stray] == [2], producers
        assert state_name(admin.describe_transactions([tid])[tid].state) == "CompleteCommit", (
            "the coordinator knows of no open transaction")

        # As kafka-transactions.sh abort does: the coordinator epoch of the producer's last
        # marker on the partition, from DescribeProducers (an older one would be fenced, as
        # Kafka's ProducerAppendInfo.checkCoordinatorEpoch does).
        admin.abort_transaction(AbortTransactionSpec(tp, pid, epoch, max(stray[0].coordinator_epoch, 0)))
        wait_until(lambda: list_offset(bootstrap, topic, 0, READ_COMMITTED)
                   == list_offset(bootstrap, topic, 0, READ_UNCOMMITTED) == 4, 15,
                   "the admin abort's marker (LSO = HW = 4)")
        markers = fetch_all(bootstrap, topic, 0, READ_UNCOMMITTED).control_types
        assert markers == {1: COMMIT_MARKER, 3: ABORT_MARKER}, markers
        got = read_records("confluent", bootstrap, [(topic, 0)], READ_COMMITTED, 1)
        assert [r.value for r in got] == [b"committed"], got
    finally:
        admin.close()
        producer.close()
