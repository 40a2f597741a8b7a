"""JoinGroup (key 11): join a classic group, or rejoin it for the next rebalance.

The answer waits for the join phase to end (coordinator/group.py): every member has rejoined,
or the rebalance timeout passed. Checks done here, before the group sees the request, in
Kafka's order: a non-empty group id (INVALID_GROUP_ID) and a session timeout within
group.min/max.session.timeout.ms (INVALID_SESSION_TIMEOUT). v0 has no rebalance timeout: the
session timeout stands in, as in Kafka. v4+ gets MEMBER_ID_REQUIRED on a first join (KIP-394);
v5+ carries group.instance.id (KIP-345); v9+ can be told to skip the assignment (KIP-814).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond, client_host, ensure_offsets_topic, ms
from ackly.coordinator.group import JoinRequest, JoinResult
from ackly.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 11
MIN_VERSION = 0
MAX_VERSION = 9


def _fields(r: JoinResult) -> dict[str, Any]:
    return {
        "error_code": r.error, "generation_id": r.generation, "protocol_type": r.protocol_type,
        "protocol_name": r.protocol_name, "leader": r.leader, "skip_assignment": r.skip_assignment,
        "member_id": r.member_id,
        "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                     "metadata": m.metadata} for m in r.members],
    }


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    member_id = request.member_id or ""
    waiter: Respond[JoinResult] = Respond(
        ctx, _fields, lambda code: _fields(JoinResult(code, member_id)))
    session_timeout_ms = ms(request.session_timeout)
    config = node.group_coordinator.config
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.complete(JoinResult(denied, member_id))
        return
    if not request.group_id:
        waiter.complete(JoinResult(ErrorCode.invalid_group_id, member_id))
        return
    if not config.min_session_timeout_ms <= session_timeout_ms <= config.max_session_timeout_ms:
        waiter.complete(JoinResult(ErrorCode.invalid_session_timeout, member_id))
        return
    try:
        coordinator = ensure_offsets_topic(node, ctx.now_ms)
    except KafkaError as exc:
        waiter.fail(exc.code)
        return
    join = JoinRequest(
        member_id=member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        protocol_type=request.protocol_type,
        protocols=tuple((p.name, bytes(p.metadata)) for p in request.protocols),
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=ms(request.rebalance_timeout) if version >= 1 else session_timeout_ms,
        client_id=ctx.header.client_id or "",
        client_host=client_host(ctx),
        require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9,
    )
    coordinator.join_group(request.group_id, join, waiter, ctx.now_ms)
