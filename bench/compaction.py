"""Log compaction: how fast the cleaner cleans, and what it costs the producers.

Run: `.venv/bin/python bench/compaction.py [--quick] [--json PATH]`.

What it measures:
1. Cleaning throughput, no broker: a partition log on the real filesystem (a temporary
   directory) is filled with keyed records of 100 B and of 1 KiB values (keys drawn from a
   fixed set, so most records are superseded), in 1 MiB segments, then cleaned once by the
   cleaner's own code (plan; the cleaner process's function, called in this process; swap),
   timed from plan to swap. MB/s is dirty bytes cleaned
   per second of that time (MB = 10^6 bytes); the note gives records per second and the
   bytes left, and MB/s per CPU second of this process (what the machine's load changes
   least). Target: >= 100 MB/s. `--python-loops` adds the same rows (a fifth of the bytes)
   with the record loops in Python, as an install without the C extension runs them.
2. Produce throughput while the cleaner runs: one `ackly serve` process with a compacted
   topic (1 MiB segments, min.cleanable.dirty.ratio=0.01, cleaner backoff 100 ms) takes
   N keyed 1 KiB records (keys drawn from 1,000) from kcat (librdkafka; acks=all,
   linger.ms=5), once with log.cleaner.enable=true and once false, interleaved, `--repeats`
   times; the ratio is of the medians, with / without. Target: >= 0.8. kcat, a C client,
   leaves the broker and its cleaner the CPU a Python producer would take; without kcat (or
   with `--python-producer`) confluent-kafka produces from this process. The note says in
   how many runs a clean completed (the partition's cleaner-offset-checkpoint exists) and the
   CPU seconds the cleaner process and the broker (with and without the cleaner) used: on a
   loaded machine the broker's CPU for the same records says what the cleaner costs its
   process better than the throughput does. `--cleaner-io-max B` sets
   log.cleaner.io.max.bytes.per.second for this row; `--produce-only` skips rows 1 and 2.

It prints numbers and asserts nothing; every loop is bounded in count and time. The machine
has 2 cores shared with whatever else runs: read the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ackly.config import BrokerConfig
from ackly.log import batch_filter
from ackly.log.clean_plan import plan_clean
from ackly.log.clean_swap import apply_clean
from ackly.log.cleaner import CleanerSettings
from ackly.log.disk import RealDisk
from ackly.log.partition_log import PartitionLog
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches
from ackly.server.cleaner_worker import run_in_worker
from ackly.testing.broker_process import BrokerProcess

MB = 1_000_000
NOW_MS = 1_700_000_000_000


def clean_throughput(value_bytes: int, total_bytes: int, keys: int, python_loops: bool = False
                     ) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix="ackly-bench-compaction-")
    native = batch_filter._native
    if python_loops:
        batch_filter._native = None  # type: ignore[assignment]  # as an install without a compiler
    try:
        config = BrokerConfig.from_properties({
            "log.cleanup.policy": "compact", "log.segment.bytes": str(1 << 20),
            "log.flush.policy": "never",
        }).topic_defaults()
        log = PartitionLog.open(RealDisk(), os.path.join(directory, "t-0"), config, NOW_MS)
        rng = random.Random(1)
        per_batch = max(1, 16_384 // (value_bytes + 20))
        written = 0
        records = 0
        value = b"v" * value_bytes
        while written < total_bytes:
            batch = bytearray(encode_batch([
                Record(key=b"key-%06d" % rng.randrange(keys), value=value, timestamp_ms=NOW_MS)
                for _ in range(per_batch)
            ]))
            log.append(batch, validate_batches(batch, 1 << 30), 0, NOW_MS)
            written += len(batch)
            records += per_batch
        log.roll(NOW_MS)
        log.set_high_watermark(log.log_end_offset)
        log.flush_now()
        dirty = log.size_bytes
        start, cpu_start = time.perf_counter(), time.process_time()
        job = plan_clean(log, 0, NOW_MS, CleanerSettings(), force=True)
        assert job is not None
        # As the broker's cleaner runs it (its process's function, here in-process).
        job.run_flush()
        job.stats = run_in_worker(job.spec(), float("inf"))
        apply_clean(log, job)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        left = log.size_bytes
        log.close()
        return {
            "row": f"clean {value_bytes} B records" + (" (Python loops)" if python_loops else ""),
            "mb_per_s": round(dirty / MB / elapsed, 1),
            "note": f"{dirty / MB:.0f} MB dirty, {records / elapsed / 1000:.0f} k records/s, "
                    f"{left / MB:.1f} MB left, {elapsed:.2f} s; per CPU second "
                    f"{dirty / MB / cpu:.1f} MB/s",
        }
    finally:
        batch_filter._native = native  # type: ignore[assignment]
        shutil.rmtree(directory, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` and its waited-for children have used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cleaner_cpu_seconds(broker_pid: int) -> float:
    """CPU time of the broker's children (its cleaner process), alive now."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == broker_pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def write_input(path: str, count: int) -> None:
    """kcat's input: `key:value` lines, keys drawn from 1,000, 1 KiB values."""
    rng = random.Random(2)
    value = b"v" * 1024
    with open(path, "wb") as f:
        for _ in range(count):
            f.write(b"key-%05d:%s\n" % (rng.randrange(1000), value))


