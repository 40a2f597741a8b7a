"""SyncGroup (key 14): the leader hands in the assignment; every member gets its own.

A follower's answer waits until the leader's assignment is written to `__consumer_offsets`
and committed; the leader's too. v3+ carries group.instance.id (KIP-345); v5+ names the
protocol type and name, which must match the group's (INCONSISTENT_GROUP_PROTOCOL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.coordinator.group import SyncResult

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 14
MIN_VERSION = 0
MAX_VERSION = 5


def _fields(r: SyncResult) -> dict[str, Any]:
    return {"error_code": r.error, "protocol_type": r.protocol_type, "protocol_name": r.protocol_name,
            "assignment": r.assignment}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    waiter: Respond[SyncResult] = Respond(ctx, _fields, lambda code: _fields(SyncResult(code)))
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.fail(denied)
        return
    assignments = {a.member_id: bytes(a.assignment) for a in request.assignments}
    node.group_coordinator.sync_group(
        request.group_id, int(request.generation_id), request.member_id,
        getattr(request, "group_instance_id", None), getattr(request, "protocol_type", None),
        getattr(request, "protocol_name", None), assignments, waiter, ctx.now_ms,
    )
