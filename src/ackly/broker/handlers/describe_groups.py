"""DescribeGroups (key 15): state, protocol and members of classic groups.

Member metadata and assignments are shown only for a Stable group, as Kafka does. A group
that does not exist is described as Dead with no error before v6, and as GROUP_ID_NOT_FOUND
from v6 (KIP-1043). With no authorizer every operation is allowed: when asked (v3+), a group's
authorized operations are all those a GROUP resource supports (READ, DELETE, DESCRIBE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.cluster.acls import ResourceType
from ackly.coordinator.group import GroupDescription
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 15
MIN_VERSION = 0
MAX_VERSION = 6

OPERATIONS_NOT_REQUESTED = -(2**31)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    group_ids = list(request.groups)
    with_operations = bool(getattr(request, "include_authorized_operations", False))

    def operations_of(group_id: str) -> int:
        """What the principal may do to the group (every group operation without an authorizer)."""
        if not with_operations:
            return OPERATIONS_NOT_REQUESTED
        return node.authorizer.authorized_operations(ctx, ResourceType.GROUP, group_id)

    def group(group_id: str, d: GroupDescription | None, code: ErrorCode = ErrorCode.none
              ) -> dict[str, Any]:
        if d is None:
            if code is ErrorCode.none and version >= 6:
                code = ErrorCode.group_id_not_found
            return {"error_code": code,
                    "error_message": f"Group {group_id} not found." if version >= 6 else None,
                    "group_id": group_id, "group_state": "Dead", "protocol_type": "",
                    "protocol_data": "", "members": [], "authorized_operations": operations_of(group_id)}
        return {
            "error_code": ErrorCode.none, "error_message": None, "group_id": group_id,
            "group_state": d.state.value, "protocol_type": d.protocol_type,
            "protocol_data": d.protocol_data, "authorized_operations": operations_of(group_id),
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                         "client_id": m.client_id, "client_host": m.client_host,
                         "member_metadata": m.metadata, "member_assignment": m.assignment}
                        for m in d.members],
        }

    def fields(found: list[tuple[str, GroupDescription | None]]) -> dict[str, Any]:
        return {"groups": [group(g, d) for g, d in found]}

    def failed(code: ErrorCode) -> dict[str, Any]:
        groups = [group(g, None, code) for g in group_ids]
        for g in groups:
            g["error_message"] = None
        return {"groups": groups}

    # authz_rules: DESCRIBE on each group; a refused group is answered without being asked.
    refused = {g: code for g in group_ids if (code := check(node, ctx, API_KEY, "group", g)) is not None}

    def merged(found: list[tuple[str, GroupDescription | None]]) -> dict[str, Any]:
        described = dict(found)
        return {"groups": [group(g, None, refused[g]) if g in refused else group(g, described.get(g))
                           for g in group_ids]}

    waiter: Respond[list[tuple[str, GroupDescription | None]]] = Respond(
        ctx, merged if refused else fields, failed)
    allowed = [g for g in group_ids if g not in refused]
    if refused and not allowed:
        waiter.complete([])
        return
    node.group_coordinator.describe_groups(allowed, waiter, ctx.now_ms)
