"""Simulated Kafka clients: an admin that creates the topic, producers, consumers, and the
history of what they were told.

Owns: each client's view of the cluster (partition leaders learned from Metadata responses),
its requests (real Produce, Fetch, Metadata and CreateTopics frames, through the simulated
network), its retries, and the `History`: every write with the outcome of each attempt, and
every record a consumer read.

Producers send one batch at a time (1-3 records with values unique in the whole run) to the
partition leader they know, and retry the same batch until it is acknowledged: on a retriable
error, a timeout or a reset they refresh metadata and send it again. Idempotent producers carry
a producer id chosen by the simulator (unique per producer), an epoch and per-partition
sequences, so a retry of an appended batch must be recognised as a duplicate (rules 15-17).
Every attempt's outcome is recorded as
  "ok"            acknowledged (at the offset given),
  "refused"       definitely not written (NOT_ENOUGH_REPLICAS, or a sequence refusal),
  "indeterminate" anything else (timeout, reset, NOT_LEADER_OR_FOLLOWER, ...): may surface.
Consumers fetch (read_uncommitted) from the leader they know and record (offset, value) of
every record they read, checking at once that no record comes at or above the HW the same
response states (rule 3).

Invariants: a write's values are never sent under two (producer id, epoch, sequence) identities,
so any duplicate in the log is the broker's doing; a consumer's positions only move forward.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ackly.errors import ErrorCode
from ackly.protocol.record_codec import Record, decode_batches, encode_batch
from ackly.sim import frames
from ackly.sim.network import Network
from ackly.sim.scheduler import Event, Scheduler
from ackly.types import TopicPartition

PRODUCE, FETCH, METADATA, CREATE_TOPICS = 0, 1, 3, 19
PRODUCE_VERSION, FETCH_VERSION, METADATA_VERSION, CREATE_TOPICS_VERSION = 9, 11, 12, 5

# A write refused with these was certainly not appended (rule 8; the sequence checks of rule 15
# run before anything is written). UNKNOWN_PRODUCER_ID is not among them: a leader with no state
# for a producer accepts any sequence (KIP-360, log/producer_state.py).
REFUSED = frozenset({
    ErrorCode.not_enough_replicas, ErrorCode.out_of_order_sequence_number,
    ErrorCode.invalid_producer_epoch,
})
# The producer's identity is no longer usable: bump the epoch and start again at sequence 0
# (KIP-360). The write in hand is abandoned (its earlier attempts may still surface).
RESTART_IDENTITY = frozenset({
    ErrorCode.out_of_order_sequence_number, ErrorCode.invalid_producer_epoch,
})


class ClientViolation(AssertionError):
    """A client saw something a correct broker never shows (checked as it arrives)."""


@dataclass
class Write:
    write_id: int
    producer: str
    tp: TopicPartition
    values: tuple[bytes, ...]
    acks: int
    idempotent: bool
    identity: tuple[int, int, int] | None  # (producer id, epoch, base sequence)
    attempts: list[str] = field(default_factory=list)
    offset: int | None = None  # base offset of an acknowledgement
    abandoned: bool = False

    @property
    def acknowledged(self) -> bool:
        return "ok" in self.attempts

    @property
    def refused(self) -> bool:
        """Certainly not in the log: every attempt was refused before anything was written."""
        return bool(self.attempts) and all(a == "refused" for a in self.attempts)


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)
    # (tp, offset, value, consumer)
    reads: list[tuple[TopicPartition, int, bytes | None, str]] = field(default_factory=list)

    def new_write(self, **kwargs: Any) -> Write:
        write = Write(write_id=len(self.writes), **kwargs)
        self.writes.append(write)
        return write


@dataclass
class ClientEnv:
    scheduler: Scheduler
    network: Network
    history: History
    brokers: list[int]
    topic: str
    request_timeout_ms: int = 3_000
    backoff_ms: int = 100


class _Client:
    """Metadata and request plumbing shared by every simulated client."""

    def __init__(self, name: str, env: ClientEnv, rng: random.Random) -> None:
        self.name = name
        self.env = env
        self.rng = rng
        self.leaders: dict[int, tuple[int, int]] = {}  # partition -> (leader id, leader epoch)
        self.partitions = 0
        self._metadata_inflight = False
        self._wake_event: Event | None = None
        self.stopped = False

    @property
    def scheduler(self) -> Scheduler:
        return self.env.scheduler

    def wake(self, delay_ms: int = 0) -> None:
        """Run `step` after `delay_ms` (an earlier pending wake-up wins)."""
        due = self.scheduler.now_ms + delay_ms
        if self._wake_event is not None and not self._wake_event.cancelled:
            if self._wake_event.time_ms <= due:
                return
            self._wake_event.cancel()
        self._wake_event = self.scheduler.at(due, f"wake {self.name}", self._on_wake)

    def _on_wake(self) -> None:
        self._wake_event = None
        if not self.stopped:
            self.step()

    def step(self) -> None:
        raise NotImplementedError

    def send(self, broker_id: int, request: Any, on_response: Callable[[Any], None],
             on_failure: Callable[[str], None]) -> None:
        self.env.network.request(
            self.name, broker_id, request, client_id=self.name, timeout_ms=self.env.request_timeout_ms,
            on_response=on_response, on_failure=on_failure,
        )

    def refresh_metadata(self) -> None:
        if self._metadata_inflight:
            return
        self._metadata_inflight = True
        broker = self.rng.choice(self.env.brokers)
        request = frames.request(METADATA, METADATA_VERSION, {
            "topics": [{"name": self.env.topic}], "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False,
        })
        self.send(broker, request, self._on_metadata, self._on_metadata_failure)

    def _on_metadata(self, response: Any) -> None:
        self._metadata_inflight = False
        for topic in response.topics:
            if topic.name != self.env.topic or topic.error_code != ErrorCode.none:
                continue
            self.partitions = max(self.partitions, len(topic.partitions))
            for p in topic.partitions:
                index = int(p.partition_index)
                leader, epoch = int(p.leader_id), int(p.leader_epoch)
                known = self.leaders.get(index)
                if p.error_code != ErrorCode.none or leader < 0:
                    continue
                # Never step back to an older leader epoch from a stale broker's view.
                if known is None or epoch >= known[1]:
                    self.leaders[index] = (leader, epoch)
        complete = self.partitions > 0 and len(self.leaders) >= self.partitions
        self.wake(0 if complete else self.env.backoff_ms)

    def _on_metadata_failure(self, reason: str) -> None:
        self._metadata_inflight = False
        self.wake(self.env.backoff_ms)

    def forget_leader(self, partition: int) -> None:
        self.leaders.pop(partition, None)


class Admin(_Client):
    """Creates the topic (retrying through any broker) and is done."""

    def __init__(self, name: str, env: ClientEnv, rng: random.Random, partitions: int,
                 replication_factor: int, configs: dict[str, str]) -> None:
        super().__init__(name, env, rng)
        self.spec = (partitions, replication_factor, configs)
        self.done = False
        self._inflight = False

    def step(self) -> None:
        if self.done or self._inflight:
            return
        partitions, rf, configs = self.spec
        request = frames.request(CREATE_TOPICS, CREATE_TOPICS_VERSION, {
            "topics": [{
                "name": self.env.topic, "num_partitions": partitions, "replication_factor": rf,
                "assignments": [], "configs": [{"name": k, "value": v} for k, v in sorted(configs.items())],
            }],
            "timeout": 5_000, "validate_only": False,
        })
        self._inflight = True
        self.send(self.rng.choice(self.env.brokers), request, self._on_response, self._on_failure)

    def _on_response(self, response: Any) -> None:
        self._inflight = False
        code = response.topics[0].error_code
        if code in (ErrorCode.none, ErrorCode.topic_already_exists):
            self.done = True
        else:
            self.wake(self.env.backoff_ms * 2)

    def _on_failure(self, reason: str) -> None:
        self._inflight = False
        self.wake(self.env.backoff_ms * 2)


class Producer(_Client):
    def __init__(self, name: str, env: ClientEnv, rng: random.Random, *, acks: int,
                 producer_id: int | None, max_writes: int, think_ms: int) -> None:
        super().__init__(name, env, rng)
        self.acks = acks
        self.producer_id = producer_id
        self.epoch = 0
        self.sequences: dict[int, int] = {}
        self.max_writes = max_writes
        self.think_ms = think_ms
        self.producing = True  # new writes allowed (off in the liveness phase)
        self.current: Write | None = None
        self._batch: bytes = b""
        self._inflight = False
        self._written = 0

    @property
    def idle(self) -> bool:
        return self.current is None and not self._inflight

    def step(self) -> None:
        if self._inflight:
            return
        if self.current is None:
            if not self.producing or self._written >= self.max_writes:
                return
            if self.partitions == 0:
                self.refresh_metadata()
                return
            self._new_write()
        write = self.current
        assert write is not None
        known = self.leaders.get(write.tp.partition)
        if known is None:
            self.refresh_metadata()
            return
        request = frames.request(PRODUCE, PRODUCE_VERSION, {
            "transactional_id": None, "acks": self.acks, "timeout": self.env.request_timeout_ms - 500,
            "topic_data": [{"name": write.tp.topic, "partition_data": [
                {"index": write.tp.partition, "records": self._batch},
            ]}],
        })
        self._inflight = True
        leader = known[0]
        self.send(
            leader, request, lambda r: self._on_produce(write, r), lambda why: self._on_failure(write, why)
        )

    def _new_write(self) -> None:
        self._written += 1
        partition = self.rng.randrange(self.partitions)
        count = self.rng.randint(1, 3)
        values = tuple(f"{self.name}-{self._written}-{i}".encode() for i in range(count))
        identity = None
        producer_id, epoch, sequence = -1, -1, -1
        if self.producer_id is not None:
            producer_id, epoch = self.producer_id, self.epoch
            sequence = self.sequences.get(partition, 0)
            identity = (producer_id, epoch, sequence)
        self.current = self.env.history.new_write(
            producer=self.name, tp=TopicPartition(self.env.topic, partition), values=values,
            acks=self.acks, idempotent=identity is not None, identity=identity,
        )
        self._batch = encode_batch(
            [Record(key=None, value=v) for v in values], producer_id=producer_id,
            producer_epoch=epoch, base_sequence=sequence, now_ms=self.scheduler.now_ms,
        )

    def _on_produce(self, write: Write, response: Any) -> None:
        self._inflight = False
        result = response.responses[0].partition_responses[0]
        code = result.error_code
        if code == ErrorCode.none:
            write.attempts.append("ok")
            write.offset = int(result.base_offset)
            if write.identity is not None:
                self.sequences[write.tp.partition] = write.identity[2] + len(write.values)
            self.current = None
            self.wake(self.rng.randint(0, self.think_ms))
            return
        write.attempts.append("refused" if code in REFUSED else "indeterminate")
        if code in RESTART_IDENTITY:
            # KIP-360: a new epoch, every sequence from 0; this write is given up.
            write.abandoned = True
            self.current = None
            self.epoch += 1
            self.sequences.clear()
        if code not in (ErrorCode.not_enough_replicas, ErrorCode.not_enough_replicas_after_append):
            self.forget_leader(write.tp.partition)
        self.wake(self.env.backoff_ms)

    def _on_failure(self, write: Write, reason: str) -> None:
        self._inflight = False
        write.attempts.append("indeterminate")
        self.forget_leader(write.tp.partition)
        self.wake(self.env.backoff_ms)


class Consumer(_Client):
    fetch_isolation_level = 0  # read_uncommitted; IsolatedConsumer asks for read_committed

    def __init__(self, name: str, env: ClientEnv, rng: random.Random, max_wait_ms: int) -> None:
        super().__init__(name, env, rng)
        self.positions: dict[int, int] = {}
        self.high_watermarks: dict[int, int] = {}
        self.max_wait_ms = max_wait_ms
        self._next = 0
        self._inflight = False
        self.violations: list[str] = []

    def step(self) -> None:
        if self._inflight:
            return
        fetch = self._next_fetch()
        if fetch is None:
            return
        partition, leader, request = fetch
        self._inflight = True
        self.send(leader, request, lambda r: self._on_fetch(partition, leader, r), self._on_failure)

    def _next_fetch(self) -> tuple[int, int, Any] | None:
        """The next partition in turn, its leader and a Fetch from this consumer's position
        there; None (after asking for metadata) while the topic or that leader is unknown."""
        if self.partitions == 0:
            self.refresh_metadata()
            return None
        partition = self._next % self.partitions
        self._next += 1
        known = self.leaders.get(partition)
        if known is None:
            self.refresh_metadata()
            return None
        leader, epoch = known
        request = frames.request(FETCH, FETCH_VERSION, {
            "replica_id": -1, "max_wait": self.max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": self.fetch_isolation_level, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": self.env.topic, "partitions": [{
                "partition": partition, "current_leader_epoch": epoch,
                "fetch_offset": self.positions.get(partition, 0),
                "log_start_offset": -1, "partition_max_bytes": 1 << 20,
            }]}],
            "forgotten_topics_data": [], "rack_id": "",
        })
        return partition, leader, request

    def _on_fetch(self, partition: int, leader: int, response: Any) -> None:
        self._inflight = False
        data = response.responses[0].partitions[0]
        code = data.error_code
        if code != ErrorCode.none:
            self.forget_leader(partition)
            self.wake(self.env.backoff_ms)
            return
        hw = int(data.high_watermark)
        self.high_watermarks[partition] = hw
        position = self.positions.get(partition, 0)
        tp = TopicPartition(self.env.topic, partition)
        if data.records:
            try:
                batches = decode_batches(bytes(data.records))
            except Exception as exc:
                raise ClientViolation(
                    f"{self.name}: undecodable records from b{leader} for {tp}: {exc}"
                ) from exc
            for header, records in batches:
                if header.is_control:
                    # A transaction marker: consumed, never returned (Kafka's fetcher moves
                    # past it, so a log that ends with one is still read to its end).
                    position = max(position, header.last_offset + 1)
                    continue
                for record in records:
                    if record.offset < position:
                        continue
                    if record.offset >= hw:
                        raise ClientViolation(
                            f"{self.name}: b{leader} served {tp} offset {record.offset} at or above "
                            f"the HW {hw} of the same response (rule 3)"
                        )
                    self.env.history.reads.append((tp, record.offset, record.value, self.name))
                    position = record.offset + 1
        self.positions[partition] = position
        self.wake(0 if data.records else self.rng.randint(0, 50))

    def _on_failure(self, reason: str) -> None:
        self._inflight = False
        self.wake(self.env.backoff_ms)

    def caught_up(self, leader_hws: dict[int, int]) -> bool:
        return all(self.positions.get(p, 0) >= hw for p, hw in leader_hws.items())
