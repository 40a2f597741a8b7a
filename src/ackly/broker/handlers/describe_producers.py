"""DescribeProducers (key 61, KIP-664): the idempotent producers a partition knows.

For each requested partition: every producer with state in its log (see log/producer_state.py)
with its epoch, last sequence and last timestamp, the coordinator epoch of its last marker
here, and the first offset of its ongoing transaction here (-1: none; KIP-98).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 61
MIN_VERSION = 0
MAX_VERSION = 0


def _describe(node: BrokerNode, topic: str, index: int) -> dict[str, Any]:
    try:
        p = node.leader_partition(topic, index)
    except KafkaError as exc:
        return {"partition_index": index, "error_code": exc.code, "error_message": exc.message or None,
                "active_producers": []}
    producers = [
        {
            "producer_id": e.producer_id, "producer_epoch": e.epoch, "last_sequence": e.last_seq,
            "last_timestamp": e.last_timestamp, "coordinator_epoch": e.coordinator_epoch,
            "current_txn_start_offset": e.current_txn_first_offset,
        }
        for e in p.log.producer_state.active_producers()
    ]
    return {"partition_index": index, "error_code": ErrorCode.none, "active_producers": producers}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    topics = []
    for t in request.topics:
        denied = check(node, ctx, API_KEY, "topic", t.name)
        topics.append({"name": t.name, "partitions": [
            _describe(node, t.name, int(i)) if denied is None else
            {"partition_index": int(i), "error_code": denied, "error_message": None,
             "active_producers": []}
            for i in t.partition_indexes
        ]})
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": topics}))
