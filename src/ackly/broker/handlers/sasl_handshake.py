"""SaslHandshake (key 17, KIP-43/KIP-152): the client names its SASL mechanism.

On a SASL listener the connection's session (broker/sasl.py) takes it: an enabled mechanism
starts the exchange, any other is UNSUPPORTED_SASL_MECHANISM with the enabled list, and the
connection closes after that answer (as Kafka). v1 means the tokens follow in SaslAuthenticate
requests; after v0 they follow as bare size-prefixed tokens (the shell carries them,
server/connection.py). On a listener without SASL it is ILLEGAL_SASL_STATE, as Kafka answers
it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 17
MIN_VERSION = 0
MAX_VERSION = 1


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    session = ctx.sasl
    if session is None:
        ctx.respond(build(API_KEY, ctx.api_version, {"error_code": ErrorCode.illegal_sasl_state}))
        return
    code = session.handshake(request.mechanism)
    if code is ErrorCode.none and ctx.api_version == 0:
        session.raw_tokens = True
    ctx.respond(build(API_KEY, ctx.api_version, {
        "error_code": code, "mechanisms": list(session.enabled_mechanisms),
    }))
