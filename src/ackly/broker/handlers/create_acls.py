"""CreateAcls (key 30): add ACL bindings to the cluster metadata (v1-3; kio has no v0).

Needs ALTER on the CLUSTER (else CLUSTER_AUTHORIZATION_FAILED for every creation), and an
authorizer (else SECURITY_DISABLED), as Kafka's handler. Each binding is checked as Kafka's
AclControlManager checks it (INVALID_REQUEST with the reason) and written as one key
(ClusterMember.put_acl); its result is answered once this broker's view shows the write, so
a client that reads the ACLs back from this broker sees them. Creating a binding that exists
succeeds and changes nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ackly.broker.acl_wire import NO_AUTHORIZER, binding_of
from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.acls import AclError
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 30
MIN_VERSION = 1
MAX_VERSION = 3


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    results: list[dict[str, Any]] = []
    refused: tuple[ErrorCode, str | None] | None = None
    if not node.authorizer.enabled:
        refused = (ErrorCode.security_disabled, NO_AUTHORIZER)
    elif (error := check_request(node, ctx, API_KEY)) is not None:
        refused = (error, None)
    todo = []
    for creation in request.creations:
        if refused is not None:
            results.append({"error_code": refused[0], "error_message": refused[1]})
            continue
        binding = binding_of(creation)
        try:
            binding.check()
        except AclError as exc:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(exc)})
            continue
        results.append({"error_code": ErrorCode.none})
        todo.append((len(results) - 1, binding))
    countdown = Countdown(len(todo), lambda: ctx.respond(
        build(API_KEY, ctx.api_version, {"throttle_time": 0, "results": results})))
    for slot, binding in todo:

        def done(code: ErrorCode, message: str | None, slot: int = slot) -> None:
            if code != ErrorCode.none:
                results[slot] = {"error_code": code, "error_message": message}
            countdown.one_done()

        node.admin.acl_change(functools.partial(node.member.put_acl, binding, ctx.now_ms),
                              ctx.now_ms, DEFAULT_TIMEOUT_MS, done)
