"""ConsumerGroupDescribe (key 69): the KIP-848 consumer groups, member by member.

Each group as its committed records show it: state (Empty, Assigning, Reconciling, Stable),
group and assignment epochs, the assignor the target was computed with, and per member its
epoch, subscription, current assignment and target assignment, partitions named by topic id
and name (a topic deleted since shows an empty name). A group id that is not a consumer group
(a classic group, or none) answers GROUP_ID_NOT_FOUND, as Kafka does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.coordinator.consumer_group import ConsumerGroup
from ackly.coordinator.consumer_group_records import Assignment
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 69
MIN_VERSION = 0
MAX_VERSION = 1

# Kafka's "unknown" for authorized operations not asked for.
_NOT_ASKED = -(2**31)

Described = list[tuple[str, ErrorCode, ConsumerGroup | None]]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    names = {state.topic_id: name for name, state in node.topics.items()}

    def assignment(a: Assignment) -> dict[str, Any]:
        return {"topic_partitions": [
            {"topic_id": t, "topic_name": names.get(t, ""), "partitions": sorted(ps)}
            for t, ps in sorted(a.items(), key=lambda i: i[0].bytes)]}

    def group_fields(group_id: str, code: ErrorCode, group: ConsumerGroup | None) -> dict[str, Any]:
        if group is None or code is not ErrorCode.none:
            message = f"Group {group_id} not found." if code is ErrorCode.group_id_not_found else None
            return {"error_code": code, "error_message": message, "group_id": group_id,
                    "group_state": "Dead", "group_epoch": -1, "assignment_epoch": -1, "assignor_name": "",
                    "members": [], "authorized_operations": _NOT_ASKED}
        return {
            "error_code": ErrorCode.none, "group_id": group_id, "group_state": group.state.value,
            "group_epoch": group.group_epoch, "assignment_epoch": group.assignment_epoch,
            "assignor_name": group.preferred_assignor(), "authorized_operations": _NOT_ASKED,
            "members": [{
                "member_id": m.member_id, "instance_id": m.instance_id, "rack_id": m.rack_id,
                "member_epoch": m.member_epoch, "client_id": m.client_id, "client_host": m.client_host,
                "subscribed_topic_names": list(m.subscribed_topic_names),
                "subscribed_topic_regex": m.subscribed_topic_regex,
                "assignment": assignment(m.assigned),
                "target_assignment": assignment(group.target.get(m.member_id, {})),
                "member_type": 1,  # the consumer protocol (Kafka's MemberType: 0 classic, 1 consumer)
            } for m in sorted(group.members.values(), key=lambda m: m.member_id)],
        }

    group_ids = [str(g) for g in request.group_ids]
    refused = {g: code for g in group_ids if (code := check(node, ctx, API_KEY, "group", g)) is not None}
    asked = [g for g in group_ids if g not in refused]

    def fields(described: Described) -> dict[str, Any]:
        by_id = {g: (code, group) for g, code, group in described}
        out = []
        for g in group_ids:
            if g in refused:
                out.append(group_fields(g, refused[g], None))
            else:
                code, group = by_id[g]
                out.append(group_fields(g, code, group))
        return {"groups": out}

    def failed(code: ErrorCode) -> dict[str, Any]:
        return {"groups": [group_fields(g, refused.get(g, code), None) for g in group_ids]}

    waiter: Respond[Described] = Respond(ctx, fields, failed)
    if not asked:
        waiter.complete([])
        return
    node.group_coordinator.consumer_group_describe(asked, waiter, ctx.now_ms)
