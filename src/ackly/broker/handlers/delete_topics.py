"""DeleteTopics (key 20): remove topics and their logs, by name or (v6+) by topic id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 20
MIN_VERSION = 1
MAX_VERSION = 6


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    if ctx.api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(name, None) for name in request.topic_names]
    responses = []
    for name, topic_id in wanted:
        state = node.topics.get(name) if name is not None else node.topics_by_id.get(topic_id)
        if state is None:
            code = ErrorCode.unknown_topic_id if name is None else ErrorCode.unknown_topic_or_partition
            responses.append({"name": name, "topic_id": topic_id, "error_code": code})
            continue
        if not node.config.get("delete.topic.enable"):
            responses.append({"name": state.name, "topic_id": state.topic_id,
                              "error_code": ErrorCode.topic_deletion_disabled})
            continue
        node.delete_topic(state.name, ctx.now_ms)
        responses.append({"name": state.name, "topic_id": state.topic_id,
                          "error_code": ErrorCode.none})
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "responses": responses}))
