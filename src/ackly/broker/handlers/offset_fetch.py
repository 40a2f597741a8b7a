"""OffsetFetch (key 9): a group's committed offsets (-1 where it has none).

v1 names the partitions; v2+ may ask for every partition (null topics); v8+ asks for several
groups at once (KIP-709). The answer is given once everything written to those groups' shards
is committed, so an offset is never shown before it is durable. Offsets sent in a transaction
(TxnOffsetCommit) are not shown until its COMMIT marker; meanwhile the last committed offset
is. With `require_stable` (v7+, KIP-447) a partition with such a pending offset answers
UNSTABLE_OFFSET_COMMIT (offset -1) instead, and the consumer retries until the transaction
ends. As in Kafka, that is a partition error only: the top-level (v2-v7) and group-level (v8+)
error codes carry group errors, and v0-v1 clients, which have no top-level error, cannot ask
for stable offsets. v9's member id and epoch are for KIP-848 groups: ignored for classic
groups, as Kafka does, and checked for consumer groups (STALE_MEMBER_EPOCH when the epoch is
not the member's, UNKNOWN_MEMBER_ID). v10 names topics by id and is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.coordinator.group_coordinator import FetchedTopics, GroupOffsets
from ackly.coordinator.group_manager import FetchedOffset
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 9
MIN_VERSION = 1
MAX_VERSION = 9


def _wanted(topics: Any) -> list[tuple[str, list[int]]] | None:
    if topics is None:
        return None
    return [(t.name, [int(p) for p in t.partition_indexes]) for t in topics]


def _partition(index: int, fetched: FetchedOffset, error: ErrorCode) -> dict[str, Any]:
    if fetched is None or isinstance(fetched, ErrorCode):
        code = fetched if isinstance(fetched, ErrorCode) else error
        return {"partition_index": index, "committed_offset": -1, "committed_leader_epoch": -1,
                "metadata": "", "error_code": code}
    return {"partition_index": index, "committed_offset": fetched.offset,
            "committed_leader_epoch": fetched.leader_epoch, "metadata": fetched.metadata,
            "error_code": error}


def _topics(fetched: FetchedTopics, error: ErrorCode = ErrorCode.none) -> list[dict[str, Any]]:
    return [
        {"name": topic, "partitions": [_partition(p, v, error) for p, v in partitions]}
        for topic, partitions in fetched
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    if version >= 8:
        requests = [(g.group_id, _wanted(g.topics)) for g in request.groups]
    else:
        requests = [(request.group_id, _wanted(request.topics))]

    def fields(results: list[GroupOffsets]) -> dict[str, Any]:
        if version >= 8:
            return {"groups": [{"group_id": r.group_id, "topics": _topics(r.topics),
                                "error_code": r.error} for r in results]}
        (result,) = results
        return {"topics": _topics(result.topics), "error_code": result.error}

    def failed(code: ErrorCode) -> dict[str, Any]:
        if version >= 8:
            return {"groups": [{"group_id": g, "topics": [], "error_code": code} for g, _ in requests]}
        # v1 has no group-level error: every partition asked for carries it.
        _, wanted = requests[0]
        return {"error_code": code,
                "topics": _topics([(t, [(p, None) for p in ps]) for t, ps in wanted or []], code)}

    waiter: Respond[list[GroupOffsets]] = Respond(ctx, fields, failed)
    # authz_rules: DESCRIBE on each group, then on each topic (a refused topic's partitions
    # answer TOPIC_AUTHORIZATION_FAILED; in "all offsets" answers such topics are left out).
    refused_groups = {g: code for g, _ in requests
                      if (code := check(node, ctx, API_KEY, "group", g)) is not None}

    def visible(topic: str) -> bool:
        return check(node, ctx, API_KEY, "topic", topic) is None

    def filtered(results: list[GroupOffsets]) -> dict[str, Any]:
        by_group = {r.group_id: r for r in results}
        out: list[GroupOffsets] = []
        for group_id, wanted in requests:
            if group_id in refused_groups:
                out.append(GroupOffsets(group_id, refused_groups[group_id], []))
                continue
            r = by_group[group_id]
            topics: FetchedTopics = []
            for topic, parts in r.topics:
                if visible(topic):
                    topics.append((topic, parts))
                elif wanted is not None:
                    topics.append((topic, [(p, ErrorCode.topic_authorization_failed) for p, _ in parts]))
            out.append(GroupOffsets(group_id, r.error, topics))
        if version < 8 and refused_groups:
            return failed(out[0].error)
        return fields(out)

    requests_allowed = requests
    if node.authorizer.enabled:
        waiter = Respond(ctx, filtered, failed)
        requests_allowed = [(g, w) for g, w in requests if g not in refused_groups]
        if not requests_allowed:
            waiter.complete([])
            return
    require_stable = version >= 7 and bool(request.require_stable)
    # v9: a consumer group's member sends its id and epoch (STALE_MEMBER_EPOCH,
    # UNKNOWN_MEMBER_ID); classic groups ignore them.
    members = ({g.group_id: (g.member_id, int(g.member_epoch)) for g in request.groups}
               if version >= 9 else None)
    node.group_coordinator.fetch_offsets(requests_allowed, waiter, ctx.now_ms, require_stable, members)
