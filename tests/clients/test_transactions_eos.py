"""Exactly-once with real clients against one `ackly serve` (docs/guarantees.md rules 19-23).

- consume-transform-produce: three confluent-kafka processes (txn_process.py transform) read
  an input topic in one group and write an output topic, sending their input positions in
  each transaction (send_offsets_to_transaction with the consumer's group metadata, KIP-447).
  Every fifth transaction is aborted on purpose and the process rewinds to the group's
  committed offsets. One process is killed (SIGKILL) inside a transaction whose records and
  offsets are written but not committed, and restarted with the same transactional.id. The
  output read with read_committed holds every input record exactly once. The same loop runs
  with kafka-python too (its group metadata in TxnOffsetCommit v3).
- zombie fencing: a second producer with the same transactional.id fences the first, whose
  later produce and transaction commit are refused (fatal, ProducerFenced).
- a transaction left open by a killed producer (transaction.timeout.ms 3000) is aborted by
  the coordinator: the LSO moves on and read_committed readers see the records after it; a
  live producer past its timeout is fenced and its late commit refused.
- OffsetFetch require_stable: while a transactional offset is pending, the group's consumer
  (librdkafka asks with require_stable) does not start; after the transaction commit it starts
  at the transactional offset.
- KIP-447: offsets sent with the group metadata of an older generation are refused.
- KIP-890 part 1 (rule 23): a transactional Produce that lands after its transaction ended
  (sent raw, with the real producer's id and epoch) is refused with INVALID_TXN_STATE and
  joins no later transaction; with verification off the same check fails.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from kio.schema.errors import ErrorCode

from tests.clients.clientkit import unique_topic
from tests.clients.txnkit import (
    ABORT_MARKER,
    COMMIT_MARKER,
    DRIVERS,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    ConfluentTxn,
    TxnProcess,
    assert_each_input_once,
    ck_read_committed_to_end,
    close_drivers,
    commit_one,
    create_topic,
    delayed_produce,
    describe_transaction,
    fetch_all,
    list_offset,
    offset_fetch,
    produce_plain,
    read_records,
    wait_lso_at_hw,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(300)]

BROKER_CONFIGS = {"group.initial.rebalance.delay.ms": "0"}
# Kafka looks for expired transactions every 10 s by default; 0.5 s keeps the timeout tests
# short (and changes nothing for a transaction within its timeout).
CLEANUP_CONFIGS = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"}


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    """One broker serves every test of the module but the one that needs verification off:
    each test has topics, transactional ids and groups of its own."""
    return {**BROKER_CONFIGS, **CLEANUP_CONFIGS}


# --- consume-transform-produce -------------------------------------------------------------

INPUT_PARTITIONS = 6
OUTPUT_PARTITIONS = 3
PER_PARTITION = 150  # inputs per partition, in two halves: before and after the kill


def produce_inputs(bootstrap: str, source: str, first: int, end: int) -> None:
    """Inputs first..end-1 of every input partition, value b"in-<partition>-<i>"."""
    produce_plain(bootstrap, source, [(p, b"in-%d-%d" % (p, i)) for i in range(first, end)
                                      for p in range(INPUT_PARTITIONS)])


def ctp_topics(bootstrap: str, prefix: str) -> tuple[str, str, str]:
    """A fresh input and output topic and a group name; the first half of the inputs produced."""
    source, sink = unique_topic(f"{prefix}-in"), unique_topic(f"{prefix}-out")
    create_topic(bootstrap, source, INPUT_PARTITIONS)
    create_topic(bootstrap, sink, OUTPUT_PARTITIONS)
    produce_inputs(bootstrap, source, 0, PER_PARTITION // 2)
    return source, sink, f"group-{source}"


def check_exactly_once(bootstrap: str, source: str, sink: str, group: str) -> None:
    """The output read with read_committed holds every input once; the aborted transactions'
    records are in the log (read_uncommitted sees more); the group's offsets are the ends."""
    total = INPUT_PARTITIONS * PER_PARTITION
    got = ck_read_committed_to_end(bootstrap, [(sink, p) for p in range(OUTPUT_PARTITIONS)])
    assert_each_input_once(got, INPUT_PARTITIONS, PER_PARTITION)
    for r in got:
        p, i, v = r.value.split(b":", 2)
        assert v == b"in-%s-%s" % (p, i), f"output {r.value!r} does not carry its input"

    uncommitted = read_records("confluent", bootstrap, [(sink, p) for p in range(OUTPUT_PARTITIONS)],
                               READ_UNCOMMITTED, total + 1, timeout_s=30)
    assert len(uncommitted) > len(got)

    offsets = offset_fetch(bootstrap, group, source, range(INPUT_PARTITIONS), require_stable=True)
    assert offsets == {p: (PER_PARTITION, ErrorCode.none) for p in range(INPUT_PARTITIONS)}, (
        f"the group's offsets after the last transaction: {offsets}")


