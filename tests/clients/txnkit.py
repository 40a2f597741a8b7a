"""Shared pieces of the transaction tests (docs/guarantees.md rules 18-23) with real clients.

- `TxnDriver`: one transactional producer of confluent-kafka, kafka-python or aiokafka behind
  one small interface (begin, send, flush, commit, abort), so a scenario reads the same
  whatever the client. Every call that can block is bounded (`bounded`).
- `read_records`: what a consumer of each client reads from offset 0 of some partitions with
  `read_committed` or `read_uncommitted` (assign(), no group).
- The wire as the broker serves it, built from kio's schemas: ListOffsets with an isolation
  level (HW, LSO), Fetch batches with their attributes and the type of each control record,
  FindCoordinator, DescribeTransactions and OffsetFetch (require_stable).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Producer
from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.find_coordinator.v3.request import FindCoordinatorRequest
from kio.schema.list_offsets.v7.request import (
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)
from kio.schema.offset_fetch.v7.request import OffsetFetchRequest, OffsetFetchRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.types import TransactionalId
from kio.static.primitive import Records, i8, i16, i32, i64

from ackly.testing.wire import WireClient
from tests.clients.clientkit import WireBatch, parse_batches, wait_for
from tests.integration import wire_requests as rq

T = TypeVar("T")

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
ISOLATION = {READ_UNCOMMITTED: 0, READ_COMMITTED: 1}
LATEST = -1  # ListOffsets timestamp: the partition's end (HW or LSO by isolation level)

# Record batch attributes (Kafka's DefaultRecordBatch).
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
# Control record types (Kafka's ControlRecordType): the key is (int16 version, int16 type).
ABORT_MARKER = 0
COMMIT_MARKER = 1

COORDINATOR_GROUP = 0
COORDINATOR_TRANSACTION = 1


def bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run `fn` in a thread; its result, its exception, or an AssertionError after timeout_s.

    For client calls that wait without a limit of their own (kafka-python's
    commit_transaction waits on a future with no timeout)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=f"bounded {what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """clientkit.wait_for, with the arguments positional as the transaction tests call it."""
    return wait_for(probe, timeout_s=timeout_s, what=what, interval_s=interval_s)


# --- what was read -----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Read:
    """One record as a consumer returned it."""

    topic: str
    partition: int
    offset: int
    value: bytes


def offsets_by_partition(reads: Iterable[Read]) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    for r in sorted(reads):
        out.setdefault((r.topic, r.partition), []).append(r.offset)
    return out


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    with WireClient(bootstrap) as client:
        answer = client.request(rq.create_topic(name, partitions)).topics[0]
    assert answer.error_code == 0, f"CreateTopics {name}: {answer.error_code!r}"


def create_replicated_topics(cluster: Any, *topics: tuple[str, int], timeout_s: float = 90) -> None:
    """Topics (name, partitions) on a ClusterProcesses with RF 3 and min ISR 2, once every
    partition has its three replicas in the ISR."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 4})
    futures = admin.create_topics([NewTopic(t, n, 3, config={"min.insync.replicas": "2"}) for t, n in topics],
                                  operation_timeout=30)
    for t, _ in topics:
        futures[t].result(timeout=60)
    wait_until(lambda: all((v := cluster.partition(t, p)) is not None and len(v.isr) == 3
                           for t, n in topics for p in range(n)), timeout_s, "every partition fully replicated")


