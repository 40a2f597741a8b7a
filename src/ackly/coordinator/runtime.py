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

If the log refuses the append (NOT_ENOUGH_REPLICAS while the partition's ISR is below
min.insync.replicas, a failing disk, a lost leadership, a batch too large), the shard's
in-memory state is reverted to what the log holds before the op's replies fail (with
NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE, see `append_error_to_response`): Kafka's
CoordinatorRuntime reverts its snapshot registry to the last written offset in that case
(revertLastWrittenOffset). ackly keeps an undo log instead: before a record of an op is
replayed live, the shard hands back an undo for what replaying that record changes
(`Shard.undo_point`, for that key only); a refused append runs the op's undos newest first.
The cost of a revert is the op's records, not the partition's log. Soft state tied to what
is undone is dropped (for groups: the group whose record is undone is rebuilt from its last
written record, and requests parked in its rebalance are answered and retry), so an op
retried after a refusal writes its record again instead of finding its effect already in
memory. The invariant: between ops, a shard's durable state is exactly its log replayed
(tests/unit/coordinator/test_revert_stateful.py compares a reverted shard with a fresh load).

Loading (Kafka's CoordinatorLoader, which runs on its own thread while the shard answers
COORDINATOR_LOAD_IN_PROGRESS): `begin_load` makes the empty shard and replays a first slice
(a small partition is loaded there and then), and `load_step` replays at most a given number
of records per call, from where the last call stopped, so the broker
interleaves a long replay with its other work (it calls `load_step` from its tick, with
`loading` telling it there is more). A shard is served only once loaded (`__contains__`);
meanwhile its requests are answered COORDINATOR_LOAD_IN_PROGRESS by the coordinators. The log
may grow while a shard loads (transaction markers written to it): loading ends at the log end
as it is when the last slice runs, and a marker appended meanwhile is replayed from the log
(`complete_transaction` ignores a shard that is still loading). `load` replays everything at
once (tests, tools).

