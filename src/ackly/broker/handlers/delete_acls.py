"""DeleteAcls (key 31): remove the ACL bindings each filter selects (v1-3).

Needs ALTER on the CLUSTER (else CLUSTER_AUTHORIZATION_FAILED for every filter) and an
authorizer (else SECURITY_DISABLED), as Kafka's handler. Each filter's result lists the
bindings it matched in this broker's view; a binding two filters match is deleted once and
listed under both. Answered once the view shows every deletion (or the binding's own error).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ackly.broker.acl_wire import NO_AUTHORIZER, entry_fields, filter_of
from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.acls import AclBinding, AclError
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 31
MIN_VERSION = 1
MAX_VERSION = 3


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    refused: tuple[ErrorCode, str | None] | None = None
    if not node.authorizer.enabled:
        refused = (ErrorCode.security_disabled, NO_AUTHORIZER)
    elif (error := check_request(node, ctx, API_KEY)) is not None:
        refused = (error, None)
    results: list[dict[str, Any]] = []
    matched: list[list[AclBinding]] = []
    outcome: dict[AclBinding, tuple[ErrorCode, str | None]] = {}
    for wire_filter in request.filters:
        matched.append([])
        if refused is not None:
            results.append({"error_code": refused[0], "error_message": refused[1], "matching_acls": []})
            continue
        acl_filter = filter_of(wire_filter)
        try:
            acl_filter.check()
        except AclError as exc:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(exc),
                            "matching_acls": []})
            continue
        results.append({"error_code": ErrorCode.none, "matching_acls": []})
        for binding in sorted(node.metadata.acls.values()):
            if acl_filter.matches(binding):
                matched[-1].append(binding)
                outcome[binding] = (ErrorCode.none, None)

    def answer() -> None:
        for result, bindings in zip(results, matched, strict=True):
            result["matching_acls"] = [
                {"error_code": outcome[b][0], "error_message": outcome[b][1],
                 "resource_type": int(b.resource_type), "resource_name": b.resource_name,
                 "pattern_type": int(b.pattern_type), **entry_fields(b)}
                for b in bindings
            ]
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "filter_results": results}))

    countdown = Countdown(len(outcome), answer)
    for binding in list(outcome):

        def done(code: ErrorCode, message: str | None, binding: AclBinding = binding) -> None:
            outcome[binding] = (code, message)
            countdown.one_done()

        node.admin.acl_change(functools.partial(node.member.delete_acl, binding, ctx.now_ms),
                              ctx.now_ms, DEFAULT_TIMEOUT_MS, done)
