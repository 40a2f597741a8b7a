"""DescribeUserScramCredentials (key 50, KIP-554): which SCRAM mechanisms each user has, and
with how many iterations; never the salt or the keys.

As Kafka's handler: no users (null or empty) lists every user with a credential; a user named
twice is DUPLICATE_RESOURCE, a user without any credential RESOURCE_NOT_FOUND, each with a
message, the other users answered normally.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.scram import SCRAM_MECHANISMS, ScramCredential
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 50
MIN_VERSION = 0
MAX_VERSION = 0


def _infos(credentials: list[ScramCredential]) -> list[dict[str, int]]:
    return [
        {"mechanism": SCRAM_MECHANISMS[c.mechanism], "iterations": c.iterations}
        for c in sorted(credentials, key=lambda c: SCRAM_MECHANISMS[c.mechanism])
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    if (denied := check_request(node, ctx, API_KEY)) is not None:
        ctx.respond(build(API_KEY, ctx.api_version, {
            "throttle_time": 0, "error_code": denied, "error_message": None, "results": []}))
        return
    by_user: dict[str, list[ScramCredential]] = {}
    for (user, _mechanism), credential in node.member.metadata.scram_credentials.items():
        by_user.setdefault(user, []).append(credential)
    results: list[dict[str, Any]] = []
    asked = [u.name for u in request.users or ()]
    if not asked:
        results = [
            {"user": user, "error_code": ErrorCode.none, "credential_infos": _infos(by_user[user])}
            for user in sorted(by_user)
        ]
    else:
        counts = Counter(asked)
        for user in dict.fromkeys(asked):
            if counts[user] > 1:
                results.append({"user": user, "error_code": ErrorCode.duplicate_resource,
                                "error_message": "Cannot describe SCRAM credentials for the same user "
                                                 "twice in a single request"})
            elif user not in by_user:
                results.append({"user": user, "error_code": ErrorCode.resource_not_found,
                                "error_message": "Attempt to describe a user credential that does not exist"})
            else:
                results.append({"user": user, "error_code": ErrorCode.none,
                                "credential_infos": _infos(by_user[user])})
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0, "error_code": ErrorCode.none, "results": results,
    }))
