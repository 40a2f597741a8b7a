"""ListGroups (key 16): every group this broker coordinates.

v4+ filters by state (KIP-518, case-insensitive, as Kafka), v5+ by type (KIP-848): "classic"
or "consumer" (a group of the ConsumerGroupHeartbeat protocol, with its own states: Empty,
Assigning, Reconciling, Stable). Groups known only by their offsets are listed with an empty
protocol type, as Kafka lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.coordinator.group_manager import GroupListing
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 16
MIN_VERSION = 0
MAX_VERSION = 5


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    states = {s.lower() for s in getattr(request, "states_filter", ()) or ()}
    types = {t.lower() for t in getattr(request, "types_filter", ()) or ()}

    # authz_rules: DESCRIBE on the cluster lists every group, else those it may DESCRIBE.
    everything = check(node, ctx, API_KEY, "cluster") is None

    def fields(listings: list[GroupListing]) -> dict[str, Any]:
        if types:
            listings = [g for g in listings if g.group_type in types]
        if not everything:
            listings = [g for g in listings if check(node, ctx, API_KEY, "group", g.group_id) is None]
        return {"error_code": ErrorCode.none, "groups": [
            {"group_id": g.group_id, "protocol_type": g.protocol_type, "group_state": g.state.value,
             "group_type": g.group_type}
            for g in sorted(listings, key=lambda g: g.group_id)
            if not states or g.state.value.lower() in states
        ]}

    waiter: Respond[list[GroupListing]] = Respond(
        ctx, fields, lambda code: {"error_code": code, "groups": []})
    node.group_coordinator.list_groups(waiter, ctx.now_ms)
