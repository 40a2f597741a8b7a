"""OffsetsForLeaderEpoch (key 23): where a leader epoch ends in the leader's log (KIP-101,
KIP-320).

For each partition, the leader answers (epoch, end offset) from its leader-epoch cache
(log/leader_epoch.py, Kafka's LeaderEpochFileCache.endOffsetFor): for its current epoch, its
LEO; for an older epoch E, the largest epoch <= E it has and the start offset of the first
epoch after E, i.e. where the records of E stop in its log; for an epoch it cannot place,
(-1, -1). A consumer that was reading in epoch E up to offset X and learns of a leader change
asks this, and if the answer's end offset is below X the log it read was truncated (the
client then resets its position, KIP-320). Followers do not need it here: their Fetch carries
the last fetched epoch and the answer's diverging epoch (replication/follower.py).

Only the leader answers (NOT_LEADER_OR_FOLLOWER elsewhere), in the caller's leader epoch when
it gives one (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH otherwise). Versions 2-4: kio has no
older schema, and v2 (with current_leader_epoch) is what KIP-320 clients use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 23
MIN_VERSION = 2
MAX_VERSION = 4


def _lookup(node: BrokerNode, topic: str, part: Any) -> dict[str, Any]:
    index = int(part.partition)
    try:
        p = node.leader_partition(topic, index, int(getattr(part, "current_leader_epoch", -1)))
        epoch, end_offset = p.log.leader_epochs.end_offset_for(int(part.leader_epoch), p.log_end_offset)
        return {"error_code": ErrorCode.none, "partition": index, "leader_epoch": epoch, "end_offset": end_offset}
    except KafkaError as exc:
        return {"error_code": exc.code, "partition": index, "leader_epoch": -1, "end_offset": -1}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    # authz_rules: a replica's request (any replica id but the consumer's -1; v2 has none and
    # counts as a broker's, as Kafka's default -2) needs CLUSTER_ACTION, a consumer's DESCRIBE.
    replica_id = int(getattr(request, "replica_id", -2))
    follower_denied = check(node, ctx, API_KEY, "follower") if replica_id != -1 else None
    topics = []
    for t in request.topics:
        denied = follower_denied if replica_id != -1 else check(node, ctx, API_KEY, "topic", t.topic)
        topics.append({"topic": t.topic, "partitions": [
            _lookup(node, t.topic, part) if denied is None else
            {"error_code": denied, "partition": int(part.partition), "leader_epoch": -1, "end_offset": -1}
            for part in t.partitions
        ]})
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": topics}))
