"""Idle CPU of a 3-broker cluster with RF=3 and many partitions, with and without fetch
sessions (KIP-227), measured in the same run.

Usage: `python bench/idle_cluster_cpu.py [--partitions 1000] [--idle-s 10] [--settle-s 10]`

For each setting: start 3 brokers (etcd, ackly.testing.cluster_processes), create one topic
with N partitions and RF=3, wait until every partition has its 3 replicas in the ISR, let it
settle for `--settle-s`, then measure the CPU of each broker process over `--idle-s` seconds with no client.
"sessions off" sets max.incremental.fetch.session.cache.slots=0: the leaders open no session
and followers send every partition in every fetch, as before sessions. Prints one line per
setting and the ratio; the load average is printed too (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka.admin import AdminClient
from partitions import create_topic, idle_cpu_percent
from produce_consume import loadavg


def wait_isr_full(bootstrap: str, partitions: int, timeout_s: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        topic = next(iter(t for name, t in md.topics.items() if not name.startswith("__")), None)
        if topic is not None and len(topic.partitions) == partitions \
                and all(len(p.isrs) == 3 for p in topic.partitions.values()):
            return
        time.sleep(0.5)
    raise TimeoutError("the ISRs did not fill")


def run(partitions: int, idle_s: float, settle_s: float, configs: dict[str, str],
        timeout_s: float) -> dict[str, Any]:
    from ackly.testing.cluster_processes import ClusterProcesses

    base = tempfile.mkdtemp(prefix="ackly-bench-idle-")
    cluster = ClusterProcesses(base, 3, configs=configs, start_timeout_s=timeout_s)
    try:
        cluster.start()
        create_topic(cluster.bootstrap, partitions, 3, timeout_s)
        wait_isr_full(cluster.bootstrap, partitions, timeout_s)
        # Not a wait for a condition: the creation's after-work (checkpoints, first fetches,
        # metadata) is excluded from the idle measurement by time.
        time.sleep(settle_s)
        pids = [b.proc.pid for b in cluster.brokers.values() if b.proc is not None]
        # Measured one after the other would triple the time; in parallel threads instead.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(pids)) as pool:
            cpu = list(pool.map(lambda pid: idle_cpu_percent(pid, idle_s), pids))
        return {"cpu_pct": cpu, "load": loadavg()}
    finally:
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--settle-s", type=float, default=10.0)
    ap.add_argument("--timeout-s", type=float, default=240.0)
    args = ap.parse_args()
    rows = {}
    for name, configs in (("sessions off", {"max.incremental.fetch.session.cache.slots": "0"}),
                          ("sessions on", {})):
        row = run(args.partitions, args.idle_s, args.settle_s, configs, args.timeout_s)
        rows[name] = row
        cpu = row["cpu_pct"]
        print(f"{name:13s} {args.partitions} partitions RF=3: idle CPU per broker "
              f"{', '.join(f'{c:.1f}%' for c in cpu)} (mean {sum(cpu) / len(cpu):.1f}%), "
              f"load {row['load']}", flush=True)
    off = sum(rows["sessions off"]["cpu_pct"])
    on = sum(rows["sessions on"]["cpu_pct"])
    print(f"ratio off/on: {off / on:.1f}x" if on > 0 else "ratio: on is 0")


if __name__ == "__main__":
    main()
