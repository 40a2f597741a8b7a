"""FindCoordinator (key 10): which broker coordinates a group: the leader of the group's
`__consumer_offsets` partition (Kafka's rule), from this broker's metadata view.

The first lookup creates `__consumer_offsets` (Kafka does the same); on a single broker at
once, so a client that finds its coordinator can join at once; in a cluster the answer is
COORDINATOR_NOT_AVAILABLE (retriable) until the topic and the partition's leader exist.
v4+ asks for several keys at once (KIP-699). Key type 1 (TRANSACTION) answers the leader of
the transactional id's `__transaction_state` partition, `Utils.abs(id.hashCode) % partitions`
as for groups, creating that topic on the first lookup the same way; other key types are
INVALID_REQUEST.

The coordinator's address is its endpoint on the listener the request came in on; a
coordinator without that listener is COORDINATOR_NOT_AVAILABLE (Kafka's KafkaApis does the
same when the alive broker has no node on the listener).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.groups import coordinator_of, ensure_offsets_topic
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 10
MIN_VERSION = 0
MAX_VERSION = 6

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1


def _coordinator(node: BrokerNode, ctx: RequestContext, key: str, key_type: int) -> dict[str, Any]:
    try:
        if key_type == TRANSACTION_KEY_TYPE:
            if not key:
                raise KafkaError(ErrorCode.invalid_request, "empty transactional id")
            node.transactions.ensure_topic(ctx.now_ms)
            broker = node.transactions.coordinator_of(key)
        elif key_type == GROUP_KEY_TYPE:
            ensure_offsets_topic(node, ctx.now_ms)
            broker = coordinator_of(node, key)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"unknown coordinator key type {key_type}")
        if broker is None:
            raise KafkaError(ErrorCode.coordinator_not_available, "the key's partition has no leader now")
        endpoint = broker.endpoint(ctx.listener_name)
        if endpoint is None:
            raise KafkaError(ErrorCode.coordinator_not_available,
                             f"the coordinator has no listener {ctx.listener_name}")
    except KafkaError as exc:
        return {"key": key, "error_code": exc.code, "error_message": exc.message or None,
                "node_id": -1, "host": "", "port": -1}
    return {"key": key, "error_code": ErrorCode.none, "error_message": None,
            "node_id": broker.broker_id, "host": endpoint.host, "port": endpoint.port}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    key_type = int(getattr(request, "key_type", GROUP_KEY_TYPE))
    if ctx.api_version >= 4:
        coordinators = [_coordinator(node, ctx, key, key_type) for key in request.coordinator_keys]
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "coordinators": coordinators}))
        return
    answer = _coordinator(node, ctx, request.key, key_type)
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, **answer}))
