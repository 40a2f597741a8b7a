"""A consumer group and a transactional producer (confluent-kafka) across a coordinator load.

After a restart the broker loads the shards of `__consumer_offsets` and `__transaction_state`
in slices (coordinator/runtime.py) and answers their groups and transactional ids
COORDINATOR_LOAD_IN_PROGRESS meanwhile. Here the broker runs in this process and its loading is
held until both clients were answered COORDINATOR_LOAD_IN_PROGRESS (a shard whose log takes
long to replay, without writing one): librdkafka retries JoinGroup / OffsetFetch and
InitProducerId against the same broker, and once the shards are loaded the group resumes
from its committed offset and the producer's transaction, offsets included, commits.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ackly.coordinator.group_coordinator import GroupCoordinator
from ackly.coordinator.runtime import CoordinatorRuntime
from ackly.coordinator.transaction_coordinator import TransactionCoordinator
from ackly.errors import ErrorCode
from ackly.testing.inprocess import InProcessBroker
from tests.clients.txnkit import create_topic, produce_plain, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(180)]

TOPIC, OUT = "load-in", "load-out"
GROUP, TXN = "load-group", "load-txn"
PROPS = {"offsets.topic.num.partitions": "3", "transaction.state.log.num.partitions": "3",
         "group.initial.rebalance.delay.ms": "0"}


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 10_000,
                     "isolation.level": "read_committed", **extra})


def consume(c: Consumer, count: int, timeout_s: float = 60) -> list[Any]:
    got: list[Any] = []

    def more() -> bool | None:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)
        return True if len(got) >= count else None

    wait_until(more, timeout_s, f"{count} records", interval_s=0)
    return got


def test_group_and_transactions_work_across_a_coordinator_load(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = str(tmp_path / "data")
    broker = InProcessBroker(data_dir, PROPS).start()
    try:
        create_topic(broker.bootstrap, TOPIC, 1)
        create_topic(broker.bootstrap, OUT, 1)
        produce_plain(broker.bootstrap, TOPIC, [(0, b"v%d" % i) for i in range(10)])
        c = consumer(broker.bootstrap)
        c.subscribe([TOPIC])
        assert [m.offset() for m in consume(c, 5)][:5] == [0, 1, 2, 3, 4]
        c.commit(offsets=[TopicPartition(TOPIC, 0, 5)], asynchronous=False)
        c.close()
        p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": TXN})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(OUT, b"before", partition=0)
        p.commit_transaction(30)
    finally:
        broker.stop()

    # The restarted broker's loading waits for the gate; count what the coordinators answer.
    gate = threading.Event()
    answered = {"group": 0, "txn": 0}
    load_slice = CoordinatorRuntime._load_slice

    def gated_load_slice(self: Any, loading: Any, now_ms: int, max_records: int) -> bool:
        return load_slice(self, loading, now_ms, max_records) if gate.is_set() else False

    def counting(kind: str, not_here: Any) -> Any:
        def wrapped(self: Any, key: str) -> ErrorCode | None:
            code: ErrorCode | None = not_here(self, key)
            if code is ErrorCode.coordinator_load_in_progress:
                answered[kind] += 1
            return code
        return wrapped

    monkeypatch.setattr(CoordinatorRuntime, "_load_slice", gated_load_slice)
    monkeypatch.setattr(GroupCoordinator, "not_here", counting("group", GroupCoordinator.not_here))
    monkeypatch.setattr(TransactionCoordinator, "not_here",
                        counting("txn", TransactionCoordinator.not_here))

    broker = InProcessBroker(data_dir, PROPS).start()
    try:
        assert broker.call(lambda: broker.server.node.group_coordinator.loading)  # type: ignore[union-attr]
        p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": TXN})
        init_errors: list[BaseException] = []

        def init() -> None:
            try:
                p.init_transactions(60)
            except BaseException as exc:  # reported by the main thread
                init_errors.append(exc)

        initializing = threading.Thread(target=init)
        initializing.start()
        c = consumer(broker.bootstrap)
        c.subscribe([TOPIC])

        def both_answered() -> bool | None:
            c.poll(0.1)
            return True if answered["group"] >= 1 and answered["txn"] >= 1 else None

        wait_until(both_answered, 60, "COORDINATOR_LOAD_IN_PROGRESS to the group and the producer",
                   interval_s=0)
        assert initializing.is_alive(), "InitProducerId waits for the load"
        gate.set()

        records = consume(c, 5)
        assert [m.offset() for m in records][:5] == [5, 6, 7, 8, 9], "resumes from the committed offset"
        initializing.join(60)
        assert not init_errors, init_errors
        p.begin_transaction()
        p.produce(OUT, b"after", partition=0)
        p.send_offsets_to_transaction([TopicPartition(TOPIC, 0, 10)], c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        committed = c.committed([TopicPartition(TOPIC, 0)], timeout=30)
        assert committed[0].offset == 10
        c.close()

        reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "load-reader",
                           "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        reader.assign([TopicPartition(OUT, 0, 0)])
        assert [m.value() for m in consume(reader, 2)][:2] == [b"before", b"after"]
        reader.close()
    finally:
        broker.stop()
