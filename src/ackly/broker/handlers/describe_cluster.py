"""DescribeCluster (key 60): the cluster id, the controller and the live brokers (KIP-700).

Mirrors a Kafka broker's answer, from this broker's metadata view: every live broker and the
broker holding the controller role (on a single broker: itself). v1+ asks for an
endpoint type (KIP-919): BROKER (1) is answered; CONTROLLER (2) is what clients send to
`bootstrap.controllers` endpoints, and a Kafka broker answers it with MISMATCHED_ENDPOINT_TYPE,
as this one does; any other value is UNSUPPORTED_ENDPOINT_TYPE. There are no fenced brokers
(v2). When asked, the cluster's authorized operations are those the principal may do (with
no authorizer: every operation a cluster resource supports, as Kafka reports). Each broker is
listed with its endpoint on the listener the request came in on; one without that listener is
left out (as Kafka's MetadataCache does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.cluster.acls import ResourceType
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 60
MIN_VERSION = 0
MAX_VERSION = 2

ENDPOINT_BROKER = 1
ENDPOINT_CONTROLLER = 2

OPERATIONS_NOT_REQUESTED = -(2**31)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    endpoint_type = int(getattr(request, "endpoint_type", ENDPOINT_BROKER))
    response: dict[str, Any] = {
        "throttle_time": 0, "endpoint_type": endpoint_type, "cluster_id": node.cluster_id,
        "controller_id": -1, "brokers": [],
        "cluster_authorized_operations": OPERATIONS_NOT_REQUESTED,
    }
    if endpoint_type == ENDPOINT_CONTROLLER:
        response.update(error_code=ErrorCode.mismatched_endpoint_type,
                        error_message="this is a broker endpoint; controllers are not listed "
                                      "separately (use endpoint type 1, brokers)")
    elif endpoint_type != ENDPOINT_BROKER:
        response.update(error_code=ErrorCode.unsupported_endpoint_type,
                        error_message=f"unknown endpoint type {endpoint_type} (1: brokers)")
    else:
        metadata = node.metadata
        response.update(
            error_code=ErrorCode.none, error_message=None,
            controller_id=node.controller_id_for_clients,
            brokers=[{"broker_id": b.broker_id, "host": e.host, "port": e.port, "rack": b.rack,
                      "is_fenced": False} for _, b in sorted(metadata.brokers.items())
                     if (e := b.endpoint(ctx.listener_name)) is not None],
        )
        if request.include_cluster_authorized_operations:
            response["cluster_authorized_operations"] = node.authorizer.authorized_operations(
                ctx, ResourceType.CLUSTER)
    ctx.respond(build(API_KEY, ctx.api_version, response))
