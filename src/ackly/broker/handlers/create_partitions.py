"""CreatePartitions (key 37): grow a topic to a larger partition count.

Mirrors Kafka's CreatePartitions (KIP-195): partitions are only ever added, never removed, so
a count that is not larger than the current one is INVALID_PARTITIONS; an unknown topic is
UNKNOWN_TOPIC_OR_PARTITION; a topic named twice in one request is INVALID_REQUEST for each
copy, as in Kafka. The controller places the new partitions like the first ones (same
replication factor), so manual replica assignments are refused with INVALID_REPLICA_ASSIGNMENT
rather than silently ignored. `validate_only` runs the checks and adds nothing. Topics are
independent: one refused topic does not stop another. The answer goes once this broker's view
shows the new partitions (at once on a single broker), or at the request's timeout.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 37
MIN_VERSION = 0
MAX_VERSION = 3

# Each partition is a directory with open files; a bound keeps one request from asking this
# broker to create millions of them. Kafka itself has no such bound, but no real topic is near.
MAX_PARTITIONS_PER_TOPIC = 100_000


def _check(node: BrokerNode, t: Any, duplicates: set[str]) -> None:
    """Raise the KafkaError that refuses growing this topic, if there is one."""
    if t.name in duplicates:
        raise KafkaError(ErrorCode.invalid_request,
                         f"topic {t.name!r} appears more than once in the request")
    state = node.topics.get(t.name)
    if state is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {t.name!r} does not exist")
    current = state.partition_count
    count = int(t.count)
    if count == current:
        raise KafkaError(ErrorCode.invalid_partitions,
                         f"topic {t.name!r} already has {current} partitions")
    if count < current:
        raise KafkaError(ErrorCode.invalid_partitions,
                         f"topic {t.name!r} has {current} partitions, more than the requested "
                         f"{count}; partitions cannot be removed")
    if count > MAX_PARTITIONS_PER_TOPIC:
        raise KafkaError(ErrorCode.invalid_partitions,
                         f"{count} partitions is above this broker's limit of "
                         f"{MAX_PARTITIONS_PER_TOPIC} per topic")
    if t.assignments is not None:
        raise KafkaError(ErrorCode.invalid_replica_assignment,
                         "manual replica assignment is not supported: this broker places "
                         "every partition itself")


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    counts = Counter(t.name for t in request.topics)
    duplicates = {name for name, n in counts.items() if n > 1}
    validate_only = bool(request.validate_only)
    timeout_ms = max(int(request.timeout.total_seconds() * 1000), 0) or DEFAULT_TIMEOUT_MS
    results: list[dict[str, Any]] = []
    todo: list[tuple[int, str, int]] = []
    for t in request.topics:
        try:
            if (denied := check(node, ctx, API_KEY, "topic", t.name)) is not None:
                raise KafkaError(denied)
            _check(node, t, duplicates)
            results.append({"name": t.name, "error_code": ErrorCode.none, "error_message": None})
            if not validate_only:
                todo.append((len(results) - 1, t.name, int(t.count)))
        except KafkaError as exc:
            results.append({"name": t.name, "error_code": exc.code,
                            "error_message": exc.message})
    countdown = Countdown(len(todo), lambda: ctx.respond(
        build(API_KEY, ctx.api_version, {"throttle_time": 0, "results": results})))
    for slot, name, count in todo:

        def done(code: ErrorCode, message: str | None, slot: int = slot) -> None:
            if code != ErrorCode.none:
                results[slot].update(error_code=code, error_message=message)
            countdown.one_done()

        node.admin.create_partitions(name, count, ctx.now_ms, timeout_ms, done)
