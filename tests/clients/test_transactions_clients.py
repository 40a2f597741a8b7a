"""Transactions with each client's producer, read by each client's consumer (docs/guarantees.md
rules 1, 3, 18, 20, 21).

One producer (confluent-kafka, kafka-python or aiokafka) writes four transactions to three
partitions of two topics, three records per partition each: the first is committed, the
second aborted, the third committed, the fourth left open. Every transaction ends with one
marker per partition, so partition offsets are, for transaction k (0..3): records at
4k, 4k+1, 4k+2 and the marker at 4k+3 (the open one has none yet).

While the fourth is open:
- the leader answers LSO = 12 (the open transaction's first offset) and HW = 15; a
  read_committed Fetch returns no batch at or above 12; a read_uncommitted Fetch shows the
  three markers as control batches of the right type (commit, abort, commit);
- a read_uncommitted consumer of every client reads the 12 records of each partition and no
  marker (offsets 3, 7 and 11 are gaps);
- a read_committed consumer of every client reads the committed transactions only.
After the fourth is committed, every read_committed consumer reads it too, and LSO = HW = 16.

Each client's send_offsets_to_transaction (rule 21): offsets sent in an aborted transaction
never become the group's; offsets sent in a committed one do, with its commit; while pending,
OffsetFetch hides them and answers UNSTABLE_OFFSET_COMMIT to require_stable.

One broker serves the module (`shared_broker`): each test has topics and transactional ids of
its own. The check of the checks starts its own broker, with its fault point.
"""

from __future__ import annotations

from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from ackly.testing.wire import WireClient
from tests.clients.clientkit import unique_topic
from tests.clients.txnkit import (
    ABORT_MARKER,
    COMMIT_MARKER,
    CONTROL_FLAG,
    DRIVERS,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    TRANSACTIONAL_FLAG,
    Read,
    fetch_all,
    list_offset,
    offset_fetch,
    offsets_by_partition,
    read_records,
    wait_until,
)
from tests.integration import wire_requests as rq

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(240)]

CLIENTS = ("confluent", "kafka-python", "aiokafka")
PER_PARTITION = 3
OUTCOMES = ("commit", "abort", "commit", "open")


def value(txn: int, topic: str, partition: int, i: int) -> bytes:
    return f"txn{txn}-{OUTCOMES[txn]}-{topic}-{partition}-{i}".encode()


def record_offsets(txns: list[int]) -> list[int]:
    return [4 * k + i for k in txns for i in range(PER_PARTITION)]


def create_topics(bootstrap: str) -> list[tuple[str, int]]:
    """Two topics, three partitions in all: (a, 0), (a, 1), (b, 0)."""
    a, b = unique_topic("txn-a"), unique_topic("txn-b")
    with WireClient(bootstrap) as client:
        for name, count in ((a, 2), (b, 1)):
            answer = client.request(rq.create_topic(name, count)).topics[0]
            assert answer.error_code == 0, f"CreateTopics {name}: {answer.error_code!r}"
    return [(a, 0), (a, 1), (b, 0)]


def expected(partitions: list[tuple[str, int]], txns: list[int]) -> list[Read]:
    return sorted(
        Read(t, p, 4 * k + i, value(k, t, p, i))
        for k in txns for t, p in partitions for i in range(PER_PARTITION)
    )


def check_read(got: list[Read], want: list[Read], who: str) -> None:
    assert len(set(got)) == len(got), f"{who}: a record read twice"
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    assert not extra and not missing, (
        f"{who}: read records it must not see {extra[:6]}, missed {missing[:6]}; "
        f"offsets read {offsets_by_partition(got)}"
    )


def check_every_reader(bootstrap: str, partitions: list[tuple[str, int]], isolation: str,
                       txns: list[int]) -> None:
    want = expected(partitions, txns)
    for client in CLIENTS:
        got = read_records(client, bootstrap, partitions, isolation, len(want))
        check_read(got, want, f"{client} consumer, {isolation}")


