"""ConsumerGroupHeartbeat (key 68): a member of a KIP-848 consumer group joins, stays, leaves.

The coordinator decides (coordinator/consumer_group.py); checked here first, as Kafka's
GroupMetadataManager validates the request: a group id (INVALID_REQUEST for an empty one), a
member id (v1: chosen by the client, KIP-1082; v0: generated here on the first heartbeat, as
Kafka 3.7 did), an epoch of 0 (join), -1 (leave), -2 (a static member's temporary leave, which
needs an instance id) or a positive one, and on joining a rebalance timeout and a subscription
(topic names or a regular expression, v1: resolved here against the topics, RE2 syntax, see
coordinator/topic_regex.py; an invalid one is INVALID_REGULAR_EXPRESSION). Partitions travel
by topic id, resolved against this broker's metadata. The answer waits until the records the heartbeat wrote are
committed.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond, client_host, ensure_offsets_topic, ms, topics_view
from ackly.coordinator.consumer_group import HeartbeatRequest, HeartbeatResult
from ackly.coordinator.consumer_group_records import Assignment
from ackly.errors import ErrorCode, KafkaError

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 68
MIN_VERSION = 0
MAX_VERSION = 1


def _fields(r: HeartbeatResult) -> dict[str, Any]:
    assignment = None
    if r.assignment is not None:
        assignment = {"topic_partitions": [
            {"topic_id": topic_id, "partitions": sorted(parts)}
            for topic_id, parts in sorted(r.assignment.items(), key=lambda i: i[0].bytes)]}
    return {"error_code": r.error, "error_message": r.message,
            "member_id": r.member_id or None, "member_epoch": r.member_epoch,
            "heartbeat_interval": r.heartbeat_interval_ms, "assignment": assignment}


def _owned(topic_partitions: Any) -> Assignment | None:
    if topic_partitions is None:
        return None
    owned: dict[uuid.UUID, frozenset[int]] = {}
    for tp in topic_partitions:
        if tp.topic_id is not None and tp.partitions:
            owned[tp.topic_id] = owned.get(tp.topic_id, frozenset()) | frozenset(int(p) for p in tp.partitions)
    return owned


def _invalid(request: Any, version: int) -> str | None:
    """Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid, as a message (None: valid)."""
    epoch = int(request.member_epoch)
    if not request.group_id:
        return "GroupId can't be empty."
    if version >= 1 and not request.member_id:
        return "MemberId can't be empty."
    if request.instance_id is not None and not request.instance_id:
        return "InstanceId can't be empty."
    if request.rack_id is not None and not request.rack_id:
        return "RackId can't be empty."
    if epoch == 0:
        if ms(request.rebalance_timeout) == -1:
            return "RebalanceTimeoutMs must be provided in first request."
        if request.topic_partitions is None or len(request.topic_partitions) > 0:
            return "TopicPartitions must be empty when (re-)joining."
        if request.subscribed_topic_names is None and not getattr(request, "subscribed_topic_regex", None):
            return "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
    elif epoch == -2:
        if request.instance_id is None:
            return "InstanceId can't be null when MemberEpoch is -2."
    elif epoch < -2:
        return f"MemberEpoch is {epoch}, which is invalid."
    return None


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    member_id = request.member_id or ""
    epoch = int(request.member_epoch)

    def failed(code: ErrorCode) -> dict[str, Any]:
        return _fields(HeartbeatResult(code, member_id, epoch))

    waiter: Respond[HeartbeatResult] = Respond(ctx, _fields, failed)
    if (denied := check(node, ctx, API_KEY, "group", request.group_id)) is not None:
        waiter.fail(denied)
        return
    if (message := _invalid(request, version)) is not None:
        waiter.complete(HeartbeatResult(ErrorCode.invalid_request, member_id, epoch, message=message))
        return
    regex = getattr(request, "subscribed_topic_regex", None) or None  # v1; librdkafka sends "" for none
    if version == 0 and not member_id and epoch == 0:
        member_id = str(uuid.UUID(int=node.rng.getrandbits(128), version=4))
    try:
        coordinator = ensure_offsets_topic(node, ctx.now_ms)
    except KafkaError as exc:
        waiter.fail(exc.code)
        return
    rebalance_timeout_ms = ms(request.rebalance_timeout)
    req = HeartbeatRequest(
        member_id=member_id, member_epoch=epoch, instance_id=request.instance_id,
        rack_id=request.rack_id, rebalance_timeout_ms=rebalance_timeout_ms,
        subscribed_topic_names=None if request.subscribed_topic_names is None
        else tuple(str(t) for t in request.subscribed_topic_names),
        subscribed_topic_regex=regex,
        server_assignor=request.server_assignor, owned=_owned(request.topic_partitions),
        client_id=ctx.header.client_id or "", client_host=client_host(ctx),
    )
    coordinator.consumer_group_heartbeat(request.group_id, req, topics_view(node), waiter, ctx.now_ms)
