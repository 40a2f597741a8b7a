"""The cluster's health as one metadata view shows it: what `/v1/cluster/health` reports.

A pure function of a ClusterMetadata view (no I/O), in the terms Kafka operators alert on:
brokers down (named in some partition's replicas but not registered, Redpanda's
`nodes_down`), offline partitions (no leader: the controller's OfflinePartitionsCount),
under-replicated partitions (ISR smaller than the replicas: ReplicaManager's
UnderReplicatedPartitions, here for the whole cluster) and partitions whose ISR is below, or
exactly at, the topic's min.insync.replicas (UnderMinIsrPartitionCount, AtMinIsrPartitionCount).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ackly.cluster.metadata import ClusterMetadata
from ackly.types import TopicPartition


@dataclass
class ClusterHealth:
    brokers: list[int]
    controller_id: int | None
    brokers_down: list[int] = field(default_factory=list)
    offline: list[TopicPartition] = field(default_factory=list)
    under_replicated: list[TopicPartition] = field(default_factory=list)
    under_min_isr: list[TopicPartition] = field(default_factory=list)
    at_min_isr: list[TopicPartition] = field(default_factory=list)
    # Led by a replica other than the first (Kafka's PreferredReplicaImbalanceCount).
    preferred_imbalance: int = 0

    @property
    def healthy(self) -> bool:
        return (self.controller_id is not None and not self.brokers_down and not self.offline
                and not self.under_replicated)

    def reasons(self) -> list[str]:
        """Why the cluster is not healthy, one phrase a problem (empty when healthy)."""
        out = []
        if self.controller_id is None:
            out.append("no controller")
        if self.brokers_down:
            out.append(f"brokers down: {', '.join(map(str, self.brokers_down))}")
        if self.offline:
            out.append(f"{len(self.offline)} leaderless partitions ({_names(self.offline)})")
        if self.under_replicated:
            out.append(f"{len(self.under_replicated)} under-replicated partitions "
                       f"({_names(self.under_replicated)})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "is_healthy": self.healthy,
            "reasons": self.reasons(),
            "controller_id": self.controller_id,
            "brokers": self.brokers,
            "brokers_down": self.brokers_down,
            "leaderless_partitions": [str(tp) for tp in self.offline],
            "under_replicated_partitions": [str(tp) for tp in self.under_replicated],
            "under_min_isr_partitions": [str(tp) for tp in self.under_min_isr],
            "at_min_isr_partitions": [str(tp) for tp in self.at_min_isr],
        }


_SHOWN = 5  # partitions named in a reason; the rest are counted


def _names(tps: list[TopicPartition]) -> str:
    shown = ", ".join(str(tp) for tp in tps[:_SHOWN])
    return shown if len(tps) <= _SHOWN else f"{shown}, ..."


def cluster_health(metadata: ClusterMetadata, min_isr: Callable[[str], int]) -> ClusterHealth:
    """`min_isr(topic)`: the topic's min.insync.replicas (its override or the broker default)."""
    registered = set(metadata.brokers)
    controller = metadata.controller
    health = ClusterHealth(sorted(registered), None if controller is None else controller.broker_id)
    down: set[int] = set()
    for tp, state in metadata.all_partitions():
        down.update(b for b in state.replicas if b not in registered)
        if not state.has_leader:
            health.offline.append(tp)
        elif state.leader != state.preferred_leader:
            health.preferred_imbalance += 1
        if len(state.isr) < len(state.replicas):
            health.under_replicated.append(tp)
        needed = min_isr(tp.topic)
        if len(state.isr) < needed:
            health.under_min_isr.append(tp)
        elif len(state.isr) == needed:
            health.at_min_isr.append(tp)
    health.brokers_down = sorted(down)
    return health
