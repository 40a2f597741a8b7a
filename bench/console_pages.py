"""What a console page costs the broker's event loop, next to a /metrics scrape.

Run: `.venv/bin/python bench/console_pages.py [--partitions N ...] [--repeats N]`

One in-process broker with the admin listener. For each size, a topic is grown to that many
partitions (replication factor 1); then a probe on the broker's loop (a 1 ms timer that notes
how late each wake-up is) measures the longest stall of the loop while nothing is asked
(idle), while `--repeats` overview pages `/` are fetched one after another, and while as many
`/metrics` scrapes are. The page's HTTP round trip (median) and size are printed too. The
console reads the node in turns of REPLICAS_PER_TURN replicas and renders in a worker thread,
so what remains of its stall is mostly Python's garbage collector (a full collection stops
every thread; `BENCH_NO_GC=1` runs with it off to show that share) and the GIL. The machine
may be shared: the load average is printed, compare the columns of one row. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import urllib.request
from typing import Any

from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from ackly.testing.inprocess import InProcessBroker


class StallProbe:
    """On the loop: wakes every 1 ms and keeps the largest lateness since `reset`."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)  # the probe's period: its lateness is what is measured
            self.worst_s = max(self.worst_s, loop.time() - due)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def reset(self) -> None:
        self.worst_s = 0.0


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def worst_during(broker: InProcessBroker, probe: StallProbe, work: Any) -> float:
    broker.call(probe.reset)
    work()
    return broker.call(lambda: probe.worst_s)


def main() -> None:
    if os.environ.get("BENCH_NO_GC"):
        import gc

        gc.disable()
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        broker = InProcessBroker(tmp, {"admin.listener": "127.0.0.1:0", "log.flush.policy": "never"}).start()
        probe = StallProbe()
        try:
            server = broker.server
            assert server is not None and server.admin_address is not None
            base = "http://{}:{}".format(*server.admin_address)
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            broker.call(probe.start)
            print(f"{'partitions':>10} {'idle stall ms':>13} {'page stall ms':>13} {'scrape stall ms':>15} "
                  f"{'page ms':>8} {'page KiB':>8}")
            for i, n in enumerate(args.partitions):
                if i == 0:
                    admin.create_topics([NewTopic("bench", n, 1)])["bench"].result(timeout=120)
                else:
                    admin.create_partitions([NewPartitions("bench", n)])["bench"].result(timeout=120)
                deadline = time.monotonic() + 120
                while broker.call(lambda: sum(1 for p in server.node.all_partitions() if p.tp.topic == "bench")) < n:
                    assert time.monotonic() < deadline, "partitions did not appear"
                    time.sleep(0.1)
                timed_get(base + "/")  # the first page compiles the templates (once per process)
                pages = [(0.0, 0)] * args.repeats

                def fetch_pages(pages: list[tuple[float, int]] = pages) -> None:
                    pages[:] = [timed_get(base + "/") for _ in range(args.repeats)]

                idle = worst_during(broker, probe, lambda: time.sleep(0.5))
                page = worst_during(broker, probe, fetch_pages)
                scrape = worst_during(broker, probe,
                                      lambda: [timed_get(base + "/metrics") for _ in range(args.repeats)])
                print(f"{n:>10} {idle * 1000:>13.1f} {page * 1000:>13.1f} {scrape * 1000:>15.1f} "
                      f"{statistics.median(p[0] for p in pages) * 1000:>8.0f} {pages[0][1] / 1024:>8.0f}")
        finally:
            if probe.task is not None:
                broker.call(probe.task.cancel)
            broker.stop()


if __name__ == "__main__":
    main()
