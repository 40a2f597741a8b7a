"""DeleteGroups (key 42): delete groups that have no members, with their offsets.

Per group: GROUP_ID_NOT_FOUND if there is none, NON_EMPTY_GROUP while it has members.
Tombstones for its offsets and its metadata are written; the answer waits for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 42
MIN_VERSION = 0
MAX_VERSION = 2


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    group_ids = list(request.groups_names)

    def fields(results: list[tuple[str, ErrorCode]]) -> dict[str, Any]:
        return {"results": [{"group_id": g, "error_code": code} for g, code in results]}

    waiter: Respond[list[tuple[str, ErrorCode]]] = Respond(
        ctx, fields, lambda code: fields([(g, code) for g in group_ids]))
    # authz_rules: DELETE on each group; a refused group is answered without being asked.
    refused = {g: code for g in group_ids if (code := check(node, ctx, API_KEY, "group", g)) is not None}
    if refused:
        allowed = [g for g in group_ids if g not in refused]

        def merge(results: list[tuple[str, ErrorCode]]) -> dict[str, Any]:
            codes = dict(results)
            return fields([(g, refused.get(g) or codes.get(g, ErrorCode.none)) for g in group_ids])

        waiter = Respond(ctx, merge, lambda code: fields([(g, refused.get(g, code)) for g in group_ids]))
        if not allowed:
            waiter.complete([])
            return
        node.group_coordinator.delete_groups(allowed, waiter, ctx.now_ms)
        return
    node.group_coordinator.delete_groups(group_ids, waiter, ctx.now_ms)
