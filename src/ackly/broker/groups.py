"""The group coordinator inside one broker: its configuration, `__consumer_offsets`, answers.

The coordinator (coordinator/) knows nothing of topics or requests: the broker builds it from
the broker config, creates the internal topic when a client first needs it (Kafka creates it on
the first FindCoordinator too), hands it the topic's partitions, and gives each operation a
`Respond` waiter that turns the coordinator's result into the response for the request's
version.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.cluster.metadata import NO_LEADER, BrokerInfo
from ackly.config import BrokerConfig
from ackly.coordinator.consumer_group import ConsumerGroupConfig, TopicsView
from ackly.coordinator.group import GroupConfig
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, GroupCoordinator, partition_for
from ackly.coordinator.group_manager import CommitPartition, OffsetsConfig
from ackly.coordinator.runtime import AwaitCommitted
from ackly.errors import ErrorCode, KafkaError
from ackly.log.producer_state import AppendOrigin
from ackly.protocol.messages import build
from ackly.protocol.records import iter_batches, validate_batches
from ackly.replication.partition import Partition
from ackly.replication.purgatory import DelayedOperation, Purgatory
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

log = logging.getLogger("ackly.groups")

T = TypeVar("T")

_MINUTE_MS = 60_000


def group_config(config: BrokerConfig) -> GroupConfig:
    return GroupConfig(
        min_session_timeout_ms=int(config.get("group.min.session.timeout.ms")),
        max_session_timeout_ms=int(config.get("group.max.session.timeout.ms")),
        max_size=int(config.get("group.max.size")),
        initial_rebalance_delay_ms=int(config.get("group.initial.rebalance.delay.ms")),
    )


# Kafka's class names of its built-in assignors, accepted in group.consumer.assignors.
_ASSIGNOR_CLASSES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}


def consumer_group_config(config: BrokerConfig) -> ConsumerGroupConfig:
    names = tuple(dict.fromkeys(_ASSIGNOR_CLASSES.get(a, a) for a in config.get("group.consumer.assignors")))
    return ConsumerGroupConfig(
        session_timeout_ms=int(config.get("group.consumer.session.timeout.ms")),
        heartbeat_interval_ms=int(config.get("group.consumer.heartbeat.interval.ms")),
        assignors=names,
        max_size=int(config.get("group.consumer.max.size")),
    )


def topics_view(node: BrokerNode) -> TopicsView:
    """The topics a consumer group may subscribe to, by name: id and partition count."""
    return TopicsView({name: (state.topic_id, state.partition_count) for name, state in node.topics.items()})


def offsets_config(config: BrokerConfig) -> OffsetsConfig:
    return OffsetsConfig(
        retention_ms=int(config.get("offsets.retention.minutes")) * _MINUTE_MS,
        retention_check_interval_ms=int(config.get("offsets.retention.check.interval.ms")),
        metadata_max_bytes=int(config.get("offset.metadata.max.bytes")),
    )


class PartitionShardLog:
    """A coordinator shard's log: one partition, appended to through the normal leader path
    (acks=all, then `after_append`, which schedules the flush per flush.policy and wakes the
    purgatory), read back from its log start when the coordinator loads.

    Appends are Kafka's AppendOrigin.COORDINATOR: no sequence checks, but a transactional
    batch (TxnOffsetCommit) has its producer epoch checked and starts or continues the
    producer's transaction on the partition, so the LSO covers the pending offsets until the
    marker. Loading reads control batches too: the runtime hands them to the shard.

    A shard belongs to one leadership of its partition: once the partition is no longer led
    here in the epoch the shard was loaded in, its HW reads as -1, so held replies never
    complete on a HW that a new leader (whose log may differ above the old HW) moved; they
    expire instead (COORDINATOR_NOT_AVAILABLE: the client finds the new coordinator)."""

    _READ_BYTES = 1 << 20

    def __init__(self, partition: Partition, after_append: Callable[[Partition, int], None]) -> None:
        self.partition = partition
        self._after_append = after_append
        self._leader_epoch = partition.leader_epoch

    @property
    def key(self) -> Hashable:
        return self.partition.tp

    @property
    def high_watermark(self) -> int:
        p = self.partition
        if not p.is_leader or p.leader_epoch != self._leader_epoch:
            return -1
        return p.high_watermark

    @property
    def log_end_offset(self) -> int:
        return self.partition.log_end_offset

    def append(self, batch: bytes, now_ms: int) -> None:
        p = self.partition
        headers = validate_batches(batch, p.config.max_message_bytes)
        p.append_as_leader(bytearray(batch), headers, -1, now_ms, origin=AppendOrigin.COORDINATOR)
        self._after_append(p, now_ms)

    def read_batches(self, start_offset: int) -> Iterator[bytes]:
        log_ = self.partition.log
        offset = max(start_offset, log_.log_start_offset)
        end = log_.log_end_offset
        while offset < end:
            read = log_.read(offset, self._READ_BYTES, end)
            if not read.ranges:
                return
            for r in read.ranges:
                data = log_.read_bytes(r)
                for pos, header in iter_batches(data):
                    offset = max(offset, header.next_offset)
                    yield data[pos : pos + header.size]


class _DelayedReplies(DelayedOperation):
    def __init__(self, op: AwaitCommitted) -> None:
        super().__init__(op.deadline_ms)
        self.op = op

    def try_complete(self, now_ms: int) -> bool:
        return self.op.try_complete(now_ms)

    def on_expire(self, now_ms: int) -> None:
        self.op.on_expire(now_ms)


class PurgatoryScheduler:
    """The coordinator's held replies wait in the broker's purgatory like a DelayedProduce:
    woken when an append or a flush moves their partition's HW."""

    def __init__(self, purgatory: Purgatory) -> None:
        self.purgatory = purgatory

    def defer(self, op: AwaitCommitted, keys: Iterable[Hashable], now_ms: int) -> None:
        self.purgatory.try_or_watch(_DelayedReplies(op), keys, now_ms)


