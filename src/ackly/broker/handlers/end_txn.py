"""EndTxn (key 26): commit or abort a producer's transaction (KIP-98).

The coordinator writes PrepareCommit or PrepareAbort (the decision) and answers once that
record is committed; the markers follow (broker/txn_marker_channel.py) and then the Complete
record. A retried EndTxn is answered as Kafka's TransactionCoordinator.endTransaction does:
NONE once the same outcome is complete, CONCURRENT_TRANSACTIONS while it is being completed,
INVALID_TXN_STATE for the other outcome or without a transaction. PRODUCER_FENCED is
INVALID_PRODUCER_EPOCH before v2 (KIP-588). v4+ is transaction version 2, not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.transactions import start_error_code_request

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 26
MIN_VERSION = 0
MAX_VERSION = 3


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    denied = check(node, ctx, API_KEY, "transactional", request.transactional_id)
    waiter = start_error_code_request(node, ctx, denied)
    if waiter is None:
        return
    coordinator = node.transactions.coordinator
    coordinator.end_transaction(request.transactional_id, int(request.producer_id), int(request.producer_epoch),
                                bool(request.committed), waiter, ctx.now_ms)
