"""AlterConfigs (key 33): replace a topic's whole set of config overrides (legacy semantics).

Mirrors Kafka's original, non-incremental AlterConfigs: the configs in the request become the
topic's complete override set, so every override the request does not name goes back to the
broker default. An entry with a null value counts as not named (Kafka's AdminManager dropped
null entries the same way). IncrementalAlterConfigs (key 44) changes single keys instead and
shares the checks below.

Every resource is planned in full before anything changes: its type and name, no resource
named twice (INVALID_REQUEST for each copy), no key named twice (INVALID_REQUEST), every key
known and every value legal (INVALID_CONFIG naming the key and the reason). A resource with
any bad entry changes nothing. Resources are independent, as in Kafka: one refused resource
does not stop another. `validate_only` plans and answers, and changes nothing. The new
overrides are written to the cluster metadata (broker/admin.py) and the answer goes once this
broker's view shows them (at once on a single broker); every broker applies them from its view.

BROKER resources are refused: the few dynamic broker configs change with
IncrementalAlterConfigs (whose per-key operations cannot wipe the others by omission, as this
request's whole-set replacement would); the rest are read-only until a restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.handlers.describe_configs import (
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    check_broker_name,
    resource_label,
    topic_state,
)
from ackly.config import validate_topic_overrides
from ackly.errors import ConfigError, ErrorCode, KafkaError, StorageError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

API_KEY = 33
MIN_VERSION = 0
MAX_VERSION = 2

BROKER_CONFIGS_ARE_STATIC = ("AlterConfigs does not change broker configs; the dynamic ones "
                             "change with IncrementalAlterConfigs, the others at a restart")


@dataclass
class Change:
    """What one resource of an alter request will do: new overrides, or why it will not."""

    resource_type: int
    resource_name: str
    topic: str | None = None
    overrides: dict[str, str] | None = None
    error: KafkaError | None = None
    # A BROKER resource (IncrementalAlterConfigs): its validated dynamic config changes.
    broker_changes: dict[str, str | None] | None = None


def duplicate_resources(resources: Iterable[Any]) -> set[tuple[int, str]]:
    counts = Counter((int(r.resource_type), r.resource_name) for r in resources)
    return {key for key, n in counts.items() if n > 1}


def target_topic(node: BrokerNode, resource: Any, duplicates: set[tuple[int, str]]) -> TopicState:
    """The topic a resource names, or the KafkaError that refuses the whole resource."""
    kind = int(resource.resource_type)
    name = resource.resource_name
    if (kind, name) in duplicates:
        raise KafkaError(ErrorCode.invalid_request,
                         f"{resource_label(kind)} {name!r} appears more than once in the request")
    if kind == RESOURCE_BROKER:
        # Static by design: changing them would need the node to rebuild every topic's
        # effective config from new broker defaults at run time; a restart does that already.
        check_broker_name(node, name, allow_empty=True)
        raise KafkaError(ErrorCode.invalid_request, BROKER_CONFIGS_ARE_STATIC)
    if kind != RESOURCE_TOPIC:
        raise KafkaError(ErrorCode.invalid_request,
                         f"altering {resource_label(kind)} configs is not supported")
    return topic_state(node, name)


def denied_change(node: BrokerNode, ctx: RequestContext, api_key: int, resource: Any) -> Change | None:
    """authz_rules (AlterConfigs, IncrementalAlterConfigs): ALTER_CONFIGS on the topic, or on
    the cluster for a broker resource; the refused resource is answered with the rule's error."""
    kind = int(resource.resource_type)
    label = {RESOURCE_TOPIC: "topic", RESOURCE_BROKER: "broker"}.get(kind)
    if label is None:
        return None
    code = check(node, ctx, api_key, label, resource.resource_name)
    if code is None:
        return None
    return Change(kind, resource.resource_name, error=KafkaError(code))


def refuse_duplicate_keys(names: Iterable[str]) -> None:
    """Refuse a request that names one key twice for one resource (INVALID_REQUEST)."""
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise KafkaError(ErrorCode.invalid_request,
                         f"config {repeated[0]!r} appears more than once for one resource")


def checked_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """The overrides if every key is a known topic config with a legal value.

    Otherwise INVALID_CONFIG, naming the first bad key and why it is refused.
    """
    try:
        validate_topic_overrides(overrides)
    except ConfigError as exc:
        raise KafkaError(ErrorCode.invalid_config, str(exc))
    return dict(overrides)


def apply_changes(node: BrokerNode, ctx: RequestContext, changes: list[Change], validate_only: bool,
                  then: Callable[[], None]) -> None:
    """Second phase: write the planned overrides through the cluster metadata; `then` runs once
    every change has its outcome (a failed write sets the change's error)."""
    todo = [] if validate_only else [
        c for c in changes if c.error is None and (c.topic is not None or c.broker_changes is not None)
    ]
    countdown = Countdown(len(todo), then)
    for change in todo:

        def done(code: ErrorCode, message: str | None, change: Change = change) -> None:
            if code != ErrorCode.none:
                change.error = KafkaError(code, message or "")
            countdown.one_done()

        if change.broker_changes is not None:
            # A BROKER resource: stored in the data directory, answered once durable.
            def stored(error: StorageError | None, done: Callable[..., None] = done) -> None:
                if error is None:
                    done(ErrorCode.none, None)
                else:
                    done(ErrorCode.kafka_storage_error, error.message)

            try:
                node.alter_dynamic_config(change.broker_changes, ctx.now_ms, on_durable=stored)
            except ConfigError as exc:  # validated when planned; kept for a clear answer
                done(ErrorCode.invalid_config, str(exc))
            continue
        assert change.topic is not None and change.overrides is not None
        node.admin.alter_configs(change.topic, change.overrides, ctx.now_ms, DEFAULT_TIMEOUT_MS, done)


def change_results(changes: Iterable[Change]) -> list[dict[str, Any]]:
    return [
        {"resource_type": c.resource_type, "resource_name": c.resource_name,
         "error_code": c.error.code if c.error is not None else ErrorCode.none,
         "error_message": c.error.message if c.error is not None else None}
        for c in changes
    ]


def _plan(node: BrokerNode, resource: Any, duplicates: set[tuple[int, str]]) -> Change:
    change = Change(int(resource.resource_type), resource.resource_name)
    try:
        state = target_topic(node, resource, duplicates)
        refuse_duplicate_keys(c.name for c in resource.configs)
        # Legacy semantics: what is given is the whole override set; null means "not given".
        wanted = {c.name: c.value for c in resource.configs if c.value is not None}
        change.topic = state.name
        change.overrides = checked_overrides(wanted)
    except KafkaError as exc:
        change.error = exc
    return change


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    duplicates = duplicate_resources(request.resources)
    changes = [denied_change(node, ctx, API_KEY, r) or _plan(node, r, duplicates)
               for r in request.resources]
    apply_changes(node, ctx, changes, bool(request.validate_only), lambda: ctx.respond(
        build(API_KEY, ctx.api_version, {"throttle_time": 0, "responses": change_results(changes)})
    ))
