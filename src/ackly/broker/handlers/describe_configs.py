"""DescribeConfigs (key 32): every config of a topic or of this broker, and where it came from.

Mirrors Kafka's ConfigHelper.describeConfigs:
- TOPIC (resource type 2): each topic config with its effective value and its source, in
  precedence order: the topic's own override (DYNAMIC_TOPIC_CONFIG), else the broker's
  static setting of its synonym (STATIC_BROKER_CONFIG, e.g. `log.retention.ms`), else
  Kafka's default (DEFAULT_CONFIG). With `include_synonyms` the whole chain is listed, the
  winning entry first, as Kafka lists it. An unknown topic is UNKNOWN_TOPIC_OR_PARTITION.
- BROKER (resource type 4): the resource name must be this broker's id. A config altered on
  this broker (broker/dynamic_config.py) is DYNAMIC_BROKER_CONFIG, ahead of its static value;
  only the dynamic keys are not read-only. An empty name means the cluster-wide dynamic
  defaults in Kafka; ackly has none, so that list is empty, as it is on a Kafka cluster where
  none were ever set.
- Any other resource type (broker loggers, client metrics, groups) is INVALID_REQUEST.

`configuration_keys` filters the list (null or empty: all); keys ackly does not know are left
out, as Kafka does. v3+ carries `config_type` and, when asked, `documentation`. A sensitive
config (a key password, an inline private key) is described with a null value and
`is_sensitive`, its type PASSWORD, as Kafka describes its password configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.cluster.topics import topic_name_problem
from ackly.config import BROKER_CONFIGS, DYNAMIC_BROKER_KEYS, TOPIC_CONFIG_DEFS, ConfigDef, Kind, Source
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode, TopicState

API_KEY = 32
MIN_VERSION = 1  # kio (like Kafka 4) has no v0; every client we test negotiates v1+
MAX_VERSION = 4

# Kafka's ConfigResource.Type codes (shared with AlterConfigs and IncrementalAlterConfigs).
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_NAMES = {2: "TOPIC", 4: "BROKER", 8: "BROKER_LOGGER", 16: "CLIENT_METRICS", 32: "GROUP"}

# DescribeConfigsResponse ConfigType codes (v3+).
_CONFIG_TYPE = {Kind.BOOLEAN: 1, Kind.STRING: 2, Kind.INT: 3, Kind.LONG: 5, Kind.DOUBLE: 6, Kind.LIST: 7}
_PASSWORD = 9


def resource_label(resource_type: int) -> str:
    return RESOURCE_NAMES.get(resource_type, f"resource type {resource_type}")


def check_broker_name(node: BrokerNode, name: str, *, allow_empty: bool) -> None:
    """Refuse a BROKER resource that does not name this broker (INVALID_REQUEST)."""
    if name == "" and allow_empty:
        return
    if name != str(node.broker_id):
        raise KafkaError(
            ErrorCode.invalid_request,
            f"broker resource name {name!r} is not this broker's id: expected "
            f"{str(node.broker_id)!r}" + (" or an empty string" if allow_empty else ""),
        )


def topic_state(node: BrokerNode, name: str) -> TopicState:
    """The topic's state, or INVALID_TOPIC_EXCEPTION / UNKNOWN_TOPIC_OR_PARTITION."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, problem)
    state = node.topics.get(name)
    if state is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
    return state


def _synonym(name: str, value: str, source: Source) -> dict[str, Any]:
    return {"name": name, "value": value, "source": source.value}


def _entry(
    d: ConfigDef, value: str, read_only: bool, synonyms: list[dict[str, Any]],
    include_synonyms: bool, include_documentation: bool,
) -> dict[str, Any]:
    if d.sensitive:
        synonyms = [{**synonym, "value": None} for synonym in synonyms]
    return {
        "name": d.name,
        "value": None if d.sensitive else value,
        "read_only": read_only,
        "config_source": synonyms[0]["source"],
        "is_sensitive": d.sensitive,
        "synonyms": synonyms if include_synonyms else [],
        "config_type": _PASSWORD if d.sensitive else _CONFIG_TYPE[d.kind],
        "documentation": d.doc if include_documentation else None,
    }


def _wanted(keys: Sequence[str] | None, defs: Iterable[ConfigDef]) -> list[ConfigDef]:
    # Kafka lists everything for null and for an empty list alike (some clients send []).
    if not keys:
        return list(defs)
    wanted = set(keys)
    return [d for d in defs if d.name in wanted]


