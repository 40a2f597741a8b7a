"""AddOffsetsToTxn (key 25): a consumer group's offsets join a producer's transaction (KIP-98).

The coordinator adds the group's `__consumer_offsets` partition to the transaction (Kafka's
KafkaApis.handleAddOffsetsToTxnRequest: `partitionFor(groupId)`), so the EndTxn markers reach
it and the offsets sent with TxnOffsetCommit become visible with the transaction commit or are
dropped by its abort. PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2 (KIP-588). v4 is
transaction version 2, not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.transactions import start_error_code_request
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, partition_for
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 25
MIN_VERSION = 0
MAX_VERSION = 3


def offsets_partition(node: BrokerNode, group_id: str) -> TopicPartition:
    """The group's `__consumer_offsets` partition (by the configured count until the topic
    exists, as Kafka's GroupCoordinator.partitionFor)."""
    state = node.topics.get(OFFSETS_TOPIC)
    count = state.partition_count if state is not None else int(node.config.get("offsets.topic.num.partitions"))
    return TopicPartition(OFFSETS_TOPIC, partition_for(group_id, count))


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    denied = check(node, ctx, API_KEY, "transactional", request.transactional_id)
    if denied is None:
        denied = check(node, ctx, API_KEY, "group", request.group_id)
    waiter = start_error_code_request(node, ctx, denied)
    if waiter is None:
        return
    coordinator = node.transactions.coordinator
    coordinator.add_partitions(request.transactional_id, int(request.producer_id), int(request.producer_epoch),
                               [offsets_partition(node, request.group_id)], waiter, ctx.now_ms)