def test_consume_transform_produce_exactly_once_with_a_killed_instance(shared_broker: Any) -> None:
    bootstrap = shared_broker.bootstrap
    source, sink, group = ctp_topics(bootstrap, "ctp")
    started: list[TxnProcess] = []

    def instance(name: str, *extra: str) -> TxnProcess:
        proc = TxnProcess(name, "transform", bootstrap, group, source, sink, f"ctp-{name}-{source}",
                          "--abort-every", "5", "--batch", "20", *extra)
        started.append(proc)
        return proc

    try:
        # t1 starts alone so that it reaches its third transaction whatever the scheduling:
        # started together, t0 could take and finish the whole first half before t1 was given
        # a partition, and t1 would never get there. t0 and t2 join while t1 holds it open.
        t1 = instance("t1", "--hold-at", "3")
        t1.wait_event("holding", 90)
        t0, t2 = instance("t0"), instance("t2")
        t1.kill()  # inside its transaction: records and offsets written, no commit, no abort
        produce_inputs(bootstrap, source, PER_PARTITION // 2, PER_PARTITION)
        again = TxnProcess("t1-again", "transform", bootstrap, group, source, sink, f"ctp-t1-{source}",
                           "--abort-every", "5", "--batch", "20")
        started.append(again)
        total = INPUT_PARTITIONS * PER_PARTITION

        def committed_total() -> int:
            return sum(e["n"] for p in started for e in p.of("committed"))

        wait_until(lambda: committed_total() >= total, 150,
                   f"the instances to commit {total} records in transactions")
        for proc in (t0, t2, again):
            proc.stop()
        assert committed_total() == total, f"{committed_total()} records committed for {total} inputs"
        assert any(p.of("aborted") for p in started), "no transaction was aborted: the rewind went untested"
        for proc in started:
            assert proc is t1 or not proc.fatal_errors(), proc.describe()

        check_exactly_once(bootstrap, source, sink, group)
    except BaseException:
        for proc in started:
            print(proc.describe())
        raise
    finally:
        for proc in started:
            proc.kill()


def test_consume_transform_produce_exactly_once_kafka_python(shared_broker: Any) -> None:
    """The same loop with kafka-python's transactional producer and group consumer (its
    TxnOffsetCommit v3 carries the member id and generation): two instances, one killed
    (SIGKILL, wherever it is in its loop) and restarted with the same transactional.id."""
    bootstrap = shared_broker.bootstrap
    source, sink, group = ctp_topics(bootstrap, "kp")
    started: list[TxnProcess] = []

    def instance(name: str) -> TxnProcess:
        proc = TxnProcess(name, "transform", bootstrap, group, source, sink, f"kp-{name}-{source}",
                          "--abort-every", "4", "--batch", "20", "--client", "kafka-python")
        started.append(proc)
        return proc

    def committed_total() -> int:
        return sum(e["n"] for p in started for e in p.of("committed"))

    try:
        k0, k1 = instance("k0"), instance("k1")
        wait_until(lambda: k1.of("committed") and committed_total() >= 100, 90, "both instances at work")
        k1.kill()
        produce_inputs(bootstrap, source, PER_PARTITION // 2, PER_PARTITION)
        again = instance("k1")
        ends = {p: (PER_PARTITION, ErrorCode.none) for p in range(INPUT_PARTITIONS)}
        # The group's offsets, not the instances' reports: the kill may land between a
        # transaction commit and its report.
        wait_until(lambda: offset_fetch(bootstrap, group, source, range(INPUT_PARTITIONS), require_stable=True)
                   == ends, 150, "the group's offsets at the input's ends")
        k0.stop()
        again.stop()
        check_exactly_once(bootstrap, source, sink, group)
    except BaseException:
        for proc in started:
            print(proc.describe())
        raise
    finally:
        for proc in started:
            proc.kill()


# --- zombie fencing ----------------------------------------------------------------------

FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


@pytest.mark.filterwarnings("ignore:Producer abort_transaction failed during close")  # the zombie's
def test_second_producer_fences_the_first_confluent(shared_broker: Any) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic("zombie")
    create_topic(bootstrap, topic, 1)
    tid = f"zombie-{topic}"
    zombie = ConfluentTxn(bootstrap, tid)
    successor: ConfluentTxn | None = None
    try:
        zombie.begin()
        for i in range(3):
            zombie.send(topic, 0, b"k", b"zombie-early-%d" % i)
        zombie.flush()

        successor = ConfluentTxn(bootstrap, tid)  # InitProducerId: a new epoch; the open one is aborted

        zombie.send(topic, 0, b"k", b"zombie-late")
        try:
            zombie.producer.flush(15)
        except Exception as exc:  # confluent-kafka raises the fatal error out of flush()'s callbacks
            print(f"the zombie's flush: {exc!r}")
        with pytest.raises(KafkaException) as refused:
            zombie.producer.commit_transaction(15)
        err = refused.value.args[0]
        assert err.fatal() or err.code() in FENCED, f"the zombie's commit failed, but not fenced: {err}"
        fenced = [err, *zombie.errors, *zombie.client_errors]
        assert any(e.code() in FENCED or "fenced" in e.str().lower() for e in fenced), (
            f"no ProducerFenced among the zombie's errors: {fenced}")

        commit_one(successor, topic, 0, b"successor")

        wait_lso_at_hw(bootstrap, topic, 0, 15)
        committed = read_records("confluent", bootstrap, [(topic, 0)], READ_COMMITTED, 1)
        assert [r.value for r in committed] == [b"successor"], committed
        everything = [r.value for r in read_records("confluent", bootstrap, [(topic, 0)], READ_UNCOMMITTED, 4)]
        assert everything == [b"zombie-early-0", b"zombie-early-1", b"zombie-early-2", b"successor"], (
            f"the log holds {everything}: the zombie's late record must never be written")
        markers = fetch_all(bootstrap, topic, 0, READ_UNCOMMITTED).control_types
        assert sorted(markers.values()) == [ABORT_MARKER, COMMIT_MARKER], markers
    finally:
        close_drivers(zombie, successor)


@pytest.mark.parametrize("client", ["kafka-python", "aiokafka"])
def test_second_producer_fences_the_first_python_clients(shared_broker: Any, client: str) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic("zombie")
    create_topic(bootstrap, topic, 1)
    tid = f"zombie-{topic}"
    zombie = DRIVERS[client](bootstrap, tid)
    successor = None
    try:
        zombie.begin()
        zombie.send(topic, 0, b"k", b"zombie-early")
        zombie.flush()
        successor = DRIVERS[client](bootstrap, tid)
        with pytest.raises(Exception) as refused:
            zombie.send(topic, 0, b"k", b"zombie-late")
            zombie.flush()
            zombie.commit()
        name = type(refused.value).__name__
        assert "Fenced" in name or "InvalidProducerEpoch" in name, f"not fenced: {refused.value!r}"
        commit_one(successor, topic, 0, b"successor")
        wait_lso_at_hw(bootstrap, topic, 0, 15)
        everything = [r.value for r in read_records(client, bootstrap, [(topic, 0)], READ_UNCOMMITTED, 2)]
        assert everything == [b"zombie-early", b"successor"], everything
        committed = [r.value for r in read_records(client, bootstrap, [(topic, 0)], READ_COMMITTED, 1)]
        assert committed == [b"successor"], committed
    finally:
        close_drivers(zombie, successor)


# --- a hanging transaction is aborted at its timeout -----------------------------------------


def test_open_transaction_of_a_killed_producer_is_aborted_at_its_timeout(shared_broker: Any) -> None:
    bootstrap = shared_broker.bootstrap  # expired transactions looked for every 0.5 s
    topic = unique_topic("hanging")
    create_topic(bootstrap, topic, 1)
    tid = f"hanging-{topic}"
    holder = TxnProcess("holder", "hold-open", bootstrap, tid, topic, "0", "5", "--timeout-ms", "3000")
    try:
        holder.wait_event("open", 60)
        opened = describe_transaction(bootstrap, tid)
        assert opened.error_code == ErrorCode.none and opened.transaction_state == "Ongoing", opened
        holder.kill()
        assert list_offset(bootstrap, topic, 0, READ_COMMITTED) == 0, "LSO at the open transaction"
        produce_plain(bootstrap, topic, [(0, b"later-%d" % i) for i in range(3)])

        # Aborted within the timeout (3 s) + one cleanup interval (0.5 s) + the markers' writes.
        wait_lso_at_hw(bootstrap, topic, 0, 20, "the coordinator to abort the expired transaction (LSO = HW)")
        got = read_records("confluent", bootstrap, [(topic, 0)], READ_COMMITTED, 3)
        assert [r.value for r in got] == [b"later-0", b"later-1", b"later-2"], got
        assert list(fetch_all(bootstrap, topic, 0, READ_UNCOMMITTED).control_types.values()) == [ABORT_MARKER]
        after = describe_transaction(bootstrap, tid)
        assert after.transaction_state in ("CompleteAbort", "Empty"), after
        assert after.producer_epoch > opened.producer_epoch, (
            f"the timed-out producer is not fenced: epoch {opened.producer_epoch} -> {after.producer_epoch}")
    except BaseException:
        print(holder.describe())
        raise
    finally:
        holder.kill()


# --- OffsetFetch require_stable ------------------------------------------------------------


def test_group_consumer_waits_for_a_pending_transactional_offset(shared_broker: Any) -> None:
    bootstrap = shared_broker.bootstrap
    topic, sink = unique_topic("stable"), unique_topic("stable-out")
    group = f"group-{topic}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, sink, 1)
    produce_plain(bootstrap, topic, [(0, b"r%d" % i) for i in range(10)])

    # An unjoined consumer's metadata (generation -1), as a processor's first transaction has.
    metadata_source = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 4})
    producer = ConfluentTxn(bootstrap, f"stable-{topic}")
    producer.begin()
    producer.send(sink, 0, b"k", b"derived")
    producer.flush()
    producer.producer.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 5)], metadata_source.consumer_group_metadata(), 30)
    metadata_source.close()

    assert offset_fetch(bootstrap, group, topic, [0], require_stable=True) == {
        0: (-1, ErrorCode.unstable_offset_commit)}, "require_stable while the offset is pending"
    assert offset_fetch(bootstrap, group, topic, [0], require_stable=False)[0][0] == -1, (
        "a pending transactional offset is not visible before the transaction commit")

    assigned: list[Any] = []
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000, "fetch.wait.max.ms": 100,
        "log_level": 4,
    })
    try:
        consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            got += consumer.consume(num_messages=10, timeout=0.2)
        assert assigned, "the consumer was not assigned the partition within 30 s"
        # A negative needs a window: with the offset ignored, auto.offset.reset would start it
        # at 0 at once; while pending, librdkafka retries OffsetFetch and reads nothing.
        window_end = time.monotonic() + 2.0
        while time.monotonic() < window_end:
            got += consumer.consume(num_messages=10, timeout=0.2)
        records = [m for m in got if m.error() is None]
        assert not records, f"read {[m.offset() for m in records]} while the group's offset was pending"

        producer.commit()
        deadline = time.monotonic() + 30
        while len(records) < 5 and time.monotonic() < deadline:
            records += [m for m in consumer.consume(num_messages=10, timeout=0.2) if m.error() is None]
        assert [m.offset() for m in records] == [5, 6, 7, 8, 9], (
            f"after the transaction commit the consumer starts at the transactional offset 5: "
            f"{[m.offset() for m in records]}")
    finally:
        consumer.close()
        producer.close()
    assert offset_fetch(bootstrap, group, topic, [0], require_stable=True) == {0: (5, ErrorCode.none)}


