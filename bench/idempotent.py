"""Idempotent producer throughput as a ratio to the plain producer's, on one ackly broker.

Run: `.venv/bin/python bench/idempotent.py [--quick] [--repeats N] [--flush-policy always|never]
[--json PATH]`.

What it measures: a producer sending fixed-size values round-robin to the partitions of a
fresh topic of one `ackly serve` process, timed from the first send to the flush returning,
with idempotence on and off, in interleaved runs on the same broker (after an uncounted
warm-up of each mode). Every mode uses acks=all, which idempotence requires, so the ratio
isolates what idempotence costs: InitProducerId once, the broker's sequence checks and
producer-state bookkeeping per batch, and whatever the client does differently. Target:
idempotent / plain >= 0.9. Modes per scenario:
- plain: enable.idempotence off, the client's default requests in flight;
- plain, 1 in flight: the same with max.in.flight.requests.per.connection=1;
- idempotent: enable.idempotence on.
librdkafka (2.16) limits an idempotent producer's in-flight requests per partition by
*messages* in flight (5 - messages), so with batches of 5 messages or more it keeps ONE
Produce request in flight per partition; its plain producer pipelines many. On one partition
the idempotent run is therefore a round-trip-bound run, which the "1 in flight" mode
reproduces without idempotence: idempotent / (plain, 1 in flight) is the broker's own cost.
With 8 partitions librdkafka has up to 5 requests in flight again (one per partition).
kafka-python keeps 5 in flight either way and is measured on one partition.

Scenarios: 10 KiB values (bytes-bound) and 100 B values (per-batch costs weigh most).
librdkafka: linger.ms=5, batch.size=1,000,000, no compression, delivery reports for errors
only (as bench/produce_consume.py); kafka-python: linger_ms=5, batch_size=1 MiB. `--quick`
divides the counts by ten. It prints numbers and asserts nothing; every loop is bounded in
count and time. The machine has 2 cores shared with whatever else runs: read the load
averages printed before and after, and the spread of the runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from kafka import KafkaProducer
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.types import ProducerId
from kio.static.primitive import Records, i16, i32

from ackly.protocol.record_codec import Record, encode_batch
from ackly.testing.wire import WireClient

MB = 1_000_000
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
RUN_TIMEOUT_S = 120.0


class Broker:
    """One `ackly serve` process on a free port with a temporary data directory."""

    def __init__(self, configs: dict[str, str]) -> None:
        self.configs = configs
        self.data_dir = tempfile.mkdtemp(prefix="ackly-bench-idem-")
        self.port = 0
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Broker:
        cmd = [sys.executable, "-m", "ackly", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", self.data_dir, "--broker-id", "0"]
        for key, value in self.configs.items():
            cmd += ["--config", f"{key}={value}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL)
        ready = threading.Event()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if len(self.output) < 1000:
                    self.output.append(line)
                match = _LISTENING.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or proc.poll() is not None:
            self.__exit__()
            raise RuntimeError("ackly serve did not start: " + "".join(self.output[-5:]))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                        operation_timeout=20)[topic].result(timeout=20)


@dataclass(frozen=True)
class Mode:
    name: str
    client: str  # "confluent" or "kafka-python"
    idempotent: bool
    overrides: dict[str, Any] = field(default_factory=dict)


def confluent_run(bootstrap: str, topic: str, partitions: int, count: int, value: bytes,
                  mode: Mode) -> float:
    """Seconds from the first produce() to flush() returning, every delivery acknowledged."""
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None and len(failures) < 5:
            failures.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": mode.idempotent,
        "linger.ms": 5, "batch.size": 1_000_000, "batch.num.messages": 1_000_000,
        "queue.buffering.max.kbytes": 2 * 1024 * 1024, "queue.buffering.max.messages": 2_000_000,
        "compression.type": "none", "delivery.report.only.error": True,
        "message.timeout.ms": int(RUN_TIMEOUT_S * 1000), "log_level": 4,
        "on_delivery": on_delivery, **mode.overrides,
    })
    try:
        # Untimed: connect, learn the leaders and (idempotent) get the producer id, which
        # librdkafka does once per producer, in the background, on a timer of its own.
        producer.produce(topic, value, partition=0)
        if producer.flush(30):
            raise RuntimeError("the first message was not acknowledged within 30 s")
        sent = 0
        t0 = time.perf_counter()
        deadline = t0 + RUN_TIMEOUT_S
        while sent < count and time.perf_counter() < deadline:
            try:
                producer.produce(topic, value, partition=sent % partitions)
                sent += 1
                if not sent & 0x3FF:
                    producer.poll(0)
            except BufferError:
                producer.poll(0.005)
        remaining = producer.flush(max(0.0, deadline - time.perf_counter()))
        elapsed = time.perf_counter() - t0
    finally:
        producer.flush(5)
    if sent < count or remaining or failures:
        raise RuntimeError(f"{sent}/{count} sent, {remaining} unacknowledged, failures: {failures}")
    return elapsed


def kafka_python_run(bootstrap: str, topic: str, partitions: int, count: int, value: bytes,
                     mode: Mode) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=mode.idempotent,
        linger_ms=5, batch_size=1 << 20, max_request_size=2 << 20, request_timeout_ms=30_000,
        delivery_timeout_ms=int(RUN_TIMEOUT_S * 1000), **mode.overrides,
    )
    try:
        producer.send(topic, value, partition=0).get(timeout=30)  # untimed, as above
        t0 = time.perf_counter()
        futures = [producer.send(topic, value, partition=i % partitions) for i in range(count)]
        producer.flush(timeout=RUN_TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        for future in futures[-100:]:
            future.get(timeout=1)  # raises if the last sends failed
    finally:
        producer.close(timeout=5)
    return elapsed


WIRE_IN_FLIGHT = 5
WIRE_BATCH_BYTES = 1 << 20


def wire_run(bootstrap: str, topic: str, partitions: int, count: int, value: bytes,
             mode: Mode) -> float:
    """ackly's own cost, without a client's habits: pre-encoded Produce v9 requests (one batch
    of about 1 MiB of records each, sequence numbers in order when idempotent) sent over one
    connection with 5 in flight, as fast as the broker answers. Only the producer id, epoch
    and sequences differ between the modes; the client does almost nothing while timed."""
    assert partitions == 1
    per_batch = max(1, WIRE_BATCH_BYTES // (len(value) + 20))
    with WireClient(bootstrap, timeout_s=RUN_TIMEOUT_S) as client:
        producer_id = -1
        if mode.idempotent:
            answer = client.request(InitProducerIdRequest(
                transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=ProducerId(-1), producer_epoch=i16(-1)))
            assert answer.error_code == 0, answer
            producer_id = int(answer.producer_id)
        frames = []
        for first in range(0, count, per_batch):
            n = min(per_batch, count - first)
            records = [Record(key=None, value=value, timestamp_ms=1_700_000_000_000)] * n
            batch = encode_batch(records, producer_id=producer_id,
                                 producer_epoch=0 if mode.idempotent else -1,
                                 base_sequence=first if mode.idempotent else -1)
            frames.append(client.frame(produce_request(topic, batch)))
        t0 = time.perf_counter()
        sent = answered = 0
        while answered < len(frames):
            while sent < len(frames) and sent - answered < WIRE_IN_FLIGHT:
                client.send_raw(frames[sent])
                sent += 1
            _, response = client.decode(0, 9, client.read_frame())
            error = response.responses[0].partition_responses[0].error_code
            if error != 0:
                raise RuntimeError(f"Produce answered {error!r}")
            answered += 1
        return time.perf_counter() - t0


def produce_request(topic: str, records: bytes) -> ProduceRequest:
    return ProduceRequest(
        transactional_id=None, acks=i16(-1), timeout=datetime.timedelta(seconds=30),
        topic_data=(TopicProduceData(name=topic, partition_data=(
            PartitionProduceData(index=i32(0), records=Records(records)),)),),
    )


RUNNERS = {"confluent": confluent_run, "kafka-python": kafka_python_run, "wire": wire_run}


@dataclass(frozen=True)
class Scenario:
    name: str
    partitions: int
    count: int
    value_bytes: int
    modes: tuple[Mode, ...]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(broker: Broker, sc: Scenario, repeats: int) -> dict[str, Any]:
    """Runs of every mode, interleaved. Besides each mode's median, the ratio of each
    idempotent run to the runs of the same round (which shared the machine's conditions of the
    moment; other work on the 2 cores drifts over seconds) and the broker's CPU per MB."""
    value = b"x" * sc.value_bytes
    mb = sc.count * sc.value_bytes / MB
    for mode in sc.modes:  # warm-up, uncounted
        topic = f"warm-{sc.name}-{mode.name}".replace(" ", "-").replace(",", "")
        create_topic(broker.bootstrap, topic, sc.partitions)
        RUNNERS[mode.client](broker.bootstrap, topic, sc.partitions, max(sc.count // 10, 1), value, mode)
    rounds: list[dict[str, tuple[float, float]]] = []  # mode -> (MB/s, broker CPU ms per MB)
    for i in range(repeats):
        order = sc.modes if i % 2 == 0 else tuple(reversed(sc.modes))
        got: dict[str, tuple[float, float]] = {}
        for mode in order:
            topic = f"{sc.name}-{mode.name}-{i}".replace(" ", "-").replace(",", "")
            create_topic(broker.bootstrap, topic, sc.partitions)
            cpu0 = process_cpu_s(broker.pid)
            seconds = RUNNERS[mode.client](broker.bootstrap, topic, sc.partitions, sc.count, value, mode)
            got[mode.name] = (mb / seconds, (process_cpu_s(broker.pid) - cpu0) * 1000 / mb)
        rounds.append(got)
    names = [m.name for m in sc.modes]
    runs = {n: [r[n][0] for r in rounds] for n in names}
    cpu = {n: statistics.median(r[n][1] for r in rounds) for n in names}
    return {
        "scenario": sc.name, "partitions": sc.partitions, "messages": sc.count,
        "value_bytes": sc.value_bytes, "runs_mb_s": runs,
        "median_mb_s": {n: statistics.median(v) for n, v in runs.items()},
        "paired_ratio": {n: statistics.median(r["idempotent"][0] / r[n][0] for r in rounds)
                         for n in names if n != "idempotent"},
        "broker_cpu_ms_per_mb": cpu,
    }


CK_PLAIN = Mode("plain", "confluent", False)
CK_PLAIN_ONE = Mode("plain, 1 in flight", "confluent", False,
                    {"max.in.flight.requests.per.connection": 1})
CK_IDEM = Mode("idempotent", "confluent", True)
WIRE_PLAIN = Mode("plain", "wire", False)
WIRE_IDEM = Mode("idempotent", "wire", True)
KP_PLAIN = Mode("plain", "kafka-python", False)
KP_IDEM = Mode("idempotent", "kafka-python", True)


def scenarios(scale: int) -> list[Scenario]:
    return [
        Scenario("wire 1 partition 10KiB", 1, 20_000 // scale, 10 * 1024, (WIRE_PLAIN, WIRE_IDEM)),
        Scenario("wire 1 partition 100B", 1, 300_000 // scale, 100, (WIRE_PLAIN, WIRE_IDEM)),
        Scenario("confluent 1 partition 10KiB", 1, 20_000 // scale, 10 * 1024,
                 (CK_PLAIN, CK_PLAIN_ONE, CK_IDEM)),
        Scenario("confluent 1 partition 100B", 1, 300_000 // scale, 100,
                 (CK_PLAIN, CK_PLAIN_ONE, CK_IDEM)),
        Scenario("confluent 8 partitions 10KiB", 8, 20_000 // scale, 10 * 1024, (CK_PLAIN, CK_IDEM)),
        Scenario("confluent 8 partitions 100B", 8, 300_000 // scale, 100, (CK_PLAIN, CK_IDEM)),
        Scenario("kafka-python 1 partition 10KiB", 1, 5_000 // scale, 10 * 1024, (KP_PLAIN, KP_IDEM)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the message counts")
    ap.add_argument("--repeats", type=int, default=5, metavar="N", help="runs per mode (median)")
    ap.add_argument("--flush-policy", default="always", choices=("always", "interval", "never"))
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}; broker log.flush.policy="
          f"{args.flush_policy}; {args.repeats} runs per mode, median MB/s (value bytes)")
    results = []
    with Broker({"log.flush.policy": args.flush_policy}) as broker:
        for sc in scenarios(10 if args.quick else 1):
            r = measure(broker, sc, args.repeats)
            results.append(r)
            print(f"{sc.name} x {sc.count:,}:")
            for name, runs in r["runs_mb_s"].items():
                print(f"    {name:<20} {r['median_mb_s'][name]:7.1f} MB/s, broker "
                      f"{r['broker_cpu_ms_per_mb'][name]:5.2f} CPU ms/MB; runs "
                      f"{[round(x, 1) for x in runs]}")
            idem_cpu = r["broker_cpu_ms_per_mb"]["idempotent"]
            for name, ratio in r["paired_ratio"].items():
                verdict = "ok" if ratio >= 0.9 else "below 0.9"
                cpu_ratio = r["broker_cpu_ms_per_mb"][name] / idem_cpu
                print(f"    idempotent / {name:<20} throughput {ratio:5.2f} ({verdict}); "
                      f"broker CPU per MB, {name} / idempotent {cpu_ratio:5.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"flush_policy": args.flush_policy, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
