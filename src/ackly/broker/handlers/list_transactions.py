"""ListTransactions (key 66, KIP-664): the transactions this broker coordinates, filtered by
state (Kafka's names; unknown ones are echoed in `unknown_state_filters`), by producer id, and
from v1 by duration (KIP-994: running for at least that many ms). A client lists the whole
cluster by asking every broker. v2 (KIP-1152 pattern filter) is not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.coordinator.transaction_metadata import TxnState
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 66
MIN_VERSION = 0
MAX_VERSION = 1


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    parsed = [(n, TxnState.by_kafka_name(n)) for n in request.state_filters or ()]
    known = frozenset(s for _, s in parsed if s is not None)
    unknown = [n for n, s in parsed if s is None]
    pids = frozenset(int(p) for p in request.producer_id_filters or ())
    duration_ms = int(getattr(request, "duration_filter", -1))
    coordinator = node.transactions.coordinator
    listed = []
    # Only unknown states asked for: nothing matches (an empty filter would match everything).
    if coordinator.loaded and not coordinator.loading and not (parsed and not known):
        listed = coordinator.list_transactions(known or None, pids or None, duration_ms, ctx.now_ms)
    # Kafka's listTransactionStates: the ids of a shard still loading cannot be listed yet.
    error = ErrorCode.coordinator_load_in_progress if coordinator.loading else ErrorCode.none
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0, "error_code": error, "unknown_state_filters": unknown,
        "transaction_states": [
            {"transactional_id": t.transactional_id, "producer_id": t.producer_id,
             "transaction_state": t.state.kafka_name}
            for t in listed
            # authz_rules: only the transactional ids the principal may DESCRIBE.
            if check(node, ctx, API_KEY, "transactional", t.transactional_id) is None
        ],
    }))
