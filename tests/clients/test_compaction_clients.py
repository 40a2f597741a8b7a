"""Log compaction seen by real clients: confluent-kafka and kafka-python write many values per
key to a compacted topic with small segments; the broker's cleaner runs; a consumer from the
beginning then sees every key's latest value at the offset it was written at, tombstones gone
after delete.retention.ms, and (read_committed) nothing of an aborted transaction."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(120)]

BROKER = {"log.cleaner.backoff.ms": "100", "auto.create.topics.enable": "false"}
TOPIC = {
    "cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1500",
}
KEYS = 10
ROUNDS = 40


@pytest.fixture(scope="module")
def shared_broker_configs() -> dict[str, str]:
    """The tests that do not kill their broker share one (each compacts a topic of its own)."""
    return BROKER


def create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=TOPIC)])[topic].result(15)


def ck_produce(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes | None]]) -> list[int]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    offsets: dict[int, int] = {}

    def report(i: int) -> Callable[[object, object], None]:
        def done(err: object, msg: object) -> None:
            assert err is None, err
            offsets[i] = msg.offset()  # type: ignore[attr-defined]
        return done

    for i, (key, value) in enumerate(pairs):
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(20) == 0
    return [offsets[i] for i in range(len(pairs))]


def ck_read(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> list[tuple[int, bytes, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": isolation})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes, bytes | None]] = []
        deadline = time.monotonic() + 20
        position = 0
        while position < high and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                position = max(position, consumer.position([TopicPartition(topic, 0)])[0].offset)
                continue
            if msg.error():
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.key(), msg.value()))
            position = msg.offset() + 1
        return out
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, poke: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the cleaner did not get there in time"
        poke()


def check_latest(written: dict[int, tuple[bytes, bytes | None]],
                 seen: list[tuple[int, bytes, bytes | None]]) -> None:
    for offset, key, value in seen:
        assert written[offset] == (key, value), f"offset {offset} holds what was not written there"
    latest: dict[bytes, int] = {}
    for offset in sorted(written):
        latest[written[offset][0]] = offset
    present = {offset for offset, _, _ in seen}
    for key, offset in latest.items():
        if written[offset][1] is not None:
            assert offset in present, f"the latest value of {key!r} (offset {offset}) is gone"


def test_confluent_compaction_keeps_latest_values_and_drops_tombstones(shared_broker) -> None:
    bootstrap = shared_broker.bootstrap
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    pairs = [(b"key-%d" % k, b"value-%d-%d" % (k, r) + b"x" * 60)
             for r in range(ROUNDS) for k in range(KEYS)]
    pairs.append((b"key-0", None))  # a tombstone
    written = dict(zip(ck_produce(bootstrap, topic, pairs), pairs, strict=True))

    def filler() -> None:
        # New dirty data lets the cleaner run again (and rolls the segment the tombstone is in).
        more = [(b"filler", b"f" * 200) for _ in range(25)]
        written.update(zip(ck_produce(bootstrap, topic, more), more, strict=True))
        time.sleep(0.2)

    wait_for(lambda: len(ck_read(bootstrap, topic)) < len(written) // 3, 40, filler)
    check_latest(written, ck_read(bootstrap, topic))
    # The tombstone goes once delete.retention.ms passed after it was first cleaned.
    wait_for(lambda: all(k != b"key-0" for _, k, _ in ck_read(bootstrap, topic)), 40, filler)
    check_latest(written, ck_read(bootstrap, topic))

    # A record without a key is refused (INVALID_RECORD), as Kafka refuses it.
    producer = Producer({"bootstrap.servers": bootstrap, "retries": 0})
    errors: list[object] = []
    producer.produce(topic, value=b"no key", partition=0,
                     on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None and "INVALID_RECORD" in str(errors[0])


def test_confluent_read_committed_after_compaction_of_aborted_transactions(shared_broker) -> None:
    bootstrap = shared_broker.bootstrap
    topic = f"compact-txn-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{uuid.uuid4().hex}"})
    producer.init_transactions(15)
    for round_ in range(12):
        producer.begin_transaction()
        for k in range(KEYS):
            producer.produce(topic, key=b"key-%d" % k, value=b"r%d-" % round_ + b"y" * 100, partition=0)
        if round_ % 3 == 1:
            producer.abort_transaction(15)
        else:
            producer.commit_transaction(15)
    committed_latest = {b"key-%d" % k: b"r11-" + b"y" * 100 for k in range(KEYS)}

    def filler() -> None:
        producer.begin_transaction()
        for _ in range(10):
            producer.produce(topic, key=b"filler", value=b"f" * 300, partition=0)
        producer.commit_transaction(15)
        time.sleep(0.2)

    total = 12 * (KEYS + 1)
    wait_for(lambda: len(ck_read(bootstrap, topic)) < total // 3, 40, filler)
    seen = ck_read(bootstrap, topic, "read_committed")
    values = {key: value for _, key, value in seen}
    for key, value in committed_latest.items():
        assert values[key] == value
    assert all(not (v or b"").startswith((b"r1-", b"r4-", b"r7-", b"r10-")) for _, _, v in seen), \
        "aborted data visible to read_committed"


def test_kafka_python_compaction_keeps_latest_values(shared_broker) -> None:
    bootstrap = shared_broker.bootstrap
    topic = f"compact-kp-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    written: dict[int, tuple[bytes, bytes | None]] = {}

    def produce(pairs: list[tuple[bytes, bytes | None]]) -> None:
        futures = [(producer.send(topic, key=k, value=v, partition=0), (k, v)) for k, v in pairs]
        producer.flush(20)
        for future, pair in futures:
            written[future.get(10).offset] = pair

    produce([(b"key-%d" % k, b"v%d-%d" % (k, r) + b"z" * 60) for r in range(ROUNDS) for k in range(KEYS)])

    def kp_read() -> list[tuple[int, bytes, bytes | None]]:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False, consumer_timeout_ms=3000)
        try:
            tp = KpTopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            out = []
            for msg in consumer:
                out.append((msg.offset, msg.key, msg.value))
                if msg.offset + 1 >= end:
                    break
            return out
        finally:
            consumer.close()

    def filler() -> None:
        produce([(b"filler", b"f" * 200) for _ in range(25)])
        time.sleep(0.2)

    wait_for(lambda: len(kp_read()) < len(written) // 3, 40, filler)
    try:
        check_latest(written, kp_read())
    finally:
        producer.close(5)


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.2])
def test_a_broker_killed_mid_clean_restarts_with_every_keys_latest_value(
    broker_factory, delay_s: float
) -> None:
    """kill -9 while the cleaner writes (throttled to 2 MB/s so a clean lasts seconds), at
    three points of it: after restart every key's latest value is at its offset, no offset
    appears twice, and no `.cleaned` or `.swap` file is left."""
    broker = broker_factory(configs={**BROKER, "log.cleaner.io.max.bytes.per.second": "2000000"})
    bootstrap = broker.bootstrap
    topic = f"compact-kill-{uuid.uuid4().hex[:8]}"
    create(bootstrap, topic)
    pairs = [(b"key-%d" % (i % 50), b"value-%d-" % i + b"w" * 500) for i in range(8000)]
    written = dict(zip(ck_produce(bootstrap, topic, pairs), pairs, strict=True))
    directory = f"{broker.data_dir}/{topic}-0"

    def cleaning() -> bool:
        return any(n.endswith((".cleaned", ".swap")) for n in os.listdir(directory))

    deadline = time.monotonic() + 30
    while not cleaning():
        assert time.monotonic() < deadline, "no clean started"
        time.sleep(0.005)
    assert broker.proc is not None
    # The cleaner runs in a child process at the lowest CPU priority (the broker's loop first).
    assert cleaner_niceness(broker.proc.pid) == [19]
    time.sleep(delay_s)
    broker.kill()
    broker.configs["log.cleaner.enable"] = "false"  # what is on disk is what recovery left
    broker.start()
    seen = ck_read(bootstrap, topic)
    offsets = [o for o, _, _ in seen]
    assert len(offsets) == len(set(offsets)), "an offset twice"
    check_latest(written, seen)
    assert not [n for n in os.listdir(directory) if n.endswith((".cleaned", ".swap"))]



def cleaner_niceness(broker_pid: int) -> list[int]:
    """The nice value of each cleaner process of `broker_pid` (a child started by
    multiprocessing's spawn_main, not its resource tracker), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == broker_pid and b"spawn_main" in cmdline:
            found.append(int(fields[16]))
    return found


def wait_log_bytes_at_most(directory: str, limit: int, timeout_s: float = 30) -> None:
    """Until the `.log` files of a partition directory hold at most `limit` bytes (the cleaner
    has compacted them)."""
    def size() -> int:
        return sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
                   if n.endswith(".log"))

    deadline = time.monotonic() + timeout_s
    while size() > limit:
        assert time.monotonic() < deadline, f"{directory} still {size()} bytes"
        time.sleep(0.05)

