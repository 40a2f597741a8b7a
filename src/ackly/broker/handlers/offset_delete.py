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

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 47
MIN_VERSION = 0
MAX_VERSION = 0


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    partitions = [(t.name, int(p.partition_index)) for t in request.topics for p in t.partitions]

    def fields(result: tuple[ErrorCode, list[ErrorCode]]) -> dict[str, Any]:
        top, errors = result
        topics: dict[str, list[dict[str, Any]]] = {}
        for (topic, index), code in zip(partitions, errors, strict=False):
            topics.setdefault(topic, []).append({"partition_index": index, "error_code": code})
        return {"error_code": top,
                "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}

    waiter: Respond[tuple[ErrorCode, list[ErrorCode]]] = Respond(
        ctx, fields, lambda code: fields((code, [])))
    # authz_rules: DELETE on the group refuses the request; READ on a topic its partitions.
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.fail(denied)
        return
    refused = {t.name for t in request.topics if check(node, ctx, API_KEY, "topic", t.name) is not None}
    if refused:
        wanted = [tp for tp in partitions if tp[0] not in refused]
        answers: dict[tuple[str, int], ErrorCode] = {
            tp: ErrorCode.topic_authorization_failed for tp in partitions if tp[0] in refused}

        def merge(result: tuple[ErrorCode, list[ErrorCode]]) -> dict[str, Any]:
            top, errors = result
            answers.update(zip(wanted, errors, strict=False))
            return fields((top, [answers.get(tp, ErrorCode.none) for tp in partitions]))

        waiter = Respond(ctx, merge, lambda code: fields((code, [])))
        if not wanted:
            waiter.complete((ErrorCode.none, []))
            return
        node.group_coordinator.delete_offsets(request.group_id, wanted, waiter, ctx.now_ms)
        return
    node.group_coordinator.delete_offsets(request.group_id, partitions, waiter, ctx.now_ms)
