"""OffsetCommit (key 8): store a group's positions in `__consumer_offsets`.

Per partition, checked here: the group id is not empty (INVALID_GROUP_ID) and the topic
partition exists (UNKNOWN_TOPIC_OR_PARTITION), as Kafka's KafkaApis does; then the group
decides (docs/guarantees.md rule 24): a member of the current generation may commit (not while its
assignment is being decided: REBALANCE_IN_PROGRESS), a stale generation gets
ILLEGAL_GENERATION, an unknown member UNKNOWN_MEMBER_ID, and a commit with generation -1 and
no member (a consumer without group management, or an admin tool) only while the group has no
members. The answer waits until the offsets are committed to the log.

Versions 2-9 (kio has no v0-v1; librdkafka needs v2 to use groups). v10 names topics by id and
is not offered. v2-v4 may ask for a retention time: such offsets expire at commit time plus
that, written as OffsetCommitValue v1. v9+ answers GROUP_ID_NOT_FOUND for a group that does
not exist, older versions ILLEGAL_GENERATION (Kafka's compatibility rule). For a consumer group
of the KIP-848 protocol the generation field is the member epoch: a member must send its
current one (STALE_MEMBER_EPOCH), and a commit without a member (epoch -1) is accepted only
while the group has no members (UNKNOWN_MEMBER_ID).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.groups import ms, start_offset_commit
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 8
MIN_VERSION = 2
MAX_VERSION = 9

_NO_RETENTION = -1


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    started = start_offset_commit(node, ctx, request)
    if started is None:
        return
    waiter, to_commit, coordinator = started
    retention_ms = ms(request.retention_time) if 2 <= version <= 4 else _NO_RETENTION
    # Written into the commit record and compared with wall time at expiry (as Kafka stores it).
    expire_timestamp_ms = node.wall_clock(ctx.now_ms) + retention_ms if retention_ms >= 0 else -1
    missing_group = ErrorCode.group_id_not_found if version >= 9 else ErrorCode.illegal_generation
    coordinator.commit_offsets(
        request.group_id, request.member_id or "", getattr(request, "group_instance_id", None),
        int(request.generation_id_or_member_epoch), expire_timestamp_ms, to_commit, missing_group,
        waiter, ctx.now_ms,
    )
