"""DeleteRecords (key 21): move partitions' log start offsets forward (KIP-107).

Mirrors Kafka's Partition.deleteRecordsOnLeader: for each partition the requested offset
becomes the new log start offset; records below it can no longer be fetched and their
segments go once they lie wholly below it. Offset -1 means "up to the high watermark". An
offset above HW, or negative other than -1, is OFFSET_OUT_OF_RANGE: a client may only delete
records every in-sync replica has. An offset at or below the current log start changes
nothing. A topic whose cleanup.policy does not include `delete` is POLICY_VIOLATION, as in
Kafka (compaction owns such a log). The answer's low_watermark is the log start offset after
the call (-1 with an error).

Only the leader moves its log start (NOT_LEADER_OR_FOLLOWER elsewhere) and answers at once;
followers take the new log start from its fetch responses (Kafka waits for them to do so
before answering, in its DelayedDeleteRecords; ackly does not), and `timeout` is not used.
The new log start is visible and durable when the answer is sent
(PartitionLog.delete_records_before writes it before returning), so a restart never brings
deleted records back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 21
MIN_VERSION = 0
MAX_VERSION = 2

HIGH_WATERMARK = -1  # DeleteRecordsRequest.HIGH_WATERMARK
NO_LOW_WATERMARK = -1  # DeleteRecordsResponse.INVALID_LOW_WATERMARK


def _delete(node: BrokerNode, topic: str, part: Any) -> dict[str, Any]:
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
        return {"partition_index": index, "low_watermark": low_watermark,
                "error_code": ErrorCode.none}
    except KafkaError as exc:
        return {"partition_index": index, "low_watermark": NO_LOW_WATERMARK,
                "error_code": exc.code}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    topics = []
    for t in request.topics:
        denied = check(node, ctx, API_KEY, "topic", t.name)
        topics.append({"name": t.name, "partitions": [
            _delete(node, t.name, part) if denied is None else
            {"partition_index": int(part.partition_index), "low_watermark": -1, "error_code": denied}
            for part in t.partitions
        ]})
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": topics}))
