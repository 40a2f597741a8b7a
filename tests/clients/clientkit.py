"""Shared pieces of the real-client tests: sample records, checks, and a tiny raw Kafka wire.

Every client test produces the same kind of data (`sample_records`), reads it back through
its own client, and compares with `assert_same_records`, so a failure reads the same whatever
the client. The raw wire (`RawConnection`) is for what no client shows: whether an acks=0
Produce got an answer, and how the batches the broker serves are framed (compression codec,
CRC). It is written from the protocol spec here, not with the broker's own codecs, so it
checks them rather than agreeing with them.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import crc32c
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonTopicPartition

T = TypeVar("T")

CLIENT_ID = "ackly-client-tests"

# Kafka's compression codec ids (the low 3 bits of a batch's attributes).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def now_ms() -> int:
    return int(time.time() * 1000)


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Call `probe` until it returns something other than None/False, or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One record as a producer meant it, or as a consumer read it (offset: -1 if unknown)."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int
    offset: int = -1

    def without_offset(self) -> Rec:
        return Rec(self.partition, self.key, self.value, self.headers, self.timestamp_ms)


def base_timestamp_ms() -> int:
    """An explicit producer timestamp an hour in the past, on a whole second.

    Old enough that a broker which replaced it with its own clock would be caught, recent
    enough that the default retention (a week) keeps it.
    """
    return (now_ms() // 1000) * 1000 - 3_600_000


def sample_records(
    *,
    partitions: int = 2,
    per_partition: int = 5,
    base_ts_ms: int,
    rich_headers: bool = True,
    value_bytes: int = 0,
) -> list[Rec]:
    """Records with keys, headers and strictly increasing explicit timestamps per partition.

    Timestamps within a partition are 1 s apart (so "the first offset at or after t" has one
    right answer for any t), and the partitions' timestamps interleave. `rich_headers` adds
    a repeated header key and an empty header value, which not every client can express.
    `value_bytes` pads values with compressible text (for the compression tests).
    """
    records = []
    for p in range(partitions):
        for i in range(per_partition):
            headers: list[tuple[str, bytes | None]] = [("trace", f"t-{p}-{i}".encode()),
                                                      ("origin", b"ackly-tests")]
            if rich_headers:
                headers += [("dup", b"first"), ("dup", b"second"), ("empty", b"")]
            value = f"value-{p}-{i}".encode()
            if value_bytes:
                value += b" " + (b"lorem ipsum dolor sit amet " * (value_bytes // 27 + 1))[:value_bytes]
            records.append(Rec(
                partition=p, key=f"key-{p}-{i}".encode(), value=value, headers=tuple(headers),
                timestamp_ms=base_ts_ms + i * 1000 + p * 100,
            ))
    return records


def by_partition(records: Iterable[Rec]) -> dict[int, list[Rec]]:
    out: dict[int, list[Rec]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


def assert_same_records(expected: Sequence[Rec], got: Sequence[Rec]) -> None:
    """Same records per partition, in produce order, at offsets 0, 1, 2, ... (empty topic)."""
    want = by_partition(expected)
    have = by_partition(got)
    assert sorted(have) == sorted(want), f"partitions read {sorted(have)} != written {sorted(want)}"
    for p, want_p in want.items():
        have_p = have[p]
        offsets = [r.offset for r in have_p]
        assert offsets == list(range(len(want_p))), f"partition {p}: offsets {offsets}"
        for w, h in zip(want_p, have_p, strict=True):
            assert h.without_offset() == w.without_offset(), (
                f"partition {p} offset {h.offset}:\n read    {h}\n written {w}"
            )


def expected_offsets_for_times(records: Sequence[Rec]) -> dict[tuple[int, int], int]:
    """(partition, timestamp) -> offset Kafka must answer, for exact, in-between and late times.

    Assumes the topic held nothing else, so the i-th record of a partition is at offset i.
    A time later than every record maps to -1 (no such record).
    """
    out: dict[tuple[int, int], int] = {}
    for p, recs in by_partition(records).items():
        for i, r in enumerate(recs):
            out[(p, r.timestamp_ms)] = i
            out[(p, r.timestamp_ms - 1)] = i  # between the previous record and this one
        out[(p, recs[-1].timestamp_ms + 1)] = -1
    return out


def offset_at(records: Sequence[Rec], partition: int, ts: int) -> int:
    """The first offset of `partition` whose timestamp is >= ts, or -1 (empty topic assumed)."""
    recs = by_partition(records).get(partition, [])
    return next((i for i, r in enumerate(recs) if r.timestamp_ms >= ts), -1)


# --- a raw Kafka wire, from the spec -----------------------------------------------------


class RawConnection:
    """One blocking TCP connection speaking request header v1 / response header v0."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._next_correlation_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, api_key: int, api_version: int, body: bytes) -> int:
        """Send one request; returns its correlation id."""
        correlation_id = self._next_correlation_id
        self._next_correlation_id += 1
        client_id = CLIENT_ID.encode()
        header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id))
        payload = header + client_id + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        return correlation_id

    def receive(self) -> tuple[int, bytes]:
        """The next response: (correlation id, body after the v0 header)."""
        (size,) = struct.unpack(">i", self._read_exactly(4))
        payload = self._read_exactly(size)
        (correlation_id,) = struct.unpack_from(">i", payload, 0)
        return correlation_id, payload[4:]

    def _read_exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def produce_v3_body(topic: str, partition: int, records: bytes, *, acks: int,
                    timeout_ms: int = 10_000) -> bytes:
    """ProduceRequest v3: transactional_id, acks, timeout, [topic [partition records]]."""
    return (
        struct.pack(">hhi", -1, acks, timeout_ms)
        + struct.pack(">i", 1) + _string(topic)
        + struct.pack(">i", 1) + struct.pack(">i", partition)
        + struct.pack(">i", len(records)) + records
    )


