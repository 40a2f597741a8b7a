"""ackly.eos with each real client: positions come from the database, never from the group.

Every scenario first commits bogus offsets for the group in Kafka (the middle of each
partition), then consumes part of the topic with one sink, closes it, and finishes with a
new consumer and sink. Every record must be applied exactly once, from offset 0: a sink that
started at the group's committed offsets would miss the first half. The confluent scenario
also runs two members side by side (eager and cooperative-sticky assignors), so partitions
are revoked and assigned while records are in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ackly.eos import AiokafkaExactlyOnce, ConfluentExactlyOnce, KafkaPythonExactlyOnce, SqlitePositions
from ackly.testing.broker_process import BrokerProcess
from tests.clients.clientkit import ck_admin, ck_create_topic, unique_topic

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]

PARTITIONS = 3
RECORDS = 300
FIRST_RUN = 120
DEADLINE_S = 60.0
BROKER_CONFIGS = {"group.initial.rebalance.delay.ms": "0"}


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module (a fresh one costs seconds to start on a loaded machine):
    every scenario has a topic and a group of its own."""
    broker = BrokerProcess(str(tmp_path_factory.mktemp("eos-broker") / "data"), configs=BROKER_CONFIGS).start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def bootstrap(module_broker: BrokerProcess) -> str:
    proc = module_broker.proc
    if proc is None or proc.poll() is not None:
        pytest.fail("the module's broker has exited:\n" + "".join(module_broker.output[-60:]))
    return module_broker.bootstrap


