"""The coordinator runtime: records in, replay out (Kafka's CoordinatorRuntime, KIP-848).

A coordinator *shard* is the in-memory state kept for one partition of an internal topic (for
groups: one partition of `__consumer_offsets`). Every operation on a shard runs to completion
on the caller's thread and produces two things, collected in an `Effects`:

- records to append to the shard's partition. A record is applied to the state by *replaying*
  it, at once, with the same `replay` code that loads the partition at start-up: the durable
  state of a shard never changes any other way, so loading (and, later, failover to another
  broker) is the normal path run again, not a second implementation;
- replies to requests. A reply is held back until every record appended to the shard so far
  is committed (HW past it), so no client ever sees state that a crash could take back, and
  replies leave in the order their records were written. A reply with no records of its own
  waits too, for the records before it (Kafka defers such writes the same way).

A shard may also keep soft state that is never written and is simply lost on restart (for
groups: the rebalance in progress and the requests waiting on it; see group.py), as Kafka's
classic group coordinator does.

The runtime reaches the partition through `ShardLog` and parks replies through
`ReplyScheduler`; the broker implements both over its Partition and purgatory (broker/groups.py),
which keeps this package free of the replication layer, its sibling in the import layers.

Time only enters as `now_ms`: `tick(now_ms)` runs the shards' timers (session timeouts,
rebalance deadlines, offset expiry) and `next_deadline_ms()` says when to tick next, so tests
drive the coordinator with a virtual clock.

Visible / durable / committed: a record is visible to the shard's state as soon as the
operation that wrote it returns (Kafka's runtime also replays before the append); it is durable
once the partition's flush covers it (per flush.policy) and committed once HW passes it.
Replies are sent only for committed state.

If the append fails (disk error), the replies of that operation fail with NOT_COORDINATOR or
COORDINATOR_NOT_AVAILABLE and the records' effect stays in memory without being in the log.
Kafka reverts its in-memory state to the last committed snapshot in that case; ackly keeps no
snapshots yet: on a single broker a failed append means a failing disk, and a restart
rebuilds the state from what the log really holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.record_codec import Record, decode_batch, encode_batch

log = logging.getLogger("ackly.coordinator")

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

EncodedRecord = tuple[bytes, bytes | None]  # key, value (None: tombstone)


class Waiter(Protocol[T_contra]):
    """Whoever waits for the outcome of an operation (usually: one request to answer)."""

    def complete(self, result: T_contra) -> None: ...

    def fail(self, code: ErrorCode) -> None: ...


@dataclass(frozen=True)
class Reply(Generic[T]):
    waiter: Waiter[T]
    result: T

    def deliver(self) -> None:
        self.waiter.complete(self.result)


class Effects:
    """What one operation produced: the records it wrote (already replayed) and its replies."""

    def __init__(self, replay: Callable[[bytes, bytes | None], None]) -> None:
        self.records: list[EncodedRecord] = []
        self.replies: list[Reply[Any]] = []
        self._replay = replay

    def append(self, key: bytes, value: bytes | None) -> None:
        """Write a record: it is replayed into the shard now and appended when the op ends."""
        self.records.append((key, value))
        self._replay(key, value)

    def reply(self, waiter: Waiter[T], result: T) -> None:
        self.replies.append(Reply(waiter, result))


class Shard(Protocol):
    """The state of one coordinator shard."""

    def replay(self, key: bytes, value: bytes | None, now_ms: int, loading: bool) -> None:
        """Apply one record. `loading`: read back from the log (no live state to keep)."""

    def on_loaded(self, now_ms: int) -> None:
        """Every record of the partition has been replayed: arm the timers."""

    def on_unloaded(self) -> None:
        """The shard is dropped: answer every request its soft state holds (exactly once)."""

    def tick(self, now_ms: int, fx: Effects) -> None:
        """Run whatever is due at now_ms."""

    def next_deadline_ms(self) -> int | None: ...


class ShardLog(Protocol):
    """The partition behind a shard, as the runtime uses it."""

    @property
    def key(self) -> Hashable:
        """What the purgatory is checked with when HW moves (the TopicPartition)."""

    @property
    def high_watermark(self) -> int: ...

    @property
    def log_end_offset(self) -> int: ...

    def append(self, batch: bytes, now_ms: int) -> None:
        """Append one record batch; raises KafkaError if the log refuses it."""

    def read_batches(self) -> Iterator[bytes]:
        """Every batch from the log start to the log end (for loading)."""


def append_error_to_response(code: ErrorCode) -> ErrorCode:
    """What a client is told when its coordinator's append failed (Kafka's
    GroupMetadataManager.appendGroupMetadataErrorToResponseError): retriable codes that send
    it to look for the coordinator again."""
    if code in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                ErrorCode.not_enough_replicas_after_append, ErrorCode.request_timed_out):
        return ErrorCode.coordinator_not_available
    if code in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if code in (ErrorCode.message_too_large, ErrorCode.record_list_too_large):
        return ErrorCode.unknown_server_error
    return code


class AwaitCommitted:
    """Replies held until every watched log's HW reaches the offset noted for it: a delayed
    operation for the broker's purgatory (see `ReplyScheduler`)."""

    def __init__(self, waits: Sequence[tuple[ShardLog, int]], replies: list[Reply[Any]],
                 deadline_ms: int) -> None:
        self.deadline_ms = deadline_ms
        self.waits = waits
        self.replies = replies

    def try_complete(self, now_ms: int) -> bool:
        if any(shard_log.high_watermark < offset for shard_log, offset in self.waits):
            return False
        for reply in self.replies:
            reply.deliver()
        return True

    def on_expire(self, now_ms: int) -> None:
        # The records may still commit later: an indeterminate outcome, which clients treat as
        # "find the coordinator again and retry".
        for reply in self.replies:
            reply.waiter.fail(ErrorCode.coordinator_not_available)