@pytest.mark.parametrize("producer_client", CLIENTS)
def test_commit_abort_open_read_by_every_client(shared_broker: Any, producer_client: str) -> None:
    run_commit_abort_open(shared_broker.bootstrap, producer_client)


def test_the_checks_catch_a_broker_that_serves_above_the_lso(broker_factory: Any) -> None:
    """The scenario fails against a broker with the `serve-above-hw` fault point (consumer
    fetches read up to LEO, past the LSO): the open transaction's records leak."""
    bootstrap = broker_factory(faults=["serve-above-hw"]).bootstrap
    with pytest.raises(AssertionError, match="at/after the LSO"):
        run_commit_abort_open(bootstrap, "confluent")


@pytest.mark.parametrize(("producer_client", "config"), [
    ("confluent", {"compression.type": "zstd"}),
    ("kafka-python", {"compression_type": "gzip"}),
    ("aiokafka", {"compression_type": "lz4"}),
])
def test_compressed_transactions_read_by_every_client(shared_broker: Any, producer_client: str,
                                                       config: dict[str, str]) -> None:
    """The same with compressed transactional batches (the markers are never compressed)."""
    run_commit_abort_open(shared_broker.bootstrap, producer_client, **config)


def run_commit_abort_open(bootstrap: str, producer_client: str, **producer_config: str) -> None:
    compressed = any("compression" in key for key in producer_config)
    partitions = create_topics(bootstrap)
    producer = DRIVERS[producer_client](bootstrap, f"txn-{producer_client}-{partitions[0][0]}",
                                        **producer_config)
    try:
        for k, outcome in enumerate(OUTCOMES):
            producer.begin()
            for t, p in partitions:
                for i in range(PER_PARTITION):
                    producer.send(t, p, f"k{i}".encode(), value(k, t, p, i))
            producer.flush()
            if outcome == "commit":
                producer.commit()
            elif outcome == "abort":
                producer.abort()

        # The fourth transaction is open: in the log up to HW, not below the LSO.
        for t, p in partitions:
            assert list_offset(bootstrap, t, p, READ_UNCOMMITTED) == 15, f"{t}-{p}: HW"
            assert list_offset(bootstrap, t, p, READ_COMMITTED) == 12, f"{t}-{p}: LSO at the open transaction"
            committed_view = fetch_all(bootstrap, t, p, READ_COMMITTED)
            assert committed_view.last_stable_offset == 12, f"{t}-{p}: Fetch's LSO"
            beyond = [b.base_offset for b in committed_view.batches
                      if b.base_offset + b.last_offset_delta >= 12]
            assert not beyond, f"{t}-{p}: read_committed Fetch served batches at/after the LSO: {beyond}"
            assert committed_view.aborted, f"{t}-{p}: no aborted transaction listed for read_committed"
            assert all(first == 4 for _, first in committed_view.aborted), committed_view.aborted
            full = fetch_all(bootstrap, t, p, READ_UNCOMMITTED)
            assert full.control_types == {3: COMMIT_MARKER, 7: ABORT_MARKER, 11: COMMIT_MARKER}, (
                f"{t}-{p}: markers {full.control_types}")
            for b in full.batches:
                assert b.crc_ok, f"{t}-{p}: batch at {b.base_offset} fails its CRC"
                assert b.attributes & TRANSACTIONAL_FLAG, f"{t}-{p}: batch at {b.base_offset} not transactional"
                if b.attributes & CONTROL_FLAG:
                    assert b.records_count == 1 and b.last_offset_delta == 0 and b.codec == 0
                elif compressed:
                    assert b.codec != 0, f"{t}-{p}: batch at {b.base_offset} is not compressed"
            data = sorted(o for b in full.batches if not b.attributes & CONTROL_FLAG
                          for o in range(b.base_offset, b.base_offset + b.last_offset_delta + 1))
            assert data == record_offsets([0, 1, 2, 3]), f"{t}-{p}: record offsets {data}"

        check_every_reader(bootstrap, partitions, READ_UNCOMMITTED, [0, 1, 2, 3])
        check_every_reader(bootstrap, partitions, READ_COMMITTED, [0, 2])

        producer.commit()
        # EndTxn is answered once the decision is written; the markers follow (Kafka's
        # TransactionMarkerChannelManager), so the LSO is waited for, within a bound.
        for t, p in partitions:
            wait_until(lambda t=t, p=p: list_offset(bootstrap, t, p, READ_COMMITTED) == 16, 15,
                       f"{t}-{p}: LSO past the last marker")
            assert list_offset(bootstrap, t, p, READ_UNCOMMITTED) == 16, f"{t}-{p}: HW after the marker"
        check_every_reader(bootstrap, partitions, READ_COMMITTED, [0, 2, 3])
    finally:
        producer.close()


