"""What broker-side recompression costs on the produce path (compression.type other than
`producer`; protocol/recompression.py).

Three measurements; the second and the end-to-end one as ratios in the same run:

1. Core: MB/s of record bytes through `recompress_batches` for lz4 batches of 1 KiB records
   into zstd (the topic's level, 3 by default, and 1); the zero-copy path's only cost is the
   codec check that finds nothing to do (microseconds a request).
2. The produce path's core: validation (which decompresses each compressed batch to walk its
   records) and then recompression into zstd-3, reusing validation's decompressed sections
   (as the produce handler does) or decompressing again; ms per MB of records each.
3. End to end: one broker process, a confluent-kafka producer with compression.type=lz4 and
   acks=all sending 1 KiB records to a `producer` topic (zero copy) and to a `zstd` topic
   (recompressed), MB/s of record bytes each, same records, same producer settings.

Run: `.venv/bin/python bench/recompression.py [--mb 64]`. Every loop is bounded in records and
in time (60 s a topic). The machine is shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.protocol.batch_validation import validate_client_batches
from ackly.protocol.compression import LZ4, ZSTD
from ackly.protocol.recompression import recompress_batches
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import BatchHeader, validate_batches
from ackly.testing.broker_process import BrokerProcess

RECORD_BYTES = 1024
MB = 1_000_000
TOPIC_DEADLINE_S = 60.0


def values(count: int, seed: int = 1) -> list[bytes]:
    """1 KiB values that compress as log lines do (words from a small vocabulary)."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    out = []
    for _ in range(count):
        value = b" ".join(rng.choice(words) for _ in range(200))
        out.append(value[:RECORD_BYTES].ljust(RECORD_BYTES, b"."))
    return out


def best_seconds(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def core() -> None:
    # librdkafka's batches are up to ~1 MB; 16 KiB is linger-sized on a lightly loaded producer.
    # The zero-copy path's whole cost is the codec check that finds nothing to do.
    print(f"{'batch':>8} {'zstd-3 MB/s':>12} {'zstd-1 MB/s':>12} {'zero-copy check us':>19}")
    vals = values(1024)
    for records_per_batch in (16, 256, 1024):
        data = encode_batch([Record(None, v, timestamp_ms=1) for v in vals[:records_per_batch]],
                            compression=LZ4)
        headers = validate_batches(data, len(data))
        raw = records_per_batch * RECORD_BYTES
        zero = best_seconds(lambda d=data, h=headers: recompress_batches(d, h, LZ4, None, 1 << 26))
        z3 = best_seconds(lambda d=data, h=headers: recompress_batches(d, h, ZSTD, 3, 1 << 26))
        z1 = best_seconds(lambda d=data, h=headers: recompress_batches(d, h, ZSTD, 1, 1 << 26))
        print(f"{raw // 1024:>6}Ki {raw / z3 / MB:>12.0f} {raw / z1 / MB:>12.0f} "
              f"{zero * 1e6:>19.1f}")


def produce_path() -> None:
    """Validation + recompression of lz4 batches into zstd-3, decompressing once or twice."""
    print(f"{'batch':>8} {'once ms/MB':>11} {'twice ms/MB':>12} {'once/twice':>11}")
    vals = values(1024)
    for records_per_batch in (16, 256, 1024):
        data = encode_batch([Record(None, v, timestamp_ms=1) for v in vals[:records_per_batch]],
                            compression=LZ4)
        headers = validate_batches(data, len(data))
        raw = records_per_batch * RECORD_BYTES

        def once(d: bytes = data, h: list[BatchHeader] = headers) -> None:
            sections: dict[int, bytes] = {}
            validate_client_batches(d, h, 1, None, 1 << 26, sections)
            recompress_batches(d, h, ZSTD, 3, 1 << 26, sections)

        def twice(d: bytes = data, h: list[BatchHeader] = headers) -> None:
            validate_client_batches(d, h, 1, None, 1 << 26)
            recompress_batches(d, h, ZSTD, 3, 1 << 26)

        t_once, t_twice = float("inf"), float("inf")
        for _ in range(3):  # interleaved: the machine's load moves under both alike
            t_once = min(t_once, best_seconds(once, 3))
            t_twice = min(t_twice, best_seconds(twice, 3))
        print(f"{raw // 1024:>6}Ki {t_once / raw * MB * 1e3:>11.2f} "
              f"{t_twice / raw * MB * 1e3:>12.2f} {t_once / t_twice:>11.2f}")


def produce_mb_s(bootstrap: str, topic: str, vals: list[bytes], total: int) -> tuple[float, int]:
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4",
                         "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
                         "queue.buffering.max.kbytes": 256 * 1024})
    errors: list[object] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    start = time.perf_counter()
    deadline = start + TOPIC_DEADLINE_S
    sent = 0
    while sent < total and time.perf_counter() < deadline:
        try:
            producer.produce(topic, vals[sent % len(vals)], on_delivery=report)
            sent += 1
        except BufferError:
            producer.poll(0.01)
        if sent % 1000 == 0:
            producer.poll(0)
    left = producer.flush(max(1.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - start
    assert not errors, errors[:3]
    delivered = sent - left
    return delivered * RECORD_BYTES / elapsed / MB, delivered


def end_to_end(total_mb: int) -> None:
    total = total_mb * MB // RECORD_BYTES
    vals = values(4096)
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(os.path.join(tmp, "data")).start()
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            topics = {"as-produced": "producer", "zstd": "zstd"}
            futures = admin.create_topics([NewTopic(name, 1, 1, config={"compression.type": c})
                                           for name, c in topics.items()])
            for f in futures.values():
                f.result(30)
            results = {}
            for name in ("as-produced", "zstd", "as-produced", "zstd"):  # interleaved twice
                mb_s, delivered = produce_mb_s(broker.bootstrap, name, vals, total)
                results.setdefault(name, []).append(mb_s)
                print(f"{name:>12}: {mb_s:7.1f} MB/s ({delivered} records of {RECORD_BYTES} B, "
                      "lz4 producer, acks=all)")
            best = {name: max(v) for name, v in results.items()}
            print(f"recompressed (zstd topic) / zero copy (producer topic): "
                  f"{best['zstd'] / best['as-produced']:.2f}")
        finally:
            broker.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64,
                        help="MB of records per topic and round (0: the core parts only)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    core()
    produce_path()
    if args.mb > 0:
        end_to_end(args.mb)


if __name__ == "__main__":
    main()
