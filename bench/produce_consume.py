"""Throughput, latency, start-up time and memory of one ackly broker, measured with confluent-kafka.

Run: `.venv/bin/python bench/produce_consume.py [--quick] [--json PATH] [--only 2,4] [--profile-dir DIR]`
(`make bench` runs it with no options). See bench/README.md for what each number means.

It prints numbers; it is not a test and asserts nothing. Client and broker share this machine's
cores, so every throughput is also given as a fraction of Python's loopback TCP throughput
(scenario 1), measured in the same run. MB means 10**6 bytes.

Every loop is bounded in count and in time: a scenario that runs out of time says so in its row
and the run goes on with the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import libversion as ck_libversion
from confluent_kafka import version as ck_version
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

MB = 1_000_000
MiB = 1024 * 1024
KiB = 1024

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ScenarioTimeout(Exception):
    """A scenario ran out of its time budget; the message says how far it got."""


class BrokerDidNotStart(RuntimeError):
    pass


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    key: str                      # "1", "2a", ... (stable, for --json consumers)
    scenario: str
    value: float | None           # None: not measured (error or timeout)
    unit: str                     # "MB/s", "ms", "s", "MB"
    target: str                   # e.g. ">= 300 MB/s"
    ok: bool | None               # meets target? None when there is no value
    ratio: float | None = None    # value / loopback MB/s, throughput rows only
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """What a scenario measures and its target; a result row is made from it."""

    key: str
    scenario: str
    unit: str
    target: str


def _meets(value: float, target: str) -> bool:
    op, number = target.split()[:2]
    limit = float(number)
    return value >= limit if op == ">=" else value <= limit


def make_row(key: str, scenario: str, value: float | None, unit: str, target: str,
             note: str = "", **extra: Any) -> Row:
    ok = None if value is None or not target.startswith(("<=", ">=")) else _meets(value, target)
    return Row(key, scenario, value, unit, target, ok, note=note, extra=extra)


def spec_row(spec: Spec, value: float, note: str = "", **extra: Any) -> Row:
    return make_row(spec.key, spec.scenario, value, spec.unit, spec.target, note=note, **extra)


def failed_row(key: str, scenario: str, unit: str, target: str, exc: BaseException) -> Row:
    kind = "timeout" if isinstance(exc, ScenarioTimeout) else type(exc).__name__
    text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return make_row(key, scenario, None, unit, target, note=f"{kind}: {text}")


# ----------------------------------------------------------------------------- broker process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One `ackly serve` process with its own temporary data directory.

    With `profile_path`, the broker runs under cProfile and is stopped with SIGINT (the profile
    is written when `ackly serve` returns).
    """

    def __init__(self, label: str, configs: dict[str, str] | None = None, *, port: int = 0,
                 profile_path: str | None = None, start_timeout_s: float = 30.0) -> None:
        self.label = label
        self.configs = dict(configs or {})
        self.port = port
        self.profile_path = profile_path
        self.start_timeout_s = start_timeout_s
        self.data_dir = tempfile.mkdtemp(prefix=f"ackly-bench-{label}-")
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.ready = threading.Event()
        self.popen_at = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable]
        if self.profile_path:
            cmd += ["-m", "cProfile", "-o", self.profile_path]
        cmd += ["-m", "ackly", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", self.data_dir, "--broker-id", "0"]
        for key, value in self.configs.items():
            cmd += ["--config", f"{key}={value}"]
        return cmd

    def spawn(self) -> None:
        """Start the process and the thread that reads its output; do not wait."""
        self.popen_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
        )
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if len(self.output) < 2000:
                    self.output.append(line)
                match = _LISTENING.search(line)
                if match and not self.ready.is_set():
                    self.port = int(match.group(2))
                    self.ready.set()
            self.ready.set()  # exited: unblock the waiter

        threading.Thread(target=pump, name=f"pump-{self.label}", daemon=True).start()

    def start(self) -> Broker:
        self.spawn()
        listening = self.ready.wait(self.start_timeout_s)
        assert self.proc is not None
        if not listening or self.proc.poll() is not None:
            time.sleep(0.2)                          # let the pump read the last lines
            self.stop()
            if listening:
                why = f"exited with status {self.proc.returncode}"
            else:
                why = f"printed no 'listening on' line within {self.start_timeout_s:.0f} s"
            raise BrokerDidNotStart(f"ackly serve ({self.label}) {why}: {self.last_words()}")
        return self

    def last_words(self) -> str:
        """The broker's last non-blank output line (the exception, after a traceback)."""
        lines = [ln.strip() for ln in self.output if ln.strip()]
        return lines[-1] if lines else "(no output)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (SIGINT under cProfile), wait, SIGKILL if it hangs; remove the data dir."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT if self.profile_path else signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    print(f"  [broker {self.label} ignored the stop signal for {timeout_s:.0f} s; "
                          "killing it]", file=sys.stderr)
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the broker process in MB (10**6 bytes)."""
        values: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, amount, unit = line.split()
                    assert unit == "kB"
                    values[name.rstrip(":")] = int(amount) * 1024 / MB
        return values["VmRSS"], values["VmHWM"]

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- client helpers


def _client_log_filter() -> dict[str, Any]:
    # Keep librdkafka's own log lines (they explain a stall) but not its debug chatter.
    return {"log_level": 4}


def create_topic(bootstrap: str, topic: str, timeout_s: float = 20.0) -> None:
    """Create a one-partition topic with AdminClient; if CreateTopics fails, auto-create it."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **_client_log_filter()})
    try:
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                      operation_timeout=timeout_s, request_timeout=timeout_s)
        futures[topic].result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            print(f"  [CreateTopics failed ({exc}); relying on auto-create]", file=sys.stderr)
    wait_for_partition(bootstrap, topic, timeout_s)