def produce_plain(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    """Non-transactional records (partition, value), acks=all, every delivery checked."""
    errors: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 4})
    for partition, v in values:
        producer.produce(topic, value=v, partition=partition,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0, "records not acknowledged within 30 s"
    assert not errors, errors[:5]


def delayed_produce(bootstrap: str, tid: str, topic: str, partition: int, producer_id: int, epoch: int,
                    sequence: int, value: bytes) -> ErrorCode:
    """What a Produce of `tid`'s producer that the network held back looks like when it lands:
    one transactional batch with the producer's id, epoch and next sequence. Built with
    kafka-python's record builder, not ackly's codec. Returns the partition's error code."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                        producer_id=producer_id, producer_epoch=epoch,
                                        base_sequence=sequence, batch_size=1 << 20)
    builder.append(0, timestamp=int(time.time() * 1000), key=b"k", value=value, headers=[])
    request = ProduceRequest(
        transactional_id=tid, acks=i16(-1), timeout=datetime.timedelta(seconds=10),
        topic_data=(TopicProduceData(name=topic, partition_data=(
            PartitionProduceData(index=i32(partition), records=Records(bytes(builder.build()))),)),),
    )
    with WireClient(bootstrap) as client:
        return client.request(request).responses[0].partition_responses[0].error_code  # type: ignore[no-any-return]


# --- transactional producers ------------------------------------------------------------


class TxnDriver:
    """One transactional producer; building one runs InitProducerId (fences earlier instances)."""

    client = ""

    def begin(self) -> None:
        raise NotImplementedError

    def send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Every record sent so far is acknowledged by its leader (in the log, still open)."""
        raise NotImplementedError

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        """send_offsets_to_transaction: AddOffsetsToTxn, then TxnOffsetCommit (group id only,
        no member: generation -1, as a producer outside the group sends them)."""
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ConfluentTxn(TxnDriver):
    client = "confluent"

    def __init__(self, bootstrap: str, transactional_id: str, **config: Any) -> None:
        self.bootstrap = bootstrap
        self.errors: list[Any] = []  # delivery reports' errors
        self.client_errors: list[Any] = []  # librdkafka's error events (fatal ones included)
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "transactional.id": transactional_id,
            "linger.ms": 5, "transaction.timeout.ms": 60_000, "message.timeout.ms": 30_000,
            "socket.timeout.ms": 10_000, "log_level": 4, "error_cb": self.client_errors.append, **config,
        })
        self.producer.init_transactions(30)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(err)

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.producer.produce(topic, value=value, key=key, partition=partition, on_delivery=self._on_delivery)
        self.producer.poll(0)

    def flush(self) -> None:
        remaining = self.producer.flush(30)
        assert remaining == 0, f"{remaining} records not acknowledged within 30 s"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        unjoined = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 4})
        try:
            metadata = unjoined.consumer_group_metadata()
        finally:
            unjoined.close()
        self.producer.send_offsets_to_transaction([TopicPartition(topic, partition, offset)], metadata, 30)

    def commit(self) -> None:
        self.producer.commit_transaction(30)

    def abort(self) -> None:
        self.producer.abort_transaction(30)

    def close(self) -> None:
        """Aborts a transaction in progress, flushes, and stops librdkafka's threads now (not
        when the object is collected, perhaps after its broker has gone)."""
        bounded(self.producer.close, 20, "confluent-kafka Producer.close")


class KafkaPythonTxn(TxnDriver):
    client = "kafka-python"

    def __init__(self, bootstrap: str, transactional_id: str, **config: Any) -> None:
        from kafka import KafkaProducer

        self.futures: list[Any] = []
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=transactional_id, linger_ms=5,
            request_timeout_ms=10_000, max_block_ms=30_000, **config,
        )
        bounded(self.producer.init_transactions, 40, "kafka-python init_transactions")

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.futures.append(self.producer.send(topic, value=value, key=key, partition=partition))

    def flush(self) -> None:
        bounded(lambda: self.producer.flush(timeout=30), 40, "kafka-python flush")
        futures, self.futures = self.futures, []
        for f in futures:
            f.get(timeout=1)  # raises the send's error

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        from kafka import OffsetAndMetadata
        from kafka import TopicPartition as KpTopicPartition

        offsets = {KpTopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)}
        bounded(lambda: self.producer.send_offsets_to_transaction(offsets, group), 40,
                "kafka-python send_offsets_to_transaction")

    def commit(self) -> None:
        bounded(self.producer.commit_transaction, 40, "kafka-python commit_transaction")

    def abort(self) -> None:
        bounded(self.producer.abort_transaction, 40, "kafka-python abort_transaction")

    def close(self) -> None:
        self.producer.close(timeout=5)