def api_versions_v0_body() -> bytes:
    return b""


def fetch_v4_body(topic: str, partition: int, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
    """FetchRequest v4 with max_wait 0: replica, wait, min/max bytes, isolation, topics."""
    return (
        struct.pack(">iiiib", -1, 0, 0, max_bytes, 0)
        + struct.pack(">i", 1) + _string(topic)
        + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    )


@dataclass(frozen=True)
class FetchedPartition:
    error_code: int
    high_watermark: int
    records: bytes


def parse_fetch_v4_response(body: bytes) -> dict[tuple[str, int], FetchedPartition]:
    pos = 4  # throttle_time_ms
    out = {}
    (n_topics,) = struct.unpack_from(">i", body, pos)
    pos += 4
    for _ in range(n_topics):
        (name_len,) = struct.unpack_from(">h", body, pos)
        name = body[pos + 2 : pos + 2 + name_len].decode()
        pos += 2 + name_len
        (n_parts,) = struct.unpack_from(">i", body, pos)
        pos += 4
        for _ in range(n_parts):
            index, error, hw, _lso = struct.unpack_from(">ihqq", body, pos)
            pos += 22
            (n_aborted,) = struct.unpack_from(">i", body, pos)
            pos += 4 + max(n_aborted, 0) * 16
            (size,) = struct.unpack_from(">i", body, pos)
            pos += 4
            records = body[pos : pos + max(size, 0)]
            pos += max(size, 0)
            out[(name, index)] = FetchedPartition(error, hw, records)
    return out


@dataclass(frozen=True)
class WireBatch:
    base_offset: int
    last_offset_delta: int
    records_count: int
    attributes: int
    crc_ok: bool
    size: int

    @property
    def codec(self) -> int:
        return self.attributes & 0x07


def parse_batches(records: bytes) -> list[WireBatch]:
    """Record batches (magic 2) in a Fetch answer; a partial batch at the end is dropped."""
    out = []
    pos = 0
    while pos + 61 <= len(records):
        base_offset, batch_length, _epoch, magic, crc, attributes = struct.unpack_from(
            ">qiibIh", records, pos
        )
        end = pos + 12 + batch_length
        if end > len(records):
            break
        assert magic == 2, f"batch at {base_offset} has magic {magic}"
        (last_offset_delta,) = struct.unpack_from(">i", records, pos + 23)
        (count,) = struct.unpack_from(">i", records, pos + 57)
        out.append(WireBatch(
            base_offset=base_offset, last_offset_delta=last_offset_delta, records_count=count,
            attributes=attributes,
            crc_ok=crc32c.crc32c(records[pos + 21 : end]) == crc, size=end - pos,
        ))
        pos = end
    return out


def fetch_batches(bootstrap: str, topic: str, partition: int) -> list[WireBatch]:
    """Every batch of a partition, as the broker serves it (Fetch v4 from offset 0)."""
    batches: list[WireBatch] = []
    offset = 0
    with RawConnection(bootstrap) as conn:
        for _ in range(1000):  # bound: one round per batch at worst
            conn.send(1, 4, fetch_v4_body(topic, partition, offset))
            _, body = conn.receive()
            part = parse_fetch_v4_response(body)[(topic, partition)]
            assert part.error_code == 0, f"fetch {topic}-{partition}@{offset}: error {part.error_code}"
            got = parse_batches(part.records)
            if not got:
                return batches
            batches += got
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1
        raise AssertionError("more than 1000 fetch rounds")


def kafka_python_batch(records: Sequence[Rec], *, compression: int = 0) -> bytes:
    """One magic-2 batch built by kafka-python's own record builder (base offset 0)."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )
    for i, r in enumerate(records):
        builder.append(i, timestamp=r.timestamp_ms, key=r.key, value=r.value,
                       headers=list(r.headers))
    return bytes(builder.build())


# --- confluent-kafka (librdkafka) helpers ------------------------------------------------
# The consumer has a group.id (librdkafka insists) but only uses assign() with explicit
# offsets and never commits: consumer groups are not implemented yet.


def ck_admin(bootstrap: str) -> AdminClient:
    """An admin client; keep it referenced until its futures are done (it dies with them)."""
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000})


def ck_create_topic(admin: AdminClient, topic: str, partitions: int,
                    config: dict[str, str] | None = None) -> None:
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
    )
    futures[topic].result(timeout=15)


def ck_produce(bootstrap: str, topic: str, records: Sequence[Rec], **config: object
               ) -> list[tuple[int, int]]:
    """Produce and wait for every delivery report; (partition, offset) per record.

    With acks=0 librdkafka reports success without an offset (None here).
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": False, **config})  # type: ignore[dict-item]
    reports: dict[int, tuple[int, int]] = {}
    errors: list[tuple[int, KafkaError]] = []

    def on_delivery(index: int) -> Callable[[KafkaError | None, Any], None]:
        def cb(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append((index, err))
            else:
                reports[index] = (msg.partition(), msg.offset())
        return cb

    for i, r in enumerate(records):
        producer.produce(topic, value=r.value, key=r.key, partition=r.partition,
                         timestamp=r.timestamp_ms, headers=list(r.headers),
                         on_delivery=on_delivery(i))
        producer.poll(0)
    remaining = producer.flush(15)
    assert remaining == 0, f"{remaining} records not delivered within 15 s"
    assert not errors, f"delivery errors: {errors}"
    return [reports[i] for i in range(len(records))]


def ck_consume(bootstrap: str, topic: str, partitions: int, count: int, *,
               timeout_s: float = 15.0, **config: object) -> list[Rec]:
    """Read `count` records from offset 0 of each partition with assign() (no group use)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "ackly-tests-unused",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "error", "fetch.wait.max.ms": 100, **config,
    })
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[Rec] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=count - len(got), timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                ts_type, ts = msg.timestamp()
                assert ts_type == TIMESTAMP_CREATE_TIME, f"timestamp type {ts_type}"
                got.append(Rec(
                    partition=msg.partition(), key=msg.key(), value=msg.value(),
                    headers=tuple(msg.headers() or ()), timestamp_ms=ts, offset=msg.offset(),
                ))
        assert len(got) == count, f"read {len(got)} of {count} records in {timeout_s} s"
        return got
    finally:
        consumer.close()


def ck_list_offsets(admin: AdminClient, topic: str, spec_by_partition: dict[int, OffsetSpec]
                    ) -> dict[int, tuple[int, int]]:
    """AdminClient.list_offsets: partition -> (offset, timestamp)."""
    request = {TopicPartition(topic, p): spec for p, spec in spec_by_partition.items()}
    futures = admin.list_offsets(request, request_timeout=10)
    out = {}
    for tp, fut in futures.items():
        info = fut.result(timeout=15)
        out[tp.partition] = (info.offset, info.timestamp)
    return out


def ck_topic_names(admin: AdminClient) -> set[str]:
    return set(admin.list_topics(timeout=10).topics)


def ck_delete_topic(admin: AdminClient, topic: str) -> None:
    admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)


# --- kafka-python helpers ----------------------------------------------------------------
# kafka-python 3.x defaults to enable_idempotence=True, which needs InitProducerId (not
# implemented yet): every producer here turns it off. Consumers have no group_id.


def kp_produce(bootstrap: str, topic: str, records: Sequence[Rec], **config: object
               ) -> list[tuple[int, int]]:
    """Send every record and wait for its acknowledgement; (partition, offset) per record."""
    producer = KafkaProducer(**{"bootstrap_servers": bootstrap, "enable_idempotence": False,
                                "linger_ms": 5, **config})
    try:
        futures = [
            producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                          timestamp_ms=r.timestamp_ms, headers=list(r.headers))
            for r in records
        ]
        producer.flush(timeout=15)
        metas = [f.get(timeout=15) for f in futures]
        return [(m.partition, m.offset) for m in metas]
    finally:
        producer.close(timeout=5)


def kp_consume(bootstrap: str, topic: str, partitions: int, count: int, *,
               timeout_s: float = 15.0) -> list[Rec]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        tps = [KafkaPythonTopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got: list[Rec] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    got.append(Rec(partition=m.partition, key=m.key, value=m.value,
                                   headers=tuple(m.headers), timestamp_ms=m.timestamp,
                                   offset=m.offset))
        assert len(got) == count, f"read {len(got)} of {count} records in {timeout_s} s"
        return got
    finally:
        consumer.close()