class ReplyScheduler(Protocol):
    """Where held replies wait: the broker's purgatory, checked with a shard log's `key` when
    that partition's HW moves, and expired at the deadline (the coordinator does not import
    the replication layer; the broker adapts its purgatory to this)."""

    def defer(self, op: AwaitCommitted, keys: Iterable[Hashable], now_ms: int) -> None:
        """Complete `op` now if `op.try_complete(now_ms)`, else when a key is checked or at
        `op.deadline_ms` (`op.on_expire`). Exactly once either way."""


S = TypeVar("S", bound=Shard)


@dataclass
class _Loaded(Generic[S]):
    log: ShardLog
    state: S


class CoordinatorRuntime(Generic[S]):
    """Shards by partition index, their writes, and the replies waiting for HW."""

    def __init__(self, scheduler: ReplyScheduler, write_timeout_ms: int) -> None:
        self.scheduler = scheduler
        self.write_timeout_ms = write_timeout_ms
        self._shards: dict[int, _Loaded[S]] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._shards

    def shard(self, index: int) -> S:
        return self._shards[index].state

    def shards(self) -> Iterable[tuple[int, S]]:
        return ((i, s.state) for i, s in self._shards.items())

    def load(self, index: int, shard_log: ShardLog, state: S, now_ms: int) -> None:
        """Replay the partition from its log start into `state` and take it over.

        A record that cannot be decoded is logged and skipped (a client may have produced
        into the internal topic), as is every control batch (transaction markers).
        """
        assert index not in self._shards, f"shard {index} loaded twice"
        records = 0
        for batch in shard_log.read_batches():
            header, decoded = decode_batch(batch)
            if header.is_control:
                continue
            for record in decoded:
                if record.key is None:
                    log.warning("shard %d: record at %d has no key; skipped", index, record.offset)
                    continue
                try:
                    state.replay(record.key, record.value, now_ms, True)
                except KafkaError as exc:
                    log.warning("shard %d: record at %d skipped: %s", index, record.offset, exc)
                records += 1
        state.on_loaded(now_ms)
        self._shards[index] = _Loaded(shard_log, state)
        if records:
            log.info("coordinator shard %d loaded from %d records", index, records)

    def unload(self, index: int) -> None:
        """Drop a shard (its partition is led elsewhere now). Replies it holds stay in the
        scheduler and fail when they expire, unless their log's HW reaches them first; requests
        parked in the shard's soft state are answered now (`Shard.on_unloaded`)."""
        self._shards.pop(index).state.on_unloaded()

    def write(self, index: int, op: Callable[[S, Effects], None], now_ms: int) -> None:
        """Run `op` on a shard; append what it wrote; hold its replies until committed."""
        loaded = self._shards[index]

        def replay(key: bytes, value: bytes | None) -> None:
            loaded.state.replay(key, value, now_ms, False)

        fx = Effects(replay)
        op(loaded.state, fx)
        self._finish(loaded, fx, now_ms)

    def read(self, indexes: Iterable[int], compute: Callable[[], T], waiter: Waiter[T],
             now_ms: int) -> None:
        """Answer `waiter` with `compute()` (which must not change any state) once every
        record written so far to these shards is committed."""
        result = compute()
        waits = [(self._shards[i].log, self._shards[i].log.log_end_offset) for i in indexes]
        op = AwaitCommitted(waits, [Reply(waiter, result)], now_ms + self.write_timeout_ms)
        self.scheduler.defer(op, {shard_log.key for shard_log, _ in waits}, now_ms)

    def tick(self, now_ms: int) -> None:
        for loaded in self._shards.values():
            due = loaded.state.next_deadline_ms()
            if due is None or due > now_ms:
                continue

            def replay(key: bytes, value: bytes | None, _loaded: _Loaded[S] = loaded) -> None:
                _loaded.state.replay(key, value, now_ms, False)

            fx = Effects(replay)
            loaded.state.tick(now_ms, fx)
            self._finish(loaded, fx, now_ms)

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for s in self._shards.values() if (d := s.state.next_deadline_ms()) is not None]
        return min(deadlines) if deadlines else None

    def _finish(self, loaded: _Loaded[S], fx: Effects, now_ms: int) -> None:
        if fx.records:
            batch = encode_batch([Record(key=k, value=v) for k, v in fx.records], now_ms=now_ms)
            try:
                loaded.log.append(batch, now_ms)
            except KafkaError as exc:
                code = append_error_to_response(exc.code)
                log.error("coordinator append to %s failed (%s); %d replies fail with %s",
                          loaded.log.key, exc, len(fx.replies), code.name)
                for reply in fx.replies:
                    reply.waiter.fail(code)
                return
        if not fx.replies:
            return
        op = AwaitCommitted([(loaded.log, loaded.log.log_end_offset)], fx.replies,
                             now_ms + self.write_timeout_ms)
        self.scheduler.defer(op, [loaded.log.key], now_ms)