class AiokafkaTxn(TxnDriver):
    """aiokafka on an event loop of its own, run step by step from this thread."""

    client = "aiokafka"

    def __init__(self, bootstrap: str, transactional_id: str, **config: Any) -> None:
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()
        self.pending: list[Any] = []

        async def make() -> Any:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, transactional_id=transactional_id, linger_ms=5,
                request_timeout_ms=10_000, **config,
            )
            await producer.start()  # InitProducerId
            return producer

        self.producer = self._run(make(), "aiokafka start")

    def _run(self, coro: Any, what: str, timeout_s: float = 40) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    def begin(self) -> None:
        self._run(self.producer.begin_transaction(), "aiokafka begin_transaction")

    def send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.pending.append(self._run(self.producer.send(topic, value=value, key=key, partition=partition),
                                      "aiokafka send"))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self._run(asyncio.gather(*pending), "aiokafka delivery")

    def send_offsets(self, group: str, topic: str, partition: int, offset: int) -> None:
        from aiokafka.structs import TopicPartition as AioTopicPartition

        self._run(self.producer.send_offsets_to_transaction({AioTopicPartition(topic, partition): offset}, group),
                  "aiokafka send_offsets_to_transaction")

    def commit(self) -> None:
        self._run(self.producer.commit_transaction(), "aiokafka commit_transaction")

    def abort(self) -> None:
        self._run(self.producer.abort_transaction(), "aiokafka abort_transaction")

    def close(self) -> None:
        try:
            self._run(self.producer.stop(), "aiokafka stop", 10)
        finally:
            self.loop.close()


DRIVERS: dict[str, type[TxnDriver]] = {
    "confluent": ConfluentTxn, "kafka-python": KafkaPythonTxn, "aiokafka": AiokafkaTxn,
}


def commit_one(driver: TxnDriver, topic: str, partition: int, value: bytes) -> None:
    """One transaction of one record (key b"k"), acknowledged, then committed."""
    driver.begin()
    driver.send(topic, partition, b"k", value)
    driver.flush()
    driver.commit()


def close_drivers(*drivers: TxnDriver | None) -> None:
    """Close each driver there is; a fenced or timed-out producer may refuse a clean close,
    which is printed, not raised, so the others are closed too."""
    for driver in drivers:
        if driver is not None:
            try:
                driver.close()
            except Exception as exc:
                print(f"{driver.client} close: {exc!r}")


# --- readers -----------------------------------------------------------------------------


def read_records(client: str, bootstrap: str, partitions: Sequence[tuple[str, int]], isolation: str,
                 count: int, timeout_s: float = 20.0, start: int = 0) -> list[Read]:
    """`count` records read from offset `start` of `partitions` by `client`'s consumer
    (assign(), no group, `isolation`); fails if fewer arrive within timeout_s. Returns what it
    read, which may be more than `count` when the last fetch brought more."""
    reader = {"confluent": _read_confluent, "kafka-python": _read_kafka_python,
              "aiokafka": _read_aiokafka}[client]
    got = reader(bootstrap, partitions, isolation, count, timeout_s, start)
    assert len(got) >= count, (
        f"{client} ({isolation}) read {len(got)} of {count} records in {timeout_s} s: "
        f"{offsets_by_partition(got)}"
    )
    return got


def _read_confluent(bootstrap: str, partitions: Sequence[tuple[str, int]], isolation: str, count: int,
                    timeout_s: float, start: int) -> list[Read]:
    from confluent_kafka import TopicPartition

    consumer = _confluent_consumer(bootstrap, isolation)
    got: list[Read] = []
    try:
        consumer.assign([TopicPartition(t, p, start) for t, p in partitions])
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            got += _confluent_poll(consumer)
    finally:
        consumer.close()
    return got


def _confluent_consumer(bootstrap: str, isolation: str) -> Any:
    """A confluent-kafka consumer to assign() partitions to: no group membership, no commits."""
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": "ackly-txn-tests-unused",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "error", "fetch.wait.max.ms": 100, "isolation.level": isolation,
        "log_level": 4,
    })


def _confluent_poll(consumer: Any) -> list[Read]:
    """One consume() round: the records it returned; an error other than end-of-partition raises."""
    from confluent_kafka import KafkaError, KafkaException

    got: list[Read] = []
    for m in consumer.consume(num_messages=1000, timeout=0.2):
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(err)
        got.append(Read(m.topic(), m.partition(), m.offset(), m.value()))
    return got


