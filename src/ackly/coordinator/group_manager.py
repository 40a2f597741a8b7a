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

Invariants: every group here is alive (Dead groups are removed); `offsets` holds no empty
maps; each group's deadline in `_due` is its current `next_deadline_ms()`.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass

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
from ackly.coordinator.runtime import Effects, Waiter
from ackly.errors import ErrorCode

log = logging.getLogger("ackly.coordinator")

TopicPartitionKey = tuple[str, int]


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
class GroupListing:
    group_id: str
    protocol_type: str
    state: GroupState


class GroupShard:
    def __init__(self, index: int, config: GroupConfig, offsets_config: OffsetsConfig,
                 new_member_id: Callable[[str], str], now_ms: int) -> None:
        self.index = index
        self.config = config
        self.offsets_config = offsets_config
        self._new_member_id = new_member_id
        self.groups: dict[str, ClassicGroup] = {}
        self.offsets: dict[str, dict[TopicPartitionKey, OffsetCommitValue]] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._next_expiry_ms = now_ms + offsets_config.retention_check_interval_ms

    # --- replay ------------------------------------------------------------------------------

    def replay(self, key: bytes, value: bytes | None, now_ms: int, loading: bool) -> None:
        try:
            decoded_key = decode_key(key)
            if isinstance(decoded_key, OffsetCommitKey):
                self._replay_offset(decoded_key, None if value is None else decode_offset_commit_value(value),
                                    now_ms)
            else:
                self._replay_group(decoded_key, None if value is None else decode_group_metadata_value(value),
                                   now_ms, loading)
        except RecordFormatError as exc:
            # Loading: someone else wrote into the topic; skip it, as the loader does for any
            # undecodable record. Live: it is our own record, so this is a bug.
            if not loading:
                raise
            log.warning("shard %d: undecodable record skipped: %s", self.index, exc)

    def _replay_offset(self, key: OffsetCommitKey, value: OffsetCommitValue | None, now_ms: int) -> None:
        tp = (key.topic, key.partition)
        if value is None:
            group_offsets = self.offsets.get(key.group)
            if group_offsets is not None:
                group_offsets.pop(tp, None)
                if not group_offsets:
                    del self.offsets[key.group]
            return
        self.offsets.setdefault(key.group, {})[tp] = value
        if key.group not in self.groups:
            # A "simple" group: known only by its offsets (Kafka creates it the same way).
            self.groups[key.group] = ClassicGroup(key.group, self.config, now_ms)

    def _replay_group(self, key: GroupMetadataKey, value: GroupMetadataValue | None, now_ms: int,
                      loading: bool) -> None:
        if value is None:
            group = self.groups.pop(key.group, None)
            if group is not None:
                group.mark_dead()
            self._due.pop(key.group, None)
            return
        group = self.groups.get(key.group)
        if group is None:
            group = self.groups[key.group] = ClassicGroup(key.group, self.config, now_ms)
        group.replay(value, now_ms, loading)
        self._touch(group)

    def on_loaded(self, now_ms: int) -> None:
        """Every member of a loaded Stable group gets a full session from now (Kafka's
        onLoaded): those that do not come back are then removed and the group rebalances."""
        for group in self.groups.values():
            for member in group.members.values():
                member.deadline_ms = now_ms + member.session_timeout_ms
            self._touch(group)

    def on_unloaded(self) -> None:
        """The partition is led elsewhere now: requests waiting in a join or sync phase get
        NOT_COORDINATOR and look the coordinator up again (Kafka's onUnloaded)."""
        for group in self.groups.values():
            group.fail_waiters(ErrorCode.not_coordinator)
        self._due.clear()
        self._heap.clear()

    # --- timers ------------------------------------------------------------------------------

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
        for group_id in list(self.groups):
            group = self.groups.get(group_id)
            if group is None:
                continue
            rule = self._expiration_rule(group)
            if rule is None:
                continue
            base, kept_topics = rule
            group_offsets = self.offsets.get(group_id, {})
            expired = [
                tp for tp, o in group_offsets.items()
                if tp[0] not in kept_topics and (
                    now_ms >= o.expire_timestamp_ms if o.expire_timestamp_ms >= 0
                    else now_ms - base(o) >= retention_ms
                )
            ]
            all_gone = len(expired) == len(group_offsets)
            for topic, partition in expired:
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            if expired:
                log.info("group %s: %d offsets expired", group_id, len(expired))
            if all_gone and group.state is EMPTY and not group.pending_members:
                fx.append(encode_key(GroupMetadataKey(group_id)), None)

    # --- group operations ----------------------------------------------------------------------

    def join(self, group_id: str, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int,
             fx: Effects) -> None:
        group = self.groups.get(group_id)
        if group is None:
            if req.member_id:
                fx.reply(waiter, JoinResult(ErrorCode.unknown_member_id, req.member_id))
                return
            # The group's existence is a record too (Kafka's newEmptyGroupMetadataRecord).
            fx.append(encode_key(GroupMetadataKey(group_id)), encode_group_metadata_value(
                GroupMetadataValue("", 0, None, None, now_ms, ())))
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

    # --- offsets -------------------------------------------------------------------------------

    def commit_offsets(self, group_id: str, member_id: str, instance_id: str | None,
                       generation: int, expire_timestamp_ms: int, partitions: list[CommitPartition],
                       now_ms: int, fx: Effects, missing_group_error: ErrorCode) -> list[ErrorCode]:
        """OffsetCommit: one error per partition. A group-less commit (generation -1, no
        member) creates a simple group; any other commit needs a group that knows the member
        in this generation (GUARANTEES.md rule 24)."""
        group = self.groups.get(group_id)
        if group is None:
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
        errors = []
        max_bytes = self.offsets_config.metadata_max_bytes
        for p in partitions:
            metadata = p.metadata or ""
            if len(metadata.encode("utf-8")) > max_bytes:
                errors.append(ErrorCode.offset_metadata_too_large)
                continue
            fx.append(encode_key(OffsetCommitKey(group_id, p.topic, p.partition)),
                      encode_offset_commit_value(OffsetCommitValue(
                          p.offset, p.leader_epoch, metadata, now_ms, expire_timestamp_ms)))
            errors.append(ErrorCode.none)
        return errors

    def fetch_offsets(self, group_id: str, wanted: list[tuple[str, list[int]]] | None
                      ) -> list[tuple[str, list[tuple[int, OffsetCommitValue | None]]]]:
        """Committed offsets per topic: of the partitions asked for (None where there is none,
        as Kafka answers -1), or every one the group has when `wanted` is None."""
        group_offsets = self.offsets.get(group_id, {})
        if wanted is None:
            by_topic: dict[str, list[tuple[int, OffsetCommitValue | None]]] = {}
            for (topic, partition), value in sorted(group_offsets.items()):
                by_topic.setdefault(topic, []).append((partition, value))
            return list(by_topic.items())
        return [(topic, [(p, group_offsets.get((topic, p))) for p in partitions])
                for topic, partitions in wanted]

    def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]], fx: Effects
                       ) -> tuple[ErrorCode, list[ErrorCode]]:
        """OffsetDelete (KIP-496): only offsets nobody consumes may go."""
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
        group_offsets = self.offsets.get(group_id, {})
        errors = []
        for topic, partition in partitions:
            if topic in consumed:
                errors.append(ErrorCode.group_subscribed_to_topic)
                continue
            if (topic, partition) in group_offsets:
                fx.append(encode_key(OffsetCommitKey(group_id, topic, partition)), None)
            errors.append(ErrorCode.none)
        return ErrorCode.none, errors

    # --- admin ---------------------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupDescription | None:
        group = self.groups.get(group_id)
        return None if group is None else group.describe()

    def list_groups(self) -> list[GroupListing]:
        return [GroupListing(g.group_id, g.protocol_type or "", g.state) for g in self.groups.values()]

    def delete_group(self, group_id: str, fx: Effects) -> ErrorCode:
        """DeleteGroups: only a group without members; its offsets go with it."""
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
        for group in self.groups.values():
            assert group.state is not DEAD, f"dead group {group.group_id} still listed"
            if group.snapshot is not None or group.state is not EMPTY or group.members:
                group.check_invariants()
        assert all(self.offsets.values()), "an empty offsets map was kept"
        assert set(self.offsets) <= set(self.groups), "offsets of a group that does not exist"