def wait_for_partition(bootstrap: str, topic: str, timeout_s: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, **_client_log_filter()})
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        md = admin.list_topics(topic, timeout=max(0.1, deadline - time.perf_counter()))
        t = md.topics.get(topic)
        if t is not None and t.error is None and 0 in t.partitions and t.partitions[0].leader >= 0:
            return
        time.sleep(0.05)
    raise ScenarioTimeout(f"topic {topic} has no leader after {timeout_s:.0f} s")


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """What a performance-minded user sets for throughput."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "1",
        "linger.ms": 5,
        "batch.size": 1_000_000,              # ~1 MiB; capped by message.max.bytes (1,000,000)
        "batch.num.messages": 1_000_000,       # let batch.size, not the count, close a batch
        "queue.buffering.max.kbytes": 2 * 1024 * 1024,  # 2 GiB: never block on the local queue
        "queue.buffering.max.messages": 2_000_000,
        "compression.type": "none",
        "enable.idempotence": False,
        "delivery.report.only.error": True,    # no Python callback per message on success
        "message.timeout.ms": 120_000,
        **_client_log_filter(),
    }
    conf.update(overrides)
    return conf


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,                      # required by confluent-kafka; never used
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 64 * MiB,
        "max.partition.fetch.bytes": 32 * MiB,
        "receive.message.max.bytes": 64 * MiB + 1 * MiB,
        "queued.max.messages.kbytes": 256 * 1024,
        **_client_log_filter(),
    }
    conf.update(overrides)
    return conf


def end_offset(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    c = Consumer(consumer_config(bootstrap, "bench-watermarks"))
    try:
        _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)
        return int(high)
    finally:
        c.close()


class DeliveryErrors:
    """Counts failed deliveries (only failures are reported: delivery.report.only.error)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.count += 1
            if self.first is None:
                self.first = str(err)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the broker and by this (client) process over an interval, in cores."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.wall0 = time.perf_counter()
        self.broker0 = process_cpu_s(broker_pid) if broker_pid else 0.0
        t = os.times()
        self.client0 = t.user + t.system

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall0
        t = os.times()
        out = {"client_cpu": (t.user + t.system - self.client0) / wall}
        if self.broker_pid:
            out["broker_cpu"] = (process_cpu_s(self.broker_pid) - self.broker0) / wall
        return out


def cpu_note(runs: Sequence[dict[str, float]]) -> str:
    """'broker 0.95 / client 0.80 cores' from the median of each."""
    parts = []
    for key, name in (("broker_cpu", "broker"), ("client_cpu", "client")):
        vals = [r[key] for r in runs if key in r]
        if vals:
            parts.append(f"{name} {statistics.median(vals):.2f}")
    return ("CPU " + " / ".join(parts) + " cores") if parts else ""


