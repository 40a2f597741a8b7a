"""Topic helpers for a user's tests: create a topic, read a topic back, over the Kafka protocol.

Both speak to any Kafka-compatible bootstrap (one ackly broker, an ackly cluster, or another
Kafka), with ackly's own blocking wire client, so a test suite needs no Kafka client library
for its set-up and its assertions:

- `create_topic(bootstrap, name, partitions=, configs=)` sends CreateTopics to the controller
  (Kafka's AdminClient does the same) and returns once every partition has a leader in the
  Metadata of the broker asked, so the next produce does not meet UNKNOWN_TOPIC_OR_PARTITION
  or LEADER_NOT_AVAILABLE.
- `read_topic(bootstrap, topic)` reads every partition from its log start offset up to the
  high watermark as it was when the first Fetch answered (read_committed: up to the last
  stable offset, with aborted transactions dropped as Kafka's consumer drops them, from the
  aborted_transactions list of the Fetch response; KIP-98), asking each partition's leader.
  Control records (transaction markers) are never returned.

Every wait is bounded by `timeout_s`; a Kafka error is raised as `TopicError` with its name.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kio.schema.create_topics.v7.request import CreatableTopic, CreatableTopicConfig, CreateTopicsRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.list_offsets.v7.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64

from ackly.protocol.record_codec import ControlType, decode_batch, decode_control_record
from ackly.protocol.records import LOG_OVERHEAD, peek_offset_and_size
from ackly.testing.wire import WireClient

EARLIEST_TIMESTAMP = -2  # ListOffsets: the log start offset
FETCH_MAX_BYTES = 8 << 20
READ_UNCOMMITTED = 0
READ_COMMITTED = 1
RETRY_INTERVAL_S = 0.02  # between polls of a condition on the broker, not a stand-in for one
# Retriable while a topic settles after its creation, or while leadership moves.
_RETRIABLE = frozenset({
    ErrorCode.unknown_topic_or_partition, ErrorCode.leader_not_available,
    ErrorCode.not_leader_or_follower, ErrorCode.not_controller, ErrorCode.fenced_leader_epoch,
    ErrorCode.unknown_leader_epoch, ErrorCode.request_timed_out,
})


class TopicError(RuntimeError):
    def __init__(self, what: str, code: int, message: str | None = None) -> None:
        self.code = code
        name = ErrorCode(code).name.upper()
        super().__init__(f"{what}: {name}" + (f" ({message})" if message else ""))


@dataclass(frozen=True)
class ConsumedRecord:
    """One record read back, with where it was and what it carried."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def unique_topic_name(prefix: str = "topic") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _deadline(timeout_s: float) -> float:
    return time.monotonic() + timeout_s


def _expired(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{what}: not done within the timeout")


def _metadata(client: WireClient, topics: list[str] | None) -> Any:
    wanted = None if topics is None else tuple(MetadataRequestTopic(name=TopicName(t), topic_id=None) for t in topics)
    return client.request(MetadataRequest(
        topics=wanted,
        allow_auto_topic_creation=False, include_topic_authorized_operations=False,
    ))


def _addresses(metadata: Any) -> dict[int, str]:
    return {int(b.node_id): f"{b.host}:{int(b.port)}" for b in metadata.brokers}


def _first(bootstrap: str) -> str:
    return bootstrap.split(",")[0].strip()


def create_topic(
    bootstrap: str,
    name: str | None = None,
    *,
    partitions: int = 1,
    replication_factor: int = -1,
    configs: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> str:
    """Create `name` (a fresh unique name if None) and wait until every partition has a
    leader; return the name. `replication_factor=-1`: the broker's default."""
    topic = name or unique_topic_name()
    deadline = _deadline(timeout_s)
    request = CreateTopicsRequest(
        topics=(CreatableTopic(
            name=TopicName(topic), num_partitions=i32(partitions), replication_factor=i16(replication_factor),
            assignments=(),
            configs=tuple(CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()),
        ),),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=timeout_s)), validate_only=False,
    )
    with WireClient(_first(bootstrap), timeout_s=timeout_s) as client:
        while True:
            metadata = _metadata(client, [])
            controller = _addresses(metadata).get(int(metadata.controller_id))
            if controller is not None:
                break
            _expired(deadline, f"create topic {topic!r}: no controller")
            time.sleep(RETRY_INTERVAL_S)
        with WireClient(controller, timeout_s=timeout_s) as admin:
            result = admin.request(request).topics[0]
        if result.error_code != ErrorCode.none:
            raise TopicError(f"create topic {topic!r}", int(result.error_code), result.error_message)
        while True:
            described = _metadata(client, [topic]).topics[0]
            if (described.error_code == ErrorCode.none and len(described.partitions) == partitions
                    and all(p.leader_id >= 0 for p in described.partitions)):
                return topic
            _expired(deadline, f"create topic {topic!r}: partitions without a leader")
            time.sleep(RETRY_INTERVAL_S)


def _leaders(client: WireClient, topic: str, deadline: float) -> tuple[dict[int, str], dict[int, int]]:
    while True:
        metadata = _metadata(client, [topic])
        described = metadata.topics[0]
        code = int(described.error_code)
        if code == ErrorCode.none and all(p.leader_id >= 0 for p in described.partitions):
            return _addresses(metadata), {int(p.partition_index): int(p.leader_id) for p in described.partitions}
        # A retriable error is retried until the deadline (a broker's view may lag a creation),
        # then raised as it is.
        if code != ErrorCode.none and (ErrorCode(code) not in _RETRIABLE or time.monotonic() > deadline):
            raise TopicError(f"read topic {topic!r}", code)
        _expired(deadline, f"read topic {topic!r}: no leader for every partition")
        time.sleep(RETRY_INTERVAL_S)


