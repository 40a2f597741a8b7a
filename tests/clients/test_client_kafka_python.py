"""kafka-python 3.0 against a real `ackly serve`: topics, records, offsets.

kafka-python picks Produce v9, Fetch v12, ListOffsets v11 (flexible) and Metadata v13 here
(docs/clients.md). Its 3.x producer defaults to idempotence on, which needs InitProducerId (not
implemented yet), so it is turned off explicitly. The consumer has no group_id: assign + seek.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from tests.clients.clientkit import (
    assert_same_records,
    base_timestamp_ms,
    expected_offsets_for_times,
    kp_consume,
    kp_produce,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(90)]

PARTITIONS = 2
PER_PARTITION = 5


def test_kafka_python_topic_produce_consume_offsets_delete(broker_factory) -> None:
    broker = broker_factory(configs={"auto.create.topics.enable": "false"})
    bootstrap = broker.bootstrap
    topic = unique_topic("kafka-python")

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                            timeout_ms=10_000, wait_for_metadata=True)
        assert topic in admin.list_topics()
        (described,) = admin.describe_topics([topic])
        assert described["error_code"] == 0
        assert sorted(p["partition_index"] for p in described["partitions"]) \
            == list(range(PARTITIONS))

        records = sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                                 base_ts_ms=base_timestamp_ms())
        reports = kp_produce(bootstrap, topic, records, acks="all")
        for p in range(PARTITIONS):
            assert sorted(o for q, o in reports if q == p) == list(range(PER_PARTITION))

        got = kp_consume(bootstrap, topic, PARTITIONS, len(records))
        assert_same_records(records, got)

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False)
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            assert consumer.beginning_offsets(tps) == dict.fromkeys(tps, 0)
            assert consumer.end_offsets(tps) == dict.fromkeys(tps, PER_PARTITION)
            for (p, ts), offset in expected_offsets_for_times(records).items():
                tp = TopicPartition(topic, p)
                found = consumer.offsets_for_times({tp: ts})[tp]
                if offset == -1:
                    assert found is None, f"partition {p} at {ts}: {found}"
                else:
                    assert found is not None and found.offset == offset, f"partition {p} at {ts}"
                    want_ts = [r for r in records if r.partition == p][offset].timestamp_ms
                    assert found.timestamp == want_ts
        finally:
            consumer.close()

        admin.delete_topics([topic], timeout_ms=10_000)
        assert topic not in admin.list_topics()
    finally:
        admin.close()
