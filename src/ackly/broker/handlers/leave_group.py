"""LeaveGroup (key 13): members leave at once instead of waiting out their session.

v0-v2 name one member; v3+ a batch, each by member id and/or group.instance.id (an empty
member id with an instance id removes that static member: KIP-345's admin removal), with an
error per member. For v0-v2 the first member's error is the answer's error, as Kafka's
LeaveGroupResponse does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 13
MIN_VERSION = 0
MAX_VERSION = 5


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    if ctx.api_version >= 3:
        leaving = [(m.member_id or "", m.group_instance_id) for m in request.members]
    else:
        leaving = [(request.member_id or "", None)]

    def fields(result: tuple[ErrorCode, list[ErrorCode]]) -> dict[str, Any]:
        top, errors = result
        if ctx.api_version < 3 and top is ErrorCode.none and errors:
            top = errors[0]
        return {
            "error_code": top,
            "members": [{"member_id": member_id, "group_instance_id": instance_id, "error_code": e}
                        for (member_id, instance_id), e in zip(leaving, errors, strict=False)],
        }

    waiter: Respond[tuple[ErrorCode, list[ErrorCode]]] = Respond(
        ctx, fields, lambda code: fields((code, [])))
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.fail(denied)
        return
    node.group_coordinator.leave_group(request.group_id, leaving, waiter, ctx.now_ms)
