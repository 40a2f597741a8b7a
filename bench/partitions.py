"""How creating, loading and idling with many partitions scales, measured with confluent-kafka.

Run: `.venv/bin/python bench/partitions.py [--partitions 1,100,1000,3000,10000] [--records N]
      [--cluster] [--profile-dir DIR] [--json PATH]`
     `.venv/bin/python bench/partitions.py --ops --partitions 10,100,1000`

For each partition count N, on one fresh `ackly serve` broker (defaults, its own data dir):
  1. CreateTopics of one topic with N partitions (AdminClient), timed to the future's result;
  2. produce `--records` records of 100 B round-robin over the N partitions (acks=all), so
     every partition has a log with data in it;
  3. clean stop (SIGTERM, timed to the exit) and restart on the same port and data, timed from
     `Popen` to the first accepted TCP connection ("clean restart"); then the time until the
     broker answers ListOffsets for every partition with the record count produced ("ready");
  4. idle CPU of the restarted broker over `--idle-s` seconds, in % of one core;
  5. produce `--records`/10 more, `kill -9`, and restart again (time to the port, and to ready).
With `--cluster`, also a 3-broker cluster (etcd, ackly.testing.cluster_processes) with RF=3 and
1,000 partitions: CreateTopics, produce, then one broker stopped cleanly and restarted, then
the same broker killed with SIGKILL and restarted (timed to its "listening" line).

`--ops` measures instead, in this process and without a client, what each step costs in
operations, which a noisy machine does not blur: a BrokerNode on a temporary data directory
(the real filesystem) creates the topic, appends one batch to every partition and flushes,
closes, and starts again; fsync/fdatasync calls are counted (os.fsync wrapped), and so are
the bytes of the single broker's metadata file written and the metadata view updates.

Each column's growth from the previous row is printed as a ratio next to the growth of N, so
that a superlinear cost shows as a ratio larger than N's on this noisy, shared machine.
It prints numbers; it is not a test. Every wait is bounded by `--timeout-s`; a step that runs
out of time says so in its row and the run goes on with the next partition count. With
`--profile-dir`, each broker runs under cProfile (`create-N.prof`: start, CreateTopics and
produce; `restart-N.prof`: the clean restart) and is stopped with SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from produce_consume import free_port, loadavg, process_cpu_s

TOPIC = "many"
VALUE = b"x" * 100


class StepFailed(Exception):
    pass


class Serve:
    """One `ackly serve` process on a fixed port over one data directory, restartable."""

    def __init__(self, data_dir: str, port: int, profile_dir: str | None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.profile_dir = profile_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_cpu_s = 0.0
        self.log_path = os.path.join(os.path.dirname(data_dir), "serve.out")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float, profile_name: str | None = None) -> float:
        """Spawn; seconds from Popen to the first accepted connection."""
        cmd = [sys.executable]
        if self.profile_dir and profile_name:
            cmd += ["-m", "cProfile", "-o", os.path.join(self.profile_dir, profile_name)]
        cmd += ["-m", "ackly", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", self.data_dir, "--broker-id", "0"]
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as out:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        while time.perf_counter() - t0 < timeout_s:
            with socket.socket() as s:
                s.settimeout(0.5)
                try:
                    s.connect(("127.0.0.1", self.port))
                    elapsed = time.perf_counter() - t0
                    # CPU the broker used to get there: on a shared machine, the number the
                    # load does not stretch.
                    self.start_cpu_s = process_cpu_s(self.proc.pid)
                    return elapsed
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise StepFailed(f"broker exited with status {self.proc.returncode} while starting: "
                                 f"{self.last_words()}")
            time.sleep(0.005)
        raise StepFailed(f"port not accepting after {timeout_s:.0f} s")

    def stop(self, timeout_s: float) -> float:
        """SIGTERM (SIGINT under cProfile, so the profile is written); seconds to the exit."""
        assert self.proc is not None
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.profile_dir else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise StepFailed(f"clean stop took more than {timeout_s:.0f} s; killed") from None
        return time.perf_counter() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def last_words(self) -> str:
        """The broker's last output line (the exception, after a traceback)."""
        with open(self.log_path, "rb") as f:
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "(no output)"