def prepare(bootstrap: str, group: str) -> str:
    topic = unique_topic("eos")
    ck_create_topic(ck_admin(bootstrap), topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(RECORDS):
        producer.produce(topic, value=json.dumps({"id": i}).encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    # Offsets the sink must ignore: half of every partition.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, p, RECORDS // PARTITIONS // 2) for p in range(PARTITIONS)],
                    asynchronous=False)
    consumer.close()
    return topic


def make_db(path: Path) -> SqlitePositions:
    positions = SqlitePositions(path)
    positions.connection.execute(
        "CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY, partition_id INTEGER, record_offset INTEGER)")
    return positions


def apply(tx: Any, value: bytes, partition: int, offset: int) -> None:
    tx.cursor.execute("INSERT INTO applied VALUES (?, ?, ?)", (json.loads(value)["id"], partition, offset))


def count(positions: SqlitePositions) -> int:
    return int(positions.connection.execute("SELECT count(*) FROM applied").fetchone()[0])


def check(path: Path, topic: str, group: str) -> None:
    positions = SqlitePositions(path)
    rows = positions.connection.execute("SELECT id, partition_id, record_offset FROM applied").fetchall()
    assert sorted(i for i, _, _ in rows) == list(range(RECORDS))
    assert all((p, o) == (i % PARTITIONS, i // PARTITIONS) for i, p, o in rows)
    stored = positions.read(group, [(topic, p) for p in range(PARTITIONS)])
    assert stored == {(topic, p): RECORDS // PARTITIONS for p in range(PARTITIONS)}
    positions.close()


def confluent_sink(bootstrap: str, group: str, positions: SqlitePositions, strategy: str = "range"
                   ) -> ConfluentExactlyOnce[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "partition.assignment.strategy": strategy, "session.timeout.ms": 6000})
    return ConfluentExactlyOnce(consumer, positions, group=group, commit_to_kafka=True)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_confluent_resumes_from_the_database_through_rebalances(bootstrap: str, tmp_path: Path,
                                                                strategy: str) -> None:
    group = unique_topic("eos-group")
    topic = prepare(bootstrap, group)
    path = tmp_path / "sink.db"

    first = confluent_sink(bootstrap, group, make_db(path), strategy)
    first.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    while count(first.positions) < FIRST_RUN // 2:
        assert time.monotonic() < deadline, "the first member applied too little"
        with first.transaction(first.poll(0.2, max_records=10)) as tx:
            for r in tx.records:
                apply(tx, r.value(), r.partition(), r.offset())

    # A second member joins: partitions move while the first one has records in hand.
    second = confluent_sink(bootstrap, group, make_db(path), strategy)
    second.subscribe([topic])
    revocations = 0
    while count(first.positions) < RECORDS or not second.assignment:
        assert time.monotonic() < deadline, f"applied {count(first.positions)} of {RECORDS}"
        held = set(first.assignment)
        # One record at a time until the second member holds partitions, so that records
        # are left for both of them.
        batch = 10 if second.assignment else 1
        in_hand = first.poll(0.1, max_records=batch)
        for sink, records in ((second, second.poll(0.1, max_records=batch)), (first, in_hand)):
            with sink.transaction(records) as tx:
                for r in tx.records:
                    apply(tx, r.value(), r.partition(), r.offset())
        revocations += bool(held - set(first.assignment))
    assert revocations >= 1, "the first member never lost a partition"
    assert first.assignment and second.assignment
    # The sink found out which rebalance protocol the assignor speaks (KIP-429).
    assert first._incremental is second._incremental is (strategy == "cooperative-sticky")
    first.close()
    second.close()
    check(path, topic, group)


def test_kafka_python_resumes_from_the_database(bootstrap: str, tmp_path: Path) -> None:
    from kafka import KafkaConsumer

    group = unique_topic("eos-group")
    topic = prepare(bootstrap, group)
    path = tmp_path / "sink.db"
    deadline = time.monotonic() + DEADLINE_S
    for target in (FIRST_RUN, RECORDS):
        positions = make_db(path)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                 session_timeout_ms=6000)
        sink = KafkaPythonExactlyOnce(consumer, positions, group=group, commit_to_kafka=True)
        sink.subscribe([topic])
        while count(positions) < target:
            assert time.monotonic() < deadline, f"applied {count(positions)} of {target}"
            with sink.transaction(sink.poll(0.2, max_records=7)) as tx:
                for r in tx.records:
                    apply(tx, r.value, r.partition, r.offset)
        sink.close()
        positions.close()
    check(path, topic, group)


def test_aiokafka_resumes_from_the_database(bootstrap: str, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer

    group = unique_topic("eos-group")
    topic = prepare(bootstrap, group)
    path = tmp_path / "sink.db"

    async def run(target: int, deadline: float) -> None:
        positions = make_db(path)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                    session_timeout_ms=6000)
        await consumer.start()
        sink = AiokafkaExactlyOnce(consumer, positions, group=group, commit_to_kafka=True)
        sink.subscribe([topic])
        try:
            while count(positions) < target:
                assert time.monotonic() < deadline, f"applied {count(positions)} of {target}"
                records = await sink.poll(0.2, max_records=7)
                with sink.transaction(records) as tx:
                    for r in tx.records:
                        apply(tx, r.value, r.partition, r.offset)
        finally:
            await sink.close()
            positions.close()

    deadline = time.monotonic() + DEADLINE_S
    for target in (FIRST_RUN, RECORDS):
        asyncio.run(run(target, deadline))
    check(path, topic, group)


def test_confluent_rollback_rewinds_to_the_failed_batch(bootstrap: str, tmp_path: Path) -> None:
    """Manual assignment; an exception in the transaction's body rolls back and the same
    records come again (not the ones after them)."""
    group = unique_topic("eos-group")
    topic = prepare(bootstrap, group)
    positions = make_db(tmp_path / "sink.db")
    sink = confluent_sink(bootstrap, group, positions)
    sink.assign([(topic, 0)])

    def poll_some(n: int) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < n:
            assert time.monotonic() < deadline, f"polled {len(got)} of {n} records"
            got += sink.poll(0.2, max_records=n - len(got))
        return got

    with sink.transaction(poll_some(5)) as tx:
        for r in tx.records:
            apply(tx, r.value(), r.partition(), r.offset())
    failed = poll_some(5)
    assert [r.offset() for r in failed] == list(range(5, 10))
    with pytest.raises(RuntimeError, match="boom"), sink.transaction(failed) as tx:
        for r in tx.records:
            apply(tx, r.value(), r.partition(), r.offset())
        raise RuntimeError("boom")
    again = poll_some(5)
    assert [r.offset() for r in again] == list(range(5, 10))
    assert count(positions) == 5
    assert positions.read(group, [(topic, 0)]) == {(topic, 0): 5}
    sink.close()


class FirstReadFails:
    """Positions whose first read raises (the database is unreachable at the assignment)."""

    def __init__(self, store: SqlitePositions) -> None:
        self.store, self.failed = store, False

    def read(self, group: str, partitions: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ConnectionError("database unreachable")
        return self.store.read(group, partitions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_confluent_failed_assignment_callback_positions_at_the_next_poll(bootstrap: str, tmp_path: Path
                                                                         ) -> None:
    """librdkafka assigns at the group's committed offsets when on_assign raises; the sink
    applies nothing from there and seeks to the stored positions at the next poll."""
    group = unique_topic("eos-group")
    topic = prepare(bootstrap, group)
    positions = make_db(tmp_path / "sink.db")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    sink = ConfluentExactlyOnce(consumer, FirstReadFails(positions), group=group)  # type: ignore[arg-type]
    sink.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    failed = False
    while count(positions) < RECORDS:
        assert time.monotonic() < deadline, f"applied {count(positions)} of {RECORDS} (failed: {failed})"
        try:
            records = sink.poll(0.2, max_records=20)
        except ConnectionError:
            failed = True
            continue
        with sink.transaction(records) as tx:
            for r in tx.records:
                apply(tx, r.value(), r.partition(), r.offset())
    assert failed
    sink.close()
    check(tmp_path / "sink.db", topic, group)
