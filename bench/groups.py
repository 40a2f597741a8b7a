"""A consumer group of 3 confluent-kafka consumers sharing a 6-partition topic, on one broker.

Run: `.venv/bin/python bench/groups.py [--count N] [--value-bytes B]`.

Produces N records (default 200,000 x 1,000 B) to a fresh 6-partition topic, then starts 3
consumers in one group (cooperative-sticky assignor, group.initial.rebalance.delay.ms=0 on
the broker) and measures: the time from the consumers' start until all 6 partitions are
assigned (the rebalance), and the group's consume throughput until every record is read,
also as a ratio to one consumer reading the same topic with manual assignment. It prints
numbers and asserts nothing; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ackly.testing.broker_process import BrokerProcess

TOPIC = "bench-groups"
PARTITIONS = 6
TIME_LIMIT_S = 120.0


def produce(bootstrap: str, count: int, value: bytes) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS)])[TOPIC].result(30)
    producer = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_000_000, "enable.idempotence": False,
    })
    for i in range(count):
        while True:
            try:
                producer.produce(TOPIC, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)


def consume_group(bootstrap: str, count: int, members: int) -> tuple[float, float]:
    """(seconds until all partitions are assigned, seconds until all records are read)."""
    lock = threading.Lock()
    assigned: set[tuple[int, int]] = set()
    read = [0]
    started = time.perf_counter()
    all_assigned_at = [0.0]
    done = threading.Event()

    def member(index: int) -> None:
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "bench", "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky", "enable.auto.commit": True,
            "fetch.max.bytes": 50_000_000, "max.partition.fetch.bytes": 10_000_000,
        })

        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            with lock:
                assigned.update((index, p.partition) for p in parts)
                owned = {p for _, p in assigned}
                if len(owned) == PARTITIONS and not all_assigned_at[0]:
                    all_assigned_at[0] = time.perf_counter() - started

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            with lock:
                for p in parts:
                    assigned.discard((index, p.partition))

        consumer.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
        deadline = time.monotonic() + TIME_LIMIT_S
        try:
            while not done.is_set() and time.monotonic() < deadline:
                msgs = consumer.consume(10_000, 0.2)
                n = sum(1 for m in msgs if not m.error())
                with lock:
                    read[0] += n
                    if read[0] >= count:
                        done.set()
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
    for t in threads:
        t.start()
    done.wait(TIME_LIMIT_S)
    finished = time.perf_counter() - started
    for t in threads:
        t.join(30)
    return all_assigned_at[0], finished if read[0] >= count else float("nan")


def consume_assigned(bootstrap: str, count: int) -> float:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-single", "enable.auto.commit": False,
        "fetch.max.bytes": 50_000_000, "max.partition.fetch.bytes": 10_000_000,
    })
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    started = time.perf_counter()
    n = 0
    deadline = time.monotonic() + TIME_LIMIT_S
    while n < count and time.monotonic() < deadline:
        n += sum(1 for m in consumer.consume(10_000, 0.2) if not m.error())
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed if n >= count else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--value-bytes", type=int, default=1000)
    args = ap.parse_args()
    value = os.urandom(args.value_bytes)
    mb = args.count * args.value_bytes / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(tmp, configs={
            "group.initial.rebalance.delay.ms": "0", "log.flush.policy": "never",
        }).start()
        try:
            produce(broker.bootstrap, args.count, value)
            single_s = consume_assigned(broker.bootstrap, args.count)
            rebalance_s, group_s = consume_group(broker.bootstrap, args.count, members=3)
        finally:
            broker.stop()
    print(f"records: {args.count} x {args.value_bytes} B = {mb:.0f} MB in {PARTITIONS} partitions")
    print(f"one consumer, manual assignment: {mb / single_s:8.1f} MB/s")
    print(f"group of 3 (cooperative-sticky): {mb / group_s:8.1f} MB/s "
          f"(ratio to one consumer: {single_s / group_s:.2f}), including the first rebalance")
    print(f"first rebalance, start to all {PARTITIONS} partitions assigned: {rebalance_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