Transactions (KIP-98, KIP-447; Kafka's CoordinatorRuntime.scheduleTransactionalWriteOperation):
a shard that implements `TransactionalShard` may write records inside a producer's transaction
(`write_transactional`). They go in one transactional batch carrying the producer id and epoch
and are replayed only once the log accepted that batch (so a refused one leaves nothing to
revert), because the log checks the producer epoch: a fenced producer's records must never
reach the state, where a later transaction marker of the same producer id would otherwise
commit them. Such a shard replays every record
with its offset and its batch's producer id (`replay_record`), and the partition's transaction
markers (control batches) with `replay_marker`: when loading, in log order, and live through
`complete_transaction`, called by whoever appended the marker. A shard that is not
transactional sees `Shard.replay` only, and no control batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.record_codec import (
    ControlType,
    Record,
    decode_batch,
    decode_control_record,
    encode_batch,
)
from ackly.types import NO_PRODUCER_ID, TopicPartition, WallClock, same_clock

log = logging.getLogger("ackly.coordinator")

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

EncodedRecord = tuple[bytes, bytes | None]  # key, value (None: tombstone)

NO_SEQUENCE = -1  # Kafka's RecordBatch.NO_SEQUENCE: coordinator batches skip sequence checks

# Records replayed per load slice: a few milliseconds of work, so requests to other shards and
# partitions wait at most that long behind a loading shard.
LOAD_SLICE_RECORDS = 2000
# Replayed at once when a load begins: a new or small partition (the usual case, and every
# partition of a topic just created) is served at once, and a broker that gains many
# partitions together still does only this much per partition before answering requests.
FIRST_SLICE_RECORDS = 200


@dataclass(frozen=True)
class RecordMeta:
    """Where a replayed record sits: its offset in the shard's log, and the producer id of its
    batch (NO_PRODUCER_ID unless it was written inside a transaction)."""

    offset: int
    producer_id: int = NO_PRODUCER_ID


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
    """What one operation produced: the records it wrote and its replies.

    `replay(key, value, index)` applies record number `index` of the operation at once; with
    None the records are replayed by the runtime after their append (transactional writes).
    `undo` collects what takes the shard back if the append is refused (filled by `replay`)."""

    def __init__(self, replay: Callable[[bytes, bytes | None, int], None] | None,
                 undo: list[Callable[[], None]] | None = None) -> None:
        self.records: list[EncodedRecord] = []
        self.replies: list[Reply[Any]] = []
        self.undo: list[Callable[[], None]] = [] if undo is None else undo
        self._replay = replay

    def append(self, key: bytes, value: bytes | None) -> None:
        """Write a record: it is replayed into the shard now (or, in a transactional write,
        once appended) and appended when the op ends."""
        self.records.append((key, value))
        if self._replay is not None:
            self._replay(key, value, len(self.records) - 1)

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

    def undo_point(self, key: bytes, now_ms: int) -> Callable[[], None]:
        """Called just before a record of `key` written by a live op is replayed: a function
        that takes the shard back to its state before that replay (see the module docstring:
        run newest first when the log refuses the op's batch)."""


@runtime_checkable
class TransactionalShard(Protocol):
    """A shard whose records may be written inside transactions (see the module docstring).
    The runtime replays its records through `replay_record` instead of `Shard.replay`."""

    def replay_record(self, key: bytes, value: bytes | None, meta: RecordMeta, now_ms: int,
                      loading: bool) -> None:
        """Apply one record, knowing its offset and its batch's producer id."""

    def replay_marker(self, producer_id: int, committed: bool, now_ms: int) -> None:
        """Apply a transaction marker of `producer_id` (COMMIT or ABORT) on this partition."""


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
        """Append one record batch at the log end (its first record takes offset
        `log_end_offset`); raises KafkaError if the log refuses it (for a transactional batch:
        also a fenced producer epoch)."""

    def read_batches(self, start_offset: int) -> Iterator[bytes]:
        """The batches from `start_offset` (or the log start, if later) to the log end as it
        is now, in order (for loading). The first may begin before `start_offset`."""


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


_PRODUCER_REFUSALS = frozenset({ErrorCode.invalid_producer_epoch, ErrorCode.producer_fenced,
                                ErrorCode.invalid_txn_state})


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

# Makes the empty shard a load starts from, at `now_ms`.
ShardFactory = Callable[[int], S]


@dataclass
class _Loaded(Generic[S]):
    index: int
    log: ShardLog
    state: S


@dataclass
class _Loading(Generic[S]):
    """A shard being replayed: `next_offset` is where the next slice starts."""

    index: int
    log: ShardLog
    state: S
    next_offset: int = 0
    records: int = 0  # replayed so far
    work: int = 0  # records and batches so far (what slices are measured in)
    started_ms: int = 0  # now_ms when the load began


class CoordinatorRuntime(Generic[S]):
    """Shards by partition index, their writes, and the replies waiting for HW."""

    def __init__(self, scheduler: ReplyScheduler, write_timeout_ms: int,
                 wall_clock: WallClock = same_clock) -> None:
        self.scheduler = scheduler
        self.write_timeout_ms = write_timeout_ms
        self.wall_clock = wall_clock  # the records' timestamps (types.py)
        self._shards: dict[int, _Loaded[S]] = {}
        self._loading: dict[int, _Loading[S]] = {}
        self._load_due_ms: int | None = None  # when the next load slice is due (loading)
        # Told how long each load took, from its start to its last slice, on the monotonic
        # now_ms the loads were driven with (Kafka's partition-load-time; the shell's metrics).
        self.on_load_time: Callable[[int], None] | None = None

    def __contains__(self, index: int) -> bool:
        """Whether shard `index` is loaded here (served)."""
        return index in self._shards

    def is_loading(self, index: int) -> bool:
        return index in self._loading

    @property
    def loading(self) -> bool:
        """Whether a shard is still loading (`load_step` has work)."""
        return bool(self._loading)

    def shard(self, index: int) -> S:
        return self._shards[index].state

    def shards(self) -> Iterable[tuple[int, S]]:
        return ((i, s.state) for i, s in self._shards.items())

    def begin_load(self, index: int, shard_log: ShardLog, new_state: ShardFactory[S],
                   now_ms: int, first_slice_records: int = FIRST_SLICE_RECORDS) -> bool:
        """Start replaying the partition from its log start into a shard made by `new_state`,
        replaying up to `first_slice_records` records now; `load_step` goes on with it. The
        shard is served once loaded; True if it is already."""
        assert index not in self._shards and index not in self._loading, f"shard {index} loaded twice"
        loading = self._loading[index] = _Loading(index, shard_log, new_state(now_ms), started_ms=now_ms)
        self._load_due_ms = now_ms
        if first_slice_records > 0 and self._load_slice(loading, now_ms, first_slice_records):
            self._finish_load(loading, now_ms)
            return True
        return False

    def load(self, index: int, shard_log: ShardLog, new_state: ShardFactory[S], now_ms: int) -> S:
        """Replay the whole partition now and take the shard over; return it."""
        self.begin_load(index, shard_log, new_state, now_ms, first_slice_records=0)
        loading = self._loading[index]
        while not self._load_slice(loading, now_ms, 1 << 30):
            pass
        return self._finish_load(loading, now_ms)

    def load_step(self, now_ms: int, max_records: int = LOAD_SLICE_RECORDS) -> list[int]:
        """Replay at most about `max_records` records of the loading shards (whole batches,
        so a batch may take it past); return the shards whose load completed. While a shard
        is still loading, `next_deadline_ms` is now: the next slice runs at the next tick."""
        self._load_due_ms = now_ms
        done: list[int] = []
        budget = max_records
        for loading in list(self._loading.values()):
            if budget <= 0:
                break
            before = loading.work
            if self._load_slice(loading, now_ms, budget):
                self._finish_load(loading, now_ms)
                done.append(loading.index)
            budget -= max(loading.work - before, 1)
        return done

    def _finish_load(self, loading: _Loading[S], now_ms: int) -> S:
        del self._loading[loading.index]
        state = loading.state
        state.on_loaded(now_ms)
        self._shards[loading.index] = _Loaded(loading.index, loading.log, state)
        if self.on_load_time is not None:
            self.on_load_time(now_ms - loading.started_ms)
        key = loading.log.key
        where = {"topic": key.topic, "partition": key.partition} if isinstance(key, TopicPartition) else {}
        log.info("coordinator shard %d loaded from %d records", loading.index, loading.records,
                 extra={"event": "coordinator_loaded", "shard": loading.index, **where,
                        "records": loading.records, "log_end_offset": loading.log.log_end_offset})
        return state

    def _load_slice(self, loading: _Loading[S], now_ms: int, max_records: int) -> bool:
        """Replay batches from `loading.next_offset` until `max_records` records are done or
        the log end is reached; True once the log end is reached.

        A record that cannot be decoded is logged and skipped (a client may have produced
        into the internal topic). Control batches (transaction markers) reach a
        `TransactionalShard` in log order, so its pending transactional records come back
        pending, committed or dropped exactly as they were; other shards skip them. Records
        below `next_offset` were replayed by an earlier slice (the cleaner may have rewritten
        the batch holding them since) and are skipped.
        """
        state = loading.state
        tstate = state if isinstance(state, TransactionalShard) else None
        index = loading.index
        cursor = loading.next_offset
        end = loading.log.log_end_offset
        replayed = 0
        work = 0  # records and batches: a slice of empty or control batches ends too
        batches = loading.log.read_batches(cursor)
        finished = True
        for batch in batches:
            if work >= max_records:
                finished = False
                break
            header, decoded = decode_batch(batch)
            if header.base_offset + header.last_offset_delta < cursor:
                continue
            cursor = header.base_offset + header.last_offset_delta + 1
            work += 1
            if header.is_control:
                if tstate is not None and decoded:
                    try:
                        marker = decode_control_record(decoded[0])
                    except KafkaError as exc:
                        log.warning("shard %d: control batch at %d skipped: %s", index,
                                    header.base_offset, exc)
                        continue
                    tstate.replay_marker(header.producer_id, marker.kind is ControlType.COMMIT,
                                         now_ms)
                continue
            producer_id = header.producer_id if header.is_transactional else NO_PRODUCER_ID
            for record in decoded:
                if record.offset < loading.next_offset:
                    continue
                replayed += 1
                work += 1
                if record.key is None:
                    log.warning("shard %d: record at %d has no key; skipped", index, record.offset)
                    continue
                try:
                    if tstate is not None:
                        tstate.replay_record(record.key, record.value,
                                             RecordMeta(record.offset, producer_id), now_ms, True)
                    else:
                        state.replay(record.key, record.value, now_ms, True)
                except KafkaError as exc:
                    log.warning("shard %d: record at %d skipped: %s", index, record.offset, exc)
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a generator reading the log: let it go now
        if finished:
            # Everything up to the log end as it was when this slice began (offsets the cleaner
            # removed have no batch left): nothing is appended while a slice runs.
            cursor = max(cursor, end)
        loading.next_offset = cursor
        loading.records += replayed
        loading.work += work
        return finished and cursor >= loading.log.log_end_offset

    def unload(self, index: int) -> None:
        """Drop a shard (its partition is led elsewhere now). Replies it holds stay in the
        scheduler and fail when they expire, unless their log's HW reaches them first; requests
        parked in the shard's soft state are answered now (`Shard.on_unloaded`). A shard still
        loading is dropped with what it replayed so far."""
        if self._loading.pop(index, None) is not None:
            return
        self._shards.pop(index).state.on_unloaded()

    def write(self, index: int, op: Callable[[S, Effects], None], now_ms: int) -> None:
        """Run `op` on a shard; append what it wrote; hold its replies until committed."""
        loaded = self._shards[index]
        fx = Effects(*self._live_replay(loaded, now_ms))
        op(loaded.state, fx)
        self._finish(loaded, fx, now_ms)

    def write_transactional(self, index: int, producer_id: int, producer_epoch: int,
                            op: Callable[[S, Effects], None], now_ms: int) -> None:
        """Run `op` on a `TransactionalShard`; append what it wrote as one transactional
        batch of this producer (Kafka's AppendOrigin.COORDINATOR append: the log checks the
        epoch and starts or continues the producer's transaction on the partition, so its LSO
        stays below the records until the marker). The records are replayed, pending, only
        once the log accepted them; if it refuses, every reply of the op fails with the
        log's error (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED, ...) mapped as for any append.
        Replies wait until the batch is committed, as for `write`."""
        loaded = self._shards[index]
        state = loaded.state
        assert isinstance(state, TransactionalShard), "a transactional write needs a TransactionalShard"
        fx = Effects(None)
        op(loaded.state, fx)
        if fx.records:
            base_offset = loaded.log.log_end_offset
            batch = encode_batch([Record(key=k, value=v) for k, v in fx.records],
                                 now_ms=self.wall_clock(now_ms), producer_id=producer_id,
                                 producer_epoch=producer_epoch, base_sequence=NO_SEQUENCE,
                                 transactional=True)
            if not self._append(loaded, batch, fx, now_ms, revert=False):
                return
            for i, (key, value) in enumerate(fx.records):
                state.replay_record(key, value, RecordMeta(base_offset + i, producer_id), now_ms,
                                    False)
        self._hold(loaded, fx, now_ms)

    def complete_transaction(self, index: int, producer_id: int, committed: bool,
                             now_ms: int) -> None:
        """A marker of `producer_id` was appended to shard `index`'s partition: replay it.
        A shard not held here (its partition is led elsewhere) replays it when loaded."""
        loaded = self._shards.get(index)
        if loaded is None:
            return
        state = loaded.state
        if isinstance(state, TransactionalShard):
            state.replay_marker(producer_id, committed, now_ms)

    def _live_replay(self, loaded: _Loaded[S], now_ms: int
                     ) -> tuple[Callable[[bytes, bytes | None, int], None], list[Callable[[], None]]]:
        """Replay of an op's records before their append, and the undo list it fills (an undo
        taken before each record's replay). Record `index` of the op lands at LEO + index: the
        op's batch is appended right after the op, before anything else."""
        state = loaded.state
        base_offset = loaded.log.log_end_offset
        undo: list[Callable[[], None]] = []
        if isinstance(state, TransactionalShard):
            tstate = state

            def replay_with_offset(key: bytes, value: bytes | None, index: int) -> None:
                undo.append(state.undo_point(key, now_ms))
                tstate.replay_record(key, value, RecordMeta(base_offset + index), now_ms, False)

            return replay_with_offset, undo

        def replay(key: bytes, value: bytes | None, index: int) -> None:
            undo.append(state.undo_point(key, now_ms))
            state.replay(key, value, now_ms, False)

        return replay, undo

    def read(self, indexes: Iterable[int], compute: Callable[[], T], waiter: Waiter[T],
             now_ms: int) -> None:
        """Answer `waiter` with `compute()` (which must not change any state) once every
        record written so far to these shards is committed."""
        result = compute()
        waits = [(self._shards[i].log, self._shards[i].log.log_end_offset) for i in indexes]
        op = AwaitCommitted(waits, [Reply(waiter, result)], now_ms + self.write_timeout_ms)
        self.scheduler.defer(op, {shard_log.key for shard_log, _ in waits}, now_ms)

    def tick(self, now_ms: int) -> None:
        for loaded in list(self._shards.values()):
            due = loaded.state.next_deadline_ms()
            if due is None or due > now_ms:
                continue

            fx = Effects(*self._live_replay(loaded, now_ms))
            loaded.state.tick(now_ms, fx)
            self._finish(loaded, fx, now_ms)

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for s in self._shards.values() if (d := s.state.next_deadline_ms()) is not None]
        if self._loading and self._load_due_ms is not None:
            deadlines.append(self._load_due_ms)
        return min(deadlines) if deadlines else None

    def _finish(self, loaded: _Loaded[S], fx: Effects, now_ms: int) -> None:
        if fx.records:
            batch = encode_batch([Record(key=k, value=v) for k, v in fx.records],
                                 now_ms=self.wall_clock(now_ms))
            if not self._append(loaded, batch, fx, now_ms, revert=True):
                return
        self._hold(loaded, fx, now_ms)

    def _append(self, loaded: _Loaded[S], batch: bytes, fx: Effects, now_ms: int, *,
                revert: bool) -> bool:
        """Append an op's batch; if the log refuses it, revert the shard to its log when the
        op's records were replayed already (`revert`), fail the op's replies, and say so."""
        try:
            loaded.log.append(batch, now_ms)
        except KafkaError as exc:
            code = append_error_to_response(exc.code)
            # A fenced producer's transactional batch is the client's problem, not the log's.
            refused_producer = code in _PRODUCER_REFUSALS
            level = logging.INFO if refused_producer else logging.ERROR
            log.log(level, "coordinator append to %s failed (%s); %d replies fail with %s%s",
                    loaded.log.key, exc, len(fx.replies), code.name,
                    "; the shard reverts to its log" if revert else "")
            if revert:
                self._revert(fx)
            for reply in fx.replies:
                reply.waiter.fail(code)
            return False
        return True

    @staticmethod
    def _revert(fx: Effects) -> None:
        """Take the shard back to what its log holds (Kafka's revertLastWrittenOffset): run
        the op's undos, newest first. Done before the failed op's replies go out, so whoever
        hears the failure already sees the log's state."""
        for undo in reversed(fx.undo):
            undo()
        fx.undo.clear()

    def _hold(self, loaded: _Loaded[S], fx: Effects, now_ms: int) -> None:
        """Hold the op's replies until everything in the log so far is committed."""
        if not fx.replies:
            return
        op = AwaitCommitted([(loaded.log, loaded.log.log_end_offset)], fx.replies,
                             now_ms + self.write_timeout_ms)
        self.scheduler.defer(op, [loaded.log.key], now_ms)
