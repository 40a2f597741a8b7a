"""Transactions across a broker crash (kill -9) and restart, with confluent-kafka (docs/guarantees.md
rules 2, 6, 18, 20, 22).

What the restarted broker rebuilds from its logs: the transaction coordinator's state (from
`__transaction_state`) and, per partition, which producers have a transaction open (from the
data log, its producer-state snapshots and its aborted-transaction index).
- An open transaction whose producer lives on is committed after the restart: every record
  becomes visible to read_committed, on both partitions.
- An open transaction whose producer died stays open across the restart: the LSO is still its
  first offset (no early read after recovery); then the coordinator aborts it at its timeout,
  and the LSO moves on.
- An aborted transaction stays aborted after the restart (the aborted-transaction index is
  rebuilt or reloaded): read_committed still filters its records out, also when two producers'
  transactions interleave over many small segments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ackly.testing.wire import WireClient
from tests.clients.clientkit import unique_topic
from tests.clients.txnkit import (
    ABORT_MARKER,
    COMMIT_MARKER,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    ConfluentTxn,
    TxnProcess,
    create_topic,
    fetch_all,
    list_offset,
    produce_plain,
    read_records,
    wait_lso_at_hw,
)
from tests.integration import wire_requests as rq

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(240)]


def test_transaction_open_across_a_broker_restart_commits(broker_factory: Any) -> None:
    broker = broker_factory()
    topic = unique_topic("restart-commit")
    create_topic(broker.bootstrap, topic, 2)
    producer = ConfluentTxn(broker.bootstrap, f"restart-{topic}", **{"message.timeout.ms": 60_000,
                                                                     "transaction.timeout.ms": 90_000})
    try:
        # One aborted transaction first, so the restart has an aborted range to keep.
        producer.begin()
        for p in (0, 1):
            producer.send(topic, p, b"k", b"aborted-%d" % p)
        producer.flush()
        producer.abort()
        producer.begin()
        for p in (0, 1):
            for i in range(3):
                producer.send(topic, p, b"k", b"committed-%d-%d" % (p, i))
        producer.flush()

        broker.restart()  # kill -9, then the same port and data directory
        for p in (0, 1):
            assert list_offset(broker.bootstrap, topic, p, READ_COMMITTED) == 2, (
                f"{topic}-{p}: after recovery the LSO is the open transaction's first offset")

        producer.producer.commit_transaction(60)
        for p in (0, 1):
            wait_lso_at_hw(broker.bootstrap, topic, p, 30, f"{topic}-{p}: the LSO to reach the HW")
            markers = fetch_all(broker.bootstrap, topic, p, READ_UNCOMMITTED).control_types
            assert markers == {1: ABORT_MARKER, 5: COMMIT_MARKER}, f"{topic}-{p}: markers {markers}"
        got = read_records("confluent", broker.bootstrap, [(topic, 0), (topic, 1)], READ_COMMITTED, 6)
        assert sorted(r.value for r in got) == sorted(b"committed-%d-%d" % (p, i) for p in (0, 1)
                                                      for i in range(3)), got
    finally:
        producer.close()


def test_open_transaction_of_a_dead_producer_survives_a_restart_then_times_out(broker_factory: Any) -> None:
    broker = broker_factory(configs={"transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000"})
    topic = unique_topic("restart-hanging")
    create_topic(broker.bootstrap, topic, 1)
    produce_plain(broker.bootstrap, topic, [(0, b"before")])
    # 8 s: long enough to look at the recovered state before the coordinator aborts it.
    holder = TxnProcess("holder", "hold-open", broker.bootstrap, f"hanging-{topic}", topic, "0", "4",
                        "--timeout-ms", "8000")
    try:
        holder.wait_event("open", 60)
        holder.kill()
        broker.restart()
        assert list_offset(broker.bootstrap, topic, 0, READ_UNCOMMITTED) == 5
        assert list_offset(broker.bootstrap, topic, 0, READ_COMMITTED) == 1, (
            "after recovery the LSO is still the open transaction's first offset")
        served = fetch_all(broker.bootstrap, topic, 0, READ_COMMITTED)
        assert all(b.base_offset + b.last_offset_delta < 1 for b in served.batches), (
            f"read_committed served the open transaction after recovery: {served.batches}")
        produce_plain(broker.bootstrap, topic, [(0, b"after-%d" % i) for i in range(2)])

        wait_lso_at_hw(broker.bootstrap, topic, 0, 40,
                       "the coordinator to abort the expired transaction after the restart (LSO = HW)")
        got = read_records("confluent", broker.bootstrap, [(topic, 0)], READ_COMMITTED, 3)
        assert [r.value for r in got] == [b"before", b"after-0", b"after-1"], got
        assert list(fetch_all(broker.bootstrap, topic, 0, READ_UNCOMMITTED).control_types.values()) == [
            ABORT_MARKER]
    except BaseException:
        print(holder.describe())
        raise
    finally:
        holder.kill()


def test_aborted_transactions_across_segments_survive_a_crash(broker_factory: Any) -> None:
    """Transactions of two producers spread over many small segments (segment.bytes 16 KiB),
    every other one aborted. Read by every client with read_committed, before and after a
    kill -9 and recovery: the aborted ones never appear, the committed ones all do, and the
    leader lists the same aborted transactions (rules 6, 20)."""
    broker = broker_factory()
    topic = unique_topic("segments")
    with WireClient(broker.bootstrap) as client:
        answer = client.request(rq.create_topic(topic, 1, {"segment.bytes": "16384"})).topics[0]
        assert answer.error_code == 0, answer
    small_batches = {"batch.size": 4096, "linger.ms": 1}
    a = ConfluentTxn(broker.bootstrap, f"seg-a-{topic}", **small_batches)
    b = ConfluentTxn(broker.bootstrap, f"seg-b-{topic}", **small_batches)
    committed: list[bytes] = []
    everything: list[bytes] = []
    pad = b"." * 1000
    try:
        for k in range(6):
            a.begin()
            b.begin()
            for i in range(20):  # the two transactions interleave on the partition
                for name, driver in ((b"a", a), (b"b", b)):
                    value = b"%s-%d-%d-" % (name, k, i) + pad
                    driver.send(topic, 0, b"k", value)
                    everything.append(value)
                a.flush()
                b.flush()
            a.commit()
            committed += [v for v in everything[-40:] if v.startswith(b"a-")]
            if k % 2:
                b.commit()
                committed += [v for v in everything[-40:] if v.startswith(b"b-")]
            else:
                b.abort()
    finally:
        a.close()
        b.close()
    wait_lso_at_hw(broker.bootstrap, topic, 0, 15, "no transaction open")
    segments = list((Path(broker.data_dir) / f"{topic}-0").glob("*.log"))
    assert len(segments) >= 6, f"the transactions span {len(segments)} segments only"
    before = fetch_all(broker.bootstrap, topic, 0, READ_COMMITTED)
    assert len(before.aborted) == 3, f"three aborted transactions listed: {before.aborted}"

    def check(when: str) -> None:
        for client in ("confluent", "kafka-python", "aiokafka"):
            got = read_records(client, broker.bootstrap, [(topic, 0)], READ_COMMITTED, len(committed), timeout_s=30)
            assert sorted(r.value for r in got) == sorted(committed), (
                f"{when}, {client}: read {len(got)} records for {len(committed)} committed; aborted ones read: "
                f"{sorted({r.value[:8] for r in got} - {v[:8] for v in committed})[:5]}")

    check("before the crash")
    broker.restart()  # kill -9: recovery from the last recovery point
    check("after recovery")
    after = fetch_all(broker.bootstrap, topic, 0, READ_COMMITTED)
    assert after.aborted == before.aborted, f"aborted transactions {before.aborted} before, {after.aborted} after"
    assert after.last_stable_offset == before.last_stable_offset
