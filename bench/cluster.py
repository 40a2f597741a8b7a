"""A replicated cluster against one broker, measured in the same run with confluent-kafka.

Run: `.venv/bin/python bench/cluster.py [--quick] [--json PATH]`

(a) one `ackly serve` process (no metadata store), a one-partition topic, acks=1;
(b) three `ackly serve` processes on etcd (ackly.testing.cluster_processes), RF=3,
    min.insync.replicas=2, acks=all.
For each: produce N x 1 KiB (linger.ms=5, batch.size=1,000,000, no idempotence), timed from the
first produce() to flush() returning; consume them back from the partition leader (assign() at
offset 0), timed to the last message; end-to-end latency at 200 msg/s for ~5 s (the value
carries perf_counter_ns(), a consumer thread in this process computes receive - stamp).
Each cluster figure is also printed as a ratio to the single-broker figure of the same run
(targets: replicated produce >= 0.4 x single; p99 <= 20 ms at 200 msg/s).

It prints numbers; it is not a test. Every loop is bounded in count and time; a measurement
that fails or runs out of time says so in its row and the run goes on. Every process started
here (the broker, etcd, the three brokers) is stopped through the object that started it.
Clients and brokers share this machine's cores; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from produce_consume import (
    MB,
    ScenarioTimeout,
    _consume_once,
    consumer_config,
    loadavg,
    percentile,
    produce_n,
    producer_config,
)

from ackly.testing.broker_process import BrokerProcess
from ackly.testing.cluster_processes import ClusterProcesses, etcd_binary, wait_until

KiB = 1024
RATE = 200.0
CLUSTER_CONFIGS = {
    "log.flush.policy": "never",            # the single broker's default too: compare like with like
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "500",
}


def create_topic(bootstrap: str, topic: str, rf: int, timeout_s: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    config = {"min.insync.replicas": "2"} if rf >= 3 else {}
    futures = admin.create_topics([NewTopic(topic, 1, rf, config=config)],
                                  operation_timeout=timeout_s, request_timeout=timeout_s)
    futures[topic].result(timeout=timeout_s)


def leader_and_isr(bootstrap: str, topic: str, rf: int, timeout_s: float = 30.0) -> int:
    """Wait until partition 0 has a leader and a full ISR; its leader id."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})

    def ready() -> int | None:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None or 0 not in t.partitions:
            return None
        p = t.partitions[0]
        return p.leader + 1 if p.leader >= 0 and len(p.isrs) == rf else None

    return wait_until(ready, timeout_s, f"{topic}: a leader and an ISR of {rf}") - 1


