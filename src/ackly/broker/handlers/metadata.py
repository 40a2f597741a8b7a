"""Metadata (key 3): brokers, topics, partition leaders; creates topics on demand.

Everything comes from this broker's view of the cluster metadata (cluster/metadata.py): every
live broker with its address and rack, the controller, and per partition its leader, leader
epoch, replicas, ISR and offline replicas (replicas whose broker is not registered). A
partition without a leader is LEADER_NOT_AVAILABLE with leader -1, so clients wait and ask
again; a leader change is how they learn where to send produce and fetch requests after
NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH.

`auto.create.topics.enable` as Kafka has it: a topic named in a Metadata request is created
with `num.partitions` and `default.replication.factor` (capped by the live brokers) when the
broker allows it and the request does too (v4+: allow_auto_topic_creation; earlier versions
always allow). A single broker answers with the new topic; a cluster answers
LEADER_NOT_AVAILABLE until the controller has placed it, and the client asks again.

Addresses are those of the listener the request came in on (Kafka's MetadataCache rule,
KIP-103): a broker without that listener is left out, and a partition whose leader lacks it
answers LISTENER_NOT_FOUND (v6+; LEADER_NOT_AVAILABLE before) with leader -1.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.groups import ensure_offsets_topic
from ackly.cluster.acls import ResourceType
from ackly.cluster.metadata import NO_LEADER
from ackly.cluster.topics import topic_name_problem
from ackly.coordinator.group_coordinator import INTERNAL_TOPICS, OFFSETS_TOPIC
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

log = logging.getLogger("ackly.metadata")

API_KEY = 3
MIN_VERSION = 0
MAX_VERSION = 12
OPERATIONS_NOT_REQUESTED = -(2**31)  # Kafka's default for the authorized-operations fields


def topic_entry(node: BrokerNode, state: TopicState, ctx: RequestContext | None = None) -> dict[str, Any]:
    metadata = node.metadata
    live = metadata.brokers
    listener_name = ctx.listener_name if ctx is not None else ""
    partitions = []
    for index in state.info.partition_ids():
        ps = metadata.partition(TopicPartition(state.name, index))
        if ps is None:  # the controller has not created its state yet
            partitions.append({
                "error_code": ErrorCode.leader_not_available, "partition_index": index,
                "leader_id": -1, "leader_epoch": -1, "replica_nodes": list(state.info.assignment[index]),
                "isr_nodes": [], "offline_replicas": [],
            })
            continue
        error, leader = ErrorCode.none if ps.leader != NO_LEADER else ErrorCode.leader_not_available, ps.leader
        leader_info = live.get(ps.leader)
        if leader_info is not None and leader_info.endpoint(listener_name) is None:
            # Kafka's KRaftMetadataCache.getPartitionMetadata: the leader has no endpoint here.
            assert ctx is not None
            error = ErrorCode.listener_not_found if ctx.api_version >= 6 else ErrorCode.leader_not_available
            leader = NO_LEADER
        partitions.append({
            "error_code": error,
            "partition_index": index,
            "leader_id": leader,
            "leader_epoch": ps.leader_epoch,
            "replica_nodes": list(ps.replicas),
            "isr_nodes": list(ps.isr),
            "offline_replicas": [b for b in ps.replicas if b not in live],
        })
    return {
        "error_code": ErrorCode.none,
        "topic_authorized_operations": OPERATIONS_NOT_REQUESTED,
        "name": state.name,
        "topic_id": state.topic_id,
        "is_internal": state.name in INTERNAL_TOPICS,
        "partitions": partitions,
    }


def _missing(name: str | None, code: ErrorCode, topic_id: Any = None) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic_id, "partitions": [],
            "topic_authorized_operations": OPERATIONS_NOT_REQUESTED}


def _auto_create(node: BrokerNode, name: str, ctx: RequestContext) -> dict[str, Any]:
    now_ms = ctx.now_ms
    live = len([b for b in node.metadata.brokers.values() if not b.shutting_down])
    replication_factor = min(int(node.config.get("default.replication.factor")), max(live, 1))

    def done(code: ErrorCode, message: str | None) -> None:
        if code not in (ErrorCode.none, ErrorCode.topic_already_exists):
            log.warning("auto-creating %s: %s %s", name, code.name, message)

    node.admin.create_topic(name, int(node.config.get("num.partitions")), replication_factor, {}, None,
                            now_ms, DEFAULT_TIMEOUT_MS, done)
    node.pump(now_ms)  # a single broker creates it here
    state = node.topics.get(name)
    if state is None:
        return _missing(name, ErrorCode.leader_not_available)
    return topic_entry(node, state, ctx)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    requested = request.topics
    topics: list[dict[str, Any]] = []
    if requested is None or (ctx.api_version == 0 and not requested):
        # null (v1+) or empty (v0) means every topic
        # authz_rules: a listing leaves out the topics the principal may not DESCRIBE.
        topics = [topic_entry(node, s, ctx) for s in node.topics.values()
                  if check(node, ctx, API_KEY, "topic", s.name) is None]
    else:
        allow_auto = getattr(request, "allow_auto_topic_creation", True)
        for t in requested:
            name = getattr(t, "name", None)
            if name is None:
                state = node.topics_by_id.get(t.topic_id)
                if state is None:
                    topics.append(_missing(None, ErrorCode.unknown_topic_id, t.topic_id))
                elif (denied := check(node, ctx, API_KEY, "topic", state.name)) is not None:
                    topics.append(_missing(None, denied, t.topic_id))
                else:
                    topics.append(topic_entry(node, state, ctx))
                continue
            state = node.topics.get(name)
            if (denied := check(node, ctx, API_KEY, "topic", name)) is not None:
                # Named but not describable: refused whether or not it exists (Kafka).
                topics.append(_missing(name, denied))
            elif state is not None:
                topics.append(topic_entry(node, state, ctx))
            elif topic_name_problem(name) is not None:
                topics.append(_missing(name, ErrorCode.invalid_topic_exception))
            elif name == OFFSETS_TOPIC:
                # Kafka creates it as the coordinator's internal topic, whatever the settings.
                try:
                    ensure_offsets_topic(node, ctx.now_ms)
                    topics.append(topic_entry(node, node.topics[name], ctx))
                except KafkaError:
                    topics.append(_missing(name, ErrorCode.leader_not_available))
            elif allow_auto and node.config.get("auto.create.topics.enable"):
                # authz_rules: creating it needs CREATE on the cluster or on the topic.
                if (check(node, ctx, API_KEY, "auto-create-cluster") is not None
                        and (denied := check(node, ctx, API_KEY, "auto-create-topic", name)) is not None):
                    topics.append(_missing(name, denied))
                else:
                    topics.append(_auto_create(node, name, ctx))
            else:
                topics.append(_missing(name, ErrorCode.unknown_topic_or_partition))
    if getattr(request, "include_topic_authorized_operations", False):
        for entry in topics:
            if entry["error_code"] == ErrorCode.none:
                entry["topic_authorized_operations"] = node.authorizer.authorized_operations(
                    ctx, ResourceType.TOPIC, entry["name"])
    metadata = node.metadata
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0,
        "brokers": [
            {"node_id": b.broker_id, "host": e.host, "port": e.port, "rack": b.rack}
            for _, b in sorted(metadata.brokers.items())
            if (e := b.endpoint(ctx.listener_name)) is not None
        ],
        "cluster_id": node.cluster_id or None,
        "controller_id": node.controller_id_for_clients,
        "topics": topics,
        "cluster_authorized_operations": (
            node.authorizer.authorized_operations(ctx, ResourceType.CLUSTER)
            if getattr(request, "include_cluster_authorized_operations", False) else OPERATIONS_NOT_REQUESTED),
    }))
