"""Fetch (key 1): serve whole batches below HW (or LSO) as file ranges, long-polling if short.

The handler resolves each partition's position to file ranges (no bytes are copied here);
the shell sends them with sendfile. If fewer than `min_bytes` are available and the request
allows waiting, a DelayedFetch parks on the partitions and is retried when one of them
changes (an append that moves HW, a deletion), or answered with what is there at
`max_wait_ms`. Limits: `max_bytes` for the response and `partition_max_bytes` per partition,
except that the first batch is always returned whole so a consumer cannot get stuck (KIP-74).
Fetch sessions (KIP-227) are not kept: session id 0 tells clients to send full requests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.fetch_codec import FetchPartitionData, encode_fetch_response
from ackly.replication.purgatory import DelayedOperation
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 1
MIN_VERSION = 4  # record batch v2; librdkafka needs v4
MAX_VERSION = 16

READ_COMMITTED = 1


@dataclass(frozen=True)
class _Want:
    key: str | uuid.UUID  # what the response is keyed by: name, or topic id (v13+)
    topic: str | None  # None: unknown topic id
    partition: int
    fetch_offset: int
    current_leader_epoch: int
    partition_max_bytes: int


def check_leader_epoch(current: int, leader_epoch: int) -> None:
    """KIP-320: a client's view of the leader epoch must match ours, when it states one."""
    if current < 0 or current == leader_epoch:
        return
    if current < leader_epoch:
        raise KafkaError(ErrorCode.fenced_leader_epoch)
    raise KafkaError(ErrorCode.unknown_leader_epoch)


class DelayedFetch(DelayedOperation):
    def __init__(
        self, node: BrokerNode, ctx: RequestContext, wants: list[_Want],
        min_bytes: int, max_bytes: int, isolation_level: int, deadline_ms: int,
    ) -> None:
        super().__init__(deadline_ms)
        self.node = node
        self.ctx = ctx
        self.wants = wants
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.isolation_level = isolation_level

    def _read_all(self) -> tuple[list[tuple[str | uuid.UUID, list[FetchPartitionData]]], int, bool]:
        topics: dict[str | uuid.UUID, list[FetchPartitionData]] = {}
        total = 0
        errored = False
        for w in self.wants:
            data = self._read_one(w, total)
            if data.error_code:
                errored = True
            total += sum(len(r) if isinstance(r, bytes) else r.size for r in data.records)
            topics.setdefault(w.key, []).append(data)
        return list(topics.items()), total, errored

    def _read_one(self, w: _Want, total_so_far: int) -> FetchPartitionData:
        if w.topic is None:
            return FetchPartitionData(w.partition, error_code=ErrorCode.unknown_topic_id)
        try:
            p = self.node.partition(w.topic, w.partition)
            check_leader_epoch(w.current_leader_epoch, p.leader_epoch)
            hw = p.high_watermark
            lso = p.last_stable_offset
            upper = lso if self.isolation_level == READ_COMMITTED else hw
            data = FetchPartitionData(
                w.partition, high_watermark=hw, last_stable_offset=lso,
                log_start_offset=p.log_start_offset,
                aborted_transactions=[] if self.isolation_level == READ_COMMITTED else None,
            )
            if w.fetch_offset < p.log_start_offset or w.fetch_offset > p.log_end_offset:
                raise KafkaError(ErrorCode.offset_out_of_range)
            budget = min(w.partition_max_bytes, self.max_bytes - total_so_far)
            if w.fetch_offset < upper and (budget > 0 or total_so_far == 0):
                result = p.log.read(
                    w.fetch_offset, max(budget, 0), upper, min_one_batch=total_so_far == 0
                )
                data.records = result.ranges
            return data
        except KafkaError as exc:
            return FetchPartitionData(w.partition, error_code=exc.code)

    def try_complete(self, now_ms: int) -> bool:
        topics, total, errored = self._read_all()
        if total >= self.min_bytes or errored or now_ms >= self.deadline_ms:
            self._answer(topics)
            return True
        return False

    def on_expire(self, now_ms: int) -> None:
        topics, _, _ = self._read_all()
        self._answer(topics)

    def _answer(self, topics: list[tuple[str | uuid.UUID, list[FetchPartitionData]]]) -> None:
        self.ctx.send(encode_fetch_response(
            self.ctx.api_version, self.ctx.header.correlation_id, topics
        ))


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    by_id = ctx.api_version >= 13
    wants: list[_Want] = []
    for t in request.topics:
        if by_id:
            state = node.topics_by_id.get(t.topic_id)
            key: str | uuid.UUID = t.topic_id
            name = state.name if state is not None else None
        else:
            key = name = t.topic
        for fp in t.partitions:
            wants.append(_Want(
                key=key, topic=name, partition=int(fp.partition),
                fetch_offset=int(fp.fetch_offset),
                current_leader_epoch=int(getattr(fp, "current_leader_epoch", -1)),
                partition_max_bytes=int(fp.partition_max_bytes),
            ))
    max_wait_ms = int(request.max_wait.total_seconds() * 1000)
    max_bytes = min(int(request.max_bytes), int(node.config.get("fetch.max.bytes")))
    op = DelayedFetch(
        node, ctx, wants, min_bytes=max(int(request.min_bytes), 0), max_bytes=max_bytes,
        isolation_level=int(getattr(request, "isolation_level", 0)),
        deadline_ms=ctx.now_ms + max(max_wait_ms, 0),
    )
    keys = {TopicPartition(w.topic, w.partition) for w in wants if w.topic is not None}
    node.purgatory.try_or_watch(op, keys, ctx.now_ms)
