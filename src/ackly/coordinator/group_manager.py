"""One group coordinator shard: the groups and offsets of one `__consumer_offsets` partition.

Mirrors Kafka's GroupMetadataManager and OffsetMetadataManager (group-coordinator module) for
classic groups. The shard routes each request to its group's state machine (group.py), keeps
the committed offsets, expires them, and rebuilds all of it from records (`replay`):

    OffsetCommitKey  -> OffsetCommitValue     the offset of (group, topic, partition);
                                              a tombstone deletes it
    GroupMetadataKey -> GroupMetadataValue    the group's last Stable or Empty generation;
                                              a tombstone deletes the group

A group exists if it has a GroupMetadataValue or, like Kafka's "simple" groups of consumers
that only store offsets, any committed offset. Kafka writes an Empty GroupMetadataValue when a
JoinGroup creates a group, so a group that never stabilised still survives a restart; so does
ackly.

Offset expiry (Kafka's rule, offsets.retention.minutes): offsets of a group without members
expire once the retention has passed since the group became empty (or, for a group that never
had members, since each offset's commit); a Stable consumer group keeps the offsets of the
topics it subscribes to and expires the others by commit time; an offset committed with an
explicit retention (OffsetCommit v2-v4) expires at its own timestamp. A group that is empty and
has no offsets left is deleted with them. The check runs every
offsets.retention.check.interval.ms.

Transactional offsets (KIP-98, KIP-447; Kafka's OffsetMetadataManager): TxnOffsetCommit
writes the same OffsetCommit records, but in a transactional batch of the producer. Replayed,
they are *pending*: kept per producer id, invisible to OffsetFetch and to the group's
committed offsets, until that producer's transaction marker reaches this partition. COMMIT
makes each of them the committed offset unless a later record already replaced it (order of
application is the record offset in the log, so an OffsetCommit appended after the
transactional record wins, and replay after compaction would agree); ABORT drops them. While
a (group, topic, partition) has a pending offset, OffsetFetch with require_stable answers
UNSTABLE_OFFSET_COMMIT for it, offset expiry keeps that partition's offset and the group, and
tombstones (OffsetDelete, DeleteGroups, expiry) remove committed offsets only: pending ones
are only ever resolved by their transaction's marker. Kafka's newer OffsetMetadataManager
also drops the pending offsets a tombstone covers (and DeleteGroups writes tombstones for
them); ackly keeps them, so that an offset sent in a transaction becomes visible with its
commit whatever happened to the group meanwhile (docs/guarantees.md rule 21): a group deleted while
a transaction holds offsets of it comes back, as a simple group, with the COMMIT marker.

Invariants: every group here is alive (Dead groups are removed); `offsets` holds no empty
maps, and `committed_at` has exactly the keys of `offsets`; `pending` and `open_txns` hold no
empty maps and describe the same (producer, group, partition) triples; each group's deadline in
`_due` is its current `next_deadline_ms()`.
"""

from __future__ import annotations

import copy
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ackly.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerGroupConfig,
    ConsumerGroupState,
    HeartbeatRequest,
    HeartbeatResult,
    TopicsView,
)
from ackly.coordinator.consumer_group_records import (
    CONSUMER_GROUP_METADATA,
    ConsumerGroupKey,
    ConsumerGroupValue,
    is_consumer_group_key,
)
from ackly.coordinator.consumer_group_records import decode_key as decode_consumer_key
from ackly.coordinator.consumer_group_records import decode_value as decode_consumer_value
from ackly.coordinator.consumer_group_records import encode_key as encode_consumer_key
from ackly.coordinator.consumer_group_records import encode_value as encode_consumer_value
from ackly.coordinator.group import (
    CONSUMER_PROTOCOL_TYPE,
    DEAD,
    EMPTY,
    STABLE,
    ClassicGroup,
    GroupConfig,
    GroupDescription,
    GroupState,
    JoinRequest,
    JoinResult,
    SyncResult,
)
from ackly.coordinator.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    OffsetCommitKey,
    OffsetCommitValue,
    RecordFormatError,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_value,
    encode_key,
    encode_offset_commit_value,
)
from ackly.coordinator.runtime import Effects, RecordMeta, Waiter
from ackly.errors import ErrorCode
from ackly.types import NO_PRODUCER_ID

log = logging.getLogger("ackly.coordinator")

TopicPartitionKey = tuple[str, int]
# What OffsetFetch shows for one partition: its committed offset, None (no offset: -1), or the
# partition's error (UNSTABLE_OFFSET_COMMIT).
FetchedOffset = OffsetCommitValue | ErrorCode | None