def _log_start(client: WireClient, topic: str, partition: int) -> int:
    response = client.request(ListOffsetsRequest(
        replica_id=BrokerId(-1), isolation_level=i8(READ_UNCOMMITTED),
        topics=(ListOffsetsTopic(name=TopicName(topic), partitions=(ListOffsetsPartition(
            partition_index=i32(partition), current_leader_epoch=i32(-1), timestamp=i64(EARLIEST_TIMESTAMP),
        ),)),),
    ))
    answer = response.topics[0].partitions[0]
    if answer.error_code != ErrorCode.none:
        raise TopicError(f"list offsets of {topic}-{partition}", int(answer.error_code))
    return int(answer.offset)


def _fetch(client: WireClient, topic: str, partition: int, offset: int, isolation: int) -> Any:
    response = client.request(FetchRequest(
        cluster_id=None, replica_id=BrokerId(-1), max_wait=i32Timedelta.parse(datetime.timedelta(0)), min_bytes=i32(1),
        max_bytes=i32(FETCH_MAX_BYTES), isolation_level=i8(isolation), session_id=i32(0),
        session_epoch=i32(-1),
        topics=(FetchTopic(topic=TopicName(topic), partitions=(FetchPartition(
            partition=i32(partition), current_leader_epoch=i32(-1), fetch_offset=i64(offset),
            last_fetched_epoch=i32(-1), log_start_offset=i64(-1), partition_max_bytes=i32(FETCH_MAX_BYTES),
        ),)),),
        forgotten_topics_data=(), rack_id="",
    ))
    if response.error_code != ErrorCode.none:
        raise TopicError(f"fetch {topic}-{partition}", int(response.error_code))
    return response.responses[0].partitions[0]


def _read_partition(client: WireClient, topic: str, partition: int, isolation: int,
                    deadline: float) -> list[ConsumedRecord]:
    offset = _log_start(client, topic, partition)
    end: int | None = None
    out: list[ConsumedRecord] = []
    aborted: dict[int, int] = {}  # producer id -> first offset of its aborted transaction
    active_aborted: set[int] = set()
    while end is None or offset < end:
        _expired(deadline, f"read {topic}-{partition}")
        data = _fetch(client, topic, partition, offset, isolation)
        if data.error_code != ErrorCode.none:
            raise TopicError(f"fetch {topic}-{partition} at {offset}", int(data.error_code))
        if end is None:
            end = int(data.last_stable_offset if isolation == READ_COMMITTED else data.high_watermark)
        for txn in data.aborted_transactions or ():
            aborted.setdefault(int(txn.producer_id), int(txn.first_offset))
        buf = memoryview(bytes(data.records or b""))
        start = offset
        pos = 0
        # A Fetch answer may end with a partial batch (cut at the size limit): stop before it.
        while pos + LOG_OVERHEAD <= len(buf):
            _, size = peek_offset_and_size(buf, pos)
            if pos + size > len(buf):
                break
            header, records = decode_batch(buf[pos:pos + size])
            pos += size
            if header.next_offset <= start:
                continue
            offset = header.next_offset
            pid = header.producer_id
            if pid in aborted and aborted[pid] <= header.last_offset:
                active_aborted.add(pid)
                del aborted[pid]
            if header.is_control:
                if records and decode_control_record(records[0]).kind == ControlType.ABORT:
                    active_aborted.discard(pid)
                continue
            if header.is_transactional and pid in active_aborted:
                continue
            out.extend(
                ConsumedRecord(topic, partition, r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers))
                for r in records if start <= r.offset < end
            )
        if offset == start and offset < end:
            time.sleep(RETRY_INTERVAL_S)  # nothing below `end` yet (a leader's HW ahead of its reads)
    return out


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: list[int] | None = None,
    isolation: str = "read_uncommitted",
    timeout_s: float = 10.0,
) -> list[ConsumedRecord]:
    """Every record of `topic` (or of `partitions`), from the log start offset up to the high
    watermark (read_committed: the last stable offset) seen at the first Fetch, in partition
    then offset order."""
    if isolation not in ("read_uncommitted", "read_committed"):
        raise ValueError("isolation is 'read_uncommitted' or 'read_committed'")
    level = READ_COMMITTED if isolation == "read_committed" else READ_UNCOMMITTED
    deadline = _deadline(timeout_s)
    with WireClient(_first(bootstrap), timeout_s=timeout_s) as client:
        addresses, leaders = _leaders(client, topic, deadline)
    wanted = sorted(leaders) if partitions is None else partitions
    out: list[ConsumedRecord] = []
    for partition in wanted:
        while True:
            if partition not in leaders:
                raise TopicError(f"read {topic}-{partition}", int(ErrorCode.unknown_topic_or_partition))
            try:
                with WireClient(addresses[leaders[partition]], timeout_s=timeout_s) as leader:
                    out.extend(_read_partition(leader, topic, partition, level, deadline))
                break
            except TopicError as exc:
                # Leadership moved between the Metadata answer and the read (a failover, a
                # preferred leader coming back): ask again and read from the new leader, as a
                # client does. Nothing of this partition was kept from the failed attempt.
                if exc.code not in _RETRIABLE:
                    raise
                _expired(deadline, f"read {topic}-{partition} ({exc})")
                time.sleep(RETRY_INTERVAL_S)
                with WireClient(_first(bootstrap), timeout_s=timeout_s) as client:
                    addresses, leaders = _leaders(client, topic, deadline)
    return out


__all__ = ["ConsumedRecord", "TopicError", "create_topic", "read_topic", "unique_topic_name"]
