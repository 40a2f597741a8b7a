"""How long a slow disk holds the broker's event loop, measured on an in-process broker.

Run: `.venv/bin/python bench/slow_disk_loop.py [--fsync-ms 20] [--seconds 5] [--json PATH]`

One broker in this process (ackly.testing.inprocess), whose every `os.fsync` / `os.fdatasync`
first sleeps `--fsync-ms` (a slow or busy disk). A probe on the broker's event loop wakes
every 5 ms and records how late it ran: that lateness is what every connection waits on top
of its own work. Measured twice, `--seconds` each:
  1. idle: no client;
  2. trim: a confluent-kafka admin client sends DeleteRecords in a loop (each moves the log
     start of a topic with 1 KiB segments one record further, deleting segments on the way),
     while a producer writes one record per DeleteRecords (acks=all, flush.policy=always).
Printed: DeleteRecords answered per second and the probe's lateness (p50, p99, max) in ms.
While an fsync runs on the loop, the lateness grows with `--fsync-ms`; while fsyncs run in the
flusher's threads only, it stays near the idle one. It prints numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

PROBE_MS = 5


def slowed(real: Callable[[int], None], delay_s: float) -> Callable[[int], None]:
    def sync(fd: int) -> None:
        time.sleep(delay_s)
        real(fd)

    return sync


class LoopProbe:
    """Lateness of a 5 ms timer on the broker's loop, from `start` to `stop`."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.lateness_ms: list[float] = []
        self.running = False

    def start(self) -> None:
        self.lateness_ms = []
        self.running = True
        self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        due = time.monotonic() + PROBE_MS / 1000
        self.loop.call_later(PROBE_MS / 1000, self._fire, due)

    def _fire(self, due: float) -> None:
        self.lateness_ms.append((time.monotonic() - due) * 1000)
        if self.running:
            self._arm()

    def stop(self) -> dict[str, float]:
        self.running = False
        time.sleep(2 * PROBE_MS / 1000)
        values = sorted(self.lateness_ms) or [0.0]
        return {
            "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
            "max_ms": round(values[-1], 2),
            "samples": len(values),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsync-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from ackly.testing.inprocess import InProcessBroker

    with tempfile.TemporaryDirectory(prefix="ackly-slow-disk-") as data:
        os.fsync = slowed(os.fsync, args.fsync_ms / 1000)  # type: ignore[assignment]
        if hasattr(os, "fdatasync"):
            os.fdatasync = slowed(os.fdatasync, args.fsync_ms / 1000)  # type: ignore[assignment]
        broker = InProcessBroker(data, {"log.segment.delete.delay.ms": "0"}).start()
        try:
            assert broker.loop is not None
            probe = LoopProbe(broker.loop)
            probe.start()
            time.sleep(args.seconds)
            idle = probe.stop()

            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            (created,) = admin.create_topics(
                [NewTopic("trim", 1, 1, config={"segment.bytes": "1024"})]).values()
            created.result(30)
            producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                                 "linger.ms": 0})
            failures: list[object] = []

            def produce_one() -> None:
                producer.produce("trim", value=b"x" * 200, partition=0,
                                 on_delivery=lambda err, _m: failures.append(err) if err else None)
                producer.flush(30)

            for _ in range(20):
                produce_one()
            stop = threading.Event()
            trimmed = [0]

            def trim() -> None:
                offset = 0
                while not stop.is_set():
                    produce_one()
                    offset += 1
                    (future,) = admin.delete_records([TopicPartition("trim", 0, offset)]).values()
                    future.result(30)
                    trimmed[0] += 1

            worker = threading.Thread(target=trim, name="trim")
            probe.start()
            started = time.monotonic()
            worker.start()
            time.sleep(args.seconds)
            stop.set()
            worker.join(60)
            elapsed = time.monotonic() - started
            busy = probe.stop()
            assert not failures, failures[:3]
        finally:
            broker.stop()

    result = {
        "fsync_ms": args.fsync_ms,
        "idle": idle,
        "trim": {**busy, "delete_records_per_s": round(trimmed[0] / elapsed, 1)},
    }
    print(f"fsync delay {args.fsync_ms} ms; loop lateness of a {PROBE_MS} ms timer:")
    for name in ("idle", "trim"):
        row = result[name]
        assert isinstance(row, dict)
        extra = f", {row['delete_records_per_s']} DeleteRecords/s" if name == "trim" else ""
        print(f"  {name:5s} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
              f"max {row['max_ms']:7.2f} ms  ({row['samples']} samples{extra})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