def test_consumer_offsets_stay_bounded_and_survive_kill_9(broker_factory) -> None:
    """__consumer_offsets is compacted: after thousands of commits by one group its size on
    disk is bounded by the live offsets (plus the uncleaned active segment), and after a
    kill -9 the group's committed offset is the last one."""
    segment_bytes = 16_384
    broker = broker_factory(configs={
        **BROKER, "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": str(segment_bytes),
    })
    bootstrap = broker.bootstrap
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-bounded",
                         "enable.auto.commit": False})
    commits = 1500
    try:
        for i in range(1, commits + 1):
            consumer.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
    finally:
        consumer.close()
    wait_log_bytes_at_most(f"{broker.data_dir}/__consumer_offsets-0", 3 * segment_bytes)
    broker.kill()
    broker.start()
    checker = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-bounded"})
    try:
        (committed,) = checker.committed([TopicPartition(topic, 0)], timeout=15)
        assert committed.offset == commits
    finally:
        checker.close()


def test_transaction_state_stays_bounded_and_survives_kill_9(broker_factory) -> None:
    """__transaction_state is compacted: hundreds of transactions of one transactional id
    leave a bounded log, and after a kill -9 the id's producer is fenced and resumes."""
    segment_bytes = 16_384
    broker = broker_factory(configs={
        **BROKER, "transaction.state.log.num.partitions": "1",
        "transaction.state.log.segment.bytes": str(segment_bytes),
        "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1",
    })
    bootstrap = broker.bootstrap
    topic = f"txn-target-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    txn_id = f"bounded-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    producer.init_transactions(15)
    for i in range(300):
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"%d" % i, partition=0)
        producer.commit_transaction(15)
    wait_log_bytes_at_most(f"{broker.data_dir}/__transaction_state-0", 3 * segment_bytes)
    broker.kill()
    broker.start()
    again = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    again.init_transactions(30)
    again.begin_transaction()
    again.produce(topic, key=b"k", value=b"after", partition=0)
    again.commit_transaction(15)
    seen = ck_read(bootstrap, topic, "read_committed")
    assert seen[-1][2] == b"after" and len([v for _, _, v in seen if v != b"after"]) >= 1