def shard_logs(node: BrokerNode, partitions: Sequence[Partition]) -> list[PartitionShardLog]:
    return [PartitionShardLog(p, node.after_append) for p in partitions]


def make_group_coordinator(node: BrokerNode, now_ms: int) -> GroupCoordinator:
    """The broker's group coordinator, loaded from `__consumer_offsets` if that exists."""
    coordinator = GroupCoordinator(
        config=replace(group_config(node.config), wall_clock=node.wall_clock),
        offsets_config=offsets_config(node.config),
        scheduler=PurgatoryScheduler(node.purgatory), rng=node.rng,
        write_timeout_ms=int(node.config.get("offsets.commit.timeout.ms")),
        consumer_config=consumer_group_config(node.config),
    )
    state = node.topics.get(OFFSETS_TOPIC)
    if state is not None:
        coordinator.load(shard_logs(node, state.partitions), now_ms)
    return coordinator


def on_partition_leadership(node: BrokerNode, p: Partition, leader: bool, now_ms: int) -> None:
    """A partition was gained (new leader epoch) or lost: if it is one of `__consumer_offsets`,
    its shard is loaded here (replayed from the log, which a new leader holds in full, in
    slices run by the node's tick, so a long log does not hold the broker up; its groups
    answer COORDINATOR_LOAD_IN_PROGRESS meanwhile) or dropped. Followers hold no shard."""
    if p.tp.topic != OFFSETS_TOPIC:
        return
    coordinator = node.group_coordinator
    state = node.topics.get(OFFSETS_TOPIC)
    if leader and state is not None:
        if not coordinator.loaded:
            coordinator.set_partition_count(state.partition_count)
        coordinator.load_shard(p.tp.partition, PartitionShardLog(p, node.after_append), now_ms,
                               at_once=False)
    else:
        coordinator.unload_shard(p.tp.partition)


