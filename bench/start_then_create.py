"""Start a three-broker cluster, then create an RF=3 topic at once: how long until the answer.

Run: `.venv/bin/python bench/start_then_create.py [--runs 50] [--wait-s 10] [--keep-dir DIR]`

Each run starts a fresh etcd and three `ackly serve --metadata etcd://...` processes, waits only
until each broker listens (not until they have formed a cluster, as a script that starts a
cluster and uses it at once would), then asks confluent-kafka's AdminClient to create a topic
with one partition, replication factor 3 and min.insync.replicas=2 (the client's default
operation timeout), and waits at most `--wait-s` for the answer. Per run it prints the outcome
(created; an error, then retried as a client would; or no answer), the time from
`create_topics()` to the answer, and the time until a Metadata request shows the partition's
leader. The summary gives the counts, the answer time's median and max, and how many answers
took over 1 s. With `--keep-dir`, a run with no answer or a slow one (over 1 s) keeps its
brokers' output, the client's debug log and each broker's view of the topic there.

It prints numbers; it is not a test. Every loop is bounded in count and time; every process
started here is stopped through the object that started it.
"""

from __future__ import annotations

import argparse
import logging
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
TOPIC = "t"
SLOW_S = 1.0
CONFIGS = {"broker.session.timeout.ms": "6000", "broker.heartbeat.interval.ms": "500"}


class _KeepLog(logging.Handler):
    """librdkafka's debug log, kept in memory (written out only for a bad run)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.created:.3f} {record.getMessage()}")


def _new_topic() -> NewTopic:
    return NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})


def _views(brokers: list[BrokerProcess]) -> str:
    """What each broker's Metadata shows: controller, brokers, the topic's partitions."""
    request = MetadataRequest(topics=(MetadataRequestTopic(name=TopicName(TOPIC), topic_id=None),),
                              allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    parts = []
    for b in brokers:
        try:
            with WireClient(b.bootstrap, timeout_s=2.0) as client:
                r = client.request(request)
        except (OSError, ConnectionError, AssertionError) as exc:
            parts.append(f"b{b.broker_id}: {exc}")
            continue
        partitions = [(int(p.leader_id), tuple(int(x) for x in p.isr_nodes), int(p.error_code))
                      for t in r.topics for p in t.partitions]
        parts.append(f"b{b.broker_id}: controller {int(r.controller_id)} brokers "
                     f"{sorted(int(x.node_id) for x in r.brokers)} topic errors "
                     f"{[int(t.error_code) for t in r.topics]} partitions {partitions}")
    return "; ".join(parts)


def one_run(base: str, wait_s: float, keep: bool) -> tuple[str, float, float, str]:
    """(outcome, seconds to the answer, seconds to a visible leader, note)."""
    etcd = EtcdProcess(os.path.join(base, "etcd"))
    brokers: list[BrokerProcess] = []
    client_log = _KeepLog()
    logger = logging.getLogger(f"rdkafka-{os.path.basename(base)}")
    logger.handlers = [client_log]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    note = ""
    try:
        etcd.start()
        for broker_id in range(BROKERS):
            proc = BrokerProcess(os.path.join(base, f"broker-{broker_id}"), broker_id=broker_id,
                                 configs=CONFIGS, metadata=etcd.client_url)
            brokers.append(proc)
            proc.start()  # returns once the broker prints that it listens
        admin = AdminClient({"bootstrap.servers": ",".join(b.bootstrap for b in brokers),
                             "debug": "admin,metadata,broker,protocol"}, logger=logger)
        started = time.perf_counter()
        future = admin.create_topics([_new_topic()])[TOPIC]
        try:
            future.result(wait_s)
            outcome = "created"
        except KafkaException as exc:
            outcome, note = "error", str(exc.args[0])
        except TimeoutError:
            outcome = "no-answer"
        answered_s = time.perf_counter() - started
        if outcome == "no-answer":
            note = _views(brokers)
            return outcome, answered_s, float("nan"), note
        if outcome == "error":
            # A retriable refusal: retry as a client would.
            def retry() -> bool:
                f = admin.create_topics([_new_topic()], operation_timeout=5)[TOPIC]
                try:
                    f.result(wait_s)
                    return True
                except KafkaException as exc:
                    return "already exists" in str(exc.args[0]).lower()

            wait_until(retry, wait_s, "the topic to be created on retry", interval_s=0.1)
            outcome = "created-on-retry"

        def leader() -> bool:
            md = admin.list_topics(TOPIC, timeout=wait_s)
            t = md.topics.get(TOPIC)
            return t is not None and t.error is None and bool(t.partitions) and t.partitions[0].leader >= 0

        wait_until(leader, wait_s, "a leader for the new topic", interval_s=0.01)
        leader_s = time.perf_counter() - started
        if answered_s > SLOW_S:
            note = _views(brokers)
        return outcome, answered_s, leader_s, note
    finally:
        if keep:
            admin_client = locals().get("admin")
            if admin_client is not None:
                admin_client.poll(0.5)  # delivers the queued client log lines
            with open(os.path.join(base, "client.log"), "w") as f:
                f.write("\n".join(client_log.lines))
        for b in brokers:
            b.stop()
            with open(os.path.join(base, f"broker-{b.broker_id}.out"), "w") as f:
                f.write("".join(b.output))
        etcd.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--wait-s", type=float, default=10.0)
    ap.add_argument("--keep-dir", default=None,
                    help="copy the logs of runs with no answer or a slow one (> 1 s) here")
    args = ap.parse_args()
    if etcd_binary() is None:
        sys.exit("etcd is not installed")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    answers: list[float] = []
    counts: dict[str, int] = {}
    for i in range(args.runs):
        base = tempfile.mkdtemp(prefix="ackly-start-then-create-")
        outcome, answered_s, leader_s, note = one_run(base, args.wait_s, args.keep_dir is not None)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "no-answer":
            answers.append(answered_s)
        print(f"run {i + 1:3d}  {outcome:17s} answer {answered_s * 1000:7.0f} ms  "
              f"leader {leader_s * 1000:7.0f} ms  {note}", flush=True)
        if args.keep_dir and (outcome == "no-answer" or answered_s > SLOW_S):
            shutil.copytree(base, os.path.join(args.keep_dir, f"run-{i + 1}"), dirs_exist_ok=True)
        shutil.rmtree(base, ignore_errors=True)
    answers.sort()
    print(f"runs {args.runs}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if answers:
        slow = sum(1 for s in answers if s > SLOW_S)
        print(f"answer time: median {answers[len(answers) // 2] * 1000:.0f} ms, "
              f"max {answers[-1] * 1000:.0f} ms, over {SLOW_S:.0f} s: {slow}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
