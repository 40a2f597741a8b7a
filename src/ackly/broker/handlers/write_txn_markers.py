"""WriteTxnMarkers (key 27, v1 only): a transaction coordinator's markers for partitions led here.

A thin wrapper over `broker/txn_markers.append_markers` (see it for what each partition's
answer means): every marker of the request is appended to its partitions, and the response
leaves once all of them are committed (below HW) or failed, one code per partition, in the
request's order. Only v1 is advertised: v0 differs in nothing but its non-flexible encoding,
and v2 (KIP-890 part 2's transaction version) is not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.txn_markers import TxnMarker, append_markers
from ackly.errors import ErrorCode
from ackly.protocol.messages import build
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 27
MIN_VERSION = 1
MAX_VERSION = 2  # v2 carries the marker's transaction version (KIP-890 part 2)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    markers = [
        TxnMarker(
            producer_id=int(m.producer_id),
            producer_epoch=int(m.producer_epoch),
            committed=bool(m.transaction_result),
            coordinator_epoch=int(m.coordinator_epoch),
            partitions=tuple(
                TopicPartition(t.name, int(i)) for t in m.topics for i in t.partition_indexes
            ),
            transaction_version=int(getattr(m, "transaction_version", 0)),
        )
        for m in request.markers
    ]
    outcomes: list[dict[TopicPartition, ErrorCode] | None] = [None] * len(markers)
    # authz_rules: only brokers (CLUSTER_ACTION) write markers; a client that could would
    # commit or abort other producers' transactions.
    denied = check(node, ctx, API_KEY, "request")
    if denied is not None:
        outcomes = [{tp: denied for tp in m.partitions} for m in markers]
        markers = []
    remaining = [len(markers)]

    def respond() -> None:
        results = []
        for m, codes in zip(request.markers, outcomes, strict=True):
            assert codes is not None
            results.append({
                "producer_id": int(m.producer_id),
                "topics": [
                    {"name": t.name, "partitions": [
                        {"partition_index": int(i),
                         "error_code": codes.get(TopicPartition(t.name, int(i)), ErrorCode.none)}
                        for i in t.partition_indexes
                    ]}
                    for t in m.topics
                ],
            })
        ctx.respond(build(API_KEY, ctx.api_version, {"markers": results}))

    if not markers:
        respond()
        return
    # One append per marker: two markers may name the same partition (two producers), and
    # each needs its own answer there.
    for i, marker in enumerate(markers):

        def done(codes: dict[TopicPartition, ErrorCode], i: int = i) -> None:
            outcomes[i] = dict(codes)
            remaining[0] -= 1
            if remaining[0] == 0:
                respond()

        append_markers(node, [marker], ctx.now_ms, done)