def internal_replication_factor(node: BrokerNode, topic: str, key: str) -> int:
    """The replication factor internal topic `topic` is created with: config `key`.

    In a cluster (a metadata store), as in Kafka: while fewer brokers are alive than the
    factor, raises KafkaError(COORDINATOR_NOT_AVAILABLE) (clients retry FindCoordinator), so
    the topic is created with its full factor once they are, never with fewer replicas that
    would stay forever. A lone broker (`ackly serve` without a metadata store) can never have
    another broker: it creates the topic with its one replica, whatever `key` says, so a
    single broker works with no settings (Kafka's default of 3 would leave its groups and
    transactions without a coordinator for good)."""
    wanted = int(node.config.get(key))
    if not node.external_metadata:
        return 1
    live = len([b for b in node.metadata.brokers.values() if not b.shutting_down])
    if live < wanted:
        # Kafka logs this on every FindCoordinator; once per change of the live count here.
        if _short_of_brokers.get((node.broker_id, topic)) != live:
            _short_of_brokers[(node.broker_id, topic)] = live
            log.warning("%s not created: %d live brokers do not meet %s=%d (expected while the "
                        "cluster starts)", topic, live, key, wanted)
        raise KafkaError(ErrorCode.coordinator_not_available,
                         f"{topic} needs {key}={wanted} live brokers, {live} alive")
    return wanted


# (broker id, internal topic) -> the live broker count last warned about.
_short_of_brokers: dict[tuple[int, str], int] = {}


def create_internal_topic(node: BrokerNode, topic: str, partitions: int, replicas: int,
                          configs: dict[str, str], timeout_ms: int, now_ms: int) -> None:
    """Create internal topic `topic`, absent so far (through the controller; a single broker
    creates it at once). Raises KafkaError(COORDINATOR_NOT_AVAILABLE) if it cannot be created
    or does not exist yet: clients retry FindCoordinator."""
    failure: list[str] = []

    def done(code: ErrorCode, message: str | None) -> None:
        if code not in (ErrorCode.none, ErrorCode.topic_already_exists):
            failure.append(f"{code.name}: {message}")
            log.warning("cannot create %s: %s %s", topic, code.name, message)

    node.admin.create_topic(topic, partitions, replicas, configs, None, now_ms, timeout_ms, done)
    node.pump(now_ms)  # a single broker completes it here
    if failure:
        raise KafkaError(ErrorCode.coordinator_not_available, f"cannot create {topic}: {failure[0]}")
    if topic not in node.topics:
        raise KafkaError(ErrorCode.coordinator_not_available, f"{topic} is being created")


def ensure_offsets_topic(node: BrokerNode, now_ms: int) -> GroupCoordinator:
    """Create `__consumer_offsets` if needed (through the controller, with
    offsets.topic.replication.factor replicas); return the coordinator.

    Raises KafkaError(COORDINATOR_NOT_AVAILABLE) while the topic does not exist yet (in a
    cluster its creation takes a round trip to the store; a single broker creates it at once)
    or cannot be created: clients retry FindCoordinator. Whether this broker holds a given
    group's shard is the coordinator's question (`here`)."""
    coordinator = node.group_coordinator
    if OFFSETS_TOPIC in node.topics and coordinator.loaded:
        return coordinator
    if OFFSETS_TOPIC not in node.topics:
        create_internal_topic(
            node, OFFSETS_TOPIC, int(node.config.get("offsets.topic.num.partitions")),
            internal_replication_factor(node, OFFSETS_TOPIC, "offsets.topic.replication.factor"), {
                # Keyed records whose latest value wins: compaction (log/cleaner.py) keeps
                # the log bounded by the live groups and offsets.
                "cleanup.policy": "compact",
                "segment.bytes": str(node.config.get("offsets.topic.segment.bytes")),
            }, int(node.config.get("offsets.commit.timeout.ms")), now_ms,
        )
    if not coordinator.loaded:
        coordinator.set_partition_count(node.topics[OFFSETS_TOPIC].partition_count)
    return coordinator


def coordinator_of(node: BrokerNode, group_id: str) -> BrokerInfo | None:
    """The broker coordinating `group_id`: the leader of its `__consumer_offsets` partition."""
    return key_leader(node, OFFSETS_TOPIC, group_id)


def key_leader(node: BrokerNode, topic: str, key: str) -> BrokerInfo | None:
    """The leader of internal topic `topic`'s partition for `key` (a group or transactional
    id, `partition_for`), None while the topic or that leader is unknown."""
    state = node.topics.get(topic)
    if state is None:
        return None
    tp = TopicPartition(topic, partition_for(key, state.partition_count))
    partition = node.metadata.partition(tp)
    if partition is None or partition.leader == NO_LEADER:
        return None
    return node.metadata.brokers.get(partition.leader)


