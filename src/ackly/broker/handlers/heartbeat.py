"""Heartbeat (key 12): a member of the current generation is alive.

Keeps the member's session; during a rebalance the answer is REBALANCE_IN_PROGRESS, which is
how members learn to rejoin. A stale generation gets ILLEGAL_GENERATION, an unknown or
expelled member UNKNOWN_MEMBER_ID, a replaced static instance FENCED_INSTANCE_ID (v3+).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 12
MIN_VERSION = 0
MAX_VERSION = 4


def _fields(code: ErrorCode) -> dict[str, Any]:
    return {"error_code": code}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    waiter = Respond(ctx, _fields, _fields)
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.fail(denied)
        return
    node.group_coordinator.heartbeat(
        request.group_id, request.member_id, getattr(request, "group_instance_id", None),
        int(request.generation_id), waiter, ctx.now_ms,
    )
