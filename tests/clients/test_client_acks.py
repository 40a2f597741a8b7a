"""acks=0, 1 and all through confluent-kafka: every record lands; acks=0 gets no answer.

librdkafka does not wait for an answer to an acks=0 Produce, so it cannot tell whether one
came. The raw test sends an acks=0 Produce and then an ApiVersions request on the same
connection: the first answer on the wire must be ApiVersions'.
"""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.admin import OffsetSpec

from tests.clients.clientkit import (
    RawConnection,
    api_versions_v0_body,
    assert_same_records,
    base_timestamp_ms,
    ck_admin,
    ck_consume,
    ck_create_topic,
    ck_list_offsets,
    ck_produce,
    kafka_python_batch,
    produce_v3_body,
    sample_records,
    unique_topic,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

PARTITIONS = 2
PER_PARTITION = 25
OFFSET_INVALID = -1001  # librdkafka's "no offset known"; the Python binding gives None


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_confluent_acks(shared_broker, acks: str) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic(f"acks-{acks}")
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    records = sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                             base_ts_ms=base_timestamp_ms())

    reports = ck_produce(bootstrap, topic, records, acks=acks)
    if acks == "0":
        assert {o for _, o in reports} <= {None, OFFSET_INVALID}, "acks=0 reported offsets"
        # Nothing acknowledged them: wait until the broker has appended them all.
        wait_for(
            lambda: ck_list_offsets(admin, topic, {p: OffsetSpec.latest() for p in range(PARTITIONS)})
            == {p: (PER_PARTITION, -1) for p in range(PARTITIONS)},
            timeout_s=10, what="the acks=0 records to reach the log end",
        )
    else:
        for p in range(PARTITIONS):
            assert sorted(o for q, o in reports if q == p) == list(range(PER_PARTITION))

    assert_same_records(records, ck_consume(bootstrap, topic, PARTITIONS, len(records)))


def test_acks0_produce_gets_no_answer_on_the_wire(shared_broker) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic("acks0-raw")
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, 1)
    records = sample_records(partitions=1, per_partition=3, base_ts_ms=base_timestamp_ms())

    with RawConnection(bootstrap) as conn:
        conn.send(0, 3, produce_v3_body(topic, 0, kafka_python_batch(records), acks=0))
        api_versions_id = conn.send(18, 0, api_versions_v0_body())
        correlation_id, body = conn.receive()
        assert correlation_id == api_versions_id, (
            f"first answer has correlation id {correlation_id}: the acks=0 Produce was answered"
        )
        (error_code,) = struct.unpack_from(">h", body, 0)
        assert error_code == 0

    got = ck_consume(bootstrap, topic, 1, len(records))
    assert_same_records(records, got)