@dataclass(frozen=True)
class OffsetsConfig:
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_check_interval_ms: int = 600_000
    metadata_max_bytes: int = 4096


@dataclass(frozen=True)
class CommitPartition:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(frozen=True)
class PendingOffset:
    """A transactional offset waiting for its transaction's marker, and where its record is."""

    value: OffsetCommitValue
    record_offset: int


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: GroupState | ConsumerGroupState
    group_type: str = "classic"


class GroupShard:
    def __init__(self, index: int, config: GroupConfig, offsets_config: OffsetsConfig,
                 new_member_id: Callable[[str], str], now_ms: int,
                 consumer_config: ConsumerGroupConfig | None = None) -> None:
        self.index = index
        self.config = config
        self.consumer_config = consumer_config or ConsumerGroupConfig()
        # Groups of the consumer protocol (KIP-848, consumer_group.py); a group id is in
        # `groups` or here, never both.
        self.consumer_groups: dict[str, ConsumerGroup] = {}
        self.offsets_config = offsets_config
        self._new_member_id = new_member_id
        self.groups: dict[str, ClassicGroup] = {}
        self.offsets: dict[str, dict[TopicPartitionKey, OffsetCommitValue]] = {}
        # The log offset of the record behind each committed offset (order of application).
        self.committed_at: dict[str, dict[TopicPartitionKey, int]] = {}
        # Transactional offsets by producer id, then group; and the producers with a pending
        # offset per group and partition (Kafka's pendingTransactionalOffsets, openTransactions).
        self.pending: dict[int, dict[str, dict[TopicPartitionKey, PendingOffset]]] = {}
        self.open_txns: dict[str, dict[TopicPartitionKey, set[int]]] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._next_expiry_ms = now_ms + offsets_config.retention_check_interval_ms
        # The last GroupMetadataValue replayed per group: what an undone group record
        # rebuilds the group from (`undo_point`).
        self.group_values: dict[str, GroupMetadataValue] = {}
        # The key `undo_point` just decoded, for the replay of the same record that follows.
        self._decoded: tuple[bytes, OffsetCommitKey | GroupMetadataKey] | None = None

    # --- replay ------------------------------------------------------------------------------

    def replay(self, key: bytes, value: bytes | None, now_ms: int, loading: bool) -> None:
        """`Shard.replay`; the runtime uses `replay_record`, which knows where the record is."""
        raise AssertionError("a GroupShard is replayed with replay_record")

    def replay_record(self, key: bytes, value: bytes | None, meta: RecordMeta, now_ms: int,
                      loading: bool) -> None:
        if is_consumer_group_key(key):
            self._replay_consumer_record(key, value, meta, now_ms, loading)
            return
        try:
            decoded_key = self._decoded[1] if self._decoded and self._decoded[0] is key else decode_key(key)
            self._decoded = None
            if isinstance(decoded_key, OffsetCommitKey):
                decoded = None if value is None else decode_offset_commit_value(value)
                if meta.producer_id != NO_PRODUCER_ID:
                    self._replay_pending_offset(decoded_key, decoded, meta, now_ms)
                else:
                    self._replay_offset(decoded_key, decoded, meta.offset, now_ms)
            elif meta.producer_id != NO_PRODUCER_ID:
                # Only offsets are written in transactions; anything else in a transactional
                # batch did not come from a coordinator.
                if not loading:
                    raise AssertionError("group records are never transactional")
                log.warning("shard %d: transactional group record skipped", self.index)
            else:
                self._replay_group(decoded_key, None if value is None else decode_group_metadata_value(value),
                                   now_ms, loading)
        except RecordFormatError as exc:
            # Loading: someone else wrote into the topic; skip it, as the loader does for any
            # undecodable record. Live: it is our own record, so this is a bug.
            if not loading:
                raise
            log.warning("shard %d: undecodable record skipped: %s", self.index, exc)

    def _replay_consumer_record(self, key: bytes, value: bytes | None, meta: RecordMeta, now_ms: int,
                                loading: bool) -> None:
        try:
            decoded_key = decode_consumer_key(key)
            decoded = None if value is None else decode_consumer_value(decoded_key.record_type, value)
        except RecordFormatError as exc:
            if not loading:
                raise
            log.warning("shard %d: undecodable record skipped: %s", self.index, exc)
            return
        if meta.producer_id != NO_PRODUCER_ID:
            if not loading:
                raise AssertionError("group records are never transactional")
            log.warning("shard %d: transactional group record skipped", self.index)
            return
        if value is not None and decoded is None:
            return  # a record type ackly does not keep (partition metadata)
        self._replay_consumer(decoded_key, decoded, now_ms)

    def _replay_consumer(self, key: ConsumerGroupKey, value: ConsumerGroupValue | None, now_ms: int) -> None:
        group_id = key.group
        group = self.consumer_groups.get(group_id)
        if group is None:
            if value is None:
                return
            group = self.consumer_groups[group_id] = ConsumerGroup(group_id, self.consumer_config)
        classic = self.groups.get(group_id)
        if classic is not None:
            # The id moved from the classic protocol (a simple group of offsets, or an empty
            # one whose tombstone was compacted away): the consumer group replaces it.
            self.groups.pop(group_id)
            self.group_values.pop(group_id, None)
            self._due.pop(group_id, None)
        group.replay(key, value, now_ms)
        if key.record_type == CONSUMER_GROUP_METADATA and value is None:
            del self.consumer_groups[group_id]
            self._due.pop(group_id, None)
            if group_id in self.offsets:
                self._ensure_group(group_id, now_ms)
            return
        self._touch_consumer(group)

    def _emitter(self, fx: Effects) -> Callable[[ConsumerGroupKey, ConsumerGroupValue | None], None]:
        def emit(key: ConsumerGroupKey, value: ConsumerGroupValue | None) -> None:
            fx.append(encode_consumer_key(key), None if value is None else encode_consumer_value(value))
        return emit

    def _replay_offset(self, key: OffsetCommitKey, value: OffsetCommitValue | None,
                       record_offset: int, now_ms: int) -> None:
        tp = (key.topic, key.partition)
        if value is None:
            # A tombstone removes the committed offset only: pending transactional offsets of
            # this partition are resolved by their marker (see the module docstring).
            self._remove_offset(key.group, tp)
            return
        self._put_offset(key.group, tp, value, record_offset, now_ms)

    def _remove_offset(self, group_id: str, tp: TopicPartitionKey) -> None:
        group_offsets = self.offsets.get(group_id)
        if group_offsets is not None:
            group_offsets.pop(tp, None)
            self.committed_at[group_id].pop(tp, None)
            if not group_offsets:
                del self.offsets[group_id]
                del self.committed_at[group_id]

    def _put_offset(self, group_id: str, tp: TopicPartitionKey, value: OffsetCommitValue,
                    record_offset: int, now_ms: int) -> None:
        self.offsets.setdefault(group_id, {})[tp] = value
        self.committed_at.setdefault(group_id, {})[tp] = record_offset
        self._ensure_group(group_id, now_ms)

    def _ensure_group(self, group_id: str, now_ms: int) -> None:
        if group_id not in self.groups and group_id not in self.consumer_groups:
            # A "simple" group: known only by its offsets (Kafka creates it the same way).
            self.groups[group_id] = ClassicGroup(group_id, self.config, now_ms)

    def _replay_pending_offset(self, key: OffsetCommitKey, value: OffsetCommitValue | None,
                               meta: RecordMeta, now_ms: int) -> None:
        """A TxnOffsetCommit record: pending until its producer's marker (Kafka's
        OffsetMetadataManager.replay with a producer id). The group exists from now on, as
        Kafka creates a simple group when it validates the request."""
        if value is None:
            log.warning("shard %d: transactional tombstone for %s skipped", self.index, key)
            return
        tp = (key.topic, key.partition)
        self.pending.setdefault(meta.producer_id, {}).setdefault(key.group, {})[tp] = PendingOffset(
            value, meta.offset)
        self.open_txns.setdefault(key.group, {}).setdefault(tp, set()).add(meta.producer_id)
        self._ensure_group(key.group, now_ms)

    def replay_marker(self, producer_id: int, committed: bool, now_ms: int) -> None:
        """The producer's transaction ended on this partition (Kafka's
        replayEndTransactionMarker): its pending offsets become committed, each unless a
        record appended after it already set that partition's offset, or are dropped."""
        by_group = self.pending.pop(producer_id, None)
        if by_group is None:
            return
        for group_id, by_tp in by_group.items():
            open_by_tp = self.open_txns[group_id]
            for tp in by_tp:
                producers = open_by_tp[tp]
                producers.discard(producer_id)
                if not producers:
                    del open_by_tp[tp]
            if not open_by_tp:
                del self.open_txns[group_id]
            if not committed:
                continue
            for tp, pending in by_tp.items():
                last = self.committed_at.get(group_id, {}).get(tp)
                if last is None or pending.record_offset > last:
                    self._put_offset(group_id, tp, pending.value, pending.record_offset, now_ms)
                else:
                    log.info("group %s: transactional offset of %s-%d (record %d) is older than "
                             "the committed one (record %d); not applied", group_id, tp[0], tp[1],
                             pending.record_offset, last)
            self._touch(self.groups.get(group_id))

    def has_pending_offsets(self, group_id: str, tp: TopicPartitionKey | None = None) -> bool:
        """Whether a transaction holds an offset of this group (of this partition) pending:
        Kafka's hasPendingTransactionalOffsets."""
        open_by_tp = self.open_txns.get(group_id)
        if open_by_tp is None:
            return False
        return tp is None or tp in open_by_tp

    def _replay_group(self, key: GroupMetadataKey, value: GroupMetadataValue | None, now_ms: int,
                      loading: bool) -> None:
        if value is None:
            self.group_values.pop(key.group, None)
            group = self.groups.pop(key.group, None)
            if group is not None:
                group.mark_dead()
            self._due.pop(key.group, None)
            return
        self.group_values[key.group] = value
        group = self.groups.get(key.group)
        if group is None:
            group = self.groups[key.group] = ClassicGroup(key.group, self.config, now_ms)
        group.replay(value, now_ms, loading)
        self._touch(group)

    def undo_point(self, key: bytes, now_ms: int) -> Callable[[], None]:
        """`Shard.undo_point` for a live, non-transactional record (transactional ones are
        replayed only once written). An offset record changes one committed offset, and may
        create its group; a group record changes the group, which is then rebuilt from its
        previous record, as a load would leave it: members get a full session from now and
        the requests parked in its rebalance get NOT_COORDINATOR and rejoin (the op's own
        replies fail with the append's error)."""
        if is_consumer_group_key(key):
            return self._consumer_undo_point(decode_consumer_key(key).group, now_ms)
        decoded = decode_key(key)
        self._decoded = (key, decoded)
        group_id = decoded.group
        existed = group_id in self.groups
        if isinstance(decoded, OffsetCommitKey):
            tp = (decoded.topic, decoded.partition)
            value = self.offsets.get(group_id, {}).get(tp)
            at = self.committed_at.get(group_id, {}).get(tp)

            def undo_offset() -> None:
                if value is None or at is None:
                    self._remove_offset(group_id, tp)
                else:
                    self.offsets.setdefault(group_id, {})[tp] = value
                    self.committed_at.setdefault(group_id, {})[tp] = at
                if not existed:
                    self._drop_group(group_id)

            return undo_offset
        previous = self.group_values.get(group_id)

        def undo_group() -> None:
            self._drop_group(group_id)
            if previous is None:
                self.group_values.pop(group_id, None)
            else:
                self.group_values[group_id] = previous
            if not existed:
                return
            group = self.groups[group_id] = ClassicGroup(group_id, self.config, now_ms)
            if previous is not None:
                group.replay(previous, now_ms, True)
                for member in group.members.values():
                    member.deadline_ms = now_ms + member.session_timeout_ms
            self._touch(group)

        return undo_group

    def _consumer_undo_point(self, group_id: str, now_ms: int) -> Callable[[], None]:
        """A consumer group record: the undo puts back a copy of the whole group as it was
        (its soft state too: deadlines are kept)."""
        saved = copy.deepcopy(self.consumer_groups.get(group_id))
        classic = self.groups.get(group_id)

        def undo_consumer_group() -> None:
            if saved is None:
                self.consumer_groups.pop(group_id, None)
                self._due.pop(group_id, None)
                if classic is not None and group_id not in self.groups:
                    self.groups[group_id] = classic
                    self._touch(classic)
                elif group_id in self.offsets:
                    self._ensure_group(group_id, now_ms)
            else:
                self.consumer_groups[group_id] = saved
                self._touch_consumer(saved)

        return undo_consumer_group

    def _drop_group(self, group_id: str) -> None:
        """Forget the in-memory group (an undo rebuilds it if the log has it)."""
        group = self.groups.pop(group_id, None)
        self._due.pop(group_id, None)
        if group is not None:
            group.fail_waiters(ErrorCode.not_coordinator)
            group.mark_dead()

    def on_loaded(self, now_ms: int) -> None:
        """Every member of a loaded Stable group gets a full session from now (Kafka's
        onLoaded): those that do not come back are then removed and the group rebalances."""
        for group in self.groups.values():
            for member in group.members.values():
                member.deadline_ms = now_ms + member.session_timeout_ms
            self._touch(group)
        for consumer_group in self.consumer_groups.values():
            for consumer in consumer_group.members.values():
                consumer.session_deadline_ms = now_ms + self.consumer_config.session_timeout_ms
            self._touch_consumer(consumer_group)

    def on_unloaded(self) -> None:
        """The partition is led elsewhere now: requests waiting in a join or sync phase get
        NOT_COORDINATOR and look the coordinator up again (Kafka's onUnloaded)."""
        for group in self.groups.values():
            group.fail_waiters(ErrorCode.not_coordinator)
        self._due.clear()
        self._heap.clear()

    # --- timers ------------------------------------------------------------------------------

    def _touch_consumer(self, group: ConsumerGroup) -> None:
        due = group.next_deadline_ms()
        if due is None:
            self._due.pop(group.group_id, None)
        elif self._due.get(group.group_id) != due:
            self._due[group.group_id] = due
            heapq.heappush(self._heap, (due, group.group_id))

    def _touch(self, group: ClassicGroup | None) -> None:
        """Re-file a group's next deadline after anything that may have changed it."""
        if group is None:
            return
        due = None if group.state is DEAD else group.next_deadline_ms()
        if due is None:
            self._due.pop(group.group_id, None)
        elif self._due.get(group.group_id) != due:
            self._due[group.group_id] = due
            heapq.heappush(self._heap, (due, group.group_id))

    def next_deadline_ms(self) -> int | None:
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the group's deadline moved or it is gone
        if heap:
            return min(heap[0][0], self._next_expiry_ms)
        return self._next_expiry_ms

    def tick(self, now_ms: int, fx: Effects) -> None:
        due_groups = []
        while self._heap and self._heap[0][0] <= now_ms:
            due, group_id = heapq.heappop(self._heap)
            if self._due.get(group_id) == due:
                del self._due[group_id]
                due_groups.append(group_id)
        for group_id in due_groups:  # each once: a timer re-armed at now waits for the next tick
            group = self.groups.get(group_id)
            if group is not None:
                group.on_timer(now_ms, fx)
                self._touch(self.groups.get(group_id))
                continue
            consumer_group = self.consumer_groups.get(group_id)
            if consumer_group is not None:
                expired = consumer_group.on_timer(now_ms, self._emitter(fx))
                if expired:
                    log.info("group %s: members %s removed (session or rebalance timeout)",
                             group_id, ", ".join(expired))
                if group_id in self.consumer_groups:
                    self._touch_consumer(self.consumer_groups[group_id])
        if now_ms >= self._next_expiry_ms:
            self._next_expiry_ms = now_ms + self.offsets_config.retention_check_interval_ms
            self.expire_offsets(now_ms, fx)

    # --- offset expiry -------------------------------------------------------------------------

    def _expiration_rule(self, group: ClassicGroup) -> tuple[Callable[[OffsetCommitValue], int],
                                                             frozenset[str]] | None:
        """(base timestamp of an offset, topics never expired) or None: nothing expires."""
        if group.protocol_type is None:
            return (lambda o: o.commit_timestamp_ms), frozenset()
        if group.state is EMPTY:
            became_empty = group.state_timestamp_ms
            return (lambda o: became_empty), frozenset()
        if group.protocol_type == CONSUMER_PROTOCOL_TYPE and group.state is STABLE:
            topics = group.subscribed_topics()
            if topics is not None:
                return (lambda o: o.commit_timestamp_ms), topics
        return None

    def expire_offsets(self, now_ms: int, fx: Effects) -> None:
        retention_ms = self.offsets_config.retention_ms
        # Retention of stored commit times, as Kafka's: on the wall clock they were written in.
        wall_ms = self.config.wall_clock(now_ms)
        for group_id, consumer_group in list(self.consumer_groups.items()):
            # Kafka's ConsumerGroup: offsets expire by commit time, except those of the
            # topics the members subscribe to; an empty group with no offsets left goes.
            group_offsets = self.offsets.get(group_id, {})
            expired = [tp for tp, o in group_offsets.items()
                       if not consumer_group.is_subscribed(tp[0]) and not self.has_pending_offsets(group_id, tp) and (
                           wall_ms >= o.expire_timestamp_ms if o.expire_timestamp_ms >= 0
                           else wall_ms - o.commit_timestamp_ms >= retention_ms)]
            for topic, partition in expired:
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            if (len(expired) == len(group_offsets) and not consumer_group.members
                    and not self.has_pending_offsets(group_id)):
                consumer_group.delete(self._emitter(fx))
        for group_id in list(self.groups):
            group = self.groups.get(group_id)
            if group is None:
                continue
            rule = self._expiration_rule(group)
            if rule is None:
                continue
            base, kept_topics = rule
            group_offsets = self.offsets.get(group_id, {})
            # A partition with a pending transactional offset keeps its offset, and a group
            # with one stays (Kafka's cleanupExpiredOffsets).
            expired = [
                tp for tp, o in group_offsets.items()
                if tp[0] not in kept_topics and not self.has_pending_offsets(group_id, tp) and (
                    wall_ms >= o.expire_timestamp_ms if o.expire_timestamp_ms >= 0
                    else wall_ms - base(o) >= retention_ms
                )
            ]
            all_gone = len(expired) == len(group_offsets) and not self.has_pending_offsets(group_id)
            for topic, partition in expired:
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            if expired:
                log.info("group %s: %d offsets expired", group_id, len(expired))
            if all_gone and group.state is EMPTY and not group.pending_members:
                fx.append(encode_key(GroupMetadataKey(group_id)), None)

    # --- group operations ----------------------------------------------------------------------

    def join(self, group_id: str, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int,
             fx: Effects) -> None:
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            if consumer_group.members:
                # Kafka without classic members in consumer groups: the group speaks the
                # other protocol.
                fx.reply(waiter, JoinResult(ErrorCode.inconsistent_group_protocol, req.member_id))
                return
            # An empty consumer group becomes a classic one (its offsets stay).
            consumer_group.delete(self._emitter(fx))
        group = self.groups.get(group_id)
        if group is None:
            if req.member_id:
                fx.reply(waiter, JoinResult(ErrorCode.unknown_member_id, req.member_id))
                return
            # The group's existence is a record too (Kafka's newEmptyGroupMetadataRecord).
            fx.append(encode_key(GroupMetadataKey(group_id)), encode_group_metadata_value(
                GroupMetadataValue("", 0, None, None, self.config.wall_clock(now_ms), ())))
            group = self.groups[group_id]
        group.join(req, waiter, now_ms, self._new_member_id, fx)
        self._touch(group)

    def sync(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
             waiter: Waiter[SyncResult], now_ms: int, fx: Effects) -> None:
        group = self.groups.get(group_id)
        if group is None:
            fx.reply(waiter, SyncResult(ErrorCode.unknown_member_id))
            return
        group.sync(generation, member_id, instance_id, protocol_type, protocol_name, assignments,
                   waiter, now_ms, fx)
        self._touch(group)

    def heartbeat(self, group_id: str, member_id: str, instance_id: str | None, generation: int,
                  now_ms: int) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        error = group.heartbeat(member_id, instance_id, generation, now_ms)
        self._touch(group)
        return error

    def leave(self, group_id: str, leaving: list[tuple[str, str | None]], now_ms: int,
              fx: Effects) -> tuple[ErrorCode, list[ErrorCode]]:
        """(group-level error, one error per leaving member)."""
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id] * len(leaving)
        if group.state is DEAD:
            return ErrorCode.coordinator_not_available, []
        errors = group.leave(leaving, now_ms, fx)
        self._touch(self.groups.get(group_id))
        return ErrorCode.none, errors

    # --- consumer groups (KIP-848) --------------------------------------------------------------

    def consumer_heartbeat(self, group_id: str, req: HeartbeatRequest, topics: TopicsView, now_ms: int,
                           fx: Effects) -> HeartbeatResult:
        """ConsumerGroupHeartbeat. A group id held by a classic group with members answers
        GROUP_ID_NOT_FOUND, as Kafka does; an empty classic group (or one of offsets only)
        becomes a consumer group, keeping its offsets."""
        classic = self.groups.get(group_id)
        if classic is not None and (classic.state is not EMPTY or classic.members or classic.pending_members):
            return HeartbeatResult(ErrorCode.group_id_not_found, req.member_id, req.member_epoch,
                                   message=f"Group {group_id} is not a consumer group.")
        classic_record = group_id in self.group_values
        group = self.consumer_groups.get(group_id)
        created = group is None
        if group is None:
            group = self.consumer_groups[group_id] = ConsumerGroup(group_id, self.consumer_config)
        result = group.heartbeat(req, topics, now_ms, self._emitter(fx))
        if created and not group.recorded:
            del self.consumer_groups[group_id]
            return result
        if classic_record:
            # The classic group's record goes (the first consumer record replaced the group).
            fx.append(encode_key(GroupMetadataKey(group_id)), None)
        if group_id in self.consumer_groups:
            self._touch_consumer(group)
        return result

    def consumer_group(self, group_id: str) -> ConsumerGroup | None:
        return self.consumer_groups.get(group_id)

    def validate_offset_fetch(self, group_id: str, member_id: str | None, member_epoch: int) -> ErrorCode:
        """OffsetFetch v9's member and epoch, checked for consumer groups only (classic groups
        ignore them, as Kafka)."""
        group = self.consumer_groups.get(group_id)
        if group is None:
            return ErrorCode.none
        return group.validate_offset_fetch(member_id, member_epoch)

    # --- offsets -------------------------------------------------------------------------------

    def commit_offsets(self, group_id: str, member_id: str, instance_id: str | None,
                       generation: int, expire_timestamp_ms: int, partitions: list[CommitPartition],
                       now_ms: int, fx: Effects, missing_group_error: ErrorCode) -> list[ErrorCode]:
        """OffsetCommit: one error per partition. A group-less commit (generation -1, no
        member) creates a simple group; any other commit needs a group that knows the member
        in this generation (docs/guarantees.md rule 24)."""
        group = self.groups.get(group_id)
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            error = consumer_group.validate_offset_commit(member_id, generation, transactional=False)
        elif group is None:
            if generation >= 0:
                error = missing_group_error
            elif member_id or instance_id is not None:
                error = ErrorCode.unknown_member_id
            else:
                error = ErrorCode.none
        else:
            error = group.validate_offset_commit(member_id, instance_id, generation, now_ms)
            self._touch(group)
        if error is not ErrorCode.none:
            return [error] * len(partitions)
        return self._append_offset_commits(group_id, partitions, expire_timestamp_ms, now_ms, fx)

    def commit_transactional_offsets(self, group_id: str, member_id: str, instance_id: str | None,
                                     generation: int, partitions: list[CommitPartition], now_ms: int,
                                     fx: Effects) -> list[ErrorCode]:
        """TxnOffsetCommit: one error per partition; the records go in the producer's
        transactional batch (the runtime's `write_transactional`) and stay pending until its
        marker. Fenced like OffsetCommit (KIP-447: ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
        FENCED_INSTANCE_ID); a group that does not exist is accepted with generation -1 (a
        producer without group metadata, TxnOffsetCommit v0-v2), as Kafka's
        validateTransactionalOffsetCommit does."""
        group = self.groups.get(group_id)
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            error = consumer_group.validate_offset_commit(member_id, generation, transactional=True)
        elif group is None:
            error = ErrorCode.none if generation < 0 else ErrorCode.illegal_generation
        else:
            error = group.validate_offset_commit(member_id, instance_id, generation, now_ms,
                                                 transactional=True)
        if error is not ErrorCode.none:
            return [error] * len(partitions)
        return self._append_offset_commits(group_id, partitions, -1, now_ms, fx)

    def _append_offset_commits(self, group_id: str, partitions: list[CommitPartition],
                               expire_timestamp_ms: int, now_ms: int, fx: Effects) -> list[ErrorCode]:
        """Append an offset commit record per partition (OffsetCommit's and TxnOffsetCommit's
        alike); one error per partition: OFFSET_METADATA_TOO_LARGE past
        `offset.metadata.max.bytes`, else NONE."""
        errors = []
        max_bytes = self.offsets_config.metadata_max_bytes
        for p in partitions:
            metadata = p.metadata or ""
            if len(metadata.encode("utf-8")) > max_bytes:
                errors.append(ErrorCode.offset_metadata_too_large)
                continue
            fx.append(encode_key(OffsetCommitKey(group_id, p.topic, p.partition)),
                      encode_offset_commit_value(OffsetCommitValue(
                          p.offset, p.leader_epoch, metadata, self.config.wall_clock(now_ms),
                          expire_timestamp_ms)))
            errors.append(ErrorCode.none)
        return errors

    def fetch_offsets(self, group_id: str, wanted: list[tuple[str, list[int]]] | None,
                      require_stable: bool = False) -> list[tuple[str, list[tuple[int, FetchedOffset]]]]:
        """Committed offsets per topic: of the partitions asked for (None where there is none,
        as Kafka answers -1), or every one the group has when `wanted` is None. Pending
        transactional offsets are never shown; with `require_stable` (KIP-447) a partition
        that has one answers UNSTABLE_OFFSET_COMMIT instead, so the consumer waits for the
        transaction to end rather than start from an offset about to change."""
        group_offsets = self.offsets.get(group_id, {})
        open_by_tp = self.open_txns.get(group_id, {}) if require_stable else {}

        def answer(tp: TopicPartitionKey) -> FetchedOffset:
            if tp in open_by_tp:
                return ErrorCode.unstable_offset_commit
            return group_offsets.get(tp)

        if wanted is None:
            by_topic: dict[str, list[tuple[int, FetchedOffset]]] = {}
            for topic, partition in sorted(group_offsets):
                by_topic.setdefault(topic, []).append((partition, answer((topic, partition))))
            return list(by_topic.items())
        return [(topic, [(p, answer((topic, p))) for p in partitions])
                for topic, partitions in wanted]

    def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]], fx: Effects
                       ) -> tuple[ErrorCode, list[ErrorCode]]:
        """OffsetDelete (KIP-496): only offsets nobody consumes may go."""
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            return ErrorCode.none, self._delete_offsets(
                group_id, partitions, frozenset(t for t, _ in partitions if consumer_group.is_subscribed(t)), fx)
        group = self.groups.get(group_id)
        if group is None or group.state is DEAD:
            return ErrorCode.group_id_not_found, []
        if group.state is EMPTY:
            consumed: frozenset[str] = frozenset()
        elif group.protocol_type == CONSUMER_PROTOCOL_TYPE:
            subscribed = group.subscribed_topics()
            consumed = subscribed if subscribed is not None else frozenset(t for t, _ in partitions)
        else:
            return ErrorCode.non_empty_group, []
        return ErrorCode.none, self._delete_offsets(group_id, partitions, consumed, fx)

    def _delete_offsets(self, group_id: str, partitions: list[tuple[str, int]], consumed: frozenset[str],
                        fx: Effects) -> list[ErrorCode]:
        group_offsets = self.offsets.get(group_id, {})
        errors = []
        for topic, partition in partitions:
            if topic in consumed:
                errors.append(ErrorCode.group_subscribed_to_topic)
                continue
            if (topic, partition) in group_offsets:
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            errors.append(ErrorCode.none)
        return errors

    # --- admin ---------------------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupDescription | None:
        group = self.groups.get(group_id)
        return None if group is None else group.describe()

    def list_groups(self) -> list[GroupListing]:
        return [GroupListing(g.group_id, g.protocol_type or "", g.state) for g in self.groups.values()] + [
            GroupListing(g.group_id, CONSUMER_PROTOCOL_TYPE, g.state, "consumer")
            for g in self.consumer_groups.values()]

    def delete_group(self, group_id: str, fx: Effects) -> ErrorCode:
        """DeleteGroups: only a group without members; its offsets go with it."""
        consumer_group = self.consumer_groups.get(group_id)
        if consumer_group is not None:
            if consumer_group.members:
                return ErrorCode.non_empty_group
            for topic, partition in list(self.offsets.get(group_id, {})):
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            consumer_group.delete(self._emitter(fx))
            return ErrorCode.none
        group = self.groups.get(group_id)
        if group is None or group.state is DEAD:
            return ErrorCode.group_id_not_found
        if group.state is not EMPTY:
            return ErrorCode.non_empty_group
        for topic, partition in list(self.offsets.get(group_id, {})):
            fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
        fx.append(encode_key(GroupMetadataKey(group_id)), None)
        return ErrorCode.none

    # --- checks --------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        assert not set(self.groups) & set(self.consumer_groups), "a group id in both protocols"
        for consumer_group in self.consumer_groups.values():
            assert consumer_group.recorded, f"consumer group {consumer_group.group_id} has no record"
            consumer_group.check_invariants()
        for group in self.groups.values():
            assert group.state is not DEAD, f"dead group {group.group_id} still listed"
            if group.snapshot is not None or group.state is not EMPTY or group.members:
                group.check_invariants()
        assert all(self.offsets.values()), "an empty offsets map was kept"
        assert set(self.offsets) <= set(self.groups) | set(self.consumer_groups), \
            "offsets of a group that does not exist"
        assert {g: set(o) for g, o in self.offsets.items()} == {
            g: set(o) for g, o in self.committed_at.items()}, "committed_at out of step with offsets"
        triples = {(pid, g, tp) for pid, by_group in self.pending.items()
                   for g, by_tp in by_group.items() for tp in by_tp}
        assert all(by_group and all(by_group.values()) for by_group in self.pending.values()), \
            "an empty pending map was kept"
        assert all(by_tp and all(by_tp.values()) for by_tp in self.open_txns.values()), \
            "an empty open-transactions entry was kept"
        assert triples == {(pid, g, tp) for g, by_tp in self.open_txns.items()
                           for tp, pids in by_tp.items() for pid in pids}, \
            "pending offsets and open transactions disagree"
