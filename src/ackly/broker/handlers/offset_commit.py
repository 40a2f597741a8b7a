"""OffsetCommit (key 8): store a group's positions in `__consumer_offsets`.

Per partition, checked here: the group id is not empty (INVALID_GROUP_ID) and the topic
partition exists (UNKNOWN_TOPIC_OR_PARTITION), as Kafka's KafkaApis does; then the group
decides (GUARANTEES.md rule 24): a member of the current generation may commit (not while its
assignment is being decided: REBALANCE_IN_PROGRESS), a stale generation gets
ILLEGAL_GENERATION, an unknown member UNKNOWN_MEMBER_ID, and a commit with generation -1 and
no member (a consumer without group management, or an admin tool) only while the group has no
members. The answer waits until the offsets are committed to the log.

Versions 2-9 (kio has no v0-v1; librdkafka needs v2 to use groups). v10 names topics by id and
is not offered. v2-v4 may ask for a retention time: such offsets expire at commit time plus
that, written as OffsetCommitValue v1. v9+ answers GROUP_ID_NOT_FOUND for a group that does
not exist, older versions ILLEGAL_GENERATION (Kafka's compatibility rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond, ensure_offsets_topic, ms
from ackly.coordinator.group_manager import CommitPartition
from ackly.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 8
MIN_VERSION = 2
MAX_VERSION = 9

_NO_RETENTION = -1


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    # One slot per partition of the request, in request order; None until decided.
    slots: list[tuple[str, int, ErrorCode | None]] = []
    to_commit: list[CommitPartition] = []
    commit_slots: list[int] = []
    for topic in request.topics:
        state = node.topics.get(topic.name)
        for p in topic.partitions:
            index = int(p.partition_index)
            if not request.group_id:
                code: ErrorCode | None = ErrorCode.invalid_group_id
            elif state is None or not 0 <= index < state.partition_count:
                code = ErrorCode.unknown_topic_or_partition
            else:
                code = None
                commit_slots.append(len(slots))
                to_commit.append(CommitPartition(
                    topic.name, index, int(p.committed_offset),
                    int(getattr(p, "committed_leader_epoch", -1)), p.committed_metadata))
            slots.append((topic.name, index, code))

    def fields(errors: list[ErrorCode]) -> dict[str, Any]:
        decided = [code for _, _, code in slots]
        for slot, error in zip(commit_slots, errors, strict=True):
            decided[slot] = error
        topics: dict[str, list[dict[str, Any]]] = {}
        for (name, index, _), code in zip(slots, decided, strict=True):
            topics.setdefault(name, []).append({"partition_index": index, "error_code": code})
        return {"topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}

    waiter: Respond[list[ErrorCode]] = Respond(
        ctx, fields, lambda code: fields([code] * len(to_commit)))
    if not to_commit:
        waiter.complete([])
        return
    try:
        coordinator = ensure_offsets_topic(node, ctx.now_ms)
    except KafkaError as exc:
        waiter.fail(exc.code)
        return
    retention_ms = ms(request.retention_time) if 2 <= version <= 4 else _NO_RETENTION
    expire_timestamp_ms = ctx.now_ms + retention_ms if retention_ms >= 0 else -1
    missing_group = ErrorCode.group_id_not_found if version >= 9 else ErrorCode.illegal_generation
    coordinator.commit_offsets(
        request.group_id, request.member_id or "", getattr(request, "group_instance_id", None),
        int(request.generation_id_or_member_epoch), expire_timestamp_ms, to_commit, missing_group,
        waiter, ctx.now_ms,
    )
