"""DescribeTransactions (key 65, KIP-664): the state of transactional ids this broker
coordinates: state, producer id and epoch, timeout, start time and partitions.

An id coordinated elsewhere is NOT_COORDINATOR, an unknown one TRANSACTIONAL_ID_NOT_FOUND
(Kafka's TransactionCoordinator.handleDescribeTransactions; its other fields keep the schema's
defaults). A transaction that never started has start time -1, as Kafka answers.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.coordinator.transaction_state import TxnDescription
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 65
MIN_VERSION = 0
MAX_VERSION = 0

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _time(ms: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=ms)


def _state(node: BrokerNode, transactional_id: str) -> dict[str, Any]:
    coordinator = node.transactions.coordinator
    found = coordinator.describe(transactional_id) if coordinator.loaded else ErrorCode.not_coordinator
    if not isinstance(found, TxnDescription):
        return {"error_code": found, "transactional_id": transactional_id, "transaction_state": "",
                "transaction_timeout": 0, "transaction_start_time": _time(0), "producer_id": -1,
                "producer_epoch": -1, "topics": []}
    topics: dict[str, list[int]] = {}
    for tp in sorted(found.partitions):
        topics.setdefault(tp.topic, []).append(tp.partition)
    return {
        "error_code": ErrorCode.none, "transactional_id": transactional_id,
        "transaction_state": found.state.kafka_name, "transaction_timeout": found.timeout_ms,
        "transaction_start_time": _time(found.start_ms), "producer_id": found.producer_id,
        "producer_epoch": found.producer_epoch,
        "topics": [{"topic": t, "partitions": ids} for t, ids in topics.items()],
    }


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0,
        "transaction_states": [
            _state(node, tid) if (denied := check(node, ctx, API_KEY, "transactional", tid)) is None
            else {"error_code": denied, "transactional_id": tid, "transaction_state": "",
                  "transaction_timeout": 0, "transaction_start_time": _time(0), "producer_id": -1,
                  "producer_epoch": -1, "topics": []}
            for tid in request.transactional_ids
        ],
    }))