def produce_n(bootstrap: str, topic: str, count: int, value: bytes, timeout_s: float,
              broker_pid: int | None = None, **conf: Any) -> dict[str, Any]:
    """Produce `count` copies of `value` to partition 0; time first produce() .. flush() returned."""
    errors = DeliveryErrors()
    p = Producer(producer_config(bootstrap, on_delivery=errors, **conf))
    try:
        p.list_topics(topic, timeout=10)           # connect and learn the leader before timing
        produce = p.produce
        poll = p.poll
        sent = 0
        meter = CpuMeter(broker_pid)
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        while sent < count:
            try:
                produce(topic, value, partition=0)
                sent += 1
                if not sent & 0x3FF:
                    poll(0)
                    if time.perf_counter() > deadline:
                        break
            except BufferError:                      # local queue full: let it drain
                poll(0.005)
                if time.perf_counter() > deadline:
                    break
        remaining = p.flush(max(0.0, deadline - time.perf_counter()))
        elapsed = time.perf_counter() - t0
        cpu = meter.read()
        if sent < count or remaining:
            raise ScenarioTimeout(f"after {timeout_s:.0f} s: {sent} of {count} produced, "
                                  f"{remaining} still unacknowledged")
        if errors.count:
            raise RuntimeError(f"{errors.count} deliveries failed, first: {errors.first}")
    finally:
        p.flush(5)
    return {"seconds": elapsed, "messages": count, "value_bytes": count * len(value), **cpu}


# ----------------------------------------------------------------------------- scenarios


# The loopback reader runs in its own process (no GIL shared with the writer), as the broker does.
_LOOPBACK_READER = """
import socket, sys
port, total, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
view = memoryview(bytearray(1 << 20))
got = 0
while got < total:
    n = s.recv_into(view)
    if n == 0:
        break
    got += n
s.sendall(got.to_bytes(8, "big"))
s.close()
"""


