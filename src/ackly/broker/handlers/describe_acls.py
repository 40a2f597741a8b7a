"""DescribeAcls (key 29): the ACL bindings a filter selects, grouped by resource pattern (v1-3).

Needs DESCRIBE on the CLUSTER (else CLUSTER_AUTHORIZATION_FAILED) and an authorizer (else
SECURITY_DISABLED), as Kafka's handler. Answered from this broker's view of the metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.acl_wire import NO_AUTHORIZER, entry_fields, filter_of
from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.acls import AclBinding, AclError
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 29
MIN_VERSION = 1
MAX_VERSION = 3


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    def answer(code: ErrorCode, message: str | None, resources: list[dict[str, Any]]) -> None:
        ctx.respond(build(API_KEY, ctx.api_version, {
            "throttle_time": 0, "error_code": code, "error_message": message, "resources": resources,
        }))

    if not node.authorizer.enabled:
        answer(ErrorCode.security_disabled, NO_AUTHORIZER, [])
        return
    if (error := check_request(node, ctx, API_KEY)) is not None:
        answer(error, None, [])
        return
    acl_filter = filter_of(request)
    try:
        acl_filter.check()
    except AclError as exc:
        answer(ErrorCode.invalid_request, str(exc), [])
        return
    groups: dict[tuple[int, str, int], list[AclBinding]] = {}
    for binding in sorted(node.metadata.acls.values()):
        if acl_filter.matches(binding):
            key = (int(binding.resource_type), binding.resource_name, int(binding.pattern_type))
            groups.setdefault(key, []).append(binding)
    answer(ErrorCode.none, None, [
        {"resource_type": rtype, "resource_name": name, "pattern_type": ptype,
         "acls": [entry_fields(b) for b in bindings]}
        for (rtype, name, ptype), bindings in groups.items()
    ])
