"""Produce and consume throughput over an SSL listener, as a ratio to PLAINTEXT, in one run.

Run: `.venv/bin/python bench/tls.py [--quick] [--repeats N] [--count N] [--json PATH]`.

What it measures: one `ackly serve` process with two listeners, PLAINTEXT and SSL (a PEM key
store made at start with trustme, TLS 1.3 as negotiated by default, no client certificate),
`log.flush.policy=never` so that the disk does not hide the network path. confluent-kafka
(librdkafka) produces `--count` x 10 KiB values to one partition of a new topic (acks=1,
linger.ms=5, batch.size=1,000,000, no compression, no idempotence), timed from the first
produce() to flush() returning; then a new Consumer reads them back with assign() at offset 0
(fetch.queue.backoff.ms=0, 32/64 MiB fetch limits), timed from assign() to the last message.
Runs alternate PLAINTEXT and SSL on the same broker (after an uncounted warm-up of each), and
each row reports the median MB/s (value bytes, MB = 10^6) and SSL / PLAINTEXT.

Over PLAINTEXT a fetch answer's file ranges go out with sendfile; over SSL they must be
encrypted, so the broker reads them and writes them through the TLS transport (one more copy
and the encryption on the broker's one thread): the consume ratio shows that cost. The notes
give the broker's and the client's CPU in cores during the timed part.

It prints numbers and asserts nothing; every loop is bounded in count and time. The machine
has 2 cores shared with whatever else runs: read the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.clients.tlskit import make_tls_files

from ackly.testing.broker_process import BrokerProcess

MB = 1_000_000
VALUE_BYTES = 10 * 1024
RUN_TIMEOUT_S = 120.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Measure:
    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid

    def __enter__(self) -> Measure:
        self.wall = time.perf_counter()
        self.broker = cpu_seconds(self.broker_pid)
        self.client = own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.wall
        self.broker_cores = (cpu_seconds(self.broker_pid) - self.broker) / self.seconds
        self.client_cores = (own_cpu_seconds() - self.client) / self.seconds


def produce(bootstrap: str, client: dict[str, str], topic: str, count: int, pid: int) -> Measure:
    producer = Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": 1,
        "enable.idempotence": False, "queue.buffering.max.kbytes": 2_000_000,
        "queue.buffering.max.messages": 1_000_000, "delivery.report.only.error": True, "log_level": 3, **client,
    })
    errors: list[Any] = []
    value = b"x" * VALUE_BYTES
    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    with Measure(pid) as measure:
        for _ in range(count):
            while True:
                try:
                    producer.produce(topic, value, partition=0,
                                     on_delivery=lambda err, _m: errors.append(err) if err else None)
                    break
                except BufferError:
                    producer.poll(0.01)
        remaining = producer.flush(RUN_TIMEOUT_S)
    del producer  # closed now, not when the broker has gone
    if remaining or errors:
        raise RuntimeError(f"produce: {remaining} not delivered, errors {errors[:3]}")
    return measure


def consume(bootstrap: str, client: dict[str, str], topic: str, count: int, pid: int) -> Measure:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-unused", "enable.auto.commit": False,
        "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 32 * 1024 * 1024,
        "fetch.queue.backoff.ms": 0, "auto.offset.reset": "error", **client,
    })
    try:
        consumer.list_topics(topic, timeout=10)
        got = 0
        deadline = time.monotonic() + RUN_TIMEOUT_S
        with Measure(pid) as measure:
            consumer.assign([TopicPartition(topic, 0, 0)])
            while got < count and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=min(count - got, 10_000), timeout=0.5):
                    error = message.error()
                    if error is not None and error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"consume: {error}")
                    if error is None:
                        got += 1
        if got < count:
            raise RuntimeError(f"consume: read {got} of {count} within {RUN_TIMEOUT_S} s")
        return measure
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--count", type=int, default=10_000, help="10 KiB messages per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    count = args.count // 10 if args.quick else args.count
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="ackly-bench-tls-") as tmp:
        tls = make_tls_files(Path(tmp) / "tls")
        broker = BrokerProcess(os.path.join(tmp, "data"), configs={
            "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "log.flush.policy": "never",
            **tls.broker_configs(),
        }).start()
        try:
            assert broker.proc is not None
            pid = broker.proc.pid
            clients = {
                "PLAINTEXT": (broker.listener_bootstrap("PLAINTEXT"), {}),
                "SSL": (broker.listener_bootstrap("SSL"), {"security.protocol": "SSL", "ssl.ca.location": tls.ca}),
            }
            admin = AdminClient({"bootstrap.servers": clients["PLAINTEXT"][0]})
            runs: dict[str, dict[str, list[Measure]]] = {"produce": {}, "consume": {}}
            for run in range(args.repeats + 1):  # run 0 is the warm-up
                for name, (bootstrap, client) in clients.items():
                    topic = f"bench-{name.lower()}-{run}"
                    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
                    n = count if run else max(count // 10, 100)
                    produced = produce(bootstrap, client, topic, n, pid)
                    consumed = consume(bootstrap, client, topic, n, pid)
                    if run:
                        runs["produce"].setdefault(name, []).append(produced)
                        runs["consume"].setdefault(name, []).append(consumed)
        finally:
            broker.stop()
    rows = []
    print(f"\n{count} x 10 KiB values per run, median of {args.repeats} runs (MB = 10^6 value bytes)")
    print(f"{'what':<10}{'PLAINTEXT MB/s':>16}{'SSL MB/s':>12}{'SSL/PLAIN':>11}   note")
    for what, by_name in runs.items():
        rates = {name: statistics.median(count * VALUE_BYTES / MB / m.seconds for m in ms)
                 for name, ms in by_name.items()}
        cores = {name: (statistics.median(m.broker_cores for m in ms), statistics.median(m.client_cores for m in ms))
                 for name, ms in by_name.items()}
        ratio = rates["SSL"] / rates["PLAINTEXT"]
        note = "; ".join(f"{name}: broker {b:.2f} cores, client {c:.2f}" for name, (b, c) in cores.items())
        print(f"{what:<10}{rates['PLAINTEXT']:>16.1f}{rates['SSL']:>12.1f}{ratio:>11.2f}   {note}")
        all_runs = {name: [round(count * VALUE_BYTES / MB / m.seconds, 1) for m in ms] for name, ms in by_name.items()}
        print(f"{'':<10}every run: {all_runs}")
        rows.append({"what": what, "plaintext_mb_s": rates["PLAINTEXT"], "ssl_mb_s": rates["SSL"],
                     "ratio": ratio, "cores": cores, "runs": all_runs})
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
