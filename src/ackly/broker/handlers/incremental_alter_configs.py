"""IncrementalAlterConfigs (key 44): change single topic config keys, leaving the rest alone.

Mirrors Kafka's IncrementalAlterConfigs (KIP-339). Each entry names a key and an operation:
- SET (0): override the key with the value;
- DELETE (1): drop the override, so the broker default applies again (a key with no override
  is left as it is);
- APPEND (2) / SUBTRACT (3): add or remove comma-separated items of a list config such as
  `cleanup.policy`, starting from the topic's effective value; items already present are not
  added twice. Any other config kind is INVALID_CONFIG, as in Kafka.

The whole resource is planned before anything changes: an unknown key, an unknown operation,
a missing value, a key named twice or a result that is not a legal value refuses the resource
with the key and the reason, and nothing of it is applied. Resources are independent;
`validate_only` changes nothing.

A BROKER resource named by this broker's id changes its dynamic configs (SET and DELETE of
the keys in config.DYNAMIC_BROKER_KEYS; broker/dynamic_config.py), applied and stored before
the answer. Any other broker key is refused as Kafka refuses it (INVALID_REQUEST, "cannot be
updated dynamically"); so is the empty name (cluster-wide defaults, which Kafka keeps in the
cluster metadata and ackly does not have).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.handlers.alter_configs import (
    Change,
    apply_changes,
    change_results,
    checked_overrides,
    denied_change,
    duplicate_resources,
    refuse_duplicate_keys,
    target_topic,
)
from ackly.broker.handlers.describe_configs import RESOURCE_BROKER, check_broker_name
from ackly.config import BROKER_CONFIGS, DYNAMIC_BROKER_KEYS, TOPIC_CONFIGS, Kind
from ackly.errors import ConfigError, ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

API_KEY = 44
MIN_VERSION = 0
MAX_VERSION = 1

SET = 0
DELETE = 1
APPEND = 2
SUBTRACT = 3
_OP_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}


def _list_items(raw: str) -> list[str]:
    items: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if item and item not in items:
            items.append(item)
    return items


def _apply_op(state: TopicState, overrides: dict[str, str], entry: Any) -> None:
    name = entry.name
    d = TOPIC_CONFIGS.get(name)
    if d is None:
        raise KafkaError(ErrorCode.invalid_config, str(ConfigError(name, "unknown topic config")))
    op = int(entry.config_operation)
    if op not in _OP_NAMES:
        raise KafkaError(ErrorCode.invalid_request,
                         f"config {name!r}: unknown operation {op} (0 SET, 1 DELETE, 2 APPEND, "
                         "3 SUBTRACT)")
    if op == DELETE:
        overrides.pop(name, None)
        return
    value = entry.value
    if value is None:
        raise KafkaError(ErrorCode.invalid_request,
                         f"config {name!r}: {_OP_NAMES[op]} needs a value, got null")
    if op == SET:
        overrides[name] = value
        return
    if d.kind is not Kind.LIST:
        raise KafkaError(ErrorCode.invalid_config, str(ConfigError(
            name, f"{_OP_NAMES[op]} applies only to list configs, and this is a {d.kind.value}")))
    current = list(state.config.get(name))
    given = _list_items(value)
    if op == APPEND:
        result = current + [item for item in given if item not in current]
    else:
        result = [item for item in current if item not in given]
    overrides[name] = ",".join(result)


def _plan_broker(node: BrokerNode, resource: Any, validate_only: bool, now_ms: int) -> Change:
    """Plan and validate a BROKER resource's dynamic config changes (apply_changes stores
    them)."""
    change = Change(int(resource.resource_type), resource.resource_name)
    try:
        if resource.resource_name == "":
            raise KafkaError(ErrorCode.invalid_request,
                             "cluster-wide dynamic broker defaults are not supported; alter each "
                             "broker by its id")
        check_broker_name(node, resource.resource_name, allow_empty=False)
        refuse_duplicate_keys(c.name for c in resource.configs)
        changes: dict[str, str | None] = {}
        for entry in resource.configs:
            op = int(entry.config_operation)
            if op not in (SET, DELETE):
                raise KafkaError(ErrorCode.invalid_config, str(ConfigError(
                    entry.name, f"{_OP_NAMES.get(op, op)} is not an operation on a broker config "
                    "(SET or DELETE)")))
            if op == SET and entry.value is None:
                raise KafkaError(ErrorCode.invalid_request,
                                 f"config {entry.name!r}: SET needs a value, got null")
            changes[entry.name] = entry.value if op == SET else None
        not_dynamic = sorted(k for k in changes if k in BROKER_CONFIGS and k not in DYNAMIC_BROKER_KEYS)
        if not_dynamic:
            # Kafka's DynamicBrokerConfig.validateConfigs: the same error and words.
            raise KafkaError(ErrorCode.invalid_request,
                             f"Cannot update these configs dynamically: {', '.join(not_dynamic)} "
                             f"(dynamic: {', '.join(sorted(DYNAMIC_BROKER_KEYS))})")
        node.alter_dynamic_config(changes, now_ms, validate_only=True)  # refuses a bad change
        if not validate_only:
            change.broker_changes = changes  # stored and applied by apply_changes
    except ConfigError as exc:
        change.error = KafkaError(ErrorCode.invalid_config, str(exc))
    except KafkaError as exc:
        change.error = exc
    return change


def _plan(node: BrokerNode, resource: Any, duplicates: set[tuple[int, str]]) -> Change:
    change = Change(int(resource.resource_type), resource.resource_name)
    try:
        state = target_topic(node, resource, duplicates)
        refuse_duplicate_keys(c.name for c in resource.configs)
        # The stored overrides as written (a stored key or value this version refuses is
        # checked below with the rest: the request must delete or replace it).
        overrides = dict(state.info.configs)
        for entry in resource.configs:
            _apply_op(state, overrides, entry)
        change.topic = state.name
        change.overrides = checked_overrides(overrides)
    except KafkaError as exc:
        change.error = exc
    return change


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    duplicates = duplicate_resources(request.resources)
    validate_only = bool(request.validate_only)
    changes = [
        denied_change(node, ctx, API_KEY, r) or (
            _plan_broker(node, r, validate_only, ctx.now_ms)
            if int(r.resource_type) == RESOURCE_BROKER and (RESOURCE_BROKER, r.resource_name) not in duplicates
            else _plan(node, r, duplicates))
        for r in request.resources
    ]
    apply_changes(node, ctx, changes, validate_only, lambda: ctx.respond(
        build(API_KEY, ctx.api_version, {"throttle_time": 0, "responses": change_results(changes)})
    ))
