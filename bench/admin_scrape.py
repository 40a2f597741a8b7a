"""What the admin listener costs the Kafka listener, and what a scrape costs, with confluent-kafka.

Run: `.venv/bin/python bench/admin_scrape.py [--records N] [--partitions N] [--repeats N]`

Three fresh `ackly serve` processes (`log.flush.policy=never`, each its own data directory),
one per configuration, running at once:
  off     no admin listener;
  idle    `admin.listener` on, never scraped;
  scraped `admin.listener` on and scraped every `--scrape-interval-s` (default 0.1 s: 150
          times Prometheus' usual 15 s) by a thread of this process while producing.
Each produces `--records` x 100 B values (acks=1, linger.ms=5) round-robin over a topic of
`--partitions` partitions, timed from the first `produce()` to `flush()` returning; the runs
rotate between the configurations, the median of `--repeats` runs is reported with every run,
and each configuration as a ratio to `off`. Then, on the `idle` broker, `--scrapes` scrapes
of /metrics are timed (HTTP round trip, and the broker's own `ackly_metrics_scrape_seconds`)
with the topic's partitions plus the internal ones in the output. Client and broker share
this machine's cores; the load average is printed: the numbers are noisy while other work
runs, so compare the ratios. Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

VALUE = b"x" * 100
_LISTENING = re.compile(r"listening on \S+:(\d+)")
_ADMIN = re.compile(r"admin on (http://\S+?)\)")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Broker:
    def __init__(self, admin: bool) -> None:
        self.dir = tempfile.mkdtemp(prefix="ackly-bench-admin-")
        cmd = [sys.executable, "-m", "ackly", "serve", "--port", "0", "--data-dir", f"{self.dir}/data",
               "--config", "log.flush.policy=never"]
        if admin:
            cmd += ["--config", "admin.listener=127.0.0.1:0"]
        # Output to a file: a pipe nobody reads would block the broker once full.
        self.out = open(f"{self.dir}/out.log", "w+")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(f"{self.dir}/out.log") as f:
                line = f.readline()
            if _LISTENING.search(line):
                break
            time.sleep(0.05)
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"broker did not start: {line}")
        self.bootstrap = f"127.0.0.1:{match.group(1)}"
        admin_match = _ADMIN.search(line)
        self.admin_url = admin_match.group(1) if admin_match else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def produce_s(bootstrap: str, topic: str, records: int) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "enable.idempotence": False})
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, VALUE)
                break
            except BufferError:
                producer.poll(0.01)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return elapsed


def scrape(url: str) -> tuple[float, float]:
    """(HTTP round trip s, the broker's ackly_metrics_scrape_seconds from the scrape before)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    elapsed = time.perf_counter() - started
    match = re.search(r"^ackly_metrics_scrape_seconds (\S+)$", text, re.M)
    return elapsed, float(match.group(1)) if match else float("nan")


CONFIGS = ("off", "idle", "scraped")


def prepare(config: str, args: argparse.Namespace) -> Broker:
    broker = Broker(admin=config != "off")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("bench", args.partitions, 1)])["bench"].result(60)
    produce_s(broker.bootstrap, "bench", args.records // 10)  # warm-up, not counted
    return broker


def timed_run(config: str, broker: Broker, args: argparse.Namespace) -> tuple[float, int]:
    """One produce run; for `scraped`, with a thread scraping meanwhile. (seconds, scrapes)."""
    stop = threading.Event()
    scrapes = [0]

    def scraper() -> None:
        assert broker.admin_url is not None
        while not stop.wait(args.scrape_interval_s):
            scrape(broker.admin_url)
            scrapes[0] += 1

    thread = threading.Thread(target=scraper, daemon=True)
    if config == "scraped":
        thread.start()
    elapsed = produce_s(broker.bootstrap, "bench", args.records)
    stop.set()
    if config == "scraped":
        thread.join(30)
    return elapsed, scrapes[0]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scrape-interval-s", type=float, default=0.1)
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args(argv)
    print(f"load average before: {loadavg()}")
    # All three brokers run at once and the runs rotate between them, so a change of the
    # machine's load during the bench falls on every configuration alike.
    brokers = {config: prepare(config, args) for config in CONFIGS}
    times: dict[str, list[float]] = {config: [] for config in CONFIGS}
    scrapes = 0
    try:
        for repeat in range(args.repeats):
            order = CONFIGS[repeat % 3:] + CONFIGS[:repeat % 3]
            for config in order:
                elapsed, n = timed_run(config, brokers[config], args)
                times[config].append(elapsed)
                scrapes += n
        off = statistics.median(times["off"])
        for config in CONFIGS:
            median = statistics.median(times[config])
            runs = ", ".join(f"{t:.2f}" for t in times[config])
            print(f"{config:8} {args.records / median / 1000:8.1f} k msg/s  x{off / median:.2f} of off   "
                  f"runs (s): {runs}")
        print(f"  ({scrapes} scrapes during the scraped runs)")
        url = brokers["idle"].admin_url
        assert url is not None
        rounds, collects = [], []
        for _ in range(args.scrapes):
            round_trip, collect = scrape(url)
            rounds.append(round_trip)
            collects.append(collect)
        rounds.sort()
        collects = sorted(collects[1:])
        print(f"scrape of {args.partitions}+ partitions: HTTP p50 {statistics.median(rounds) * 1000:.1f} ms, "
              f"p99 {rounds[int(len(rounds) * 0.99) - 1] * 1000:.1f} ms; "
              f"collect p50 {statistics.median(collects) * 1000:.1f} ms, max {collects[-1] * 1000:.1f} ms")
    finally:
        for broker in brokers.values():
            broker.stop()
    print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
