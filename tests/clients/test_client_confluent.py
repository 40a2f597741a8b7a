"""confluent-kafka (librdkafka 2.16) against a real `ackly serve`: topics, records, offsets.

librdkafka picks Produce v10, Fetch v16 (topic ids), ListOffsets v7, Metadata v13 here
(docs/clients.md). Consumer groups are not implemented yet, so the consumer has a group.id (the
client insists) but only uses `assign()` with explicit offsets and never commits.
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec

from tests.clients.clientkit import (
    assert_same_records,
    base_timestamp_ms,
    ck_admin,
    ck_consume,
    ck_create_topic,
    ck_delete_topic,
    ck_list_offsets,
    ck_produce,
    ck_topic_names,
    expected_offsets_for_times,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

PARTITIONS = 2
PER_PARTITION = 5


def test_confluent_topic_produce_consume_offsets_delete(broker_factory) -> None:
    # No auto-creation: a metadata request from a lingering client must not bring the topic
    # back after the delete.
    broker = broker_factory(configs={"auto.create.topics.enable": "false"})
    bootstrap = broker.bootstrap
    topic = unique_topic("confluent")

    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert meta.error is None
    assert sorted(meta.partitions) == list(range(PARTITIONS))
    assert all(p.leader == 0 and p.replicas == [0] for p in meta.partitions.values())

    records = sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                             base_ts_ms=base_timestamp_ms())
    reports = ck_produce(bootstrap, topic, records, acks="all")
    assert [r.partition for r in records] == [p for p, _ in reports]
    for p in range(PARTITIONS):
        assert sorted(o for q, o in reports if q == p) == list(range(PER_PARTITION))

    got = ck_consume(bootstrap, topic, PARTITIONS, len(records))
    assert_same_records(records, got)

    # Earliest, latest, max timestamp, and by timestamp; through the admin API (ListOffsets
    # v7) and the consumer's own calls.
    assert ck_list_offsets(admin, topic, {p: OffsetSpec.earliest() for p in range(PARTITIONS)}) \
        == {p: (0, -1) for p in range(PARTITIONS)}
    latest = ck_list_offsets(admin, topic, {p: OffsetSpec.latest() for p in range(PARTITIONS)})
    assert {p: o for p, (o, _) in latest.items()} == {p: PER_PARTITION for p in range(PARTITIONS)}
    max_ts = ck_list_offsets(admin, topic,
                             {p: OffsetSpec.max_timestamp() for p in range(PARTITIONS)})
    last_by_partition = {r.partition: r for r in records}
    assert max_ts == {p: (PER_PARTITION - 1, last_by_partition[p].timestamp_ms)
                      for p in range(PARTITIONS)}
    for (p, ts), offset in expected_offsets_for_times(records).items():
        got_offset, _ = ck_list_offsets(admin, topic, {p: OffsetSpec.for_timestamp(ts)})[p]
        assert got_offset == offset, f"partition {p} at timestamp {ts}"

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ackly-tests-unused",
                         "enable.auto.commit": False})
    try:
        for p in range(PARTITIONS):
            assert consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) \
                == (0, PER_PARTITION)
        first = [r for r in records if r.partition == 1]
        found = consumer.offsets_for_times(
            [TopicPartition(topic, 1, first[2].timestamp_ms),
             TopicPartition(topic, 0, records[-1].timestamp_ms + 10_000)], timeout=10)
        assert [(tp.partition, tp.offset, tp.error) for tp in found] \
            == [(1, 2, None), (0, OFFSET_END, None)]
    finally:
        consumer.close()

    ck_delete_topic(admin, topic)
    assert topic not in ck_topic_names(admin)
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert described.error is not None
    assert described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # The name is free again, and the new topic starts empty. (A fresh client: librdkafka
    # caches "unknown topic" from the call above and would not look again at once.)
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, 1)
    assert ck_list_offsets(admin, topic, {0: OffsetSpec.latest()})[0][0] == 0


def test_confluent_timestamps_outside_the_window_are_refused(broker_factory) -> None:
    """KIP-937: a CreateTime timestamp more than message.timestamp.after.max.ms (Kafka 4's
    default: one hour) ahead of the broker's clock, or older than a topic's
    message.timestamp.before.max.ms, is refused with INVALID_TIMESTAMP and never written; the
    same producer's good records go through."""
    from confluent_kafka import Producer

    broker = broker_factory()
    topic = unique_topic("timestamps")
    admin = ck_admin(broker.bootstrap)
    ck_create_topic(admin, topic, 1, config={"message.timestamp.before.max.ms": "86400000"})
    now = base_timestamp_ms() + 3_600_000
    reports: list[tuple[int, object]] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "log_level": 2})
    for ts in (now, now + 2 * 3_600_000, now - 2 * 86_400_000, now + 1000):
        producer.produce(topic, value=b"%d" % ts, timestamp=ts, partition=0,
                         on_delivery=lambda err, msg, ts=ts: reports.append((ts, err)))
        producer.flush(10)  # one batch each: a refusal covers only its own record
    assert [(ts, err.code() if err else None) for ts, err in reports] == [
        (now, None), (now + 2 * 3_600_000, KafkaError.INVALID_TIMESTAMP),
        (now - 2 * 86_400_000, KafkaError.INVALID_TIMESTAMP), (now + 1000, None),
    ]
    got = ck_consume(broker.bootstrap, topic, 1, 2)
    assert [r.value for r in got] == [b"%d" % now, b"%d" % (now + 1000)]
