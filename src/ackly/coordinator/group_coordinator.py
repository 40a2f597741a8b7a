"""The group coordinator of one broker: which shard owns a group, and the group APIs.

Mirrors Kafka's GroupCoordinatorService: requests are routed to the shard (partition of
`__consumer_offsets`) that owns the group, `abs(javaStringHashCode(group_id)) % partitions`
exactly as Kafka computes it, so Kafka's tools and ackly agree on where a group lives, and run
there through the coordinator runtime (records in, replay out; replies once committed).

The internal topic is created by the broker the first time a client looks a group up (or
joins, or commits), with cleanup.policy=compact: the log cleaner keeps each key's latest
record (and a tombstone for delete.retention.ms), so a partition, and the replay that loads
it, grows with the live groups and offsets, not with the number of commits. Replay is
unchanged by compaction: later records win either way, and a transaction's offsets keep
their marker while they remain (log/cleaner.py).

Until the topic exists there are no groups: group-less answers need no shard.

In a cluster a broker holds only the shards of the `__consumer_offsets` partitions it leads
(`load_shard` when it becomes leader: replay; `unload_shard` when it stops), as Kafka's
coordinators follow partition leadership. A request for a group whose shard is elsewhere is
answered NOT_COORDINATOR, which sends the client to FindCoordinator again. The broker loads a
shard in slices (`load_shard(..., at_once=False)`, then `load_step` from its tick): meanwhile
the group's requests are answered COORDINATOR_LOAD_IN_PROGRESS, which clients retry against
the same broker (Kafka's GroupCoordinator.validateGroupStatus), except a Heartbeat, answered
NONE as Kafka's handleHeartbeat does while the group loads.

A write the log refuses (an offset commit, a group's new generation) takes the shard back to
its log (runtime.py): the refused offset is never shown by OffsetFetch, the group is what its
last record says, and the requests parked in that group's rebalance get NOT_COORDINATOR and
rejoin, as after a move of the partition (Kafka's runtime reverts the same state).

Transactions (KIP-98, KIP-447): `commit_transactional_offsets` writes a TxnOffsetCommit's
offsets in the producer's transactional batch, pending in the shard; `complete_transaction`
is called once that producer's marker is on the shard's partition and commits or drops them
(see group_manager.py for the rules, runtime.py for the batches and the replay of markers).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ackly.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerGroupConfig,
    HeartbeatRequest,
    HeartbeatResult,
    TopicsView,
)
from ackly.coordinator.group import GroupConfig, GroupDescription, JoinRequest, JoinResult, SyncResult
from ackly.coordinator.group_manager import (
    CommitPartition,
    FetchedOffset,
    GroupListing,
    GroupShard,
    OffsetsConfig,
)
from ackly.coordinator.runtime import (
    LOAD_SLICE_RECORDS,
    CoordinatorRuntime,
    Effects,
    ReplyScheduler,
    ShardLog,
    Waiter,
)
from ackly.errors import ErrorCode

OFFSETS_TOPIC = "__consumer_offsets"
# Kafka's internal topics: shown as such in Metadata, never deleted by DeleteTopics. The
# transaction coordinator's topic is named here too (transaction_coordinator.py imports this
# module, not the other way round).
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, "__transaction_state"})

T = TypeVar("T")

FetchedTopics = list[tuple[str, list[tuple[int, FetchedOffset]]]]


def java_string_hash(s: str) -> int:
    """java.lang.String.hashCode: 31*h + c over UTF-16 code units, in 32-bit arithmetic."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's Utils.abs(groupId.hashCode) % partitions (abs(Integer.MIN_VALUE) is 0 there)."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


class Gather(Generic[T]):
    """Collects the outcome of several operations (one per group) into one list, and passes it
    on once all are in. A failed item `i` becomes `on_fail(i, code)`."""

    def __init__(self, count: int, waiter: Waiter[list[T]],
                 on_fail: Callable[[int, ErrorCode], T]) -> None:
        self._results: list[T | None] = [None] * count
        self._missing = count
        self._waiter = waiter
        self._on_fail = on_fail
        if count == 0:
            waiter.complete([])

    def slot(self, index: int) -> Waiter[T]:
        gather = self

        class _Slot:
            def complete(self, result: T) -> None:
                gather._set(index, result)

            def fail(self, code: ErrorCode) -> None:
                gather._set(index, gather._on_fail(index, code))

        return _Slot()

    def _set(self, index: int, result: T) -> None:
        assert self._results[index] is None, "slot answered twice"
        self._results[index] = result
        self._missing -= 1
        if self._missing == 0:
            self._waiter.complete([r for r in self._results if r is not None])


