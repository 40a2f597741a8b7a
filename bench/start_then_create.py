"""Start a three-broker cluster, then create an RF=3 topic at once: how long until the answer.

Run: `.venv/bin/python bench/start_then_create.py [--runs 50] [--wait-s 10] [--log-level DEBUG]`

Each run starts a fresh etcd and three `ackly serve --metadata etcd://...` processes, waits only
until each broker listens (not until they have formed a cluster, as a script that starts a
cluster and uses it at once would), then asks confluent-kafka's AdminClient to create a topic
with one partition, replication factor 3 and min.insync.replicas=2 (the client's default
operation timeout), and waits at most `--wait-s` for the answer. A run counts as good when the
answer is the topic created (or, after a retriable error, a retry created it) and the topic
then shows a leader. It prints one row per run and a summary (answered, created, the answer
time's median and max); runs without an answer keep their brokers' output in `--keep-dir`.

It prints numbers; it is not a test. Every loop is bounded in count and time; every process
started here is stopped through the object that started it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import TopicName

from ackly.server.etcd_process import EtcdProcess
from ackly.testing.broker_process import BrokerProcess
from ackly.testing.cluster_processes import etcd_binary, wait_until
from ackly.testing.wire import WireClient

BROKERS = 3
CONFIGS = {"broker.session.timeout.ms": "6000", "broker.heartbeat.interval.ms": "500"}


def _views(brokers: list[BrokerProcess], topic: str) -> str:
    """What each broker's Metadata shows: controller, brokers, the topic's partitions."""
    request = MetadataRequest(topics=(MetadataRequestTopic(name=TopicName(topic), topic_id=None),),
                              allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    parts = []
    for b in brokers:
        try:
            with WireClient(b.bootstrap, timeout_s=2.0) as client:
                r = client.request(request)
        except (OSError, ConnectionError, AssertionError) as exc:
            parts.append(f"b{b.broker_id}: {exc}")
            continue
        ps = [(int(p.leader_id), tuple(int(x) for x in p.isr_nodes), int(p.error_code))
              for t in r.topics for p in t.partitions]
        parts.append(f"b{b.broker_id}: controller {int(r.controller_id)} brokers "
                     f"{sorted(int(x.node_id) for x in r.brokers)} topic {[int(t.error_code) for t in r.topics]} {ps}")
    return "; ".join(parts)


def one_run(base: str, wait_s: float, log_level: str | None) -> tuple[str, float, str]:
    """(outcome, seconds to the first answer, note). Outcome: created, error, no-answer."""
    etcd = EtcdProcess(os.path.join(base, "etcd"))
    brokers: list[BrokerProcess] = []
    try:
        etcd.start()
        for broker_id in range(BROKERS):
            proc = BrokerProcess(os.path.join(base, f"broker-{broker_id}"), broker_id=broker_id,
                                 configs=CONFIGS, metadata=etcd.client_url, log_level=log_level)
            brokers.append(proc)
            proc.start()
        bootstrap = ",".join(b.bootstrap for b in brokers)
        import logging
        client_log: list[str] = []

        class _Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                client_log.append(f"{record.created:.3f} {record.getMessage()}")

        lg = logging.getLogger("rdk")
        lg.handlers = [_Keep()]
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        admin = AdminClient({"bootstrap.servers": bootstrap, "debug": "admin,metadata,broker,protocol"}, logger=lg)
        topic = "t"
        started = time.perf_counter()
        future = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic]
        note = ""
        try:
            future.result(wait_s)
            outcome = "created"
        except KafkaException as exc:
            outcome, note = "error", str(exc.args[0])
        except TimeoutError:
            admin.poll(0.5)
            with open(os.path.join(base, "client.log"), "w") as f:
                f.write("\n".join(client_log))
            return "no-answer", time.perf_counter() - started, _views(brokers, topic)
        answered_s = time.perf_counter() - started
        if outcome == "error":
            # A retriable refusal (too few brokers yet, no controller yet): retry as a client would.
            def retry() -> bool:
                f = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})],
                                        operation_timeout=5)[topic]
                try:
                    f.result(wait_s)
                    return True
                except KafkaException as exc:
                    return "already exists" in str(exc.args[0]).lower() or "TOPIC_ALREADY_EXISTS" in str(exc.args[0])

            wait_until(retry, wait_s, "the topic to be created on retry", interval_s=0.1)
            outcome = "created-on-retry"
        md = admin.list_topics(topic, timeout=wait_s)
        leader = md.topics[topic].partitions[0].leader if topic in md.topics and md.topics[topic].partitions else -1
        if leader < 0:
            note += " (no leader yet)"
        return outcome, answered_s, note
    finally:
        for b in brokers:
            b.stop()
            with open(os.path.join(base, f"broker-{b.broker_id}.out"), "w") as f:
                f.write("".join(b.output))
        etcd.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--wait-s", type=float, default=10.0)
    ap.add_argument("--log-level", default=None)
    ap.add_argument("--keep-dir", default=None, help="copy the data and logs of unanswered runs here")
    args = ap.parse_args()
    if etcd_binary() is None:
        sys.exit("etcd is not installed")
    times: list[float] = []
    counts: dict[str, int] = {}
    for i in range(args.runs):
        base = tempfile.mkdtemp(prefix="ackly-stc-")
        outcome, seconds, note = one_run(base, args.wait_s, args.log_level)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "no-answer":
            times.append(seconds)
        print(f"run {i + 1:3d}  {outcome:17s} {seconds * 1000:8.0f} ms  {note}", flush=True)
        if outcome == "no-answer" and args.keep_dir:
            shutil.copytree(base, os.path.join(args.keep_dir, f"run-{i + 1}"), dirs_exist_ok=True)
        shutil.rmtree(base, ignore_errors=True)
    times.sort()
    print(f"runs {args.runs}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if times:
        print(f"answer time: median {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
