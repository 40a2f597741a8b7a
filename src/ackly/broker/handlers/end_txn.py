"""EndTxn (key 26): commit or abort a producer's transaction (KIP-98, KIP-890 part 2).

The coordinator writes PrepareCommit or PrepareAbort (the decision) and answers once that
record is committed; the markers follow (broker/txn_marker_channel.py) and then the Complete
record. A transaction that carries consumer group offsets is answered only once the marker on
its `__consumer_offsets` partition is written (bounded; `MarkerChannel.hold_for_offsets`), so
an OffsetFetch sent after the answer shows its offsets. A retried EndTxn is answered as Kafka's
TransactionCoordinator.endTransaction does: NONE once the same outcome is complete,
CONCURRENT_TRANSACTIONS while it is being completed, INVALID_TXN_STATE for the other outcome
or without a transaction. PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2 (KIP-588).

v5 is transaction version 2 (KIP-890 part 2): the decision bumps the producer epoch, and the
answer carries the producer id and epoch the client goes on with (a new producer id at epoch 0
when the epoch ran out); an EndTxn with the epoch before the last bump is a retry, any other
is PRODUCER_FENCED. Versions 0-4 are version 0 (Kafka: `version > 4` is TV2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond
from ackly.broker.transactions import fenced_for_version
from ackly.coordinator.transaction_metadata import TV_0, TV_2
from ackly.coordinator.transaction_state import EndTxnResult
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 26
MIN_VERSION = 0
MAX_VERSION = 5
TV2_FROM_VERSION = 5


class _HeldForOffsets:
    """Passes a successful answer on once the marker channel lets it go."""

    def __init__(self, node: BrokerNode, transactional_id: str, waiter: Respond[EndTxnResult]) -> None:
        self.node = node
        self.transactional_id = transactional_id
        self.waiter = waiter

    def complete(self, result: EndTxnResult) -> None:
        if result.error != ErrorCode.none:
            self.waiter.complete(result)
            return
        self.node.transactions.markers.hold_for_offsets(
            self.transactional_id, lambda: self.waiter.complete(result))

    def fail(self, code: ErrorCode) -> None:
        self.waiter.fail(code)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version

    def answer(result: EndTxnResult) -> dict[str, Any]:
        fields: dict[str, Any] = {"error_code": fenced_for_version(result.error, version)}
        if version >= TV2_FROM_VERSION:
            fields.update(producer_id=result.producer_id, producer_epoch=result.producer_epoch)
        return fields

    waiter: Respond[EndTxnResult] = Respond(ctx, answer, lambda code: answer(EndTxnResult(code)))
    denied = check(node, ctx, API_KEY, "transactional", request.transactional_id)
    if denied is not None:
        waiter.fail(denied)  # the authorizer's refusal comes first, as in Kafka
        return
    coordinator = node.transactions.coordinator
    if not coordinator.loaded:
        waiter.fail(ErrorCode.not_coordinator)
        return
    transaction_version = TV_2 if version >= TV2_FROM_VERSION else TV_0
    coordinator.end_transaction_versioned(
        request.transactional_id, int(request.producer_id), int(request.producer_epoch),
        bool(request.committed), transaction_version,
        _HeldForOffsets(node, request.transactional_id, waiter), ctx.now_ms)