class Respond(Generic[T]):
    """A waiter that answers one request: `answer(result)` or `error(code)` gives the fields of
    the response (for the request's version), built and sent once."""

    def __init__(self, ctx: RequestContext, answer: Callable[[T], Mapping[str, Any]],
                 error: Callable[[ErrorCode], Mapping[str, Any]]) -> None:
        self.ctx = ctx
        self._answer = answer
        self._error = error

    def complete(self, result: T) -> None:
        self._send(self._answer(result))

    def fail(self, code: ErrorCode) -> None:
        self._send(self._error(code))

    def _send(self, fields: Mapping[str, Any]) -> None:
        ctx = self.ctx
        ctx.respond(build(ctx.header.api_key, ctx.api_version, {"throttle_time": 0, **fields}))


def start_offset_commit(node: BrokerNode, ctx: RequestContext, request: Any
                        ) -> tuple[Respond[list[ErrorCode]], list[CommitPartition], GroupCoordinator] | None:
    """The part OffsetCommit and TxnOffsetCommit share: check each partition as Kafka's
    KafkaApis does (an empty group id is INVALID_GROUP_ID, an unknown topic partition
    UNKNOWN_TOPIC_OR_PARTITION), and give the waiter that answers every partition in request
    order, the partitions left for the group to decide, and the coordinator. None when the
    request is already answered (nothing left to commit, or no `__consumer_offsets`)."""
    # One slot per partition of the request, in request order; None until decided.
    slots: list[tuple[str, int, ErrorCode | None]] = []
    to_commit: list[CommitPartition] = []
    commit_slots: list[int] = []
    # authz_rules (OffsetCommit, TxnOffsetCommit): the transactional id's WRITE, then the
    # group's READ refuse every partition; a topic's READ refuses its partitions.
    api_key = ctx.header.api_key
    whole = None
    if getattr(request, "transactional_id", None) is not None:
        whole = check(node, ctx, api_key, "transactional", request.transactional_id)
    if whole is None:
        whole = check(node, ctx, api_key, "group", request.group_id)
    for topic in request.topics:
        state = node.topics.get(topic.name)
        denied = check(node, ctx, api_key, "topic", topic.name)
        for p in topic.partitions:
            index = int(p.partition_index)
            if whole is not None:
                code: ErrorCode | None = whole
            elif not request.group_id:
                code = ErrorCode.invalid_group_id
            elif denied is not None:
                code = denied
            elif state is None or not 0 <= index < state.partition_count:
                code = ErrorCode.unknown_topic_or_partition
            else:
                code = None
                commit_slots.append(len(slots))
                to_commit.append(CommitPartition(
                    topic.name, index, int(p.committed_offset),
                    int(getattr(p, "committed_leader_epoch", -1)), p.committed_metadata))
            slots.append((topic.name, index, code))

    def fields(errors: list[ErrorCode]) -> dict[str, Any]:
        decided = [code for _, _, code in slots]
        for slot, error in zip(commit_slots, errors, strict=True):
            decided[slot] = error
        topics: dict[str, list[dict[str, Any]]] = {}
        for (name, index, _), code in zip(slots, decided, strict=True):
            topics.setdefault(name, []).append({"partition_index": index, "error_code": code})
        return {"topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}

    waiter: Respond[list[ErrorCode]] = Respond(
        ctx, fields, lambda code: fields([code] * len(to_commit)))
    if not to_commit:
        waiter.complete([])
        return None
    try:
        coordinator = ensure_offsets_topic(node, ctx.now_ms)
    except KafkaError as exc:
        waiter.fail(exc.code)
        return None
    return waiter, to_commit, coordinator


def client_host(ctx: RequestContext) -> str:
    """As Kafka shows it in DescribeGroups (InetAddress.toString)."""
    return f"/{ctx.client_host}" if ctx.client_host else ""


def ms(value: Any) -> int:
    """A kio time field (timedelta) as whole milliseconds."""
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    return int(value)