@pytest.mark.parametrize("producer_client", CLIENTS)
def test_offsets_sent_in_a_transaction_count_with_its_commit_only(shared_broker: Any,
                                                                  producer_client: str) -> None:
    """Rule 21 through each client's send_offsets_to_transaction (TxnOffsetCommit v3 from
    confluent-kafka and kafka-python, v0 from aiokafka): pending offsets are invisible and
    unstable, an aborted transaction's offsets never appear, a committed one's do, as soon as
    the commit returns."""
    bootstrap = shared_broker.bootstrap
    source, sink = unique_topic("offsets-in"), unique_topic("offsets-out")
    group = f"group-{source}"
    with WireClient(bootstrap) as client:
        for name in (source, sink):
            assert client.request(rq.create_topic(name, 1)).topics[0].error_code == 0
    producer = DRIVERS[producer_client](bootstrap, f"offsets-{producer_client}-{source}")

    def fetched(require_stable: bool) -> tuple[int, ErrorCode]:
        return offset_fetch(bootstrap, group, source, [0], require_stable=require_stable)[0]

    try:
        for outcome, offset in (("abort", 3), ("commit", 5)):
            producer.begin()
            producer.send(sink, 0, b"k", f"derived-{outcome}".encode())
            producer.send_offsets(group, source, 0, offset)
            producer.flush()
            assert fetched(require_stable=True) == (-1, ErrorCode.unstable_offset_commit), (
                f"{outcome}: OffsetFetch require_stable while offset {offset} is pending")
            assert fetched(require_stable=False) == (-1, ErrorCode.none), (
                f"{outcome}: a pending offset is not visible")
            if outcome == "abort":
                producer.abort()
                wait_until(lambda: fetched(require_stable=True)[1] == ErrorCode.none, 15,
                           "the aborted offsets to be dropped")
                assert fetched(require_stable=True) == (-1, ErrorCode.none), "an aborted offset never appears"
            else:
                producer.commit()
                # Once the commit returned, the offsets show at once, even to a client that
                # does not ask for stable offsets (EndTxn waits for the offsets' marker).
                assert fetched(require_stable=False) == (5, ErrorCode.none), "visible when commit returns"
                wait_until(lambda: fetched(require_stable=True)[1] == ErrorCode.none, 15,
                           "the committed offsets to become stable")
                assert fetched(require_stable=True) == (5, ErrorCode.none), "offsets count with the commit"
                assert fetched(require_stable=False) == (5, ErrorCode.none)
    finally:
        producer.close()


