"""DeleteGroups (key 42): delete groups that have no members, with their offsets.

Per group: GROUP_ID_NOT_FOUND if there is none, NON_EMPTY_GROUP while it has members.
Tombstones for its offsets and its metadata are written; the answer waits for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    node.group_coordinator.delete_groups(group_ids, waiter, ctx.now_ms)