def create_topic(bootstrap: str, partitions: int, rf: int, timeout_s: float) -> float:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    t0 = time.perf_counter()
    futures = admin.create_topics([NewTopic(TOPIC, partitions, rf)],
                                  operation_timeout=timeout_s, request_timeout=timeout_s + 5)
    try:
        futures[TOPIC].result(timeout=timeout_s + 10)
    except KafkaException as exc:
        raise StepFailed(f"CreateTopics: {exc}") from None
    return time.perf_counter() - t0


def produce_round_robin(bootstrap: str, partitions: int, count: int, timeout_s: float,
                        start: int = 0) -> float:
    """`count` records of 100 B, record i to partition (start + i) % partitions; acks=all."""
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": False, "delivery.report.only.error": True,
                  "queue.buffering.max.messages": 2_000_000, "message.timeout.ms": int(timeout_s * 1000),
                  "on_delivery": on_delivery, "log_level": 4})
    t0 = time.perf_counter()
    for i in range(count):
        while True:
            try:
                p.produce(TOPIC, VALUE, partition=(start + i) % partitions)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(timeout_s)
    if left or errors:
        raise StepFailed(f"produce: {left} undelivered, errors {errors}")
    return time.perf_counter() - t0


def total_end_offset(bootstrap: str, partitions: int, timeout_s: float) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    request = {TopicPartition(TOPIC, p): OffsetSpec.latest() for p in range(partitions)}
    futures = admin.list_offsets(request, request_timeout=timeout_s)
    return sum(int(f.result(timeout=timeout_s).offset) for f in futures.values())


def wait_ready(bootstrap: str, partitions: int, expected: int, timeout_s: float) -> float:
    """Seconds until ListOffsets over every partition sums to `expected`."""
    t0 = time.perf_counter()
    last: object = None
    while time.perf_counter() - t0 < timeout_s:
        try:
            last = total_end_offset(bootstrap, partitions, max(1.0, timeout_s - (time.perf_counter() - t0)))
            if last == expected:
                return time.perf_counter() - t0
        except KafkaException as exc:
            last = exc
        time.sleep(0.05)
    raise StepFailed(f"end offsets never summed to {expected} (last: {last})")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    c0, t0 = process_cpu_s(pid), time.perf_counter()
    time.sleep(seconds)
    return 100.0 * (process_cpu_s(pid) - c0) / (time.perf_counter() - t0)


