"""DeleteTopics (key 20): remove topics and their logs, by name or (v6+) by topic id.

The topic is deleted from the cluster metadata (broker/admin.py); every broker hosting one of
its partitions stops it and deletes its log when its view shows the deletion, and the
controller removes the partition states. The answer goes once this broker's view shows the
topic gone (at once on a single broker), or REQUEST_TIMED_OUT at the request's timeout.
Internal topics are refused (the group coordinator lives in `__consumer_offsets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.coordinator.group_coordinator import INTERNAL_TOPICS
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
    timeout_ms = max(int(request.timeout.total_seconds() * 1000), 0) or DEFAULT_TIMEOUT_MS
    responses: list[dict[str, Any]] = []
    todo: list[tuple[int, str]] = []
    for name, topic_id in wanted:
        state = node.topics.get(name) if name is not None else node.topics_by_id.get(topic_id)
        # authz_rules: DELETE on the topic (a topic named by id is refused only if it exists).
        target = name if name is not None else (state.name if state is not None else None)
        if target is not None and (denied := check(node, ctx, API_KEY, "topic", target)) is not None:
            responses.append({"name": name, "topic_id": topic_id, "error_code": denied})
            continue
        if state is None:
            code = ErrorCode.unknown_topic_id if name is None else ErrorCode.unknown_topic_or_partition
            responses.append({"name": name, "topic_id": topic_id, "error_code": code})
            continue
        if state.name in INTERNAL_TOPICS:
            # The group coordinator lives in it (Kafka refuses this too).
            responses.append({"name": state.name, "topic_id": state.topic_id,
                              "error_code": ErrorCode.invalid_topic_exception,
                              "error_message": f"{state.name} is an internal topic"})
            continue
        if not node.config.get("delete.topic.enable"):
            responses.append({"name": state.name, "topic_id": state.topic_id,
                              "error_code": ErrorCode.topic_deletion_disabled})
            continue
        responses.append({"name": state.name, "topic_id": state.topic_id, "error_code": ErrorCode.none})
        todo.append((len(responses) - 1, state.name))

    countdown = Countdown(len(todo), lambda: ctx.respond(
        build(API_KEY, ctx.api_version, {"throttle_time": 0, "responses": responses})))
    for slot, name in todo:

        def done(code: ErrorCode, message: str | None, slot: int = slot) -> None:
            if code != ErrorCode.none:
                responses[slot]["error_code"] = code
                responses[slot]["error_message"] = message
            countdown.one_done()

        node.admin.delete_topic(name, ctx.now_ms, timeout_ms, done)
