"""What the console's cluster and topic pages show, read from the node into plain values.

The node is not thread-safe, so a snapshot is taken on the event loop in one pass without I/O
(as a metrics scrape is); the values it returns are immutable and are rendered to HTML in a
worker thread. Everything comes from this broker's metadata view (brokers, controller,
leader, ISR, replicas, topic configs) and from the replicas it hosts (HW, log start, LEO,
sizes): a HW is authoritative where this broker leads the partition, a follower's view where
it follows it (at most the leader's), and unknown where it hosts no replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.cluster.health import ClusterHealth, cluster_health
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode


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


def take_snapshot(node: BrokerNode, *, internal: bool = True) -> ClusterSnapshot:
    """The cluster as this broker sees it now (call on the event loop)."""
    metadata = node.metadata

    def min_isr(topic: str) -> int:
        state = node.topics.get(topic)
        return 1 if state is None or state.resolved is None else int(state.resolved.min_insync_replicas)

    controller = metadata.controller
    controller_id = None if controller is None else controller.broker_id
    brokers = tuple(
        BrokerRow(b.broker_id, f"{b.host}:{b.port}", b.rack, b.shutting_down,
                  b.broker_id == controller_id, b.broker_id == node.broker_id)
        for b in sorted(metadata.brokers.values(), key=lambda b: b.broker_id)
    )
    hosted = node.replicas.partitions
    traffic = node.stats.traffic
    topics = []
    for name in sorted(metadata.topics):
        if not internal and name.startswith("__"):
            continue
        info = metadata.topics[name]
        needed = min_isr(name)
        rows = []
        for index in info.partition_ids():
            state = metadata.partitions.get(TopicPartition(name, index))
            if state is None:
                continue
            p = hosted.get(TopicPartition(name, index))
            rows.append(PartitionRow(
                topic=name, partition=index, leader=state.leader, leader_epoch=state.leader_epoch,
                replicas=state.replicas, isr=state.isr, min_isr=needed,
                high_watermark=None if p is None else p.high_watermark,
                hw_from_leader=p is not None and p.is_leader,
                log_start_offset=None if p is None else p.log_start_offset,
                log_end_offset=None if p is None else p.log_end_offset,
                size_bytes=None if p is None else p.log.size_bytes,
                segments=None if p is None else len(p.log.segments),
            ))
        topic_state = node.topics.get(name)
        t = traffic.get(name)
        topics.append(TopicRow(
            name=name, topic_id=str(info.topic_id), partitions=tuple(rows),
            replication_factor=len(info.assignment[0]) if info.assignment else 0,
            configs=tuple(sorted(info.configs.items())),
            config_error=None if topic_state is None else topic_state.config_error,
            bytes_in=0 if t is None else t.bytes_in, bytes_out=0 if t is None else t.bytes_out,
            records_in=0 if t is None else t.records_in,
        ))
    return ClusterSnapshot(
        broker_id=node.broker_id, cluster_id=metadata.cluster_id, controller_id=controller_id,
        brokers=brokers, topics=tuple(topics), health=cluster_health(metadata, min_isr),
        metadata_revision=metadata.revision,
    )
