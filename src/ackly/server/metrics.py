"""Prometheus metrics of one broker: a collector that reads the node at scrape time.

The core keeps plain counters where events happen (broker/stats.py, ClusterMember's
controller_changes) and state it already has (partitions, ISR, logs, the purgatory, the group
coordinator's offsets); nothing here runs on the Kafka request path except
`RequestMetrics.observe` (a few dictionary updates per request). A scrape walks the node once,
on the event loop, without I/O: every gauge is computed from memory.

Cardinality is bounded: per-topic series only while the cluster has at most
`admin.metrics.max.topics` topics, per-partition series (log size, segments) and per-group
lag series only up to `admin.metrics.max.partition.series` each; beyond a limit the
aggregate series stay and `ackly_metrics_series_dropped` counts what was left out.
The table of every metric and the Kafka metric it mirrors is docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ackly.cluster.health import ClusterHealth, cluster_health
from ackly.cluster.metadata import ClusterMetadata
from ackly.server.request_metrics import (  # noqa: F401  (re-exported)
    API_NAMES,
    PURGATORY_KINDS,
    Histogram,
    RequestMetrics,
)
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode
    from ackly.server.app import BrokerServer

class BrokerCollector(Collector):
    """Reads one BrokerServer's node at scrape time (see the module docstring)."""

    def __init__(self, server: BrokerServer, *, max_topics: int, max_partition_series: int) -> None:
        self.server = server
        self.max_topics = max_topics
        self.max_partition_series = max_partition_series
        self._health: tuple[ClusterMetadata, ClusterHealth] | None = None

    def describe(self) -> list[Metric]:
        return []  # no describe at registration: collect() reads a node that may not exist yet

    def collect(self) -> Iterator[Metric]:
        server = self.server
        node = server.node
        if node is None:
            return
        started = time.perf_counter()
        dropped = 0
        yield from self._requests()
        yield from self._connections()
        yield from self._flushes()
        yield from self._replicas()
        yield from self._controller()
        topic_metrics, n = self._topics()
        dropped += n
        yield from topic_metrics
        log_metrics, n = self._logs()
        dropped += n
        yield from log_metrics
        lag_metrics, n = self._group_lag()
        dropped += n
        yield from lag_metrics
        yield from self._coordinators()
        g = GaugeMetricFamily("ackly_metrics_series_dropped",
                              "Series left out of this scrape by the cardinality limits")
        g.add_metric([], dropped)
        yield g
        g = GaugeMetricFamily("ackly_metrics_scrape_seconds", "Time the previous scrape took to collect")
        g.add_metric([], server.admin_scrape_s)
        yield g
        server.admin_scrape_s = time.perf_counter() - started

    # --- the request path --------------------------------------------------------------

    def _requests(self) -> Iterator[Metric]:
        rm = self.server.request_metrics
        c = CounterMetricFamily("ackly_requests", "Requests answered, per API",
                                labels=["request"])
        for name, n in sorted(rm.requests.items()):
            c.add_metric([name], n)
        yield c
        c = CounterMetricFamily("ackly_request_errors", "Error codes in answers, per API and error",
                                labels=["request", "error"])
        for (name, error), n in sorted(rm.errors.items()):
            c.add_metric([name, error], n)
        yield c
        h = HistogramMetricFamily("ackly_request_total_time_seconds",
                                  "From a request's arrival to its answer being ready, per API",
                                  labels=["request"])
        for name, hist in sorted(rm.latency.items()):
            h.add_metric([name], hist.buckets(), hist.sum_s)
        yield h

    def _connections(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("ackly_connections", "Open client connections, per listener",
                              labels=["listener"])
        per_listener = dict.fromkeys((lst.name for lst in self.server.listener_set.listeners), 0)
        for conn in self.server.connections:
            name = conn.listener.name if conn.listener is not None else ""
            per_listener[name] = per_listener.get(name, 0) + 1
        for name, count in per_listener.items():
            g.add_metric([name], count)
        yield g
        g = GaugeMetricFamily("ackly_request_memory_used_bytes",
                              "Bytes of requests held (queued.max.request.bytes pool)")
        g.add_metric([], self.server.pool.used_bytes)
        yield g

    def _flushes(self) -> Iterator[Metric]:
        fm = self.server.flush_metrics
        h = HistogramMetricFamily("ackly_log_flush_seconds", "Group-commit flush (fsync) latency")
        h.add_metric([], fm.latency.buckets(), fm.latency.sum_s)
        yield h
        c = CounterMetricFamily("ackly_log_flush_errors", "Flushes that failed (the log directory went offline)")
        c.add_metric([], fm.errors)
        yield c
        g = GaugeMetricFamily("ackly_log_dir_offline", "1 once the log directory is offline")
        g.add_metric([], 1 if self.server.node.log_dir_failure is not None else 0)
        yield g

    # --- replication -------------------------------------------------------------------

    def _replicas(self) -> Iterator[Metric]:
        node = self.server.node
        stats = node.stats
        metadata = node.metadata
        led = under = under_min = at_min = producers = open_txns = hanging = 0
        now_ms = self.server.now_ms()
        # Kafka's rule for a hanging transaction (kafka-transactions.sh find-hanging): open on
        # a partition for longer than the longest timeout a transaction may have.
        hanging_after_ms = int(node.config.get("transaction.max.timeout.ms"))
        for p in node.all_partitions():
            if not p.is_leader:
                continue
            state = p.log.producer_state
            producers += len(state)
            for producer_id in state.ongoing_transactions():
                open_txns += 1
                entry = state.get(producer_id)
                if entry is not None and now_ms - entry.last_append_ms > hanging_after_ms:
                    hanging += 1
            led += 1
            min_isr = p.config.min_insync_replicas
            if len(p.isr) < len(p.replicas):
                under += 1
            if len(p.isr) < min_isr:
                under_min += 1
            elif len(p.isr) == min_isr:
                at_min += 1
        for name, help_text, value in (
            ("ackly_leader_partitions", "Partitions this broker leads (LeaderCount)", led),
            ("ackly_partitions", "Replicas hosted on this broker (PartitionCount)",
             sum(1 for _ in node.all_partitions())),
            ("ackly_under_replicated_partitions",
             "Partitions led here whose ISR is smaller than their replicas", under),
            ("ackly_under_min_isr_partitions",
             "Partitions led here whose ISR is below min.insync.replicas", under_min),
            ("ackly_at_min_isr_partitions",
             "Partitions led here whose ISR is exactly min.insync.replicas", at_min),
            ("ackly_producer_ids", "Producer ids with state on partitions led here (ProducerIdCount)",
             producers),
            ("ackly_open_transactions", "Transactions open on partitions led here", open_txns),
            ("ackly_hanging_transactions",
             "Open transactions idle on a partition led here for over transaction.max.timeout.ms",
             hanging),
            ("ackly_registered_brokers", "Brokers registered in this broker's metadata view",
             len(metadata.brokers)),
        ):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], value)
            yield g
        g = GaugeMetricFamily("ackly_purgatory_size", "Delayed operations waiting, per kind",
                              labels=["operation"])
        waiting = node.purgatory.waiting_by_kind()
        for kind, label in PURGATORY_KINDS.items():
            g.add_metric([label], waiting.pop(kind, 0))
        g.add_metric(["Other"], sum(waiting.values()))
        yield g
        for name, help_text, value in (
            ("ackly_isr_shrinks", "ISR shrinks seen by this broker as leader", stats.isr_shrinks),
            ("ackly_isr_expands", "ISR expansions seen by this broker as leader", stats.isr_expands),
            ("ackly_leadership_gained", "Leader epochs this broker started", stats.leadership_gained),
            ("ackly_replication_bytes_out", "Record bytes sent to follower fetches",
             stats.replication_bytes_out),
        ):
            c = CounterMetricFamily(name, help_text)
            c.add_metric([], value)
            yield c

    def _controller(self) -> Iterator[Metric]:
        """The active controller's view (Kafka's KafkaController metrics: only the active
        controller reports non-zero counts, so a sum over the brokers is the cluster's)."""
        node = self.server.node
        member = node.member
        metadata = node.metadata
        active = metadata.controller is not None and metadata.controller.broker_id == node.broker_id
        offline = preferred_imbalance = down = 0
        if active:
            # A view is immutable: while it is the same object, so is its health.
            if self._health is None or self._health[0] is not metadata:
                self._health = (metadata, cluster_health(metadata, lambda t: _min_isr(node, t)))
            health = self._health[1]
            offline = len(health.offline)
            down = len(health.brokers_down)
            preferred_imbalance = health.preferred_imbalance
        for name, help_text, value in (
            ("ackly_active_controller", "1 on the active controller (ActiveControllerCount)", int(active)),
            ("ackly_offline_partitions", "Partitions without a leader (OfflinePartitionsCount)", offline),
            ("ackly_brokers_down", "Brokers named in replicas but not registered", down),
            ("ackly_preferred_replica_imbalance",
             "Partitions not led by their preferred replica (PreferredReplicaImbalanceCount)",
             preferred_imbalance),
        ):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], value)
            yield g
        c = CounterMetricFamily("ackly_controller_partition_changes",
                                "Partition states written by this broker as controller, per reason",
                                labels=["reason"])
        for reason, n in sorted(member.controller_changes.items()):
            c.add_metric([reason], n)
        yield c

    # --- topics, logs, groups ----------------------------------------------------------

    def _topics(self) -> tuple[list[Metric], int]:
        traffic = self.server.node.stats.traffic
        names = sorted(traffic)
        dropped = 0
        if len(names) > self.max_topics:
            dropped = len(names)
            names = []
        families = {
            "bytes_in": CounterMetricFamily("ackly_topic_bytes_in", "Produced bytes appended as leader",
                                            labels=["topic"]),
            "records_in": CounterMetricFamily("ackly_topic_records_in", "Produced records appended as leader",
                                              labels=["topic"]),
            "bytes_out": CounterMetricFamily("ackly_topic_bytes_out", "Record bytes sent to consumers",
                                             labels=["topic"]),
            "produce_requests_failed": CounterMetricFamily(
                "ackly_topic_failed_produce", "Partition appends refused", labels=["topic"]),
        }
        for name in names:
            t = traffic[name]
            for attr, family in families.items():
                family.add_metric([name], getattr(t, attr))
        totals = {
            "bytes_in": CounterMetricFamily("ackly_bytes_in", "Produced bytes appended as leader, all topics"),
            "records_in": CounterMetricFamily("ackly_records_in", "Produced records appended as leader, all topics"),
            "bytes_out": CounterMetricFamily("ackly_bytes_out", "Record bytes sent to consumers, all topics"),
        }
        for attr, family in totals.items():
            family.add_metric([], sum(getattr(t, attr) for t in traffic.values()))
        return [*families.values(), *totals.values()], dropped

    def _logs(self) -> tuple[list[Metric], int]:
        size = GaugeMetricFamily("ackly_log_size_bytes", "Bytes of a replica's log (Log Size)",
                                 labels=["topic", "partition"])
        segments = GaugeMetricFamily("ackly_log_segments", "Segments of a replica's log (NumLogSegments)",
                                     labels=["topic", "partition"])
        total = GaugeMetricFamily("ackly_log_size_total_bytes", "Bytes of every log on this broker")
        all_bytes = dropped = shown = 0
        for p in sorted(self.server.node.all_partitions(), key=lambda p: p.tp):
            nbytes = p.log.size_bytes
            all_bytes += nbytes
            if shown >= self.max_partition_series:
                dropped += 1
                continue
            shown += 1
            labels = [p.tp.topic, str(p.tp.partition)]
            size.add_metric(labels, nbytes)
            segments.add_metric(labels, len(p.log.segments))
        total.add_metric([], all_bytes)
        return [size, segments, total], dropped

    def _group_lag(self) -> tuple[list[Metric], int]:
        """Lag of each committed offset held by a group shard here, against the partition's
        HW where this broker leads it (a coordinator knows no other broker's HW)."""
        node = self.server.node
        lag = GaugeMetricFamily("ackly_group_lag", "HW minus the group's committed offset (records)",
                                labels=["group", "topic", "partition"])
        groups = GaugeMetricFamily("ackly_groups", "Consumer groups held by this broker's coordinator")
        shown = dropped = n_groups = 0
        leaders = node.replicas.partitions
        for _, shard in node.group_coordinator.runtime.shards():
            n_groups += len(shard.groups)
            for group_id, offsets in sorted(shard.offsets.items()):
                for (topic, partition), value in sorted(offsets.items()):
                    p = leaders.get(TopicPartition(topic, partition))
                    if p is None or not p.is_leader:
                        continue
                    if shown >= self.max_partition_series:
                        dropped += 1
                        continue
                    shown += 1
                    lag.add_metric([group_id, topic, str(partition)], max(p.high_watermark - value.offset, 0))
        groups.add_metric([], n_groups)
        return [lag, groups], dropped

    def _coordinators(self) -> Iterator[Metric]:
        node = self.server.node
        h = HistogramMetricFamily("ackly_coordinator_load_seconds",
                                  "Time to load one coordinator shard (replay its partition)",
                                  labels=["coordinator"])
        for name, hist in self.server.coordinator_load_metrics.latency.items():
            h.add_metric([name], hist.buckets(), hist.sum_s)
        yield h
        g = GaugeMetricFamily("ackly_group_coordinator_shards",
                              "__consumer_offsets partitions loaded by this broker")
        g.add_metric([], sum(1 for _ in node.group_coordinator.runtime.shards()))
        yield g
        g = GaugeMetricFamily("ackly_producer_id_next", "The next producer id this broker hands out")
        g.add_metric([], node.producer_ids.next_id)
        yield g


def _min_isr(node: BrokerNode, topic: str) -> int:
    state = node.topics.get(topic)
    return 1 if state is None else int(state.config.min_insync_replicas)