def latency(bootstrap: str, topic: str, acks: str, count: int, timeout_s: float) -> dict[str, float]:
    """`count` 1 KiB messages at RATE msg/s (after 20 uncounted); receive - stamp, in ms."""
    warmup = 20
    total = warmup + count
    lat_ns: list[int] = []
    seen = [0]
    errors: list[str] = []
    stop = threading.Event()
    ready = threading.Event()
    pad = b"\0" * (KiB - 8)

    def consume() -> None:
        c = Consumer(consumer_config(bootstrap, "bench-cluster-latency",
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
                    errors.append(str(m.error()))
                    continue
                (stamp,) = struct.unpack_from(">q", m.value())
                if seen[0] >= warmup:
                    lat_ns.append(now - stamp)
                seen[0] += 1
        except Exception as exc:  # reported below
            errors.append(repr(exc))
        finally:
            c.close()

    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    p = Producer(producer_config(bootstrap, acks=acks, on_delivery=on_delivery,
                                 **{"linger.ms": 0, "batch.num.messages": 1000}))
    t = threading.Thread(target=consume, name="latency-consumer", daemon=True)
    t.start()
    try:
        p.list_topics(topic, timeout=10)
        if not ready.wait(10):
            raise ScenarioTimeout("consumer thread did not start")
        interval_ns = int(1e9 / RATE)
        for _ in range(warmup):  # connections, first fetches: not counted
            p.produce(topic, struct.pack(">q", time.perf_counter_ns()) + pad, partition=0)
            p.poll(interval_ns / 1e9)
        warm_deadline = time.perf_counter() + 15
        while seen[0] < warmup and time.perf_counter() < warm_deadline:
            p.poll(0.01)
        if seen[0] < warmup:
            raise ScenarioTimeout(f"warm-up: {seen[0]} of {warmup} came back in 15 s")
        deadline = time.perf_counter() + timeout_s
        start_ns = time.perf_counter_ns()
        for i in range(count):
            due = start_ns + i * interval_ns
            while (now := time.perf_counter_ns()) < due:
                p.poll(min(0.001, (due - now) / 1e9))
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
    if failed:
        raise RuntimeError(f"{len(failed)} deliveries failed, first: {failed[0]}")
    if len(lat_ns) < count:
        raise ScenarioTimeout(f"{len(lat_ns)} of {count} came back in {timeout_s:.0f} s"
                              + (f"; consumer: {errors[0]}" if errors else ""))
    ms = sorted(x / 1e6 for x in lat_ns)
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": ms[-1]}


def measure(label: str, bootstrap: str, leader_bootstrap: Callable[[str], str], rf: int,
            acks: str, count: int, lat_count: int, timeout_s: float) -> dict[str, Any]:
    """The three measurements against one deployment; a failed one is recorded as an error."""
    out: dict[str, Any] = {"label": label}
    value = os.urandom(KiB)
    topic = f"bench-{label}"
    try:
        create_topic(bootstrap, topic, rf)
        leader_and_isr(bootstrap, topic, rf)
        # Warm-up (connections, first segment), not counted.
        produce_n(bootstrap, f"{topic}", max(1, count // 20), value, timeout_s, acks=acks)
        r = produce_n(bootstrap, topic, count, value, timeout_s, acks=acks)
        out["produce_MBps"] = r["value_bytes"] / r["seconds"] / MB
        out["produce_msgps"] = r["messages"] / r["seconds"]
        total = count + max(1, count // 20)
        rate, _cpu = _consume_once(leader_bootstrap(topic), topic, total, timeout_s, None)
        out["consume_MBps"] = rate
    except Exception as exc:
        out["error"] = f"throughput: {type(exc).__name__}: {exc}"
    try:
        lat_topic = f"{topic}-latency"
        create_topic(bootstrap, lat_topic, rf)
        leader_and_isr(bootstrap, lat_topic, rf)
        out.update(latency(bootstrap, lat_topic, acks, lat_count, timeout_s))
    except Exception as exc:
        out["error"] = (out.get("error", "") + f"; latency: {type(exc).__name__}: {exc}").lstrip("; ")
    return out


def run_single(base: str, count: int, lat_count: int, timeout_s: float) -> dict[str, Any]:
    broker = BrokerProcess(os.path.join(base, "single"), configs={"log.flush.policy": "never"})
    try:
        broker.start()
        return measure("single", broker.bootstrap, lambda _t: broker.bootstrap, 1, "1",
                       count, lat_count, timeout_s)
    except Exception as exc:
        return {"label": "single", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            broker.stop()
        except Exception:
            broker.kill()


def run_cluster(base: str, count: int, lat_count: int, timeout_s: float) -> dict[str, Any]:
    if etcd_binary() is None:
        return {"label": "cluster", "error": "etcd is not installed"}
    cluster = ClusterProcesses(os.path.join(base, "cluster"), 3, configs=CLUSTER_CONFIGS)
    try:
        cluster.start()

        def leader(topic: str) -> str:
            view = cluster.partition(topic)
            return cluster.address(view.leader) if view and view.leader >= 0 else cluster.bootstrap

        return measure("cluster", cluster.bootstrap, leader, 3, "all", count, lat_count, timeout_s)
    except Exception as exc:
        return {"label": "cluster", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        cluster.stop_all()


def fmt(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:,.1f} {unit}" if unit != "ms" else f"{v:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1/10 of the produce count, 2 s of latency")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    count = 20_000 if args.quick else 200_000
    lat_count = int(RATE * (2 if args.quick else 5))
    timeout_s = 60.0 if args.quick else 180.0
    print(f"ackly cluster bench: {count:,} x 1 KiB, latency {lat_count} msgs at {RATE:.0f}/s; "
          f"{os.cpu_count()} CPUs; load {loadavg()}", flush=True)
    base = tempfile.mkdtemp(prefix="ackly-bench-cluster-")
    try:
        single = run_single(base, count, lat_count, timeout_s)
        print(f"  single broker done{': ' + single['error'] if 'error' in single else ''}", flush=True)
        cluster = run_cluster(base, count, lat_count, timeout_s)
        print(f"  3-broker cluster done{': ' + cluster['error'] if 'error' in cluster else ''}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rows = []
    for key, name, unit, target in (
        ("produce_MBps", "produce 1 KiB", "MB/s", ">= 0.4 x single"),
        ("consume_MBps", "consume 1 KiB", "MB/s", "-"),
        ("p50_ms", f"e2e latency p50 at {RATE:.0f}/s", "ms", "-"),
        ("p99_ms", f"e2e latency p99 at {RATE:.0f}/s", "ms", "<= 20 ms"),
        ("max_ms", f"e2e latency max at {RATE:.0f}/s", "ms", "-"),
    ):
        s, c = single.get(key), cluster.get(key)
        ratio = c / s if s and c is not None else None
        ok = None
        if key == "produce_MBps" and ratio is not None:
            ok = ratio >= 0.4
        elif key == "p99_ms" and c is not None:
            ok = c <= 20.0
        rows.append({"key": key, "measure": name, "unit": unit, "single_acks1": s,
                     "cluster_rf3_acksall": c, "ratio": ratio, "target": target, "ok": ok})

    print(f"\n{'measure':<28} {'1 broker, acks=1':>18} {'3 brokers RF=3 acks=all':>24} "
          f"{'ratio':>7}  target")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        mark = "" if r["ok"] is None else ("  ok" if r["ok"] else "  MISSED")
        print(f"{r['measure']:<28} {fmt(r['single_acks1'], r['unit']):>18} "
              f"{fmt(r['cluster_rf3_acksall'], r['unit']):>24} {ratio:>7}  {r['target']}{mark}")
    for d in (single, cluster):
        if "produce_msgps" in d:
            print(f"  {d['label']}: {d['produce_msgps']:,.0f} msg/s produced")
        if "error" in d:
            print(f"  {d['label']}: ERROR {d['error']}")
    print(f"load after: {loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "count": count, "latency_count": lat_count,
                       "single": single, "cluster": cluster, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
