"""CreateTopics (key 19): validated creation; nothing is created when anything is wrong.

Checks, in Kafka's order: a legal name (INVALID_TOPIC_EXCEPTION), not already there
(TOPIC_ALREADY_EXISTS), a partition count >= 1 (INVALID_PARTITIONS), a replication factor
this cluster can hold (INVALID_REPLICATION_FACTOR), every config key and value
(INVALID_CONFIG). `validate_only` runs the checks and creates nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.cluster.topics import topic_name_problem
from ackly.config import TopicConfig, validate_topic_overrides
from ackly.errors import ConfigError, ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 19
MIN_VERSION = 2
MAX_VERSION = 7


def _check(node: BrokerNode, t: Any) -> tuple[int, dict[str, str]]:
    problem = topic_name_problem(t.name)
    if problem is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, problem)
    if t.name in node.topics:
        raise KafkaError(ErrorCode.topic_already_exists, f"topic {t.name!r} already exists")
    if t.assignments:
        raise KafkaError(ErrorCode.invalid_request, "manual replica assignment is not supported")
    partitions = int(t.num_partitions)
    if partitions == -1:
        partitions = int(node.config.get("num.partitions"))
    if partitions < 1:
        raise KafkaError(ErrorCode.invalid_partitions, "number of partitions must be at least 1")
    replication_factor = int(t.replication_factor)
    if replication_factor == -1:
        replication_factor = int(node.config.get("default.replication.factor"))
    if replication_factor != 1:
        raise KafkaError(
            ErrorCode.invalid_replication_factor,
            f"replication factor {replication_factor} is larger than the 1 available broker",
        )
    configs: dict[str, str] = {}
    for c in t.configs:
        if c.value is None:
            raise KafkaError(ErrorCode.invalid_config, f"config {c.name!r} has a null value")
        configs[c.name] = c.value
    try:
        validate_topic_overrides(configs)
    except ConfigError as exc:
        raise KafkaError(ErrorCode.invalid_config, str(exc))
    return partitions, configs


def _config_entries(node: BrokerNode, config: TopicConfig) -> list[dict[str, Any]]:
    from ackly.config import TOPIC_CONFIG_DEFS

    return [
        {"name": d.name, "value": d.render(config.get(d.name)), "read_only": False,
         "config_source": config.source_of(d.name, node.config).value, "is_sensitive": False}
        for d in TOPIC_CONFIG_DEFS
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    validate_only = bool(getattr(request, "validate_only", False))
    results = []
    for t in request.topics:
        try:
            partitions, configs = _check(node, t)
            if validate_only:
                config = TopicConfig.resolve(node.config, configs)
                topic_id = None
            else:
                state = node.create_topic(t.name, partitions, configs, ctx.now_ms)
                config = state.config
                topic_id = state.topic_id
            results.append({
                "name": t.name, "topic_id": topic_id, "error_code": ErrorCode.none,
                "error_message": None, "num_partitions": partitions, "replication_factor": 1,
                "configs": _config_entries(node, config),
            })
        except KafkaError as exc:
            results.append({
                "name": t.name, "error_code": exc.code, "error_message": exc.message,
                "num_partitions": -1, "replication_factor": -1, "configs": None,
            })
    ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": results}))
