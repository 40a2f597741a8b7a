"""kcat 1.7.1 (librdkafka 2.0.2) against a real `ackly serve`: topics, records, offsets.

kcat picks Produce v7, Fetch v11, ListOffsets v2, Metadata v4 (docs/clients.md). It has no admin
commands and no way to set a record's timestamp, so:
- the topic is auto-created by kcat's own producer metadata request (num.partitions=2);
- kcat produces partition 0 (keys and headers; librdkafka stamps the create time, checked to
  lie within the produce call), and confluent-kafka produces partition 1 with explicit
  timestamps, which kcat must read back exactly;
- the topic is deleted with confluent-kafka's admin API, and kcat's metadata must not list it.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.clients.clientkit import (
    Rec,
    assert_same_records,
    base_timestamp_ms,
    ck_admin,
    ck_delete_topic,
    ck_produce,
    now_ms,
    offset_at,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(90)]

PARTITIONS = 2
PER_PARTITION = 5
KCAT_HEADERS = (("origin", b"kcat"), ("run", b"p0"))


def run_kcat(kcat: str, *args: str, stdin: str | None = None, timeout_s: float = 30) -> str:
    proc = subprocess.run([kcat, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"kcat {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def kcat_topics(kcat: str, bootstrap: str) -> dict[str, int]:
    """Topic -> partition count, from a metadata request for all topics (never auto-creates)."""
    meta = json.loads(run_kcat(kcat, "-b", bootstrap, "-L", "-J", "-m", "10"))
    return {t["topic"]: len(t["partitions"]) for t in meta["topics"] if not t.get("error")}


def kcat_query(kcat: str, bootstrap: str, topic: str, partition: int, ts: int) -> int:
    """kcat -Q: the offset for a timestamp (-1 latest, -2 earliest)."""
    out = json.loads(run_kcat(kcat, "-b", bootstrap, "-Q", "-J", "-m", "10",
                              "-t", f"{topic}:{partition}:{ts}"))
    entry = out[topic][str(partition)]
    assert "error" not in entry, f"kcat -Q {topic}:{partition}:{ts}: {entry}"
    return int(entry["offset"])


def test_kcat_topic_produce_consume_offsets_delete(broker_factory, kcat) -> None:
    broker = broker_factory(configs={"num.partitions": str(PARTITIONS)})
    bootstrap = broker.bootstrap
    topic = unique_topic("kcat")

    # Partition 0 from kcat: per-message keys with -K, headers with -H, librdkafka's timestamp.
    kcat_values = [(f"key-0-{i}", f"value-0-{i}") for i in range(PER_PARTITION)]
    header_args = [arg for k, v in KCAT_HEADERS for arg in ("-H", f"{k}={v.decode()}")]
    before_ms = now_ms()
    run_kcat(kcat, "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K", "|",
             "-X", "acks=all", "-X", "linger.ms=5", *header_args,
             stdin="".join(f"{k}|{v}\n" for k, v in kcat_values))
    after_ms = now_ms()
    assert kcat_topics(kcat, bootstrap).get(topic) == PARTITIONS

    # Partition 1 from confluent-kafka, with explicit timestamps (kcat cannot set them).
    explicit = [r for r in sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                                          base_ts_ms=base_timestamp_ms()) if r.partition == 1]
    assert sorted(o for _, o in ck_produce(bootstrap, topic, explicit, acks="all")) \
        == list(range(PER_PARTITION))

    lines = run_kcat(kcat, "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                     "-J", "-q").splitlines()
    got = []
    for line in lines:
        m = json.loads(line)
        assert m["topic"] == topic and m["tstype"] == "create", m
        h = m.get("headers") or []
        got.append(Rec(
            partition=m["partition"],
            key=m["key"].encode() if m["key"] is not None else None,
            value=m["payload"].encode() if m["payload"] is not None else None,
            headers=tuple((h[i], h[i + 1].encode() if h[i + 1] is not None else None)
                          for i in range(0, len(h), 2)),
            timestamp_ms=m["ts"], offset=m["offset"],
        ))
    from_kcat = [r for r in got if r.partition == 0]
    for r in from_kcat:
        assert before_ms <= r.timestamp_ms <= after_ms, f"create time outside the produce: {r}"
    assert [r.timestamp_ms for r in from_kcat] == sorted(r.timestamp_ms for r in from_kcat)
    # The kcat records' timestamps are whatever librdkafka stamped: take them as read.
    expected = [
        Rec(partition=0, key=k.encode(), value=v.encode(), headers=KCAT_HEADERS,
            timestamp_ms=from_kcat[i].timestamp_ms if i < len(from_kcat) else -1)
        for i, (k, v) in enumerate(kcat_values)
    ] + explicit
    assert_same_records(expected, got)

    for p in range(PARTITIONS):
        assert kcat_query(kcat, bootstrap, topic, p, -2) == 0
        assert kcat_query(kcat, bootstrap, topic, p, -1) == PER_PARTITION
    for r in expected:
        for ts in (r.timestamp_ms - 1, r.timestamp_ms, r.timestamp_ms + 1):
            want = offset_at(expected, r.partition, ts)
            got_offset = kcat_query(kcat, bootstrap, topic, r.partition, ts)
            # No record at or after ts: Kafka answers -1, which librdkafka reports as
            # OFFSET_END (-1) too.
            assert got_offset == want, f"partition {r.partition} at {ts}"

    ck_delete_topic(ck_admin(bootstrap), topic)
    assert topic not in kcat_topics(kcat, bootstrap)