def _read_kafka_python(bootstrap: str, partitions: Sequence[tuple[str, int]], isolation: str, count: int,
                       timeout_s: float, start: int) -> list[Read]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, isolation_level=isolation, request_timeout_ms=10_000)
    got: list[Read] = []
    try:
        tps = [KpTopicPartition(t, p) for t, p in partitions]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got += [Read(m.topic, m.partition, m.offset, m.value) for m in batch]
    finally:
        consumer.close()
    return got


def _read_aiokafka(bootstrap: str, partitions: Sequence[tuple[str, int]], isolation: str, count: int,
                   timeout_s: float, start: int) -> list[Read]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    async def run() -> list[Read]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    fetch_max_wait_ms=100, isolation_level=isolation,
                                    request_timeout_ms=10_000)
        await consumer.start()
        got: list[Read] = []
        try:
            tps = [AioTopicPartition(t, p) for t, p in partitions]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start)
            deadline = time.monotonic() + timeout_s
            while len(got) < count and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    got += [Read(m.topic, m.partition, m.offset, m.value) for m in batch]
        finally:
            await consumer.stop()
        return got

    return asyncio.run(asyncio.wait_for(run(), timeout_s + 20))


# --- the wire ----------------------------------------------------------------------------


_LEADER_MOVING = (ErrorCode.not_leader_or_follower, ErrorCode.leader_not_available,
                  ErrorCode.unknown_topic_or_partition)


def list_offset(bootstrap: str, topic: str, partition: int, isolation: str, timestamp: int = LATEST,
                timeout_s: float = 30.0) -> int:
    """ListOffsets v7 to the partition's leader (`bootstrap` may list several brokers,
    comma-separated): LATEST is the HW with read_uncommitted, the LSO with read_committed.

    While leadership moves (a broker restarted, a preferred leader taking over) no broker may
    be leader for a moment: asked again, as clients do, until `timeout_s`."""
    errors: list[str] = []

    def ask() -> int | None:
        errors.clear()
        return _list_offset_once(bootstrap, topic, partition, isolation, timestamp, errors)

    try:
        return wait_until(ask, timeout_s, f"ListOffsets {topic}-{partition}")
    except AssertionError as exc:
        raise AssertionError(f"ListOffsets {topic}-{partition}: {errors}") from exc


def _list_offset_once(bootstrap: str, topic: str, partition: int, isolation: str, timestamp: int,
                      errors: list[str]) -> int | None:
    """The offset, or None while every broker answers a retriable error (listed in `errors`)."""
    request = ListOffsetsRequest(
        replica_id=i32(-1), isolation_level=i8(ISOLATION[isolation]),
        topics=(ListOffsetsTopic(name=topic, partitions=(ListOffsetsPartition(
            partition_index=i32(partition), current_leader_epoch=i32(-1), timestamp=i64(timestamp),
        ),)),),
    )
    for address in bootstrap.split(","):  # several brokers: the leader answers
        try:
            with WireClient(address, timeout_s=5) as client:
                answer = client.request(request).topics[0].partitions[0]
        except (OSError, ConnectionError) as exc:
            errors.append(f"{address}: {exc!r}")
            continue
        if answer.error_code == ErrorCode.none:
            return int(answer.offset)
        errors.append(f"{address}: {answer.error_code!r}")
        if answer.error_code not in _LEADER_MOVING:
            raise AssertionError(f"ListOffsets {topic}-{partition}: {errors}")
    return None


def wait_lso_at_hw(bootstrap: str, topic: str, partition: int, timeout_s: float,
                   what: str = "the LSO to reach the HW") -> None:
    """Until the partition's LSO (ListOffsets read_committed) is its HW: no transaction open on it."""
    wait_until(lambda: list_offset(bootstrap, topic, partition, READ_COMMITTED)
               == list_offset(bootstrap, topic, partition, READ_UNCOMMITTED), timeout_s, what)