def _loopback_once(chunk: bytes, total_bytes: int, timeout_s: float) -> float:
    """Send `total_bytes` in `len(chunk)` sendall() calls to a recv_into() process; MB/s.

    Timed from the first sendall() to the reader's reply that it has read everything.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(timeout_s)
        port = listener.getsockname()[1]
        reader = subprocess.Popen([sys.executable, "-c", _LOOPBACK_READER, str(port),
                                   str(total_bytes), str(timeout_s)], stdin=subprocess.DEVNULL)
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(timeout_s)
                t0 = time.perf_counter()
                deadline = t0 + timeout_s
                sent = 0
                while sent < total_bytes and time.perf_counter() < deadline:
                    conn.sendall(chunk)
                    sent += len(chunk)
                reply = conn.recv(8)
                elapsed = time.perf_counter() - t0
            got = int.from_bytes(reply, "big") if len(reply) == 8 else 0
            if got < total_bytes:
                raise ScenarioTimeout(f"reader got {got} of {total_bytes} bytes in {timeout_s:.0f} s")
        finally:
            try:
                reader.wait(timeout=5)
            except subprocess.TimeoutExpired:
                reader.kill()
                reader.wait()
    return got / elapsed / MB


def scenario_disk(spec_write: Spec, spec_sync: Spec, file_bytes: int, files: int, syncs: int,
                  timeout_s: float) -> list[Row]:
    """1b/1c. What the broker's disk path costs on this machine, without the broker.

    1b: 1 MiB pwrite()s into new files that are kept until the end (as a log keeps its
    segments), no fsync: the page-cache ceiling for produce with flush.policy=never.
    1c: 100-byte appends, each followed by fdatasync, 5 ms apart: the floor under an
    acks=all answer with flush.policy=always.
    """
    chunk = os.urandom(MiB)
    d = tempfile.mkdtemp(prefix="ackly-bench-disk-")
    try:
        rates = []
        deadline = time.perf_counter() + timeout_s
        for i in range(files):
            fd = os.open(os.path.join(d, f"{i}.log"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                t0 = time.perf_counter()
                for pos in range(0, file_bytes, MiB):
                    os.pwrite(fd, chunk, pos)
                rates.append(file_bytes / (time.perf_counter() - t0) / MB)
            finally:
                os.close(fd)
            if time.perf_counter() > deadline:
                raise ScenarioTimeout(f"{i + 1} of {files} files written in {timeout_s:.0f} s")
        lat_ms = []
        fd = os.open(os.path.join(d, "sync.log"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            record = b"x" * 100
            for _ in range(syncs):
                os.write(fd, record)
                t0 = time.perf_counter()
                os.fdatasync(fd)
                lat_ms.append((time.perf_counter() - t0) * 1000)
                if time.perf_counter() > deadline:
                    break
                time.sleep(0.005)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    lat_ms.sort()
    return [
        spec_row(spec_write, statistics.median(rates),
                 f"{summary(rates)}; {file_bytes // MiB} MiB files kept, no fsync", runs=rates),
        spec_row(spec_sync, percentile(lat_ms, 99),
                 f"p50 {percentile(lat_ms, 50):.3f} ms, max {lat_ms[-1]:.3f} ms over {len(lat_ms)}",
                 p50_ms=percentile(lat_ms, 50)),
    ]


def summary(values: Sequence[float], unit: str = "MB/s") -> str:
    if len(values) == 1:
        return ""
    return f"median of {len(values)}: " + ", ".join(f"{v:.0f}" for v in values) + f" {unit}"


def scenario_loopback(spec: Spec, total_bytes: int, repeats: int, timeout_s: float) -> Row:
    """1. Python loopback TCP: 1 MiB sendall() to a reader process doing recv_into()."""
    chunk = os.urandom(MiB)
    results = [_loopback_once(chunk, total_bytes, timeout_s) for _ in range(repeats)]
    return spec_row(spec, statistics.median(results),
                    f"{summary(results)}; {total_bytes // MiB} MiB each, reader process",
                    runs=results)


def scenario_produce_big(broker: Broker, spec: Spec, count: int, repeats: int, timeout_s: float,
                         topic_prefix: str) -> Row:
    """2. count x 10 KiB, acks=1, one partition; each repeat into a new topic."""
    value = os.urandom(10 * KiB)
    warm = max(1, count // 10)
    create_topic(broker.bootstrap, f"{topic_prefix}-warmup")
    produce_n(broker.bootstrap, f"{topic_prefix}-warmup", warm, value, timeout_s)
    rates = []
    cpus = []
    for i in range(repeats):
        topic = f"{topic_prefix}-{i}"
        create_topic(broker.bootstrap, topic)
        r = produce_n(broker.bootstrap, topic, count, value, timeout_s, broker_pid=broker.pid)
        end = end_offset(broker.bootstrap, topic)
        if end != count:
            raise RuntimeError(f"{topic}: end offset {end} after producing {count}")
        rates.append(r["value_bytes"] / r["seconds"] / MB)
        cpus.append(r)
    return spec_row(spec, statistics.median(rates),
                    f"{summary(rates) or '1 run'}; {cpu_note(cpus)}; after {warm} msgs of warm-up",
                    runs=rates, best=max(rates), cpu=cpus)


def _consume_once(bootstrap: str, topic: str, count: int, timeout_s: float,
                  broker_pid: int | None) -> tuple[float, dict[str, float]]:
    c = Consumer(consumer_config(bootstrap, "bench-consume"))
    try:
        c.list_topics(topic, timeout=10)                 # connect before timing
        got = 0
        nbytes = 0
        errors = 0
        first_error = ""
        meter = CpuMeter(broker_pid)
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        c.assign([TopicPartition(topic, 0, 0)])
        while got < count and time.perf_counter() < deadline:
            # consume() returns when it has num_messages or at its timeout: never ask for more
            # than are left, or the last call waits out the timeout.
            for m in c.consume(num_messages=min(10_000, count - got), timeout=0.5):
                if m.error():
                    errors += 1
                    first_error = first_error or str(m.error())
                    continue
                v = m.value()
                nbytes += len(v) if v is not None else 0
                got += 1
        elapsed = time.perf_counter() - t0
        cpu = meter.read()
        if got < count:
            raise ScenarioTimeout(f"after {timeout_s:.0f} s: {got} of {count} messages consumed"
                                  + (f"; {errors} errors, first: {first_error}" if errors else ""))
    finally:
        c.close()
    return nbytes / elapsed / MB, cpu


def scenario_consume(broker: Broker, spec: Spec, topic: str, count: int, repeats: int,
                     timeout_s: float) -> Row:
    """3. Read `count` messages from offset 0 with assign() (no group commits), a new consumer
    each repeat; timed from assign() to the last message."""
    runs = [_consume_once(broker.bootstrap, topic, count, timeout_s, broker.pid)
            for _ in range(repeats)]
    rates = [r for r, _ in runs]
    cpus = [c for _, c in runs]
    return spec_row(spec, statistics.median(rates),
                    (summary(rates) + "; " if len(rates) > 1 else "") + cpu_note(cpus)
                    + "; timed from assign()", runs=rates, best=max(rates), cpu=cpus)


def scenario_produce_small(broker: Broker, spec: Spec, count: int, repeats: int,
                           timeout_s: float) -> Row:
    """4. count x 100 B; MB/s counts value bytes only."""
    value = os.urandom(100)
    warm = max(1, count // 10)
    create_topic(broker.bootstrap, "bench-small-warmup")
    produce_n(broker.bootstrap, "bench-small-warmup", warm, value, timeout_s)
    rates = []
    cpus = []
    for i in range(repeats):
        topic = f"bench-small-{i}"
        create_topic(broker.bootstrap, topic)
        r = produce_n(broker.bootstrap, topic, count, value, timeout_s, broker_pid=broker.pid)
        end = end_offset(broker.bootstrap, topic)
        if end != count:
            raise RuntimeError(f"{topic}: end offset {end} after producing {count}")
        rates.append(r["value_bytes"] / r["seconds"] / MB)
        cpus.append(r)
    med = statistics.median(rates)
    note = f"value bytes only = {med * MB / 100 / 1000:.0f} k msg/s"
    if len(rates) > 1:
        note += "; " + summary(rates)
    note += f"; {cpu_note(cpus)}; after {warm} msgs of warm-up"
    return spec_row(spec, med, note, runs=rates, best=max(rates), cpu=cpus)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    import math

    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def scenario_latency(broker: Broker, spec: Spec, count: int, rate: float, timeout_s: float) -> list[Row]:
    """5. acks=all at `rate` msg/s; the value carries perf_counter_ns(); a consumer thread polls."""
    topic = "bench-latency"
    create_topic(broker.bootstrap, topic)
    warmup = 20
    total = warmup + count
    latencies_ns: list[int] = []
    seen = [0]
    consumer_error: list[str] = []
    stop = threading.Event()
    ready = threading.Event()
    pad = b"\0" * 92                                   # 8-byte stamp + 92 = 100-byte values

    def consume() -> None:
        c = Consumer(consumer_config(broker.bootstrap, "bench-latency",
                                     **{"fetch.wait.max.ms": 5, "fetch.min.bytes": 1,
                                        "fetch.error.backoff.ms": 5}))
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            ready.set()
            while seen[0] < total and not stop.is_set():
                m = c.poll(0.05)
                now = time.perf_counter_ns()
                if m is None:
                    continue
                if m.error():
                    consumer_error.append(str(m.error()))
                    continue
                (stamp,) = struct.unpack_from(">q", m.value() or bytes(8))
                if seen[0] >= warmup:
                    latencies_ns.append(now - stamp)
                seen[0] += 1
        except Exception as exc:  # reported below
            consumer_error.append(repr(exc))
        finally:
            c.close()

    errors = DeliveryErrors()
    acks_ns: list[int] = []                            # produce -> delivery report, a diagnostic

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        now = time.perf_counter_ns()
        if err is not None:
            errors(err, msg)
        else:
            acks_ns.append(now - struct.unpack_from(">q", msg.value())[0])

    p = Producer(producer_config(broker.bootstrap, acks="all", on_delivery=on_delivery,
                                 **{"linger.ms": 0, "batch.num.messages": 1000,
                                    "delivery.report.only.error": False}))
    t = threading.Thread(target=consume, name="latency-consumer", daemon=True)
    t.start()
    try:
        p.list_topics(topic, timeout=10)
        if not ready.wait(10):
            raise ScenarioTimeout("consumer thread did not start")
        interval_ns = int(1e9 / rate)
        # Warm-up: connections, first fetch; not counted.
        for _ in range(warmup):
            p.produce(topic, struct.pack(">q", time.perf_counter_ns()) + pad, partition=0)
            p.poll(0)
            time.sleep(interval_ns / 1e9)
        warm_deadline = time.perf_counter() + 15
        while seen[0] < warmup and time.perf_counter() < warm_deadline:
            p.poll(0.01)
        if seen[0] < warmup:
            raise ScenarioTimeout(f"warm-up: {seen[0]} of {warmup} messages came back in 15 s"
                                  + (f"; consumer: {consumer_error[:1]}" if consumer_error else ""))
        start_ns = time.perf_counter_ns()
        deadline = time.perf_counter() + timeout_s
        for i in range(count):
            due = start_ns + i * interval_ns
            while True:
                now = time.perf_counter_ns()
                if now >= due:
                    break
                p.poll(min(0.001, (due - now) / 1e9))   # serve delivery reports while waiting
            p.produce(topic, struct.pack(">q", time.perf_counter_ns()) + pad, partition=0)
            p.poll(0)
            if time.perf_counter() > deadline:
                break
        p.flush(max(1.0, deadline - time.perf_counter()))
        t.join(max(1.0, deadline - time.perf_counter()))
    finally:
        stop.set()
        t.join(10)
        p.flush(5)
    if errors.count:
        raise RuntimeError(f"{errors.count} deliveries failed, first: {errors.first}")
    if len(latencies_ns) < count:
        raise ScenarioTimeout(f"{len(latencies_ns)} of {count} messages came back within "
                              f"{timeout_s:.0f} s" + (f"; consumer: {consumer_error[:1]}"
                                                      if consumer_error else ""))
    ms = sorted(x / 1e6 for x in latencies_ns)
    p50, p99, worst = percentile(ms, 50), percentile(ms, 99), ms[-1]
    note = f"{count} msgs after {warmup} warm-up; mean {statistics.fmean(ms):.2f} ms"
    acked = sorted(x / 1e6 for x in acks_ns[warmup:])
    ack_note = ""
    if acked:
        ack_note = (f"produce->ack alone: p50 {percentile(acked, 50):.2f}, "
                    f"p99 {percentile(acked, 99):.2f} ms")
    return [
        make_row(f"{spec.key}.p50", spec.scenario + ", p50", p50, "ms", "<= 2 ms", note=note),
        make_row(f"{spec.key}.p99", spec.scenario + ", p99", p99, "ms", spec.target, note=ack_note,
                 ack_p50_ms=percentile(acked, 50) if acked else None,
                 ack_p99_ms=percentile(acked, 99) if acked else None),
        make_row(f"{spec.key}.max", spec.scenario + ", max", worst, "ms", "-", note="no target; for scale"),
    ]


def scenario_startup(spec: Spec, runs: int, timeout_s: float, profile_dir: str | None) -> Row:
    """6. Popen -> first successful TCP connect to the (pre-chosen) port; median of `runs`."""
    times: list[float] = []
    line_times: list[float] = []
    for i in range(runs):
        port = free_port()
        b = Broker(f"startup{i}", port=port, start_timeout_s=timeout_s,
                   profile_path=os.path.join(profile_dir, f"startup{i}.prof") if profile_dir else None)
        try:
            b.spawn()
            deadline = b.popen_at + timeout_s
            connected_at = None
            while time.perf_counter() < deadline:
                with socket.socket() as s:
                    s.settimeout(0.5)
                    try:
                        s.connect(("127.0.0.1", port))
                        connected_at = time.perf_counter()
                        break
                    except (ConnectionRefusedError, TimeoutError, OSError):
                        pass
                assert b.proc is not None
                if b.proc.poll() is not None:
                    time.sleep(0.2)
                    raise BrokerDidNotStart(f"broker exited during start-up: {b.last_words()}")
                time.sleep(0.002)
            if connected_at is None:
                raise ScenarioTimeout(f"no connection to port {port} within {timeout_s:.0f} s")
            times.append(connected_at - b.popen_at)
            if b.ready.wait(timeout_s):
                line_times.append(time.perf_counter() - b.popen_at)
        finally:
            b.stop()
    med = statistics.median(times)
    note = "runs: " + ", ".join(f"{t:.3f}" for t in times)
    if line_times:
        note += f"; 'listening' line read after {statistics.median(line_times):.3f} s (median)"
    return spec_row(spec, med, note, runs=times, listening_line_seen_after_s=line_times)


def scenario_memory(spec: Spec, timeout_s: float) -> Row:
    """7. VmRSS of a fresh broker after one small topic and a few messages."""
    with Broker("memory") as b:
        topic = "bench-idle"
        create_topic(b.bootstrap, topic)
        produce_n(b.bootstrap, topic, 10, b"x" * 100, timeout_s, **{"linger.ms": 0})
        c = Consumer(consumer_config(b.bootstrap, "bench-idle"))
        try:
            c.assign([TopicPartition(topic, 0, 0)])
            got = 0
            deadline = time.perf_counter() + timeout_s
            while got < 10 and time.perf_counter() < deadline:
                m = c.poll(0.2)
                if m is not None and not m.error():
                    got += 1
        finally:
            c.close()
        time.sleep(0.5)
        rss, hwm = b.rss_mb()
    return spec_row(spec, rss, f"VmRSS; peak VmHWM {hwm:.1f} MB", hwm_mb=hwm)


# ----------------------------------------------------------------------------- driver


@dataclass
class Plan:
    quick: bool
    only: set[str]
    profile_dir: str | None
    repeats: int

    def want(self, n: str) -> bool:
        return not self.only or n in self.only

    @property
    def scale(self) -> float:
        return 0.1 if self.quick else 1.0

    def profile(self, label: str) -> str | None:
        return os.path.join(self.profile_dir, f"{label}.prof") if self.profile_dir else None


def specs(big: int, small: int, lat: int) -> dict[str, Spec]:
    return {s.key: s for s in (
        Spec("1", "loopback TCP, Python, 1 MiB writes (reference)", "MB/s", "(reference)"),
        Spec("1b", "file write, 1 MiB pwrite into the page cache (reference)", "MB/s", "(reference)"),
        Spec("1c", "append 100 B + fdatasync at 200/s, p99 (reference)", "ms", "(reference)"),
        Spec("2a", f"produce {big} x 10 KiB, acks=1, log.flush.policy=never", "MB/s", ">= 300 MB/s"),
        Spec("2b", f"produce {big} x 10 KiB, acks=1, log.flush.policy=always", "MB/s", ">= 200 MB/s"),
        Spec("3", f"consume {big} x 10 KiB from offset 0 (assign)", "MB/s", ">= 400 MB/s"),
        Spec("4", f"produce {small} x 100 B, acks=1, log.flush.policy=always", "MB/s", ">= 60 MB/s"),
        Spec("5", f"end-to-end latency, 200 msg/s x {lat}, acks=all, flush always", "ms", "<= 2 ms"),
        Spec("5n", f"end-to-end latency, 200 msg/s x {lat}, acks=all, flush never", "ms", "<= 2 ms"),
        Spec("6", "process start -> accepting connections (median of 5)", "s", "<= 0.5 s"),
        Spec("7", "idle broker RSS after one small topic (10 msgs in, 10 out)", "MB", "<= 60 MB"),
    )}


def run_guarded(rows: list[Row], spec: Spec, fn: Callable[[], Row | list[Row]]) -> None:
    print(f"-- {spec.key}: {spec.scenario} ...", flush=True)
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        out = failed_row(spec.key, spec.scenario, spec.unit, spec.target, exc)
    new = out if isinstance(out, list) else [out]
    rows.extend(new)
    for r in new:
        shown = "n/a" if r.value is None else f"{r.value:.3f} {r.unit}"
        print(f"   {r.scenario}: {shown}  {r.note}", flush=True)
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


@contextlib.contextmanager
def maybe_broker(label: str, configs: dict[str, str], plan: Plan, rows: list[Row],
                 for_specs: Sequence[Spec]) -> Iterator[Broker | None]:
    """Start a broker; if it will not start, record the failure for `for_specs` and yield None."""
    b = Broker(label, configs, profile_path=plan.profile(label))
    try:
        b.start()
    except Exception as exc:
        print(f"-- {exc}", flush=True)
        for sp in for_specs:
            rows.append(make_row(sp.key, sp.scenario, None, sp.unit, sp.target, note=str(exc)))
        yield None
        return
    try:
        yield b
    finally:
        b.stop()


def run(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    big = max(1, int(20_000 * plan.scale))
    small = max(1, int(1_000_000 * plan.scale))
    lat = max(10, int(1_000 * plan.scale))
    sp = specs(big, small, lat)
    # Budgets are generous multiples of the targets: they only stop a run that has stalled.
    big_timeout = 120.0
    small_timeout = 180.0

    if plan.want("1"):
        total = (512 if plan.quick else 2048) * MiB
        run_guarded(rows, sp["1"], lambda: scenario_loopback(sp["1"], total, max(3, plan.repeats), 30.0))
        run_guarded(rows, sp["1b"], lambda: scenario_disk(sp["1b"], sp["1c"], 200 * MiB, 3,
                                                          max(50, lat // 2), 60.0))

    on_never = [sp[k] for k in ("2a", "5n") if plan.want(k[0])]
    if on_never:
        with maybe_broker("never", {"log.flush.policy": "never"}, plan, rows, on_never) as b:
            if b is not None:
                bn = b
                if plan.want("2"):
                    run_guarded(rows, sp["2a"], lambda: scenario_produce_big(
                        bn, sp["2a"], big, plan.repeats, big_timeout, "bench-big"))
                if plan.want("5"):
                    run_guarded(rows, sp["5n"], lambda: scenario_latency(bn, sp["5n"], lat, 200.0, 60.0))

    on_always = [sp[k] for k in ("2b", "3", "4", "5") if plan.want(k[0])]
    if on_always:
        with maybe_broker("always", {"log.flush.policy": "always"}, plan, rows, on_always) as b:
            if b is not None:
                ba = b
                big_ok = False
                if plan.want("2") or plan.want("3"):
                    before = len(rows)
                    run_guarded(rows, sp["2b"], lambda: scenario_produce_big(
                        ba, sp["2b"], big, plan.repeats, big_timeout, "bench-big"))
                    big_ok = rows[before].value is not None
                    if not plan.want("2"):
                        del rows[before]       # produced only as the input of scenario 3
                if plan.want("3"):
                    if big_ok:
                        run_guarded(rows, sp["3"], lambda: scenario_consume(
                            ba, sp["3"], "bench-big-0", big, plan.repeats, 60.0))
                    else:
                        rows.append(make_row("3", sp["3"].scenario, None, "MB/s", sp["3"].target,
                                             note="skipped: nothing was produced to read back"))
                if plan.want("4"):
                    run_guarded(rows, sp["4"], lambda: scenario_produce_small(
                        ba, sp["4"], small, plan.repeats, small_timeout))
                if plan.want("5"):
                    run_guarded(rows, sp["5"], lambda: scenario_latency(ba, sp["5"], lat, 200.0, 60.0))

    if plan.want("6"):
        run_guarded(rows, sp["6"], lambda: scenario_startup(sp["6"], 5, 30.0, plan.profile_dir))
    if plan.want("7"):
        run_guarded(rows, sp["7"], lambda: scenario_memory(sp["7"], 30.0))

    loopback = next((r.value for r in rows if r.key == "1"), None)
    for r in rows:
        if loopback and r.value is not None and r.unit == "MB/s" and r.key != "1":
            r.ratio = r.value / loopback
    return rows


ROW_ORDER = ("1", "1b", "1c", "2a", "2b", "3", "4", "5", "5n", "6", "7")


def print_table(rows: list[Row], loopback_known: bool) -> None:
    headers = ("#", "scenario", "result", "target", "met", "x loopback", "note")
    table = []

    def order(r: Row) -> int:
        base = r.key.split(".")[0]
        return ROW_ORDER.index(base) if base in ROW_ORDER else len(ROW_ORDER)

    for r in sorted(rows, key=order):
        result = "n/a" if r.value is None else f"{r.value:,.{1 if r.value >= 10 else 3}f} {r.unit}"
        target = r.target
        met = "" if r.ok is None else ("yes" if r.ok else "NO")
        if r.key == "1":
            ratio = "1.000"
        elif r.ratio is not None:
            ratio = f"{r.ratio:.3f}"
        else:
            ratio = "-"
        table.append((r.key, r.scenario, result, target, met, ratio, r.note))
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
              for i, h in enumerate(headers)]
    widths[-1] = len(headers[-1])           # the note column is free-form
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print()
    print(line)
    print("-" * len(line))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not loopback_known:
        print("(no loopback reference measured in this run: ratios omitted)")
    print("MB = 10**6 bytes. 'x loopback' = throughput / Python loopback TCP throughput (scenario 1).")


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "0 0 0"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the message counts")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--only", metavar="LIST", default="",
                    help="comma-separated scenario numbers, e.g. 1,2,4 (default: all)")
    ap.add_argument("--repeats", type=int, default=3, metavar="N",
                    help="runs of each throughput scenario; the median is reported (default 3)")
    ap.add_argument("--profile-dir", metavar="DIR",
                    help="run each broker under cProfile, writing DIR/<broker>.prof (stopped by SIGINT)")
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
        args.profile_dir = os.path.abspath(args.profile_dir)
    plan = Plan(quick=args.quick, only=only, profile_dir=args.profile_dir, repeats=max(1, args.repeats))

    print(f"ackly bench: python {platform.python_version()}, confluent-kafka {ck_version()} "
          f"(librdkafka {ck_libversion()[0]}), "
          f"{os.cpu_count()} CPUs{', QUICK (1/10 counts)' if plan.quick else ''}"
          f"{', PROFILING (numbers are slower)' if plan.profile_dir else ''}", flush=True)
    load_before = loadavg()
    print(f"load average before: {load_before}", flush=True)
    if float(load_before.split()[0]) > 0.5:
        print("NOTE: something else is using the CPU; expect noisy numbers", flush=True)
    started = time.perf_counter()
    rows = run(plan)
    print_table(rows, any(r.key == "1" and r.value for r in rows))
    load_after = loadavg()
    print(f"total {time.perf_counter() - started:.0f} s; load average after: {load_after}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": plan.quick, "repeats": plan.repeats,
                       "loadavg_before": load_before, "loadavg_after": load_after,
                       "profiling": bool(plan.profile_dir),
                       "python": platform.python_version(),
                       "librdkafka": ck_libversion()[0],
                       "results": [asdict(r) for r in rows]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
