"""Counters of what this broker did, kept in plain integers for the shell to export.

The core never imports a metrics library: each counter is bumped where its event happens
(an ISR change applied on the leader, a produce appended, a fetch answered) and the shell's
collector (server/metrics.py) reads them at scrape time. Counters only rise; per-topic
counters are dropped with their topic (a deleted topic's series goes away, as Kafka removes a
topic's BrokerTopicMetrics), which keeps their number bounded by the topics that exist.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass
class TopicTraffic:
    """Kafka's BrokerTopicMetrics for one topic, on this broker."""

    bytes_in: int = 0  # BytesInPerSec: produced batch bytes appended as leader
    records_in: int = 0  # MessagesInPerSec: records in those batches
    bytes_out: int = 0  # BytesOutPerSec: record bytes sent to consumers (not to followers)
    produce_requests_failed: int = 0  # FailedProduceRequestsPerSec, per partition refused


@dataclass
class BrokerStats:
    # ReplicaManager IsrShrinksPerSec / IsrExpandsPerSec: counted on the leader when the
    # metadata shows an ISR that lost (or gained) a member within its leader epoch.
    isr_shrinks: int = 0
    isr_expands: int = 0
    # Leadership this broker took (a new leader epoch here), Kafka's LeaderCount changes.
    leadership_gained: int = 0
    traffic: dict[str, TopicTraffic] = field(default_factory=dict)
    # Fetches by follower replicas: ReplicationBytesOutPerSec.
    replication_bytes_out: int = 0

    def topic(self, name: str) -> TopicTraffic:
        traffic = self.traffic.get(name)
        if traffic is None:
            traffic = self.traffic[name] = TopicTraffic()
        return traffic

    def forget_topics(self, alive: Collection[str]) -> None:
        """Drop the series of topics that no longer exist."""
        for name in [n for n in self.traffic if n not in alive]:
            del self.traffic[name]

    def on_isr_change(self, before: frozenset[int], after: frozenset[int]) -> None:
        if before - after:
            self.isr_shrinks += 1
        if after - before:
            self.isr_expands += 1
