"""kafkajs 2.2.4 (Node) against a real `ackly serve`: topics, records, offsets.

kafkajs picks Produce v7, Fetch v11, ListOffsets v3, Metadata v6 and never flexible versions
(docs/clients.md). Each step runs `node js/kafkajs_driver.js` once (see the `kafkajs` fixture).
kafkajs has no group-less consumer, so records are read back with kafkajs's own Fetch request
and record decoder, without its group protocol (see the comment at the top of the driver).
kafkajs headers are an object, so this test uses no repeated header keys.
"""

from __future__ import annotations

import pytest

from tests.clients.clientkit import (
    Rec,
    assert_same_records,
    base_timestamp_ms,
    expected_offsets_for_times,
    offset_at,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(90)]

PARTITIONS = 2
PER_PARTITION = 5


def to_js(r: Rec) -> dict:
    return {
        "partition": r.partition, "key": r.key.decode() if r.key is not None else None,
        "value": r.value.decode() if r.value is not None else None,
        "headers": [[k, v.decode() if v is not None else None] for k, v in r.headers],
        "timestamp": r.timestamp_ms,
    }


def from_js(m: dict) -> Rec:
    return Rec(
        partition=m["partition"], key=m["key"].encode() if m["key"] is not None else None,
        value=m["value"].encode() if m["value"] is not None else None,
        headers=tuple((k, v.encode() if v is not None else None) for k, v in m["headers"]),
        timestamp_ms=m["timestamp"], offset=m["offset"],
    )


def test_kafkajs_topic_produce_consume_offsets_delete(broker_factory, kafkajs) -> None:
    broker = broker_factory(configs={"auto.create.topics.enable": "false"})
    brokers = [broker.bootstrap]
    topic = unique_topic("kafkajs")

    created = kafkajs("createTopic", brokers=brokers, topic=topic, partitions=PARTITIONS)
    assert created["created"] is True
    (meta,) = created["metadata"]
    assert meta["name"] == topic
    assert sorted(p["partitionId"] for p in meta["partitions"]) == list(range(PARTITIONS))
    assert all(p["leader"] == 0 for p in meta["partitions"])

    records = sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                             base_ts_ms=base_timestamp_ms(), rich_headers=False)
    results = kafkajs("produce", brokers=brokers, topic=topic, acks=-1,
                      messages=[to_js(r) for r in records])
    assert sorted((r["partition"], r["errorCode"], r["baseOffset"]) for r in results) \
        == [(p, 0, "0") for p in range(PARTITIONS)]

    got = kafkajs("fetch", brokers=brokers, topic=topic, partitions=list(range(PARTITIONS)))
    assert_same_records(records, [from_js(m) for m in got])

    expected = expected_offsets_for_times(records)
    timestamps = sorted({ts for _, ts in expected})
    offsets = kafkajs("offsets", brokers=brokers, topic=topic, timestamps=timestamps)
    assert sorted((e["partition"], e["low"], e["high"]) for e in offsets["ends"]) \
        == [(p, "0", str(PER_PARTITION)) for p in range(PARTITIONS)]
    for entry in offsets["byTimestamp"]:
        ts = entry["timestamp"]
        for found in entry["partitions"]:
            p = found["partition"]
            want = offset_at(records, p, ts)
            # kafkajs reports "no record at or after ts" as the latest offset.
            want = want if want >= 0 else PER_PARTITION
            assert found["offset"] == str(want), f"partition {p} at {ts}: {found}"

    assert kafkajs("deleteTopic", brokers=brokers, topic=topic) is True
    assert topic not in kafkajs("listTopics", brokers=brokers)