@dataclass(frozen=True)
class FetchedBatches:
    high_watermark: int
    last_stable_offset: int
    aborted: tuple[tuple[int, int], ...]  # (producer id, first offset)
    batches: tuple[WireBatch, ...]
    control_types: dict[int, int]  # base offset of a control batch -> ABORT_MARKER / COMMIT_MARKER


def fetch_all(bootstrap: str, topic: str, partition: int, isolation: str) -> FetchedBatches:
    """Every batch the leader serves from offset 0 at `isolation` (Fetch v12, no wait)."""
    batches: list[WireBatch] = []
    control: dict[int, int] = {}
    aborted: list[tuple[int, int]] = []
    hw = lso = -1
    offset = 0
    with WireClient(bootstrap) as client:
        for _ in range(1000):  # bound: one round per batch at worst
            request = FetchRequest(
                cluster_id=None, replica_id=i32(-1), max_wait=datetime.timedelta(0), min_bytes=i32(1),
                max_bytes=i32(4 << 20), isolation_level=i8(ISOLATION[isolation]), session_id=i32(0),
                session_epoch=i32(-1),
                topics=(FetchTopic(topic=topic, partitions=(FetchPartition(
                    partition=i32(partition), current_leader_epoch=i32(-1), fetch_offset=i64(offset),
                    last_fetched_epoch=i32(-1), log_start_offset=i64(-1), partition_max_bytes=i32(4 << 20),
                ),)),),
                forgotten_topics_data=(), rack_id="",
            )
            part = client.request(request).responses[0].partitions[0]
            assert part.error_code == ErrorCode.none, f"Fetch {topic}-{partition}@{offset}: {part.error_code!r}"
            hw, lso = int(part.high_watermark), int(part.last_stable_offset)
            aborted += [(int(a.producer_id), int(a.first_offset)) for a in part.aborted_transactions or ()]
            raw = bytes(part.records or b"")
            got = parse_batches(raw)
            if not got:
                break
            pos = 0
            for b in got:
                if b.attributes & CONTROL_FLAG:
                    control[b.base_offset] = _control_type(raw[pos:pos + b.size])
                pos += b.size
            batches += got
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1
    return FetchedBatches(hw, lso, tuple(sorted(set(aborted))), tuple(batches), control)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Kafka's record fields) at `pos`: (value, next position)."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _control_type(batch: bytes) -> int:
    """The type in the key of a control batch's one record (uncompressed, as Kafka writes it)."""
    pos = 61  # first record: length, attributes, timestamp delta, offset delta, key length, key
    _, pos = _varint(batch, pos)
    pos += 1
    _, pos = _varint(batch, pos)
    _, pos = _varint(batch, pos)
    key_length, pos = _varint(batch, pos)
    assert key_length == 4, f"control record key of {key_length} bytes"
    _version, kind = struct.unpack_from(">hh", batch, pos)
    return int(kind)


def find_coordinator(bootstrap: str, key: str, key_type: int) -> int:
    """The broker id coordinating `key` (a group or a transactional id), asked until known;
    `bootstrap` may list several brokers (comma-separated): each is asked in turn."""

    def probe() -> int | None:
        for address in bootstrap.split(","):
            try:
                with WireClient(address, timeout_s=5) as client:
                    answer = client.request(FindCoordinatorRequest(key=key, key_type=i8(key_type)))
            except (OSError, ConnectionError):
                continue
            if answer.error_code == ErrorCode.none:
                return int(answer.node_id)
        return None

    return wait_until(probe, 30, f"a coordinator for {key!r}")


def describe_transaction(bootstrap: str, transactional_id: str) -> Any:
    """DescribeTransactions v0 for one id at `bootstrap` (its coordinator): the TransactionState."""
    with WireClient(bootstrap) as client:
        answer = client.request(DescribeTransactionsRequest(
            transactional_ids=(TransactionalId(transactional_id),)))
    return answer.transaction_states[0]


