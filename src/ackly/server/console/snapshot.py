"""What the console's cluster and topic pages show, read from the node into plain values.

The node is not thread-safe: what it alone knows (its replicas' offsets and sizes, topic
configs, traffic counters) is copied on the event loop without I/O, in turns of a bounded
number of replicas (`read_node_in_turns`); the metadata view is immutable and is handed over
as it is. The rows, the cluster's health and the HTML are then built in a worker thread
(`build_snapshot`). Everything comes from this broker's metadata view (brokers, controller,
leader, ISR, replicas, topic configs) and from the replicas it hosts (HW, log start, LEO,
sizes): a HW is authoritative where this broker leads the partition, a follower's view where
it follows it (at most the leader's), and unknown where it hosts no replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.cluster.health import ClusterHealth, cluster_health
from ackly.cluster.metadata import ClusterMetadata
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode
    from ackly.replication.partition import Partition


@dataclass(frozen=True)
class BrokerRow:
    broker_id: int
    address: str
    rack: str | None
    shutting_down: bool
    is_controller: bool
    is_self: bool


@dataclass(frozen=True)
class PartitionRow:
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    min_isr: int
    # HW as this broker knows it: None where it hosts no replica; `hw_from_leader` tells
    # whether this broker leads the partition (authoritative) or follows it.
    high_watermark: int | None
    hw_from_leader: bool
    log_start_offset: int | None
    log_end_offset: int | None
    size_bytes: int | None
    segments: int | None

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def under_min_isr(self) -> bool:
        return len(self.isr) < self.min_isr

    @property
    def at_min_isr(self) -> bool:
        return len(self.isr) == self.min_isr

    @property
    def css_classes(self) -> str:
        """The row's marks, for the stylesheet and for whoever reads the page's HTML."""
        marks = [name for name, on in (("offline", self.offline),
                                       ("under-replicated", self.under_replicated),
                                       ("under-min-isr", self.under_min_isr)) if on]
        return " ".join(["partition", *marks])


@dataclass(frozen=True)
class TopicRow:
    name: str
    topic_id: str
    partitions: tuple[PartitionRow, ...]
    replication_factor: int
    configs: tuple[tuple[str, str], ...]  # the topic's overrides of the broker defaults
    config_error: str | None
    bytes_in: int
    bytes_out: int
    records_in: int

    @property
    def size_bytes_here(self) -> int:
        return sum(p.size_bytes or 0 for p in self.partitions)

    @property
    def under_replicated(self) -> int:
        return sum(1 for p in self.partitions if p.under_replicated)


@dataclass(frozen=True)
class ClusterSnapshot:
    broker_id: int
    cluster_id: str | None
    controller_id: int | None
    brokers: tuple[BrokerRow, ...]
    topics: tuple[TopicRow, ...]
    health: ClusterHealth
    metadata_revision: int

    def topic(self, name: str) -> TopicRow | None:
        return next((t for t in self.topics if t.name == name), None)

    @property
    def partitions(self) -> list[PartitionRow]:
        return [p for t in self.topics for p in t.partitions]


@dataclass(frozen=True)
class LocalReplica:
    """What this broker's replica of a partition knows (read on the event loop)."""

    is_leader: bool
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    size_bytes: int
    segments: int


@dataclass(frozen=True)
class NodeReading:
    """Everything a snapshot needs from the node, copied on the event loop. The metadata view
    is immutable (a change makes a new view), so it is passed as it is."""

    broker_id: int
    metadata: ClusterMetadata
    min_isr: Mapping[str, int]
    config_errors: Mapping[str, str]
    traffic: Mapping[str, tuple[int, int, int]]  # bytes in, records in, bytes out
    local: Mapping[TopicPartition, LocalReplica]


# Replicas read per turn of the event loop: a broker with thousands of partitions is read in
# several short turns, so Kafka requests are served in between (each replica's values are
# read together; replicas read in different turns may differ by the requests in between).
REPLICAS_PER_TURN = 500


def _local(p: Partition) -> LocalReplica:
    return LocalReplica(p.is_leader, p.high_watermark, p.log_start_offset, p.log_end_offset,
                        p.log.size_bytes, len(p.log.segments))


def _reading(node: BrokerNode, local: Mapping[TopicPartition, LocalReplica]) -> NodeReading:
    min_isr = {}
    errors = {}
    for name, state in node.topics.items():
        if state.resolved is not None:
            min_isr[name] = int(state.resolved.min_insync_replicas)
        if state.config_error is not None:
            errors[name] = state.config_error
    traffic = {name: (t.bytes_in, t.records_in, t.bytes_out) for name, t in node.stats.traffic.items()}
    return NodeReading(node.broker_id, node.metadata, min_isr, errors, traffic, local)


async def read_node_in_turns(node: BrokerNode) -> NodeReading:
    """The reading, REPLICAS_PER_TURN replicas per turn of the event loop."""
    local: dict[TopicPartition, LocalReplica] = {}
    replicas = list(node.all_partitions())
    for i in range(0, len(replicas), REPLICAS_PER_TURN):
        if i:
            await asyncio.sleep(0)  # a turn of the loop for other work, not a wait
        for p in replicas[i:i + REPLICAS_PER_TURN]:
            if p.log.is_closed:
                continue  # stopped or deleted while we yielded
            local[p.tp] = _local(p)
    return _reading(node, local)


def build_snapshot(reading: NodeReading, *, internal: bool = True) -> ClusterSnapshot:
    """The pages' values from a reading: pure, so it runs in a worker thread."""
    metadata = reading.metadata

    def min_isr(topic: str) -> int:
        return reading.min_isr.get(topic, 1)

    controller = metadata.controller
    controller_id = None if controller is None else controller.broker_id
    brokers = tuple(
        BrokerRow(b.broker_id, f"{b.host}:{b.port}", b.rack, b.shutting_down,
                  b.broker_id == controller_id, b.broker_id == reading.broker_id)
        for b in sorted(metadata.brokers.values(), key=lambda b: b.broker_id)
    )
    topics = []
    for name in sorted(metadata.topics):
        if not internal and name.startswith("__"):
            continue
        info = metadata.topics[name]
        needed = min_isr(name)
        rows = []
        for index in info.partition_ids():
            tp = TopicPartition(name, index)
            state = metadata.partitions.get(tp)
            if state is None:
                continue
            p = reading.local.get(tp)
            rows.append(PartitionRow(
                topic=name, partition=index, leader=state.leader, leader_epoch=state.leader_epoch,
                replicas=state.replicas, isr=state.isr, min_isr=needed,
                high_watermark=None if p is None else p.high_watermark,
                hw_from_leader=p is not None and p.is_leader,
                log_start_offset=None if p is None else p.log_start_offset,
                log_end_offset=None if p is None else p.log_end_offset,
                size_bytes=None if p is None else p.size_bytes,
                segments=None if p is None else p.segments,
            ))
        bytes_in, records_in, bytes_out = reading.traffic.get(name, (0, 0, 0))
        topics.append(TopicRow(
            name=name, topic_id=str(info.topic_id), partitions=tuple(rows),
            replication_factor=len(info.assignment[0]) if info.assignment else 0,
            configs=tuple(sorted(info.configs.items())), config_error=reading.config_errors.get(name),
            bytes_in=bytes_in, bytes_out=bytes_out, records_in=records_in,
        ))
    return ClusterSnapshot(
        broker_id=reading.broker_id, cluster_id=metadata.cluster_id, controller_id=controller_id,
        brokers=brokers, topics=tuple(topics), health=cluster_health(metadata, min_isr),
        metadata_revision=metadata.revision,
    )