def topic_entries(
    node: BrokerNode, name: str, keys: Sequence[str] | None,
    include_synonyms: bool, include_documentation: bool,
) -> list[dict[str, Any]]:
    state = topic_state(node, name)
    if state.config_error is not None:
        # No effective config to describe: say which stored key and value do not validate.
        raise KafkaError(ErrorCode.invalid_config, state.config_error)
    config = state.config
    broker = node.config
    entries = []
    for d in _wanted(keys, TOPIC_CONFIG_DEFS):
        chain = []
        if d.name in config.overrides:
            chain.append(_synonym(d.name, d.render(config.get(d.name)), Source.TOPIC))
        if d.broker_synonym is None:
            # A topic-only config (the replication throttles, tiered storage's switches):
            # Kafka lists its default under the topic config's own name.
            chain.append(_synonym(d.name, d.render(d.default), Source.DEFAULT))
            entries.append(_entry(d, d.render(config.get(d.name)), False, chain,
                                  include_synonyms, include_documentation))
            continue
        if d.broker_synonym in broker.dynamic:
            chain.append(_synonym(d.broker_synonym, d.render(broker.get(d.broker_synonym)),
                                  Source.BROKER_DYNAMIC))
        if d.broker_synonym in broker.explicit:
            chain.append(_synonym(d.broker_synonym,
                                  d.render(node.static_config.get(d.broker_synonym)),
                                  Source.BROKER_STATIC))
        chain.append(_synonym(d.broker_synonym, d.render(d.default), Source.DEFAULT))
        entries.append(_entry(d, d.render(config.get(d.name)), False, chain,
                              include_synonyms, include_documentation))
    return entries


def broker_entries(
    node: BrokerNode, name: str, keys: Sequence[str] | None,
    include_synonyms: bool, include_documentation: bool,
) -> list[dict[str, Any]]:
    check_broker_name(node, name, allow_empty=True)
    if name == "":
        return []  # no dynamic cluster-wide defaults exist (see the module docstring)
    broker = node.config
    entries = []
    for d in _wanted(keys, BROKER_CONFIGS.values()):
        chain = []
        if d.name in broker.dynamic:
            chain.append(_synonym(d.name, d.render(broker.get(d.name)), Source.BROKER_DYNAMIC))
        if d.name in broker.explicit:
            chain.append(_synonym(d.name, d.render(node.static_config.get(d.name)),
                                  Source.BROKER_STATIC))
        chain.append(_synonym(d.name, d.render(d.default), Source.DEFAULT))
        # Static configs cannot be changed without a restart: read-only, as Kafka marks them.
        entries.append(_entry(d, d.render(broker.get(d.name)), d.name not in DYNAMIC_BROKER_KEYS,
                              chain, include_synonyms, include_documentation))
    return entries


def _describe(node: BrokerNode, resource: Any, include_synonyms: bool,
              include_documentation: bool) -> list[dict[str, Any]]:
    kind = int(resource.resource_type)
    keys = resource.configuration_keys
    if kind == RESOURCE_TOPIC:
        return topic_entries(node, resource.resource_name, keys, include_synonyms,
                             include_documentation)
    if kind == RESOURCE_BROKER:
        return broker_entries(node, resource.resource_name, keys, include_synonyms,
                              include_documentation)
    raise KafkaError(ErrorCode.invalid_request,
                     f"describing {resource_label(kind)} configs is not supported")


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    include_synonyms = bool(request.include_synonyms)
    include_documentation = bool(getattr(request, "include_documentation", False))
    results = []
    for resource in request.resources:
        result = {"resource_type": resource.resource_type,
                  "resource_name": resource.resource_name}
        try:
            # authz_rules: DESCRIBE_CONFIGS on the topic, or on the cluster for a broker.
            label = {RESOURCE_TOPIC: "topic", RESOURCE_BROKER: "broker"}.get(int(resource.resource_type))
            if label is not None and (denied := check(node, ctx, API_KEY, label,
                                                      resource.resource_name)) is not None:
                raise KafkaError(denied)
            configs = _describe(node, resource, include_synonyms, include_documentation)
            result.update(error_code=ErrorCode.none, error_message=None, configs=configs)
        except KafkaError as exc:
            result.update(error_code=exc.code, error_message=exc.message, configs=[])
        results.append(result)
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "results": results}))