def offset_fetch(bootstrap: str, group: str, topic: str, partitions: Sequence[int], *,
                 require_stable: bool) -> dict[int, tuple[int, ErrorCode]]:
    """OffsetFetch v7 at the group's coordinator: partition -> (committed offset, error code)."""
    with WireClient(bootstrap) as client:
        answer = client.request(OffsetFetchRequest(
            group_id=group, require_stable=require_stable,
            topics=(OffsetFetchRequestTopic(name=topic, partition_indexes=tuple(i32(p) for p in partitions)),),
        ))
    assert answer.error_code == ErrorCode.none, f"OffsetFetch {group}: {answer.error_code!r}"
    return {int(p.partition_index): (int(p.committed_offset), p.error_code)
            for t in answer.topics for p in t.partitions}


def assert_each_input_once(got: Sequence[Read], input_partitions: int, per_partition: int) -> None:
    """`got`, outputs of txn_process.py transform (values b"p:i:..."), holds input i of input
    partition p exactly once for every p < input_partitions and i < per_partition."""
    seen = Counter(tuple(r.value.split(b":")[:2]) for r in got)
    want = {(b"%d" % p, b"%d" % i) for p in range(input_partitions) for i in range(per_partition)}
    duplicates = sorted(k for k, n in seen.items() if n > 1)
    missing = sorted(want - set(seen))
    assert not duplicates and not missing and set(seen) == want, (
        f"output read_committed: {len(got)} records; duplicated inputs {duplicates[:10]}, "
        f"missing inputs {missing[:10]}, foreign {sorted(set(seen) - want)[:5]}")


# --- programs in their own process (txn_process.py) --------------------------------------

TXN_PROCESS_PY = Path(__file__).parent / "txn_process.py"


class TxnProcess:
    """A txn_process.py program and the events it reported so far (see that module)."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(TXN_PROCESS_PY), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.stderr) < 2000:
                self.stderr.append(line)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == kind]

    def wait_event(self, kind: str, timeout_s: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = self.of(kind)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited before {kind!r}: {self.describe()}")
            return None

        return wait_until(probe, timeout_s, f"{self.name} to report {kind!r}")

    def stuck(self) -> bool:
        """It ended itself because a client call outlived its own timeout (a client bug, see
        txn_process.py `watchdog`)."""
        return self.proc.poll() is not None and bool(self.of("stuck"))

    def again(self) -> TxnProcess:
        """A new instance with the same arguments (the same transactional id: it fences this
        one and aborts the transaction it left open)."""
        return TxnProcess(f"{self.name}+", *self.args)

    def fatal_errors(self) -> list[str]:
        return [e["error"] for e in self.of("error") if e.get("fatal")]

    def stop(self, timeout_s: float = 60) -> None:
        """Finish the transaction in progress, close, exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=timeout_s)
        assert self.of("closed"), f"{self.name} did not close cleanly: {self.describe()}"

    def kill(self) -> None:
        """A crash (SIGKILL): whatever transaction it had open stays open."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def describe(self) -> str:
        tail = "".join(self.stderr[-30:])
        with self._lock:
            last = self.events[-8:]
        return f"{self.name} (exit {self.proc.poll()}): last events {last}\n{tail}"


def ck_read_committed_to_end(bootstrap: str, partitions: Sequence[tuple[str, int]],
                             timeout_s: float = 60.0) -> list[Read]:
    """Everything a confluent-kafka read_committed consumer reads from offset 0 up to each
    partition's LSO as the leader answers it now (no transaction open: the LSO is the HW).

    Done when the consumer's position reaches the LSO: librdkafka (>= 1.4) moves the position
    past control records, so a partition ending in a marker is read to its end too."""
    from confluent_kafka import TopicPartition

    ends = {tp: list_offset(bootstrap, tp[0], tp[1], READ_COMMITTED) for tp in partitions}
    consumer = _confluent_consumer(bootstrap, READ_COMMITTED)
    got: list[Read] = []
    try:
        tps = [TopicPartition(t, p, 0) for t, p in partitions]
        consumer.assign(tps)

        def done() -> bool:
            return all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in consumer.position(tps))

        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, (
                f"read_committed consumer did not reach the LSOs {ends} in {timeout_s} s: positions "
                f"{[(tp.topic, tp.partition, tp.offset) for tp in consumer.position(tps)]}")
            got += _confluent_poll(consumer)
    finally:
        consumer.close()
    return got
