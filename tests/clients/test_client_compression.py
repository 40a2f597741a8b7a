"""Every codec, produced by one client and consumed by the other, stored as it came.

For each of gzip, snappy, lz4 and zstd, confluent-kafka (librdkafka) produces and
kafka-python consumes, and the other way round. The two clients frame some codecs differently
(librdkafka sends raw snappy, kafka-python xerial-framed snappy; librdkafka's zstd frames
carry no content size), so each must read what the other wrote. Between the two, a raw Fetch
checks that the broker serves the producer's batches untouched: still compressed with the
producer's codec, CRC intact, several records per batch. (One expected failure: librdkafka
sends lz4 uncompressed to a broker that does not list FindCoordinator; see below.)

kafka-python's snappy comes from the cramjam shim in conftest.py (python-snappy is not
installed).
"""

from __future__ import annotations

import pytest

from tests.clients.clientkit import (
    CODEC_IDS,
    Rec,
    assert_same_records,
    base_timestamp_ms,
    ck_admin,
    ck_consume,
    ck_create_topic,
    ck_produce,
    fetch_batches,
    kp_consume,
    kp_produce,
    sample_records,
    unique_topic,
)

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

CODECS = ["gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 2
PER_PARTITION = 20


def records_for_codec() -> list[Rec]:
    # Values of ~300 bytes of repeated text: every codec shrinks them, so a producer really
    # sends compressed batches (librdkafka falls back to uncompressed when that is larger).
    return sample_records(partitions=PARTITIONS, per_partition=PER_PARTITION,
                          base_ts_ms=base_timestamp_ms(), value_bytes=300)


# librdkafka turns its LZ4 feature on only if the broker lists FindCoordinator (any version):
# "Feature LZ4: FindCoordinator (0..32767) NOT supported by broker / Disabling feature LZ4",
# and then sends lz4-configured batches uncompressed. FindCoordinator comes with consumer
# groups; until then that one case is an expected failure (it passes by itself once fixed).
LIBRDKAFKA_LZ4_GATE = (
    "librdkafka sends lz4 uncompressed: it enables LZ4 only when FindCoordinator is advertised"
)


def check_stored_batches(bootstrap: str, topic: str, codec: str,
                         uncompressed_reason: str | None = None) -> None:
    for p in range(PARTITIONS):
        batches = fetch_batches(bootstrap, topic, p)
        assert sum(b.records_count for b in batches) == PER_PARTITION
        assert all(b.crc_ok for b in batches), f"partition {p}: CRC mismatch in {batches}"
        if uncompressed_reason and {b.codec for b in batches} == {0}:
            pytest.xfail(uncompressed_reason)
        assert {b.codec for b in batches} == {CODEC_IDS[codec]}, (
            f"partition {p}: batches' codecs {[b.codec for b in batches]}, produced {codec}"
        )
        assert len(batches) < PER_PARTITION, f"partition {p}: one record per batch {batches}"


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_compresses_kafka_python_reads(shared_broker, codec: str) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic(f"z-ck-{codec}")
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    records = records_for_codec()
    # A long linger so each partition's records travel as one or two batches.
    ck_produce(bootstrap, topic, records, acks="all", **{"compression.type": codec,
                                                          "linger.ms": 100})
    assert_same_records(records, kp_consume(bootstrap, topic, PARTITIONS, len(records)))
    check_stored_batches(bootstrap, topic, codec,
                         uncompressed_reason=LIBRDKAFKA_LZ4_GATE if codec == "lz4" else None)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_compresses_librdkafka_reads(shared_broker, codec: str) -> None:
    bootstrap = shared_broker.bootstrap
    topic = unique_topic(f"z-kp-{codec}")
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    records = records_for_codec()
    kp_produce(bootstrap, topic, records, acks="all", compression_type=codec, linger_ms=100)
    assert_same_records(records, ck_consume(bootstrap, topic, PARTITIONS, len(records)))
    check_stored_batches(bootstrap, topic, codec)