# --- KIP-447: offsets from a member of an older generation -----------------------------------


def test_offsets_with_the_group_metadata_of_an_older_generation_are_refused(shared_broker: Any) -> None:
    """TxnOffsetCommit carries the member id and generation (KIP-447): once the group has
    rebalanced, offsets sent with the older generation's metadata are refused and never
    become the group's; the same member's current metadata works (rule 21)."""
    bootstrap = shared_broker.bootstrap
    topic, sink = unique_topic("kip447"), unique_topic("kip447-out")
    group = f"group-{topic}"
    create_topic(bootstrap, topic, 2)
    create_topic(bootstrap, sink, 1)
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "log_level": 4}
    assigned: dict[str, list[int]] = {"first": [], "second": []}

    def member(name: str) -> Consumer:
        consumer = Consumer({**conf, "client.id": name})
        consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.__setitem__(
            name, sorted(p.partition for p in parts)))
        return consumer

    first = member("first")
    second: Consumer | None = None
    producer = ConfluentTxn(bootstrap, f"kip447-{topic}")
    try:
        wait_until(lambda: (first.poll(0.1), assigned["first"] == [0, 1])[1], 30, "the first member's assignment")
        stale = first.consumer_group_metadata()
        second = member("second")
        joined = second

        def rebalanced() -> bool:
            first.poll(0.1)
            joined.poll(0.1)
            return sorted(assigned["first"] + assigned["second"]) == [0, 1] and bool(assigned["second"])

        wait_until(rebalanced, 30, "the rebalance that gives the second member a partition")
        producer.begin()
        producer.send(sink, 0, b"k", b"derived")
        producer.flush()
        with pytest.raises(KafkaException) as refused:
            producer.producer.send_offsets_to_transaction([TopicPartition(topic, 0, 3)], stale, 30)
        err = refused.value.args[0]
        assert not err.fatal(), f"a stale generation is an abortable error, not a fatal one: {err}"
        assert err.code() in (KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                              KafkaError.FENCED_INSTANCE_ID), f"refused with {err}"
        producer.abort()
        assert offset_fetch(bootstrap, group, topic, [0], require_stable=True) == {0: (-1, ErrorCode.none)}

        producer.begin()
        producer.send(sink, 0, b"k", b"derived")
        producer.producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 4)], first.consumer_group_metadata(), 30)
        producer.commit()
        wait_until(lambda: offset_fetch(bootstrap, group, topic, [0], require_stable=True)
                   == {0: (4, ErrorCode.none)}, 15, "the current generation's offset")
    finally:
        producer.close()
        first.close()
        if second is not None:
            second.close()