def one_broker(n: int, records: int, timeout_s: float, idle_s: float,
               profile_dir: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"setup": "1 broker", "partitions": n}
    base = tempfile.mkdtemp(prefix=f"ackly-bench-partitions-{n}-")
    serve = Serve(os.path.join(base, "data"), free_port(), profile_dir)
    os.mkdir(serve.data_dir)
    try:
        serve.start(timeout_s, f"create-{n}.prof")
        assert serve.proc is not None
        cpu0 = process_cpu_s(serve.proc.pid)
        row["create_s"] = create_topic(serve.bootstrap, n, 1, timeout_s)
        row["create_cpu_s"] = process_cpu_s(serve.proc.pid) - cpu0
        row["produce_s"] = produce_round_robin(serve.bootstrap, n, records, timeout_s)
        row["stop_s"] = serve.stop(timeout_s)
        row["restart_s"] = serve.start(timeout_s, f"restart-{n}.prof")
        row["restart_cpu_s"] = serve.start_cpu_s
        row["ready_s"] = wait_ready(serve.bootstrap, n, records, timeout_s)
        assert serve.proc is not None
        row["idle_cpu_pct"] = idle_cpu_percent(serve.proc.pid, idle_s)
        tail = max(1, records // 10)
        produce_round_robin(serve.bootstrap, n, tail, timeout_s, start=records)
        serve.stop(timeout_s) if profile_dir else serve.kill()
        row["kill9_restart_s"] = serve.start(timeout_s)
        row["kill9_restart_cpu_s"] = serve.start_cpu_s
        row["kill9_ready_s"] = wait_ready(serve.bootstrap, n, records + tail, timeout_s)
        serve.stop(timeout_s)
    except (StepFailed, KafkaException) as exc:
        row["error"] = str(exc)
    finally:
        serve.kill()
        shutil.rmtree(base, ignore_errors=True)
    return row


def three_brokers(n: int, records: int, timeout_s: float) -> dict[str, Any]:
    from ackly.testing.cluster_processes import ClusterProcesses, etcd_binary

    row: dict[str, Any] = {"setup": "3 brokers RF=3", "partitions": n}
    if etcd_binary() is None:
        row["error"] = "etcd is not installed"
        return row
    base = tempfile.mkdtemp(prefix=f"ackly-bench-partitions-rf3-{n}-")
    cluster = ClusterProcesses(base, 3, start_timeout_s=timeout_s)
    try:
        cluster.start()
        row["create_s"] = create_topic(cluster.bootstrap, n, 3, timeout_s)
        row["produce_s"] = produce_round_robin(cluster.bootstrap, n, records, timeout_s)
        victim = 2
        proc = cluster.brokers[victim].proc
        assert proc is not None
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)  # a controlled shutdown, then every log closed
        if proc.wait(timeout=timeout_s) != 0:
            raise StepFailed("broker 2 did not stop cleanly")
        row["stop_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster.start_broker(victim)
        row["restart_s"] = time.perf_counter() - t0
        row["ready_s"] = wait_ready(cluster.bootstrap, n, records, timeout_s) + row["restart_s"]
        row["idle_cpu_pct"] = idle_cpu_percent(cluster.brokers[victim].proc.pid, 5.0)  # type: ignore[union-attr]
        cluster.kill(victim)
        t0 = time.perf_counter()
        cluster.start_broker(victim)
        row["kill9_restart_s"] = time.perf_counter() - t0
    except (StepFailed, KafkaException, TimeoutError, RuntimeError, subprocess.TimeoutExpired) as exc:
        row["error"] = str(exc).splitlines()[0][:300]
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return row


def count_ops(n: int) -> dict[str, Any]:
    """Operation counts of CreateTopics, a clean close and a start-up with `n` partitions."""
    import random

    from ackly.broker.node import BrokerNode
    from ackly.cluster.durable_store import METADATA_FILE
    from ackly.cluster.metadata import ClusterMetadata
    from ackly.config import BrokerConfig
    from ackly.log import disk as disk_module
    from ackly.log.disk import RealDisk
    from ackly.log.partition_log import run_flush_round
    from ackly.protocol.record_codec import Record, encode_batch
    from ackly.protocol.records import validate_batches

    now_ms = 1_700_000_000_000
    counts = {"fsync": 0, "metadata_bytes": 0, "view_updates": 0}

    class CountingOs:
        """The `os` module as disk.py sees it, with fsync and fdatasync counted."""

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def fsync(self, fd: int) -> None:
            counts["fsync"] += 1
            os.fsync(fd)

        def fdatasync(self, fd: int) -> None:
            counts["fsync"] += 1
            os.fdatasync(fd)

    class CountingDisk(RealDisk):
        def write_atomic(self, path: str, data: bytes) -> None:
            if path.endswith(METADATA_FILE):
                counts["metadata_bytes"] += len(data)
            super().write_atomic(path, data)

    apply = ClusterMetadata.apply

    def counted_apply(self: ClusterMetadata, events: Any) -> ClusterMetadata:
        counts["view_updates"] += 1
        return apply(self, events)

    data_dir = tempfile.mkdtemp(prefix=f"ackly-bench-ops-{n}-")
    row: dict[str, Any] = {"partitions": n}

    def step(name: str, fn: Any) -> Any:
        for key in counts:
            counts[key] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        row[name] = {**counts, "s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        return result

    def start() -> BrokerNode:
        return BrokerNode(config=BrokerConfig.from_properties({}), disk=CountingDisk(),
                          data_dir=data_dir, host="127.0.0.1", port=9092, now_ms=now_ms,
                          rng=random.Random(0))

    def append_everywhere(node: BrokerNode) -> None:
        for i in range(n):
            p = node.leader_partition(TOPIC, i)
            data = bytearray(encode_batch([Record(key=None, value=VALUE)], now_ms=now_ms))
            p.append_as_leader(data, validate_batches(data, 1 << 20), -1, now_ms)
            node.after_append(p, now_ms)
        jobs = node.take_flush_jobs()
        run_flush_round([job for _, job in jobs])  # one group flush, as the shell runs it
        node.complete_flush(jobs, now_ms)

    real_os = disk_module.os
    disk_module.os = CountingOs()  # type: ignore[assignment]
    ClusterMetadata.apply = counted_apply  # type: ignore[method-assign]
    try:
        node = start()
        step("create", lambda: node.create_topic(TOPIC, n, {}, now_ms))
        step("append", lambda: append_everywhere(node))
        step("close", node.close)
        again = step("restart", start)
        again.close()
    finally:
        disk_module.os = real_os
        ClusterMetadata.apply = apply  # type: ignore[method-assign]
        shutil.rmtree(data_dir, ignore_errors=True)
    return row


def fill_data_dir(data_dir: str, n: int, total_bytes: int, segment_bytes: int) -> int:
    """Write `total_bytes` of 1 KiB records over `n` partitions of one topic straight through a
    BrokerNode (no client: gigabytes in seconds), flushed, then close it cleanly. Returns the
    record count."""
    import random

    from ackly.broker.node import BrokerNode
    from ackly.config import BrokerConfig
    from ackly.log.disk import RealDisk
    from ackly.log.partition_log import run_flush_round
    from ackly.protocol.record_codec import Record, encode_batch
    from ackly.protocol.records import validate_batches

    now_ms = int(time.time() * 1000)
    node = BrokerNode(config=BrokerConfig.from_properties({}), disk=RealDisk(), data_dir=data_dir,
                      host="127.0.0.1", port=9092, now_ms=now_ms, rng=random.Random(0))
    node.create_topic(TOPIC, n, {"segment.bytes": str(segment_bytes)}, now_ms)
    per_batch = 64
    template = encode_batch([Record(key=None, value=b"y" * 1024)] * per_batch, now_ms=now_ms)
    headers = validate_batches(bytearray(template), 1 << 20)
    batches = max(1, total_bytes // (len(template) * n))
    for i in range(n):
        p = node.leader_partition(TOPIC, i)
        for _ in range(batches):
            p.append_as_leader(bytearray(template), headers, -1, now_ms)
        node.after_append(p, now_ms)
        if i % 100 == 99 or i == n - 1:
            jobs = node.take_flush_jobs()
            run_flush_round([job for _, job in jobs])
            node.complete_flush(jobs, now_ms)
    node.close()
    return n * batches * per_batch


def du_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def startup(n: int, total_bytes: int, segment_bytes: int, tail: int, timeout_s: float) -> list[dict[str, Any]]:
    """Start-up of `ackly serve` after a clean stop and after kill -9, over an empty data
    directory and over one with `n` partitions holding `total_bytes`."""
    rows: list[dict[str, Any]] = []
    for label, size in (("empty broker", 0), (f"{n:,} partitions, {total_bytes / 2**30:.1f} GiB", total_bytes)):
        row: dict[str, Any] = {"setup": label}
        base = tempfile.mkdtemp(prefix="ackly-bench-startup-")
        serve = Serve(os.path.join(base, "data"), free_port(), None)
        os.mkdir(serve.data_dir)
        try:
            records = fill_data_dir(serve.data_dir, n, size, segment_bytes) if size else 0
            row["disk_bytes"] = du_bytes(serve.data_dir)
            row["restart_s"] = serve.start(timeout_s)
            row["restart_cpu_s"] = serve.start_cpu_s
            if size:
                row["ready_s"] = wait_ready(serve.bootstrap, n, records, timeout_s)
                produce_round_robin(serve.bootstrap, n, tail, timeout_s)
            serve.kill()
            row["kill9_restart_s"] = serve.start(timeout_s)
            row["kill9_restart_cpu_s"] = serve.start_cpu_s
            if size:
                row["kill9_ready_s"] = wait_ready(serve.bootstrap, n, records + tail, timeout_s)
            serve.stop(timeout_s)
        except (StepFailed, KafkaException) as exc:
            row["error"] = str(exc)
        finally:
            serve.kill()
            shutil.rmtree(base, ignore_errors=True)
        rows.append(row)
        print(f"  {json.dumps(row)}", flush=True)
    return rows


def print_startup(rows: list[dict[str, Any]]) -> None:
    print("| data directory | on disk | clean restart | its CPU | ready | kill -9 restart | its CPU | ready |")
    print("|---|---|---|---|---|---|---|---|")
    empty = rows[0]
    for row in rows:
        cells = [row["setup"], f"{row.get('disk_bytes', 0) / 2**30:.2f} GiB"]
        for key in ("restart_s", "restart_cpu_s", "ready_s", "kill9_restart_s", "kill9_restart_cpu_s",
                    "kill9_ready_s"):
            value = row.get(key)
            cell = "-" if value is None else f"{value:.2f} s"
            if value is not None and row is not empty and empty.get(key):
                cell += f" (x{value / empty[key]:.1f})"
            cells.append(cell)
        print("| " + " | ".join(cells) + " |")
        if "error" in row:
            print(f"|   ^ stopped: {row['error']}")


def print_ops(rows: list[dict[str, Any]]) -> None:
    print("| partitions | step | fsyncs | per partition | metadata file bytes | view updates | CPU |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        n = row["partitions"]
        for name in ("create", "append", "close", "restart"):
            c = row[name]
            print(f"| {n:,} | {name} | {c['fsync']:,} | {c['fsync'] / n:.2f} | {c['metadata_bytes']:,} "
                  f"| {c['view_updates']:,} | {c['cpu_s']:.2f} s |")


COLUMNS = (("create_s", "CreateTopics"), ("create_cpu_s", "its CPU"), ("produce_s", "produce"),
           ("stop_s", "clean stop"), ("restart_s", "clean restart"), ("restart_cpu_s", "its CPU"),
           ("ready_s", "ready"), ("kill9_restart_s", "kill -9 restart"),
           ("kill9_restart_cpu_s", "its CPU"), ("kill9_ready_s", "ready"))


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["setup", "partitions"] + [name for _, name in COLUMNS] + ["idle CPU"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    prev: dict[str, Any] | None = None
    for row in rows:
        cells = [row["setup"], f"{row['partitions']:,}"]
        for key, _ in COLUMNS:
            value = row.get(key)
            if value is None:
                cells.append("-")
                continue
            cell = f"{value:.2f} s"
            if prev is not None and prev["setup"] == row["setup"] and prev.get(key):
                cell += f" (x{value / prev[key]:.1f})"
            cells.append(cell)
        cpu = row.get("idle_cpu_pct")
        cells.append("-" if cpu is None else f"{cpu:.1f}%")
        if prev is not None and prev["setup"] == row["setup"]:
            cells[1] += f" (x{row['partitions'] / prev['partitions']:.0f})"
        print("| " + " | ".join(cells) + " |")
        if "error" in row:
            print(f"|   ^ stopped: {row['error']}")
        prev = row


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", default="1,100,1000,3000,10000",
                    help="comma-separated partition counts (one broker)")
    ap.add_argument("--records", type=int, default=100_000, help="records produced per run")
    ap.add_argument("--cluster", action="store_true", help="also 3 brokers, RF=3, 1,000 partitions")
    ap.add_argument("--cluster-partitions", type=int, default=1000)
    ap.add_argument("--timeout-s", type=float, default=180.0, help="bound on every step")
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--ops", action="store_true",
                    help="count operations in this process instead of timing a broker process")
    ap.add_argument("--startup", action="store_true",
                    help="start-up after a clean stop and after kill -9, with --startup-gib of logs")
    ap.add_argument("--startup-partitions", type=int, default=1000)
    ap.add_argument("--startup-gib", type=float, default=2.0,
                    help="bytes of logs for --startup (the data directory is deleted after)")
    ap.add_argument("--startup-segment-bytes", type=int, default=1 << 20)
    ap.add_argument("--profile-dir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
    print(f"load average before: {loadavg()}", flush=True)
    rows: list[dict[str, Any]] = []
    if args.startup:
        if args.startup_gib > 10:
            ap.error("--startup-gib is bounded to 10 (disk use)")
        rows = startup(args.startup_partitions, int(args.startup_gib * 2**30),
                       args.startup_segment_bytes, max(1, args.records // 10), args.timeout_s)
        print(f"load average after: {loadavg()}")
        print(f"(xK) = ratio to the empty broker; kill -9 after {max(1, args.records // 10):,} more "
              f"records of 100 B; segments of {args.startup_segment_bytes:,} bytes")
        print_startup(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 0
    if args.ops:
        for n in (int(x) for x in args.partitions.split(",") if x):
            rows.append(count_ops(n))
        print_ops(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 0
    for n in (int(x) for x in args.partitions.split(",") if x):
        rows.append(one_broker(n, args.records, args.timeout_s, args.idle_s, args.profile_dir))
        print(f"  {json.dumps(rows[-1])}", flush=True)
    if args.cluster:
        rows.append(three_brokers(args.cluster_partitions, args.records, args.timeout_s))
        print(f"  {json.dumps(rows[-1])}", flush=True)
    print(f"load average after: {loadavg()}")
    print(f"{args.records:,} records of 100 B round-robin; (xK) = growth from the previous row")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
