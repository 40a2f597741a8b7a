"""ApiVersions (key 18): the versions of every API this broker implements (KIP-511)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode
from ackly.protocol.messages import build, encode_response

if TYPE_CHECKING:
    from ackly.broker.dispatch import ApiSpec
    from ackly.broker.node import BrokerNode

API_KEY = 18
MIN_VERSION = 0
MAX_VERSION = 4


def _api_keys(specs: Iterable[ApiSpec]) -> list[dict[str, int]]:
    return [
        {"api_key": s.api_key, "min_version": s.min_version, "max_version": s.max_version}
        for s in sorted(specs, key=lambda s: s.api_key)
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    from ackly.broker.dispatch import TABLE

    ctx.respond(build(API_KEY, ctx.api_version, {
        "error_code": ErrorCode.none,
        "api_keys": _api_keys(TABLE.values()),
        "throttle_time": 0,
    }))


def respond_unsupported(ctx: RequestContext, specs: Iterable[ApiSpec]) -> None:
    """A v0 response with UNSUPPORTED_VERSION and the full table, for a version we lack."""
    response = build(API_KEY, 0, {
        "error_code": ErrorCode.unsupported_version, "api_keys": _api_keys(specs),
    })
    ctx.send([encode_response(API_KEY, 0, ctx.header.correlation_id, response)])
