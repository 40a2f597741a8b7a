"""OffsetDelete (key 47): delete some of a group's committed offsets (KIP-496).

An empty group may lose any offset; a consumer group with members only those of topics it
does not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC for the others); a non-consumer group with
members none (NON_EMPTY_GROUP). GROUP_ID_NOT_FOUND if there is no such group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 47
MIN_VERSION = 0
MAX_VERSION = 0


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    partitions = [(t.name, int(p.partition_index)) for t in request.topics for p in t.partitions]

    def fields(result: tuple[ErrorCode, list[ErrorCode]], asked: list[tuple[str, int]] = partitions,
               refused: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The answer: the group's code, and per partition the refusal of its topic or, in
        order, the group's answer for the partitions it was asked about (none on a
        group-level error)."""
        top, errors = result
        decided = dict(zip(asked, errors, strict=False))
        topics: dict[str, list[dict[str, Any]]] = {}
        for topic, index in partitions:
            code = ErrorCode.topic_authorization_failed if topic in refused else decided.get((topic, index))
            if code is not None:
                topics.setdefault(topic, []).append({"partition_index": index, "error_code": code})
        return {"error_code": top,
                "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}

    # authz_rules: DELETE on the group refuses the request; READ on a topic its partitions.
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, **fields((denied, []))}))
        return
    refused = frozenset(t.name for t in request.topics
                        if check(node, ctx, API_KEY, "topic", t.name) is not None)
    wanted = [tp for tp in partitions if tp[0] not in refused]
    waiter: Respond[tuple[ErrorCode, list[ErrorCode]]] = Respond(
        ctx, lambda result: fields(result, wanted, refused), lambda code: fields((code, [])))
    if refused and not wanted:
        waiter.complete((ErrorCode.none, []))
        return
    node.group_coordinator.delete_offsets(request.group_id, wanted, waiter, ctx.now_ms)
