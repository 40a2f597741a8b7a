"""Transactional produce throughput as a ratio to idempotent produce, on one ackly broker.

Run: `.venv/bin/python bench/transactions.py [--quick] [--repeats N] [--partitions N]
[--commit-interval-ms MS] [--flush-policy always|interval|never] [--json PATH]`.

What it measures: confluent-kafka (librdkafka) sending 1 KiB values round-robin to the
partitions of a fresh topic of one `ackly serve` process, timed from the first send to the
last record acknowledged, in two modes, interleaved on the same broker after an uncounted
warm-up of each:
- idempotent: enable.idempotence on (acks=all), one flush at the end;
- transactional: a transactional.id, a transaction commit every `--commit-interval-ms`
  (100 ms by default): begin_transaction, produce for 100 ms, commit_transaction (which
  flushes, then EndTxn; the markers follow). The clock runs through the commits, so the
  ratio includes what a transaction costs: AddPartitionsToTxn, the flush at each commit, the
  EndTxn round trip, the `__transaction_state` writes and one marker per partition.
Target: transactional / idempotent >= 0.85 (the median over rounds of the ratio within a
round, as bench/idempotent.py). Both use linger.ms=5, batch.size=1,000,000, no compression,
delivery reports for errors only, and a 4 MiB local queue, so that a commit does not first
drain seconds of records queued ahead (the achieved interval between commits is printed, and
each commit's time split into the flush and the EndTxn round trip). 300,000 records;
`--quick` divides the count by five. It prints numbers and asserts nothing; every loop is
bounded in count and time. The machine has 2 cores shared with whatever else runs: read the
load averages printed before and after, and the spread of the runs (later runs of a mode are
often slower as the page cache grows, bench/README.md), hence the paired ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Producer
from idempotent import Broker, create_topic, process_cpu_s  # bench/ is the script's directory

MB = 1_000_000
VALUE_BYTES = 1024
RUN_TIMEOUT_S = 120.0
COMMON = {
    "acks": "all", "linger.ms": 5, "batch.size": 1_000_000, "batch.num.messages": 1_000_000,
    # A local queue of 4 MiB (librdkafka's default is 1 GiB): produce() blocks (BufferError)
    # once the client is that far ahead of the broker, so a transaction's flush drains at
    # most 4 MiB and the commits keep close to their interval.
    "queue.buffering.max.kbytes": 4 * 1024, "queue.buffering.max.messages": 2_000_000,
    "compression.type": "none", "delivery.report.only.error": True,
    "message.timeout.ms": int(RUN_TIMEOUT_S * 1000), "log_level": 4,
}


@dataclass
class Run:
    seconds: float
    transactions: int = 0
    commit_ms: list[float] | None = None  # commit_transaction after the flush: EndTxn
    flush_ms: list[float] | None = None  # the flush before each commit_transaction


def _producer(bootstrap: str, failures: list[str], **config: Any) -> Producer:
    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None and len(failures) < 5:
            failures.append(str(err))

    return Producer({"bootstrap.servers": bootstrap, "on_delivery": on_delivery, **COMMON, **config})


def _produce_one(producer: Producer, topic: str, value: bytes, partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:
            producer.poll(0.005)


def idempotent_run(bootstrap: str, topic: str, partitions: int, count: int, interval_ms: int,
                   run_id: str) -> Run:
    failures: list[str] = []
    producer = _producer(bootstrap, failures, **{"enable.idempotence": True})
    value = b"x" * VALUE_BYTES
    _produce_one(producer, topic, value, 0)  # untimed: connect, metadata, producer id
    if producer.flush(30):
        raise RuntimeError("the first record was not acknowledged within 30 s")
    t0 = time.perf_counter()
    deadline = t0 + RUN_TIMEOUT_S
    sent = 0
    while sent < count and time.perf_counter() < deadline:
        _produce_one(producer, topic, value, sent % partitions)
        sent += 1
        if not sent & 0x3FF:
            producer.poll(0)
    remaining = producer.flush(max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - t0
    if sent < count or remaining or failures:
        raise RuntimeError(f"{sent}/{count} sent, {remaining} unacknowledged, failures: {failures}")
    return Run(elapsed)


def transactional_run(bootstrap: str, topic: str, partitions: int, count: int, interval_ms: int,
                      run_id: str) -> Run:
    failures: list[str] = []
    producer = _producer(bootstrap, failures, **{"transactional.id": f"bench-{run_id}",
                                                 "transaction.timeout.ms": int(RUN_TIMEOUT_S * 1000)})
    value = b"x" * VALUE_BYTES
    producer.init_transactions(30)  # untimed: InitProducerId at the transaction coordinator
    producer.begin_transaction()
    _produce_one(producer, topic, value, 0)
    producer.commit_transaction(30)
    commits: list[float] = []
    flushes: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + RUN_TIMEOUT_S
    sent = 0
    while sent < count and time.perf_counter() < deadline:
        producer.begin_transaction()
        txn_end = time.perf_counter() + interval_ms / 1000
        while sent < count and time.perf_counter() < txn_end:
            _produce_one(producer, topic, value, sent % partitions)
            sent += 1
            if not sent & 0x3FF:
                producer.poll(0)
        # commit_transaction flushes first; flushing here splits its time into the records'
        # acknowledgements and the EndTxn round trip (the coordinator's decision write).
        c0 = time.perf_counter()
        if producer.flush(max(1.0, deadline - c0)):
            break
        c1 = time.perf_counter()
        producer.commit_transaction(max(1.0, deadline - c1))
        flushes.append((c1 - c0) * 1000)
        commits.append((time.perf_counter() - c1) * 1000)
    elapsed = time.perf_counter() - t0
    if sent < count or failures:
        raise RuntimeError(f"{sent}/{count} sent, failures: {failures}")
    return Run(elapsed, len(commits), commits, flushes)


MODES = {"idempotent": idempotent_run, "transactional": transactional_run}


def measure(broker: Broker, partitions: int, count: int, interval_ms: int, repeats: int) -> dict[str, Any]:
    mb = count * VALUE_BYTES / MB
    for name, runner in MODES.items():  # warm-up, uncounted
        topic = f"warm-{name}"
        create_topic(broker.bootstrap, topic, partitions)
        runner(broker.bootstrap, topic, partitions, max(count // 10, 1), interval_ms, f"warm-{name}")
    rounds: list[dict[str, tuple[float, float, float]]] = []  # mode -> (MB/s, broker CPU ms/MB, s)
    commits: list[float] = []
    flushes: list[float] = []
    transactions = 0
    for i in range(repeats):
        order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
        got: dict[str, tuple[float, float, float]] = {}
        for name in order:
            topic = f"{name}-{i}"
            create_topic(broker.bootstrap, topic, partitions)
            cpu0 = process_cpu_s(broker.pid)
            run = MODES[name](broker.bootstrap, topic, partitions, count, interval_ms, f"{name}-{i}")
            got[name] = (mb / run.seconds, (process_cpu_s(broker.pid) - cpu0) * 1000 / mb, run.seconds)
            if run.commit_ms:
                commits += run.commit_ms
                flushes += run.flush_ms or []
                transactions += run.transactions
        rounds.append(got)
    commits.sort()
    flushes.sort()
    return {
        "partitions": partitions, "records": count, "value_bytes": VALUE_BYTES,
        "commit_interval_ms": interval_ms,
        "runs_mb_s": {n: [r[n][0] for r in rounds] for n in MODES},
        "median_mb_s": {n: statistics.median(r[n][0] for r in rounds) for n in MODES},
        "broker_cpu_ms_per_mb": {n: statistics.median(r[n][1] for r in rounds) for n in MODES},
        "paired_ratio": statistics.median(r["transactional"][0] / r["idempotent"][0] for r in rounds),
        "transactions_per_run": transactions / max(repeats, 1),
        "transaction_ms_mean": (sum(r["transactional"][2] for r in rounds) * 1000 / max(transactions, 1)),
        "end_txn_ms": percentiles(commits),
        "flush_ms": percentiles(flushes),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": values[len(values) // 2], "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
            "max": values[-1]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the record count")
    ap.add_argument("--repeats", type=int, default=3, metavar="N", help="runs per mode (median)")
    ap.add_argument("--partitions", type=int, default=1, metavar="N")
    ap.add_argument("--commit-interval-ms", type=int, default=100, metavar="MS")
    ap.add_argument("--flush-policy", default="always", choices=("always", "interval", "never"))
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    count = 300_000 // (5 if args.quick else 1)
    print(f"load average before: {os.getloadavg()[0]:.2f}; broker log.flush.policy={args.flush_policy}; "
          f"{args.repeats} runs per mode; {count:,} x {VALUE_BYTES} B to {args.partitions} partition(s); "
          f"a transaction commit every {args.commit_interval_ms} ms")
    with Broker({"log.flush.policy": args.flush_policy}) as broker:
        r = measure(broker, args.partitions, count, args.commit_interval_ms, args.repeats)
    for name in MODES:
        print(f"    {name:<14} {r['median_mb_s'][name]:7.1f} MB/s, broker "
              f"{r['broker_cpu_ms_per_mb'][name]:5.2f} CPU ms/MB; runs {[round(x, 1) for x in r['runs_mb_s'][name]]}")
    verdict = "ok" if r["paired_ratio"] >= 0.85 else "below 0.85"
    print(f"    transactional / idempotent {r['paired_ratio']:5.2f} ({verdict}); "
          f"{r['transactions_per_run']:.0f} transactions per run, one every {r['transaction_ms_mean']:.0f} ms "
          f"on average")
    for what, key in (("flush before the commit", "flush_ms"), ("commit_transaction (EndTxn)", "end_txn_ms")):
        q = r[key]
        print(f"    {what:<28} p50 {q['p50']:6.1f} ms, p99 {q['p99']:6.1f} ms, max {q['max']:6.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"flush_policy": args.flush_policy, "results": r}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
