"""Client quotas: what the accounting costs an unthrottled producer, and how close a throttled
one is held to its quota. Prints numbers; fails nothing.

    .venv/bin/python bench/quotas.py [--quick]

Rows (confluent-kafka producer, acks=1, one partition, flush.policy=never, one fresh broker):
  A  200,000 x 100 B values, no quota anywhere                         (k msg/s)
  B  the same with a quota on another client id (every request resolved, not measured)
  C  the same with a producer_byte_rate on this client id far above what it sends (measured)
  D  a producer_byte_rate of 1 MiB/s, 20 MiB in 64 KiB values, the default window (11 x 1 s):
     the observed rate / the quota, next to Kafka's model of it: a fresh client may send 10
     windows' worth at once, then the quota, so quota * (1 + 10 s / elapsed)
Each of A-C is the median of 3 runs; B and C are also printed as a ratio to A.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.protocol.messages import build_request
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.wire import WireClient


def set_quota(bootstrap: str, client_id: str, key: str, value: float) -> None:
    with WireClient(bootstrap) as wire:
        response = wire.request(build_request(49, 1, {"validate_only": False, "entries": [{
            "entity": [{"entity_type": "client-id", "entity_name": client_id}],
            "ops": [{"key": key, "value": value, "remove": False}]}]}))
    assert all(int(e.error_code) == 0 for e in response.entries), response


def produce(bootstrap: str, client_id: str, count: int, value_bytes: int) -> float:
    topic = f"q-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "acks": 1, "linger.ms": 5,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 2_000_000})
    value = b"x" * value_bytes
    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(300)
    elapsed = time.perf_counter() - start
    if left:
        raise RuntimeError(f"{left} messages not acknowledged")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    small = 200_000 // scale
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[tuple[str, Any]] = []
        broker = BrokerProcess(str(Path(tmp) / "a"), configs={"log.flush.policy": "never"}).start()
        try:
            b = broker.bootstrap
            produce(b, "warm-up", small // 10, 100)
            a = statistics.median(small / produce(b, "bench", small, 100) for _ in range(3))
            set_quota(b, "someone-else", "producer_byte_rate", 1024.0)
            bq = statistics.median(small / produce(b, "bench", small, 100) for _ in range(3))
            set_quota(b, "bench", "producer_byte_rate", 1e12)
            c = statistics.median(small / produce(b, "bench", small, 100) for _ in range(3))
            rows += [("A no quota", f"{a / 1000:.1f} k msg/s"),
                     ("B quota on another client", f"{bq / 1000:.1f} k msg/s  ({bq / a:.2f} x A)"),
                     ("C quota on this client, not reached", f"{c / 1000:.1f} k msg/s  ({c / a:.2f} x A)")]
        finally:
            broker.stop()
        broker = BrokerProcess(str(Path(tmp) / "d"), configs={"log.flush.policy": "never"}).start()
        try:
            quota = 1024 * 1024
            total_bytes = (12 if args.quick else 20) * 1024 * 1024
            set_quota(broker.bootstrap, "limited", "producer_byte_rate", float(quota))
            elapsed = produce(broker.bootstrap, "limited", total_bytes // 65536, 65536)
            rate = total_bytes / elapsed
            model = quota * (1 + 10 / elapsed)
            rows.append(("D 1 MiB/s quota", f"{rate / quota:.2f} x quota, {rate / model:.2f} x the model "
                                            f"({rate / 1024:.0f} KiB/s over {elapsed:.1f} s)"))
        finally:
            broker.stop()
    for name, value in rows:
        print(f"{name:40s} {value}")


if __name__ == "__main__":
    main()
