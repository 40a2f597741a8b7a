"""DescribeTopicPartitions (key 75): leader, ISR, ELR and last known ELR of each partition
(KIP-966), a page at a time.

Mirrors Kafka's DescribeTopicPartitionsRequestHandler and KRaftMetadataCache's
describeTopicResponse, from this broker's metadata view:
- no topics named: every topic the principal may DESCRIBE; named topics: those, an unknown one
  answered UNKNOWN_TOPIC_OR_PARTITION, an illegal name INVALID_TOPIC_EXCEPTION, one the
  principal may not DESCRIBE TOPIC_AUTHORIZATION_FAILED (without partitions);
- topics in name order, from the cursor's topic and, in it, the cursor's partition on; at most
  ResponsePartitionLimit partitions (capped by max.request.partition.size.limit); when the
  limit cuts the listing short, NextCursor names the first partition left out;
- a cursor naming a topic that was not asked for, or a limit below 1, is INVALID_REQUEST on
  every topic asked (Kafka refuses the request as a whole);
- a partition without a leader is LEADER_NOT_AVAILABLE with leader -1; offline replicas are
  those whose broker is not registered; each topic carries the operations the principal may do
  on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.cluster.acls import ResourceType
from ackly.cluster.metadata import NO_LEADER, PartitionState
from ackly.cluster.topics import topic_name_problem
from ackly.coordinator.group_coordinator import INTERNAL_TOPICS
from ackly.errors import ErrorCode
from ackly.protocol.messages import build
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

API_KEY = 75
MIN_VERSION = 0
MAX_VERSION = 0


def _topic(name: str | None, code: ErrorCode, topic_id: Any = None, partitions: list[Any] | None = None,
           operations: int = -(2**31), internal: bool = False) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic_id, "is_internal": internal,
            "partitions": partitions or [], "topic_authorized_operations": operations}


def _partition(node: BrokerNode, index: int, state: PartitionState | None, assigned: tuple[int, ...]) -> dict[str, Any]:
    if state is None:  # the controller has not created its state yet
        return {"error_code": ErrorCode.leader_not_available, "partition_index": index, "leader_id": NO_LEADER,
                "leader_epoch": -1, "replica_nodes": list(assigned), "isr_nodes": [],
                "eligible_leader_replicas": [], "last_known_elr": [], "offline_replicas": []}
    live = node.metadata.brokers
    return {
        "error_code": ErrorCode.none if state.leader != NO_LEADER else ErrorCode.leader_not_available,
        "partition_index": index, "leader_id": state.leader, "leader_epoch": state.leader_epoch,
        "replica_nodes": list(state.replicas), "isr_nodes": list(state.isr),
        "eligible_leader_replicas": list(state.elr), "last_known_elr": list(state.last_known_elr),
        "offline_replicas": [b for b in state.replicas if b not in live],
    }


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    asked = [t.name for t in request.topics]
    cursor = request.cursor
    limit = min(int(request.response_partition_limit), int(node.config.get("max.request.partition.size.limit")))
    problem = None
    if limit < 1:
        problem = f"ResponsePartitionLimit must be at least 1, not {int(request.response_partition_limit)}"
    elif cursor is not None and asked and cursor.topic_name not in asked:
        problem = f"the cursor's topic {cursor.topic_name!r} is not among the topics asked for"
    elif cursor is not None and int(cursor.partition_index) < 0:
        problem = f"the cursor's partition index {int(cursor.partition_index)} is negative"
    if problem is not None:
        invalid = [_topic(name, ErrorCode.invalid_request) for name in asked]
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": invalid, "next_cursor": None}))
        return

    first_topic = cursor.topic_name if cursor is not None else ""
    names = sorted(set(asked)) if asked else sorted(node.topics)
    refused: list[dict[str, Any]] = []
    listed: list[str] = []
    for name in names:
        if name < first_topic:
            continue
        if asked:
            if topic_name_problem(name) is not None:
                refused.append(_topic(name, ErrorCode.invalid_topic_exception))
                continue
            if (denied := check(node, ctx, API_KEY, "topic", name)) is not None:
                refused.append(_topic(name, denied))  # named but not describable (Kafka)
                continue
            if name not in node.topics:
                refused.append(_topic(name, ErrorCode.unknown_topic_or_partition))
                continue
        elif check(node, ctx, API_KEY, "topic", name) is not None:
            continue  # a listing leaves out what the principal may not DESCRIBE
        listed.append(name)

    topics: list[dict[str, Any]] = []
    next_cursor: dict[str, Any] | None = None
    remaining = limit
    for name in listed:
        state: TopicState = node.topics[name]
        start = int(cursor.partition_index) if cursor is not None and name == first_topic else 0
        indexes = [i for i in state.info.partition_ids() if i >= start]
        if remaining == 0:
            next_cursor = {"topic_name": name, "partition_index": start}
            break
        page = indexes[:remaining]
        remaining -= len(page)
        partitions = [
            _partition(node, i, node.metadata.partition(TopicPartition(name, i)), state.info.assignment[i])
            for i in page
        ]
        operations = node.authorizer.authorized_operations(ctx, ResourceType.TOPIC, name)
        topics.append(_topic(name, ErrorCode.none, state.topic_id, partitions, operations,
                             name in INTERNAL_TOPICS))
        if len(page) < len(indexes):
            next_cursor = {"topic_name": name, "partition_index": indexes[len(page)]}
            break
    topics.extend(refused)
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": topics, "next_cursor": next_cursor}))
