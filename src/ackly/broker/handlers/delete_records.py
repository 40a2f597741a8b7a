"""DeleteRecords (key 21): move partitions' log start offsets forward (KIP-107).

Mirrors Kafka's Partition.deleteRecordsOnLeader: for each partition the requested offset
becomes the new log start offset; records below it can no longer be fetched and their
segments go once they lie wholly below it. Offset -1 means "up to the high watermark". An
offset above HW, or negative other than -1, is OFFSET_OUT_OF_RANGE: a client may only delete
records every in-sync replica has. An offset at or below the current log start changes
nothing. A topic whose cleanup.policy does not include `delete` is POLICY_VIOLATION, as in
Kafka (compaction owns such a log). The answer's low_watermark is the log start offset after
the call (-1 with an error).

Only the leader moves its log start (NOT_LEADER_OR_FOLLOWER elsewhere); followers take the
new log start from its fetch responses (Kafka waits for them to do so before answering, in
its DelayedDeleteRecords; ackly does not). The new log start is visible at once, and the
answer waits in the purgatory until it is durable: PartitionLog.delete_records_before makes
no fsync on the event loop, the next flush round syncs it in the broker's sync pool. So a
restart never brings back records a DeleteRecords answer said were deleted. A partition
whose log directory fails first answers KAFKA_STORAGE_ERROR, one still waiting after
`timeout` REQUEST_TIMED_OUT (the log start may then still become durable, as in Kafka).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build
from ackly.replication.partition import Partition
from ackly.replication.purgatory import DelayedOperation

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 21
MIN_VERSION = 0
MAX_VERSION = 2

HIGH_WATERMARK = -1  # DeleteRecordsRequest.HIGH_WATERMARK
NO_LOW_WATERMARK = -1  # DeleteRecordsResponse.INVALID_LOW_WATERMARK


class DelayedDeleteRecords(DelayedOperation):
    """The answer, once every moved log start is durable (or failed, or timed out)."""

    def __init__(
        self, ctx: RequestContext, deadline_ms: int, topics: list[dict[str, Any]],
        waiting: list[tuple[dict[str, Any], Partition]],
    ) -> None:
        super().__init__(deadline_ms)
        self.ctx = ctx
        self.topics = topics
        self.waiting = waiting  # (the partition's answer, the partition) not durable yet

    def try_complete(self, now_ms: int) -> bool:
        still = []
        for answer, p in self.waiting:
            code = _durability(p)
            if code is None:
                still.append((answer, p))
            elif code != ErrorCode.none:
                _fail(answer, code)
        self.waiting = still
        if still:
            return False
        self._answer()
        return True

    def on_expire(self, now_ms: int) -> None:
        for answer, p in self.waiting:
            code = _durability(p)
            if code != ErrorCode.none:
                _fail(answer, code if code is not None else ErrorCode.request_timed_out)
        self._answer()

    def _answer(self) -> None:
        self.ctx.respond(build(API_KEY, self.ctx.api_version,
                               {"throttle_time": 0, "topics": self.topics}))


def _durability(p: Partition) -> ErrorCode | None:
    """NONE once the partition's log start is durable, an error if it never will be, else
    None (the flush round has not completed yet)."""
    if p.offline is not None:
        return ErrorCode.kafka_storage_error
    if p.log.is_closed:
        return ErrorCode.unknown_topic_or_partition  # deleted (or stopped) meanwhile
    return ErrorCode.none if p.log.changes_durable else None


def _fail(answer: dict[str, Any], code: ErrorCode) -> None:
    answer["error_code"] = code
    answer["low_watermark"] = NO_LOW_WATERMARK


def _delete(
    node: BrokerNode, topic: str, part: Any, waiting: list[tuple[dict[str, Any], Partition]]
) -> dict[str, Any]:
    index = int(part.partition_index)
    try:
        p = node.leader_partition(topic, index)
        if "delete" not in p.config.cleanup_policy:
            raise KafkaError(ErrorCode.policy_violation,
                             f"{topic}-{index}: cleanup.policy has no 'delete'")
        requested = int(part.offset)
        hw = p.high_watermark
        offset = hw if requested == HIGH_WATERMARK else requested
        if offset < 0 or offset > hw:
            raise KafkaError(ErrorCode.offset_out_of_range,
                             f"{topic}-{index}: offset {requested} is outside [0, HW {hw}]")
        # Nothing in purgatory needs waking: a parked fetch waits at or above HW, and the new
        # log start is at most HW, so no waiting fetch falls out of range.
        low_watermark = p.log.delete_records_before(offset)
        answer = {"partition_index": index, "low_watermark": low_watermark,
                  "error_code": ErrorCode.none}
        if not p.log.changes_durable:
            node.schedule_flush(p.tp)
            waiting.append((answer, p))
        return answer
    except KafkaError as exc:
        return {"partition_index": index, "low_watermark": NO_LOW_WATERMARK,
                "error_code": exc.code}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    topics = []
    waiting: list[tuple[dict[str, Any], Partition]] = []
    for t in request.topics:
        denied = check(node, ctx, API_KEY, "topic", t.name)
        topics.append({"name": t.name, "partitions": [
            _delete(node, t.name, part, waiting) if denied is None else
            {"partition_index": int(part.partition_index), "low_watermark": -1, "error_code": denied}
            for part in t.partitions
        ]})
    now_ms = ctx.now_ms
    timeout_ms = max(int(request.timeout.total_seconds() * 1000), 0)
    op = DelayedDeleteRecords(ctx, now_ms + timeout_ms, topics, waiting)
    node.purgatory.try_or_watch(op, {p.tp for _, p in waiting}, now_ms)
