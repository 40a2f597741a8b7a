"""ListOffsets (key 2): earliest, latest, max timestamp, or the first offset at a timestamp.

Special timestamps as in Kafka's ListOffsetsRequest: -1 latest (HW, or LSO for
read_committed, KIP-98), -2 earliest (log start offset), -3 the record with the largest
timestamp (KIP-734), -4 earliest local (= earliest here: there is no tiered storage). A
timestamp lookup finds only offsets below HW (below the LSO for read_committed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.handlers.fetch import READ_COMMITTED
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 2
MIN_VERSION = 1
MAX_VERSION = 8

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4


def _lookup(node: BrokerNode, topic: str, part: Any, isolation_level: int) -> dict[str, Any]:
    index = int(part.partition_index)
    try:
        # Only the leader answers (NOT_LEADER_OR_FOLLOWER elsewhere), in the caller's epoch
        # (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH otherwise, KIP-320).
        p = node.leader_partition(topic, index, int(getattr(part, "current_leader_epoch", -1)))
        ts = int(part.timestamp)
        offset, timestamp = -1, -1
        # What a consumer of this isolation level may read (Kafka's lastFetchableOffset).
        fetchable = p.last_stable_offset if isolation_level == READ_COMMITTED else p.high_watermark
        if ts == LATEST:
            offset = fetchable
        elif ts in (EARLIEST, EARLIEST_LOCAL):
            offset = p.log_start_offset
        elif ts == MAX_TIMESTAMP:
            found = p.log.max_timestamp()
            if found is not None:
                offset, timestamp = found
        elif ts >= 0:
            found = p.log.offset_for_timestamp(ts)
            if found is not None and found[0] < fetchable:
                offset, timestamp = found
        else:
            raise KafkaError(ErrorCode.invalid_request, f"unknown special timestamp {ts}")
        return {
            "partition_index": index, "error_code": ErrorCode.none, "timestamp": timestamp,
            "offset": offset, "leader_epoch": p.leader_epoch,
        }
    except KafkaError as exc:
        return {"partition_index": index, "error_code": exc.code, "timestamp": -1, "offset": -1,
                "leader_epoch": -1}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    isolation_level = int(getattr(request, "isolation_level", 0))
    topics = []
    for t in request.topics:
        denied = check(node, ctx, API_KEY, "topic", t.name)
        topics.append({"name": t.name, "partitions": [
            _lookup(node, t.name, part, isolation_level) if denied is None else
            {"partition_index": int(part.partition_index), "error_code": denied, "timestamp": -1,
             "offset": -1, "leader_epoch": -1}
            for part in t.partitions
        ]})
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": topics}))
