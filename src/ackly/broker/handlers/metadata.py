"""Metadata (key 3): brokers, topics and partition leaders; creates topics on demand.

`auto.create.topics.enable` as Kafka has it: a topic named in a Metadata request is created
with `num.partitions` when the broker allows it and the request does too (v4+:
allow_auto_topic_creation; earlier versions always allow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.cluster.topics import topic_name_problem
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

API_KEY = 3
MIN_VERSION = 0
MAX_VERSION = 12


def topic_entry(node: BrokerNode, state: TopicState) -> dict[str, Any]:
    isr = [node.broker_id]
    return {
        "error_code": ErrorCode.none,
        "name": state.name,
        "topic_id": state.topic_id,
        "is_internal": False,
        "partitions": [
            {
                "error_code": ErrorCode.none,
                "partition_index": p.tp.partition,
                "leader_id": node.broker_id,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": [node.broker_id],
                "isr_nodes": isr,
                "offline_replicas": [],
            }
            for p in state.partitions
        ],
    }


def _missing(name: str | None, code: ErrorCode, topic_id: Any = None) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic_id, "partitions": []}


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    requested = request.topics
    topics: list[dict[str, Any]] = []
    if requested is None or (ctx.api_version == 0 and not requested):
        # null (v1+) or empty (v0) means every topic
        topics = [topic_entry(node, s) for s in node.topics.values()]
    else:
        allow_auto = getattr(request, "allow_auto_topic_creation", True)
        for t in requested:
            name = getattr(t, "name", None)
            if name is None:
                state = node.topics_by_id.get(t.topic_id)
                if state is None:
                    topics.append(_missing(None, ErrorCode.unknown_topic_id, t.topic_id))
                else:
                    topics.append(topic_entry(node, state))
                continue
            state = node.topics.get(name)
            if state is not None:
                topics.append(topic_entry(node, state))
            elif topic_name_problem(name) is not None:
                topics.append(_missing(name, ErrorCode.invalid_topic_exception))
            elif allow_auto and node.config.get("auto.create.topics.enable"):
                count = int(node.config.get("num.partitions"))
                topics.append(topic_entry(node, node.create_topic(name, count, {}, ctx.now_ms)))
            else:
                topics.append(_missing(name, ErrorCode.unknown_topic_or_partition))
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0,
        "brokers": [{"node_id": node.broker_id, "host": node.host, "port": node.port}],
        "cluster_id": node.cluster_id,
        "controller_id": node.broker_id,
        "topics": topics,
        "cluster_authorized_operations": -2147483648,
    }))