def produce_run(cleaner: bool, count: int, io_max_bytes_per_second: str | None, input_path: str | None
                ) -> tuple[float, int, float, float]:
    """(MB/s, 1 if a clean completed, broker CPU s, cleaner CPU s) of one produce run."""
    directory = tempfile.mkdtemp(prefix="ackly-bench-compaction-p-")
    configs = {"log.cleaner.enable": "true" if cleaner else "false", "log.cleaner.backoff.ms": "100"}
    if io_max_bytes_per_second is not None:
        configs["log.cleaner.io.max.bytes.per.second"] = io_max_bytes_per_second
    broker = BrokerProcess(directory, configs=configs).start()
    try:
        topic = f"c-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(1 << 20),
            "min.cleanable.dirty.ratio": "0.01",
        })])[topic].result(15)
        del admin
        assert broker.proc is not None
        broker_cpu = cpu_seconds(broker.proc.pid)
        cleaner_cpu = 0.0
        start = time.perf_counter()
        if input_path is not None:
            # kcat (librdkafka in C): the client takes little CPU, so the broker and its
            # cleaner are what the two cores are shared between.
            with open(input_path, "rb") as stdin:
                kcat = subprocess.Popen(
                    ["kcat", "-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-K", ":",
                     "-X", "linger.ms=5", "-X", "batch.size=1000000", "-X", "acks=all",
                     "-X", "queue.buffering.max.messages=1000000"],
                    stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                while kcat.poll() is None and time.perf_counter() - start < 120:
                    cleaner_cpu = max(cleaner_cpu, cleaner_cpu_seconds(broker.proc.pid))
                    time.sleep(0.05)
                if kcat.poll() is None:
                    kcat.kill()
                kcat.wait(10)
                if kcat.returncode != 0:
                    raise SystemExit(f"kcat failed: {kcat.stderr.read().decode() if kcat.stderr else ''}")
        else:
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all",
                                 "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
            value = b"v" * 1024
            rng = random.Random(2)
            deadline = start + 120
            for _ in range(count):
                while True:
                    try:
                        producer.produce(topic, key=b"key-%05d" % rng.randrange(1000), value=value,
                                         partition=0)
                        break
                    except BufferError:
                        producer.poll(0.01)
                if time.perf_counter() > deadline:
                    break
            producer.flush(120)
            del producer  # disconnect before the broker stops
        elapsed = time.perf_counter() - start
        broker_cpu = cpu_seconds(broker.proc.pid) - broker_cpu
        cleaner_cpu = max(cleaner_cpu, cleaner_cpu_seconds(broker.proc.pid))
        cleans = 0
        checkpoint = os.path.join(directory, f"{topic}-0", "cleaner-offset-checkpoint")
        if os.path.exists(checkpoint):
            cleans = 1
        return count * 1024 / MB / elapsed, cleans, broker_cpu, cleaner_cpu
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--cleaner-io-max", help="log.cleaner.io.max.bytes.per.second for row 3")
    parser.add_argument("--produce-only", action="store_true", help="skip rows 1 and 2")
    parser.add_argument("--python-loops", action="store_true",
                        help="also clean with the Python record loops (as without the C extension)")
    parser.add_argument("--repeats", type=int, default=3, help="produce runs with and without")
    parser.add_argument("--python-producer", action="store_true",
                        help="produce with confluent-kafka from Python even where kcat exists")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"load average before: {os.getloadavg()}")
    rows = [] if args.produce_only else [
        clean_throughput(100, 200 * MB // scale, 20_000),
        clean_throughput(1024, 400 * MB // scale, 20_000),
    ]
    if args.python_loops:
        rows += [
            clean_throughput(100, 40 * MB // scale, 20_000, python_loops=True),
            clean_throughput(1024, 80 * MB // scale, 20_000, python_loops=True),
        ]
    for row in rows:
        print(f"{row['row']:<28} {row['mb_per_s']:>8} MB/s   {row['note']}")
    count = 200_000 // scale
    input_path = None
    if shutil.which("kcat") and not args.python_producer:
        input_path = os.path.join(tempfile.mkdtemp(prefix="ackly-bench-compaction-in-"), "records")
        write_input(input_path, count)
    with_cleaner, without, cpu_with, cpu_without, cleaner_cpu = [], [], [], [], []
    cleaned_runs = 0
    try:
        for _ in range(args.repeats):
            mbps, cleaned, broker_cpu, cleaner = produce_run(True, count, args.cleaner_io_max, input_path)
            with_cleaner.append(mbps)
            cpu_with.append(broker_cpu)
            cleaner_cpu.append(cleaner)
            cleaned_runs += cleaned
            mbps, _, broker_cpu, _ = produce_run(False, count, None, input_path)
            without.append(mbps)
            cpu_without.append(broker_cpu)
    finally:
        if input_path is not None:
            shutil.rmtree(os.path.dirname(input_path), ignore_errors=True)
    ratio = statistics.median(with_cleaner) / statistics.median(without)
    row = {
        "row": "produce with / without cleaner"
               + (f" (io max {args.cleaner_io_max} B/s)" if args.cleaner_io_max else ""),
        "ratio": round(ratio, 2),
        "note": f"{count} x 1 KiB by {'kcat' if input_path else 'confluent-kafka (Python)'}, median MB/s "
                f"with {statistics.median(with_cleaner):.1f} without {statistics.median(without):.1f} "
                f"(runs: with {', '.join(f'{x:.0f}' for x in with_cleaner)}; without "
                f"{', '.join(f'{x:.0f}' for x in without)}); runs with >= 1 clean: "
                f"{cleaned_runs}/{args.repeats}; CPU seconds (medians): cleaner process "
                f"{statistics.median(cleaner_cpu):.2f}, broker with {statistics.median(cpu_with):.2f} "
                f"without {statistics.median(cpu_without):.2f}",
    }
    rows.append(row)
    print(f"{row['row']:<28} {row['ratio']:>8}        {row['note']}")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
