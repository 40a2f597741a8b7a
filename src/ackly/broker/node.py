"""One broker: its topics and partitions, the delayed operations, and the flush schedule.

Owns: the map of partitions this broker serves, the purgatory of waiting produce and fetch
requests, and which partitions need a flush. It is deterministic: requests, ticks and flush
completions come in from the shell with `now_ms`; answers go out through each request's
context; flush work goes out as FlushJobs that the shell runs off the event loop.

Group commit (flush.policy=always): appends mark their partition dirty; the shell takes every
dirty partition's FlushJob at once, runs them in one worker call, and reports back, so one
fsync covers every append made before it started. Appends made while it runs wait for the next.

Invariants: every request gets exactly one answer (or none, for acks=0); a produce answer
with no error is sent only when the data is durable per the topic's flush.policy and, for
acks=all, below HW.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from ackly.broker.context import RequestContext
from ackly.broker.dispatch import dispatch
from ackly.cluster.topics import TopicCatalogue, TopicMetadata
from ackly.config import BrokerConfig, TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import Disk
from ackly.log.partition_log import FlushJob, PartitionLog
from ackly.replication.partition import Partition
from ackly.replication.purgatory import Purgatory
from ackly.types import TopicPartition

log = logging.getLogger("ackly.broker")


@dataclass
class TopicState:
    meta: TopicMetadata
    config: TopicConfig
    partitions: list[Partition]

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def topic_id(self) -> uuid.UUID:
        return self.meta.topic_id


class BrokerNode:
    def __init__(
        self,
        *,
        config: BrokerConfig,
        disk: Disk,
        data_dir: str,
        host: str,
        port: int,
        now_ms: int,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.disk = disk
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.rng = rng
        self.purgatory = Purgatory()
        self.topics: dict[str, TopicState] = {}
        self.topics_by_id: dict[uuid.UUID, TopicState] = {}
        self._dirty: set[TopicPartition] = set()
        self._flush_interval_due_ms: dict[TopicPartition, int] = {}
        self._next_retention_ms = now_ms + int(config.get("log.retention.check.interval.ms"))
        disk.makedirs(data_dir)
        cluster_id = uuid.UUID(int=rng.getrandbits(128)).hex[:22]
        self.catalogue = TopicCatalogue(disk, data_dir, cluster_id)
        for meta in list(self.catalogue.topics.values()):
            self._open_topic(meta, now_ms)

    @property
    def cluster_id(self) -> str:
        return self.catalogue.cluster_id

    # --- topics -------------------------------------------------------------------------

    def _partition_dir(self, tp: TopicPartition) -> str:
        return f"{self.data_dir}/{tp.topic}-{tp.partition}"

    def _open_partition(self, tp: TopicPartition, config: TopicConfig, now_ms: int) -> Partition:
        log = PartitionLog.open(self.disk, self._partition_dir(tp), config, now_ms)
        return Partition(tp=tp, log=log, config=config, broker_id=self.broker_id)

    def _open_topic(self, meta: TopicMetadata, now_ms: int) -> TopicState:
        config = TopicConfig.resolve(self.config, meta.configs)
        partitions = [
            self._open_partition(TopicPartition(meta.name, i), config, now_ms)
            for i in range(meta.partitions)
        ]
        state = TopicState(meta=meta, config=config, partitions=partitions)
        self.topics[meta.name] = state
        self.topics_by_id[meta.topic_id] = state
        return state

    def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], now_ms: int
    ) -> TopicState:
        """Create a topic (the caller validated name, count and configs). Durable on return."""
        assert name not in self.topics
        meta = TopicMetadata(
            name=name, topic_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            partitions=partitions, configs=configs,
        )
        self.catalogue.put(meta)
        return self._open_topic(meta, now_ms)

    def delete_topic(self, name: str, now_ms: int) -> None:
        state = self.topics.pop(name)
        del self.topics_by_id[state.topic_id]
        self.catalogue.remove(name)
        for p in state.partitions:
            self._dirty.discard(p.tp)
            p.log.delete()
            # Wake waiters so fetches on the deleted partition answer now, not at their deadline.
            self.purgatory.check(p.tp, now_ms)

    def add_partitions(self, name: str, total: int, now_ms: int) -> None:
        state = self.topics[name]
        meta = state.meta.with_partitions(total)
        self.catalogue.put(meta)
        state.meta = meta
        for i in range(len(state.partitions), total):
            state.partitions.append(
                self._open_partition(TopicPartition(name, i), state.config, now_ms)
            )

    def alter_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's overrides (validated by the caller). Durable on return."""
        state = self.topics[name]
        config = TopicConfig.resolve(self.config, configs)
        state.meta = state.meta.with_configs(configs)
        self.catalogue.put(state.meta)
        state.config = config
        for p in state.partitions:
            p.update_config(config)

    def partition(self, topic: str, index: int) -> Partition:
        """The partition, or KafkaError(UNKNOWN_TOPIC_OR_PARTITION)."""
        state = self.topics.get(topic)
        if state is None or not 0 <= index < len(state.partitions):
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{index} is unknown")
        return state.partitions[index]

    def all_partitions(self) -> Iterable[Partition]:
        for state in self.topics.values():
            yield from state.partitions

    # --- appends, flushes and time -------------------------------------------------------

    def after_append(self, p: Partition, now_ms: int) -> None:
        """An append happened: schedule its flush and wake whoever waits on the partition."""
        policy = p.config.flush_policy
        if policy == "always":
            self._dirty.add(p.tp)
        elif policy == "interval" and p.tp not in self._flush_interval_due_ms:
            self._flush_interval_due_ms[p.tp] = now_ms + p.config.flush_interval_ms
        self.purgatory.check(p.tp, now_ms)

    def take_flush_jobs(self) -> list[tuple[TopicPartition, FlushJob]]:
        """Everything waiting for a flush now; the shell runs the jobs off the loop."""
        jobs = []
        for tp in self._dirty:
            state = self.topics.get(tp.topic)
            if state is None or tp.partition >= len(state.partitions):
                continue
            job = state.partitions[tp.partition].log.begin_flush()
            if job is not None:
                jobs.append((tp, job))
        self._dirty.clear()
        return jobs

    @property
    def has_flush_work(self) -> bool:
        return bool(self._dirty)

    def complete_flush(self, jobs: list[tuple[TopicPartition, FlushJob]], now_ms: int) -> None:
        for tp, job in jobs:
            state = self.topics.get(tp.topic)
            if state is None or tp.partition >= len(state.partitions):
                continue  # deleted while its flush ran
            p = state.partitions[tp.partition]
            p.log.complete_flush(job)
            p.on_flushed()
            self.purgatory.check(tp, now_ms)

    def tick(self, now_ms: int) -> None:
        """Run what is due: expired delayed operations, interval flushes, retention."""
        self.purgatory.expire(now_ms)
        for tp, due in list(self._flush_interval_due_ms.items()):
            if due <= now_ms:
                del self._flush_interval_due_ms[tp]
                self._dirty.add(tp)
        if now_ms >= self._next_retention_ms:
            self._next_retention_ms = now_ms + int(
                self.config.get("log.retention.check.interval.ms")
            )
            self.enforce_retention(now_ms)
        for p in self.all_partitions():
            p.log.tick(now_ms)

    def enforce_retention(self, now_ms: int) -> int:
        deleted = 0
        for p in self.all_partitions():
            if "delete" in p.config.cleanup_policy:
                deleted += p.log.enforce_retention(now_ms)
        return deleted

    def next_deadline_ms(self) -> int | None:
        candidates = [self._next_retention_ms, *self._flush_interval_due_ms.values()]
        purgatory_deadline = self.purgatory.next_deadline_ms()
        if purgatory_deadline is not None:
            candidates.append(purgatory_deadline)
        return min(candidates)

    def close(self) -> None:
        """Clean shutdown: flush and close every log (writes the clean-shutdown markers).

        A log that cannot be closed cleanly (a full or failing disk) is logged and left for
        recovery at the next start, which checks it from its recovery point; the others still
        close.
        """
        for p in self.all_partitions():
            try:
                p.log.close()
            except (OSError, KafkaError) as exc:
                log.error("%s not closed cleanly (recovery will check it at start-up): %s", p.tp, exc)

    # --- requests --------------------------------------------------------------------------

    def handle_frame(self, ctx: RequestContext, frame: bytes) -> None:
        """Decode one request frame (its header is in ctx) and run its handler."""
        dispatch(self, ctx, frame)