@dataclass(frozen=True)
class GroupOffsets:
    group_id: str
    error: ErrorCode
    topics: FetchedTopics


class GroupCoordinator:
    def __init__(self, *, config: GroupConfig, offsets_config: OffsetsConfig,
                 scheduler: ReplyScheduler, rng: random.Random, write_timeout_ms: int,
                 consumer_config: ConsumerGroupConfig | None = None) -> None:
        self.config = config
        self.consumer_config = consumer_config or ConsumerGroupConfig()
        self.offsets_config = offsets_config
        self.rng = rng
        self.runtime: CoordinatorRuntime[GroupShard] = CoordinatorRuntime(
            scheduler, write_timeout_ms, config.wall_clock)
        self.partitions = 0

    @property
    def loaded(self) -> bool:
        """The internal topic exists (its partition count is known)."""
        return self.partitions > 0

    def load(self, logs: Sequence[ShardLog], now_ms: int) -> None:
        """Take over every partition of the internal topic: replay each into its shard."""
        assert not self.loaded, "the group coordinator is loaded once"
        self.set_partition_count(len(logs))
        for index, shard_log in enumerate(logs):
            self.load_shard(index, shard_log, now_ms)

    def set_partition_count(self, partitions: int) -> None:
        """How many partitions the internal topic has (fixed once it exists)."""
        assert partitions > 0
        self.partitions = partitions

    def load_shard(self, index: int, shard_log: ShardLog, now_ms: int, *, at_once: bool = True) -> None:
        """This broker now leads partition `index`: replay it into a fresh shard, now, or
        (not `at_once`) in slices through `load_step`."""
        self.unload_shard(index)

        def new_shard(now_ms: int) -> GroupShard:
            return GroupShard(index, self.config, self.offsets_config, self._new_member_id, now_ms,
                              self.consumer_config)

        if at_once:
            self.runtime.load(index, shard_log, new_shard, now_ms)
        else:
            self.runtime.begin_load(index, shard_log, new_shard, now_ms)

    @property
    def loading(self) -> bool:
        """Whether a shard is still loading (`load_step` has work)."""
        return self.runtime.loading

    def load_step(self, now_ms: int, max_records: int = LOAD_SLICE_RECORDS) -> None:
        """Replay up to about `max_records` records of the shards still loading."""
        self.runtime.load_step(now_ms, max_records)

    def unload_shard(self, index: int) -> None:
        """This broker no longer leads partition `index`: drop the shard (its soft state,
        such as a rebalance in progress, is lost; replies still held time out)."""
        if index in self.runtime or self.runtime.is_loading(index):
            self.runtime.unload(index)

    def here(self, group_id: str) -> bool:
        """Whether this broker holds the shard of `group_id`, loaded (the topic exists)."""
        return self.loaded and self.partition_for(group_id) in self.runtime

    def not_here(self, group_id: str) -> ErrorCode | None:
        """Why a request for `group_id` cannot run here: COORDINATOR_LOAD_IN_PROGRESS while its
        shard loads, NOT_COORDINATOR if it is elsewhere; None if it can."""
        if self.here(group_id):
            return None
        if self.loaded and self.runtime.is_loading(self.partition_for(group_id)):
            return ErrorCode.coordinator_load_in_progress
        return ErrorCode.not_coordinator

    def partition_for(self, group_id: str) -> int:
        assert self.loaded
        return partition_for(group_id, self.partitions)

    def _new_member_id(self, prefix: str) -> str:
        """Kafka's member ids: client id (or group instance id) + "-" + a random UUID."""
        return f"{prefix}-{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"

    def _write(self, group_id: str, op: Callable[[GroupShard, Effects], None], now_ms: int) -> None:
        self.runtime.write(self.partition_for(group_id), op, now_ms)

    # --- membership ----------------------------------------------------------------------------

    def join_group(self, group_id: str, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int) -> None:
        assert self.loaded, "the broker creates the internal topic before a join"
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return
        self._write(group_id, lambda s, fx: s.join(group_id, req, waiter, now_ms, fx), now_ms)

    def sync_group(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
                   protocol_type: str | None, protocol_name: str | None,
                   assignments: dict[str, bytes], waiter: Waiter[SyncResult], now_ms: int) -> None:
        if not self.loaded:
            waiter.complete(SyncResult(ErrorCode.unknown_member_id))
            return
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return
        self._write(group_id, lambda s, fx: s.sync(
            group_id, generation, member_id, instance_id, protocol_type, protocol_name, assignments,
            waiter, now_ms, fx), now_ms)

    def heartbeat(self, group_id: str, member_id: str, instance_id: str | None, generation: int,
                  waiter: Waiter[ErrorCode], now_ms: int) -> None:
        if not self.loaded:
            waiter.complete(ErrorCode.unknown_member_id)
            return
        if (code := self.not_here(group_id)) is not None:
            if code is ErrorCode.coordinator_load_in_progress:
                # Kafka's handleHeartbeat: "the group is still loading, so respond just
                # blindly"; the member's session starts when the shard is loaded.
                waiter.complete(ErrorCode.none)
            else:
                waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.heartbeat(group_id, member_id, instance_id, generation, now_ms))

        self._write(group_id, op, now_ms)

    def leave_group(self, group_id: str, leaving: list[tuple[str, str | None]],
                    waiter: Waiter[tuple[ErrorCode, list[ErrorCode]]], now_ms: int) -> None:
        if not self.loaded:
            waiter.complete((ErrorCode.none, [ErrorCode.unknown_member_id] * len(leaving)))
            return
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.leave(group_id, leaving, now_ms, fx))

        self._write(group_id, op, now_ms)

    # --- consumer groups (KIP-848) --------------------------------------------------------------

    def consumer_group_heartbeat(self, group_id: str, req: HeartbeatRequest, topics: TopicsView,
                                 waiter: Waiter[HeartbeatResult], now_ms: int) -> None:
        """ConsumerGroupHeartbeat: answered once the records it wrote are committed."""
        assert self.loaded, "the broker creates the internal topic before a heartbeat"
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.consumer_heartbeat(group_id, req, topics, now_ms, fx))

        self._write(group_id, op, now_ms)

    def consumer_group_describe(self, group_ids: list[str],
                                waiter: Waiter[list[tuple[str, ErrorCode, ConsumerGroup | None]]],
                                now_ms: int) -> None:
        """ConsumerGroupDescribe: each group as its committed records show it (a copy), or
        the error for that group (GROUP_ID_NOT_FOUND, NOT_COORDINATOR, ...)."""
        if not self.loaded:
            waiter.complete([(g, ErrorCode.group_id_not_found, None) for g in group_ids])
            return

        def describe(g: str) -> tuple[str, ErrorCode, ConsumerGroup | None]:
            if (code := self.not_here(g)) is not None:
                return g, code, None
            group = self.runtime.shard(self.partition_for(g)).consumer_group(g)
            if group is None:
                return g, ErrorCode.group_id_not_found, None
            return g, ErrorCode.none, copy.deepcopy(group)

        def compute() -> list[tuple[str, ErrorCode, ConsumerGroup | None]]:
            return [describe(g) for g in group_ids]

        self.runtime.read({self.partition_for(g) for g in group_ids if self.here(g)}, compute, waiter, now_ms)

    # --- offsets -------------------------------------------------------------------------------

    def commit_offsets(self, group_id: str, member_id: str, instance_id: str | None, generation: int,
                       expire_timestamp_ms: int, partitions: list[CommitPartition],
                       missing_group_error: ErrorCode, waiter: Waiter[list[ErrorCode]],
                       now_ms: int) -> None:
        assert self.loaded, "the broker creates the internal topic before a commit"
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.commit_offsets(
                group_id, member_id, instance_id, generation, expire_timestamp_ms, partitions,
                now_ms, fx, missing_group_error))

        self._write(group_id, op, now_ms)

    def commit_transactional_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                                     member_id: str, instance_id: str | None, generation: int,
                                     partitions: list[CommitPartition],
                                     waiter: Waiter[list[ErrorCode]], now_ms: int) -> None:
        """TxnOffsetCommit (KIP-98, KIP-447): offsets written in the producer's transaction,
        pending until its marker reaches the group's shard (`complete_transaction`). Answered
        once the records are committed to the log, like an offset commit."""
        assert self.loaded, "the broker creates the internal topic before a commit"
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.commit_transactional_offsets(
                group_id, member_id, instance_id, generation, partitions, now_ms, fx))

        self.runtime.write_transactional(self.partition_for(group_id), producer_id, producer_epoch,
                                         op, now_ms)

    def fetch_offsets(self, requests: list[tuple[str, list[tuple[str, list[int]]] | None]],
                      waiter: Waiter[list[GroupOffsets]], now_ms: int,
                      require_stable: bool = False,
                      members: dict[str, tuple[str | None, int]] | None = None) -> None:
        """OffsetFetch for (group, partitions or None for all) pairs; answered once everything
        written so far to the groups' shards is committed (no uncommitted offset is shown).
        `require_stable`: a partition with a pending transactional offset answers
        UNSTABLE_OFFSET_COMMIT (KIP-447)."""
        if not self.loaded:
            waiter.complete([GroupOffsets(g, ErrorCode.none, [(t, [(p, None) for p in ps])
                                                             for t, ps in (wanted or [])])
                             for g, wanted in requests])
            return

        if len(requests) == 1 and (code := self.not_here(requests[0][0])) is not None:
            waiter.fail(code)
            return

        def fetch(g: str, wanted: list[tuple[str, list[int]]] | None) -> GroupOffsets:
            code = self.not_here(g)
            if code is not None:
                return GroupOffsets(g, code, [])
            shard = self.runtime.shard(self.partition_for(g))
            if members is not None and g in members:
                # OffsetFetch v9: the consumer group's member must send its current epoch.
                refused = shard.validate_offset_fetch(g, *members[g])
                if refused is not ErrorCode.none:
                    return GroupOffsets(g, refused, [])
            return GroupOffsets(g, ErrorCode.none, shard.fetch_offsets(g, wanted, require_stable))

        def compute() -> list[GroupOffsets]:
            return [fetch(g, wanted) for g, wanted in requests]

        shards = {self.partition_for(g) for g, _ in requests if self.here(g)}
        self.runtime.read(shards, compute, waiter, now_ms)

    def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]],
                       waiter: Waiter[tuple[ErrorCode, list[ErrorCode]]], now_ms: int) -> None:
        if not self.loaded:
            waiter.complete((ErrorCode.group_id_not_found, []))
            return
        if (code := self.not_here(group_id)) is not None:
            waiter.fail(code)
            return

        def op(shard: GroupShard, fx: Effects) -> None:
            fx.reply(waiter, shard.delete_offsets(group_id, partitions, fx))

        self._write(group_id, op, now_ms)

    def complete_transaction(self, partition_index: int, producer_id: int, committed: bool,
                             now_ms: int) -> None:
        """A transaction marker of `producer_id` was appended to partition `partition_index` of
        the internal topic: its pending transactional offsets there become committed offsets
        (COMMIT) or are dropped (ABORT). Mirrors GroupCoordinator.onTransactionCompleted.
        A shard not held here replays the marker from its log when it is loaded."""
        self.runtime.complete_transaction(partition_index, producer_id, committed, now_ms)

    # --- admin ---------------------------------------------------------------------------------

    def describe_groups(self, group_ids: list[str], waiter: Waiter[list[tuple[str, GroupDescription | None]]],
                        now_ms: int) -> None:
        if not self.loaded:
            waiter.complete([(g, None) for g in group_ids])
            return
        codes = [code for g in group_ids if (code := self.not_here(g)) is not None]
        if codes:
            # Clients ask each group's coordinator; a loading shard answers that first.
            waiter.fail(ErrorCode.coordinator_load_in_progress
                        if ErrorCode.coordinator_load_in_progress in codes else codes[0])
            return

        def compute() -> list[tuple[str, GroupDescription | None]]:
            return [(g, self.runtime.shard(self.partition_for(g)).describe(g)) for g in group_ids]

        self.runtime.read({self.partition_for(g) for g in group_ids}, compute, waiter, now_ms)

    def list_groups(self, waiter: Waiter[list[GroupListing]], now_ms: int) -> None:
        if not self.loaded:
            waiter.complete([])
            return
        if self.runtime.loading:
            # Kafka's listGroups: the groups of a loading shard cannot be listed yet.
            waiter.fail(ErrorCode.coordinator_load_in_progress)
            return

        def compute() -> list[GroupListing]:
            return [listing for _, shard in self.runtime.shards() for listing in shard.list_groups()]

        self.runtime.read([i for i, _ in self.runtime.shards()], compute, waiter, now_ms)

    def delete_groups(self, group_ids: list[str], waiter: Waiter[list[tuple[str, ErrorCode]]],
                      now_ms: int) -> None:
        if not self.loaded:
            waiter.complete([(g, ErrorCode.group_id_not_found) for g in group_ids])
            return
        gather: Gather[tuple[str, ErrorCode]] = Gather(
            len(group_ids), waiter, lambda i, code: (group_ids[i], code))
        for i, group_id in enumerate(group_ids):
            slot = gather.slot(i)

            def op(shard: GroupShard, fx: Effects, group_id: str = group_id,
                   slot: Waiter[tuple[str, ErrorCode]] = slot) -> None:
                fx.reply(slot, (group_id, shard.delete_group(group_id, fx)))

            if (code := self.not_here(group_id)) is not None:
                slot.complete((group_id, code))
                continue
            self._write(group_id, op, now_ms)

    # --- time ----------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Run a load slice if a shard is loading, then the shards' timers."""
        if self.runtime.loading:
            self.load_step(now_ms)
        self.runtime.tick(now_ms)

    def next_deadline_ms(self) -> int | None:
        return self.runtime.next_deadline_ms()

    def shards(self) -> list[GroupShard]:
        return [shard for _, shard in self.runtime.shards()]

