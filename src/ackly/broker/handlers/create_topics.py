"""CreateTopics (key 19): validated creation, placed by the controller.

Checks, in Kafka's order: a legal name (INVALID_TOPIC_EXCEPTION), not already there
(TOPIC_ALREADY_EXISTS), a partition count >= 1 (INVALID_PARTITIONS), a replication factor this
cluster can hold (INVALID_REPLICATION_FACTOR: at most the live brokers, never silently capped),
a manual assignment naming live brokers only (INVALID_REPLICA_ASSIGNMENT), every config key and
value (INVALID_CONFIG). `validate_only` runs the checks and creates nothing. In a cluster, a
refusal for brokers this broker's view does not show is made only after the view has caught up
with the store (a read barrier, admin.catch_up): the store, not a view that may trail it by a
watch event, says which brokers are registered, as Kafka's controller does.

The topic is written to the cluster metadata with create-if-absent (broker/admin.py); its
partition states (leader, ISR) are created by the controller. The answer goes when this
broker's view shows them, or at the request's timeout (the topic exists then, its leaders
may still be on the way, which clients wait out as in Kafka). Two concurrent creations of one
name: one wins, the other gets TOPIC_ALREADY_EXISTS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.cluster.controller import eligible_brokers
from ackly.cluster.placement import assignment_problem
from ackly.cluster.topics import topic_name_problem
from ackly.config import TOPIC_CONFIG_DEFS, TopicConfig, validate_topic_overrides
from ackly.errors import ConfigError, ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 19
MIN_VERSION = 2
MAX_VERSION = 7


class _TooFewBrokers(KafkaError):
    """A refusal for brokers this view does not show: it may only trail the store (below)."""


class _Plan:
    def __init__(self, partitions: int, replication_factor: int, configs: dict[str, str],
                 assignment: list[tuple[int, ...]] | None) -> None:
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.configs = configs
        self.assignment = assignment


def _check(node: BrokerNode, t: Any) -> _Plan:
    problem = topic_name_problem(t.name)
    if problem is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, problem)
    if t.name in node.metadata.topics:
        raise KafkaError(ErrorCode.topic_already_exists, f"topic {t.name!r} already exists")
    assignment: list[tuple[int, ...]] | None = None
    if t.assignments:
        if int(t.num_partitions) != -1 or int(t.replication_factor) != -1:
            raise KafkaError(ErrorCode.invalid_request,
                             "give either a replica assignment or partitions and replication "
                             "factor, not both")
        ordered = sorted(t.assignments, key=lambda a: int(a.partition_index))
        if [int(a.partition_index) for a in ordered] != list(range(len(ordered))):
            raise KafkaError(ErrorCode.invalid_replica_assignment,
                             "the assignment must list partitions 0..n-1 once each")
        assignment = [tuple(int(b) for b in a.broker_ids) for a in ordered]
        live = [b.broker_id for b in eligible_brokers(node.metadata)]
        found = assignment_problem(assignment, live)
        if found is not None:
            unknown = {b for replicas in assignment for b in replicas} - set(live)
            raise (_TooFewBrokers if unknown else KafkaError)(ErrorCode.invalid_replica_assignment, found)
        partitions, replication_factor = len(assignment), len(assignment[0])
    else:
        partitions = int(t.num_partitions)
        if partitions == -1:
            partitions = int(node.config.get("num.partitions"))
        if partitions < 1:
            raise KafkaError(ErrorCode.invalid_partitions, "number of partitions must be at least 1")
        replication_factor = int(t.replication_factor)
        if replication_factor == -1:
            replication_factor = int(node.config.get("default.replication.factor"))
        live = [b.broker_id for b in eligible_brokers(node.metadata)]
        if replication_factor < 1:
            raise KafkaError(ErrorCode.invalid_replication_factor,
                             f"replication factor must be >= 1, not {replication_factor}")
        if replication_factor > len(live):
            raise _TooFewBrokers(
                ErrorCode.invalid_replication_factor,
                f"replication factor {replication_factor} is larger than the {len(live)} available "
                f"broker{'s' if len(live) != 1 else ''}",
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
    return _Plan(partitions, replication_factor, configs, assignment)


def _config_entries(node: BrokerNode, config: TopicConfig) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "value": d.render(config.get(d.name)), "read_only": False,
         "config_source": config.source_of(d.name, node.config).value, "is_sensitive": False}
        for d in TOPIC_CONFIG_DEFS
    ]


def handle(node: BrokerNode, ctx: RequestContext, request: Any, *, view_confirmed: bool = False) -> None:
    """`view_confirmed`: this broker's view has caught up with the store since the request came
    (a refusal for too few brokers is then final)."""
    validate_only = bool(getattr(request, "validate_only", False))
    timeout_ms = max(int(request.timeout.total_seconds() * 1000), 0) or DEFAULT_TIMEOUT_MS
    results: list[dict[str, Any]] = []
    planned: list[tuple[int, Any, _Plan]] = []
    # authz_rules: CREATE on the cluster, else CREATE on each topic.
    on_cluster = check(node, ctx, API_KEY, "cluster") is None
    for t in request.topics:
        if not on_cluster and (denied := check(node, ctx, API_KEY, "topic", t.name)) is not None:
            results.append(_failed(t.name, denied, None))
            continue
        try:
            plan = _check(node, t)
        except _TooFewBrokers as exc:
            if node.external_metadata and not view_confirmed:
                # A broker registered a moment ago may not have reached this view yet (just
                # after a cluster starts, a client is that quick): decide the whole request
                # again once the view holds what the store has, within the request's timeout.
                def again(code: ErrorCode, message: str | None) -> None:
                    handle(node, ctx, request, view_confirmed=True)

                node.admin.catch_up(ctx.now_ms, timeout_ms, again)
                return
            results.append(_failed(t.name, exc.code, exc.message))
            continue
        except KafkaError as exc:
            results.append(_failed(t.name, exc.code, exc.message))
            continue
        results.append({})
        planned.append((len(results) - 1, t, plan))

    def answer() -> None:
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "topics": results}))

    countdown = Countdown(len(planned), answer)
    for slot, t, plan in planned:
        if validate_only:
            results[slot] = _created(node, t.name, None, plan, TopicConfig.resolve(node.config, plan.configs))
            countdown.one_done()
            continue

        def done(code: ErrorCode, message: str | None, slot: int = slot, name: str = t.name,
                 plan: _Plan = plan) -> None:
            state = node.topics.get(name)
            if code != ErrorCode.none or state is None:
                results[slot] = _failed(name, code if code != ErrorCode.none else ErrorCode.request_timed_out,
                                        message)
            else:
                results[slot] = _created(node, name, state.topic_id, plan, state.config)
            countdown.one_done()

        node.admin.create_topic(t.name, plan.partitions, plan.replication_factor, plan.configs,
                                plan.assignment, ctx.now_ms, timeout_ms, done)


def _created(node: BrokerNode, name: str, topic_id: Any, plan: _Plan, config: TopicConfig) -> dict[str, Any]:
    return {
        "name": name, "topic_id": topic_id, "error_code": ErrorCode.none, "error_message": None,
        "num_partitions": plan.partitions, "replication_factor": plan.replication_factor,
        "configs": _config_entries(node, config),
    }


def _failed(name: str, code: ErrorCode, message: str | None) -> dict[str, Any]:
    return {"name": name, "error_code": code, "error_message": message, "num_partitions": -1,
            "replication_factor": -1, "configs": None}