# --- KIP-890: a request delayed past the end of its transaction -----------------------------


def test_a_produce_delayed_past_its_transaction_joins_no_later_transaction(shared_broker: Any) -> None:
    """Rule 23 (KIP-890 part 1): a transactional batch that lands after its transaction ended
    is refused, both while the producer has no transaction and while it has a later one that
    does not include the partition. Without verification it would open a transaction of its
    own on the partition that no coordinator knows of, and the LSO would never move again."""
    run_delayed_produce(shared_broker.bootstrap)


def test_without_verification_the_delayed_produce_is_appended(broker_factory: Any) -> None:
    """The same scenario fails with transaction.partition.verification.enable=false (Kafka
    before KIP-890): the check above is what catches a hanging transaction."""
    bootstrap = broker_factory(configs={"transaction.partition.verification.enable": "false"}).bootstrap
    with pytest.raises(AssertionError, match="a batch of an ended transaction was appended"):
        run_delayed_produce(bootstrap)


def run_delayed_produce(bootstrap: str) -> None:
    topic = unique_topic("delayed")
    create_topic(bootstrap, topic, 2)
    tid = f"delayed-{topic}"
    producer = ConfluentTxn(bootstrap, tid)
    try:
        producer.begin()
        producer.send(topic, 0, b"k", b"first")  # sequence 0 on partition 0
        producer.flush()
        producer.commit()
        state = describe_transaction(bootstrap, tid)
        pid, epoch = int(state.producer_id), int(state.producer_epoch)
        wait_until(lambda: list_offset(bootstrap, topic, 0, READ_COMMITTED) == 2, 15, "the first commit marker")

        # No transaction in progress: the delayed batch must not start one.
        code = delayed_produce(bootstrap, tid, topic, 0, pid, epoch, 1, b"delayed-1")
        assert code != ErrorCode.none, "a batch of an ended transaction was appended"
        assert code == ErrorCode.invalid_txn_state, code
        assert list_offset(bootstrap, topic, 0, READ_UNCOMMITTED) == 2, "the refused batch is not in the log"

        # A later transaction on partition 1 only: the delayed batch must not join it.
        producer.begin()
        producer.send(topic, 1, b"k", b"second")
        producer.flush()
        code = delayed_produce(bootstrap, tid, topic, 0, pid, epoch, 1, b"delayed-2")
        assert code != ErrorCode.none, "a delayed batch joined a later transaction on a partition it never added"
        assert code == ErrorCode.invalid_txn_state, code
        assert list_offset(bootstrap, topic, 0, READ_UNCOMMITTED) == 2
        producer.commit()

        producer.begin()
        producer.send(topic, 0, b"k", b"third")  # the client's own next sequence on partition 0
        producer.flush()
        producer.commit()
        for p, end in ((0, 4), (1, 2)):
            wait_until(lambda p=p, end=end: list_offset(bootstrap, topic, p, READ_COMMITTED) == end, 15,
                       f"{topic}-{p}: LSO {end}, nothing left hanging")
        got = read_records("confluent", bootstrap, [(topic, 0), (topic, 1)], READ_COMMITTED, 3)
        assert sorted(r.value for r in got) == [b"first", b"second", b"third"], got
    finally:
        producer.close()


