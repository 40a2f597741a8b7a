"""aiokafka 0.14 against a real `ackly serve`: topics, records, offsets.

aiokafka never uses flexible versions: it picks Produce v7, Fetch v11, ListOffsets v3,
Metadata v5 (docs/clients.md), so this covers the pre-flexible encoders. Idempotence is off by
default; the consumer has no group_id (assign + seek).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.clients.clientkit import (
    Rec,
    assert_same_records,
    base_timestamp_ms,
    expected_offsets_for_times,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

PARTITIONS = 2
PER_PARTITION = 5


async def produce(bootstrap: str, topic: str, records: list[Rec]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                                timestamp_ms=r.timestamp_ms, headers=list(r.headers))
            for r in records
        ]
        metas = await asyncio.wait_for(asyncio.gather(*futures), 15)
        return [(m.partition, m.offset) for m in metas]
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 15.0) -> list[Rec]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got: list[Rec] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for m in batch:
                    got.append(Rec(partition=m.partition, key=m.key, value=m.value,
                                   headers=tuple(m.headers), timestamp_ms=m.timestamp,
                                   offset=m.offset))
        assert len(got) == count, f"read {len(got)} of {count} records in {timeout_s} s"
        return got
    finally:
        await consumer.stop()


async def check_offsets(bootstrap: str, topic: str, records: list[Rec]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        assert await consumer.beginning_offsets(tps) == dict.fromkeys(tps, 0)
        assert await consumer.end_offsets(tps) == dict.fromkeys(tps, PER_PARTITION)
        for (p, ts), offset in expected_offsets_for_times(records).items():
            tp = TopicPartition(topic, p)
            found = (await consumer.offsets_for_times({tp: ts}))[tp]
            if offset == -1:
                assert found is None, f"partition {p} at {ts}: {found}"
            else:
                assert found is not None and found.offset == offset, f"partition {p} at {ts}"
                assert found.timestamp == [r for r in records if r.partition == p][offset].timestamp_ms
    finally:
        await consumer.stop()


async def scenario(bootstrap: str) -> None:
    topic = unique_topic("aiokafka")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)], timeout_ms=10_000
        )
        assert topic in await admin.list_topics()

        records = sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                                 base_ts_ms=base_timestamp_ms())
        reports = await produce(bootstrap, topic, records)
        for p in range(PARTITIONS):
            assert sorted(o for q, o in reports if q == p) == list(range(PER_PARTITION))

        assert_same_records(records, await consume(bootstrap, topic, len(records)))
        await check_offsets(bootstrap, topic, records)

        await admin.delete_topics([topic], timeout_ms=10_000)
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


def test_aiokafka_topic_produce_consume_offsets_delete(broker_factory) -> None:
    broker = broker_factory(configs={"auto.create.topics.enable": "false"})
    asyncio.run(asyncio.wait_for(scenario(broker.bootstrap), 50))