def test_interleaved_transactions_of_three_producers_on_one_partition(shared_broker: Any) -> None:
    """Three producers' transactions interleave on one partition (rules 2, 3, 20). The LSO is
    the first offset of the oldest open transaction; after one commits and one aborts, the
    aborted producer's records are filtered out by producer id, so the committed records of
    another producer inside the aborted range are still read, by every client."""
    bootstrap = shared_broker.bootstrap
    topic = unique_topic("interleaved")
    with WireClient(bootstrap) as client:
        assert client.request(rq.create_topic(topic, 1)).topics[0].error_code == 0
    a, b, c = (DRIVERS["confluent"](bootstrap, f"{name}-{topic}") for name in ("a", "b", "c"))

    def lso_becomes(offset: int, why: str) -> None:
        wait_until(lambda: list_offset(bootstrap, topic, 0, READ_COMMITTED) == offset, 15,
                   f"LSO {offset} ({why})")

    try:
        a.begin()
        b.begin()
        c.begin()
        for driver, v in ((a, b"a0"), (b, b"b0"), (a, b"a1"), (c, b"c0"), (b, b"b1")):
            driver.send(topic, 0, b"k", v)  # offsets 0, 1, 2, 3, 4
            driver.flush()
        lso_becomes(0, "a's transaction is open from offset 0")
        a.commit()  # marker at 5
        lso_becomes(1, "b's transaction is the oldest open one")
        b.abort()  # marker at 6
        lso_becomes(3, "c's transaction is the oldest open one")
        c.send(topic, 0, b"k", b"c1")  # offset 7
        c.flush()
        c.commit()  # marker at 8
        lso_becomes(9, "none open")
        assert list_offset(bootstrap, topic, 0, READ_UNCOMMITTED) == 9

        view = fetch_all(bootstrap, topic, 0, READ_COMMITTED)
        assert [first for _, first in view.aborted] == [1], f"aborted transactions listed: {view.aborted}"
        assert view.control_types == {5: COMMIT_MARKER, 6: ABORT_MARKER, 8: COMMIT_MARKER}, view.control_types
        committed = [Read(topic, 0, o, v) for o, v in ((0, b"a0"), (2, b"a1"), (3, b"c0"), (7, b"c1"))]
        everything = sorted([*committed, Read(topic, 0, 1, b"b0"), Read(topic, 0, 4, b"b1")])
        for client_name in CLIENTS:
            check_read(read_records(client_name, bootstrap, [(topic, 0)], READ_COMMITTED, 4), committed,
                       f"{client_name} consumer, read_committed")
            check_read(read_records(client_name, bootstrap, [(topic, 0)], READ_UNCOMMITTED, 6), everything,
                       f"{client_name} consumer, read_uncommitted")
    finally:
        for driver in (a, b, c):
            driver.close()


@pytest.mark.parametrize("start", [5, 10])
def test_read_committed_from_inside_an_aborted_transaction(shared_broker: Any, start: int) -> None:
    """A read_committed consumer that starts inside an aborted transaction (offset 5 of 0-9)
    or at its marker (10) reads none of it (rule 20): the Fetch must list an aborted
    transaction that began before the fetch offset, as Kafka's collectAbortedTxns does for
    every transaction whose last offset is at or after the fetch offset."""
    bootstrap = shared_broker.bootstrap
    topic = unique_topic("mid-abort")
    with WireClient(bootstrap) as client:
        assert client.request(rq.create_topic(topic, 1)).topics[0].error_code == 0
    producer = DRIVERS["confluent"](bootstrap, f"mid-{topic}")
    try:
        producer.begin()
        for i in range(10):
            producer.send(topic, 0, b"k", b"aborted-%d" % i)  # offsets 0-9
        producer.flush()
        producer.abort()  # marker at 10
        producer.begin()
        for i in range(3):
            producer.send(topic, 0, b"k", b"committed-%d" % i)  # offsets 11-13
        producer.flush()
        producer.commit()  # marker at 14
    finally:
        producer.close()
    wait_until(lambda: list_offset(bootstrap, topic, 0, READ_COMMITTED) == 15, 15, "LSO 15")
    want = [Read(topic, 0, 11 + i, b"committed-%d" % i) for i in range(3)]
    for client_name in CLIENTS:
        got = read_records(client_name, bootstrap, [(topic, 0)], READ_COMMITTED, 3, start=start)
        check_read(got, want, f"{client_name} consumer, read_committed from offset {start}")