def test_a_live_producer_past_its_transaction_timeout_cannot_commit(shared_broker: Any) -> None:
    """Rule 22 with the producer alive: the coordinator aborts its transaction at
    transaction.timeout.ms and bumps the epoch, so the late commit is refused and the records
    never become visible; a new instance with the same transactional.id works."""
    bootstrap = shared_broker.bootstrap  # expired transactions looked for every 0.5 s
    topic = unique_topic("late-commit")
    create_topic(bootstrap, topic, 1)
    tid = f"late-{topic}"
    late = ConfluentTxn(bootstrap, tid, **{"transaction.timeout.ms": 2000, "message.timeout.ms": 2000,
                                           "socket.timeout.ms": 2000})
    successor: ConfluentTxn | None = None
    try:
        late.begin()
        late.send(topic, 0, b"k", b"too-late")
        late.flush()
        opened = describe_transaction(bootstrap, tid)
        wait_until(lambda: describe_transaction(bootstrap, tid).transaction_state == "CompleteAbort", 20,
                   "the coordinator to abort the transaction at its timeout")
        assert describe_transaction(bootstrap, tid).producer_epoch > opened.producer_epoch, "the producer is fenced"
        with pytest.raises(KafkaException) as refused:
            late.producer.commit_transaction(15)
        err = refused.value.args[0]
        assert err.fatal() and err.code() in FENCED, f"the late commit is refused as fenced: {err}"
        successor = ConfluentTxn(bootstrap, tid)
        commit_one(successor, topic, 0, b"on-time")
        wait_lso_at_hw(bootstrap, topic, 0, 15)
        got = read_records("confluent", bootstrap, [(topic, 0)], READ_COMMITTED, 1)
        assert [r.value for r in got] == [b"on-time"], got
        assert sorted(fetch_all(bootstrap, topic, 0, READ_UNCOMMITTED).control_types.values()) == [
            ABORT_MARKER, COMMIT_MARKER]
    finally:
        close_drivers(late, successor)
