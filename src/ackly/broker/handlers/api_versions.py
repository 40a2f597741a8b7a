"""ApiVersions (key 18): the versions of every API this broker implements (KIP-511), and from
v3 the feature levels it supports and has finalized (KIP-584).

`transaction.version` is finalized at level 2, as a Kafka 4 cluster has it: a client that reads
it uses transaction version 2 (KIP-890 part 2: Produce v12, EndTxn v5, TxnOffsetCommit v5,
no AddPartitionsToTxn). Level 0 stays supported for every client that does not: the version of
a transactional request says which one its client speaks (EndTxn below v5, Produce below v12
are version 0). The finalized features never change while a broker runs, so their epoch is
constant.
"""

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
FEATURES_FROM_VERSION = 3
# name -> (lowest supported level, highest supported level, finalized level)
FEATURES: dict[str, tuple[int, int, int]] = {"transaction.version": (0, 2, 2)}
FINALIZED_FEATURES_EPOCH = 0


def _features() -> dict[str, object]:
    return {
        "supported_features": [{"name": n, "min_version": lo, "max_version": hi}
                               for n, (lo, hi, _) in sorted(FEATURES.items())],
        "finalized_features_epoch": FINALIZED_FEATURES_EPOCH,
        "finalized_features": [{"name": n, "min_version_level": level, "max_version_level": level}
                               for n, (_, _, level) in sorted(FEATURES.items())],
    }


def _api_keys(specs: Iterable[ApiSpec]) -> list[dict[str, int]]:
    return [
        {"api_key": s.api_key, "min_version": s.min_version, "max_version": s.max_version}
        for s in sorted(specs, key=lambda s: s.api_key)
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    from ackly.broker.dispatch import TABLE

    fields: dict[str, object] = {
        "error_code": ErrorCode.none,
        "api_keys": _api_keys(TABLE.values()),
        "throttle_time": 0,
    }
    if ctx.api_version >= FEATURES_FROM_VERSION:
        fields.update(_features())
    ctx.respond(build(API_KEY, ctx.api_version, fields))


def respond_unsupported(ctx: RequestContext, specs: Iterable[ApiSpec]) -> None:
    """A v0 response with UNSUPPORTED_VERSION and the full table, for a version we lack."""
    response = build(API_KEY, 0, {
        "error_code": ErrorCode.unsupported_version, "api_keys": _api_keys(specs),
    })
    ctx.send([encode_response(API_KEY, 0, ctx.header.correlation_id, response)])
