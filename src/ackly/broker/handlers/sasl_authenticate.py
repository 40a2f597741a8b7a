"""SaslAuthenticate (key 36, KIP-152): one step of the SASL exchange, framed as a request.

The connection's session (broker/sasl.py) runs the step against the credentials in this
broker's view of the cluster metadata. A failed step is SASL_AUTHENTICATION_FAILED with a
message, and the connection closes after the answer. v1+ answers carry the session lifetime
(KIP-368, `connections.max.reauth.ms`; 0: the session does not end). On a listener without
SASL it is ILLEGAL_SASL_STATE, as Kafka answers it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 36
MIN_VERSION = 0
MAX_VERSION = 2


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    session = ctx.sasl
    if session is None:
        ctx.respond(build(API_KEY, ctx.api_version, {
            "error_code": ErrorCode.illegal_sasl_state,
            "error_message": "SaslAuthenticate on a listener without SASL",
        }))
        return
    step = session.authenticate(bytes(request.auth_bytes), node.member.metadata.scram_credentials, ctx.now_ms)
    ctx.respond(build(API_KEY, ctx.api_version, {
        "error_code": step.error, "error_message": step.message, "auth_bytes": step.challenge,
        "session_lifetime": step.session_lifetime_ms,
    }))
