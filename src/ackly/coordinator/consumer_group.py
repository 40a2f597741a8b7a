"""A consumer group of the KIP-848 protocol (ConsumerGroupHeartbeat): epochs, target
assignment, and each member's reconciliation towards it.

Mirrors Kafka's ConsumerGroup, CurrentAssignmentBuilder and the consumer-group part of
GroupMetadataManager. The group owns:

- the *group epoch*, bumped whenever what the assignment depends on changes: a member joins
  or leaves, a subscription or the preferred server assignor changes, or the subscribed
  topics' metadata changes (partition count, a topic created or deleted; tracked by a hash);
- the *target assignment* and its epoch (the group epoch it was computed for), computed by a
  server-side assignor (assignors.py) when the group epoch has moved past it;
- per member: the *member epoch*, its current assignment (`assigned`), the partitions it must
  give up (`pending_revocation`) and its state: STABLE, UNREVOKED_PARTITIONS (waits for the
  member to confirm it revoked `pending_revocation`), UNRELEASED_PARTITIONS (part of its
  target is still owned by another member).

Reconciliation (CurrentAssignmentBuilder): a member behind the target epoch first keeps the
part of its assignment that stays in its target and is told to revoke the rest, at its old
epoch; once it reports (owned partitions in a heartbeat) that it no longer holds them, it
moves to the target epoch and receives the new partitions that no other member holds any
more; the others follow as their owners release them. So a partition is never in two
members' assignments (assigned or pending revocation) at once, and the members that keep a
partition never stop consuming it while others come and go.

Durable state is exactly the replay of the group's records (consumer_group_records.py): an
operation decides, writes records through `emit`, and the replay of each record, run at
once, changes the group. Soft state (never written, rebuilt at load): each member's session
deadline (`group.consumer.session.timeout.ms` from its last heartbeat) and, while it must
revoke, its rebalance deadline (its rebalance timeout); a member past either is removed as if
it had left (Kafka fences it the same way).

Static members (`group.instance.id`): epoch -2 in a heartbeat is a temporary leave; the member
keeps its assignment until its session expires, and a new member id with the same instance id
takes its place, its assignment and its epoch, without a rebalance. A second member with the
instance id while the first is still in the group is refused (UNRELEASED_INSTANCE_ID).

Invariants (`check_invariants`): no partition is in two members' `assigned` or
`pending_revocation`; a member's epoch never exceeds the assignment epoch, which never
exceeds the group epoch; a STABLE or UNRELEASED member at the assignment epoch holds only
partitions of its target; pending revocation is empty unless UNREVOKED_PARTITIONS; one member
per instance id.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ackly.coordinator.assignors import UNIFORM, assignor
from ackly.coordinator.consumer_group_records import (
    CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT,
    CONSUMER_GROUP_MEMBER_METADATA,
    CONSUMER_GROUP_METADATA,
    CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER,
    CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA,
    Assignment,
    ConsumerGroupKey,
    ConsumerGroupValue,
    CurrentAssignmentRecord,
    GroupMetadataRecord,
    MemberMetadataRecord,
    TargetAssignmentMemberRecord,
    TargetAssignmentMetadataRecord,
    as_tuples,
    from_tuples,
)
from ackly.coordinator.topic_regex import RegexError, compile_topic_regex, matching_topics
from ackly.errors import ErrorCode

LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2

Emit = Callable[[ConsumerGroupKey, ConsumerGroupValue | None], None]


class MemberState(enum.IntEnum):
    """Kafka's MemberState, with its record values."""

    STABLE = 1
    UNREVOKED_PARTITIONS = 2
    UNRELEASED_PARTITIONS = 3


class ConsumerGroupState(enum.Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"


@dataclass(frozen=True)
class ConsumerGroupConfig:
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 5_000
    assignors: tuple[str, ...] = (UNIFORM, "range")
    max_size: int = 2**31 - 1


class TopicsView:
    """The topics as the broker's metadata shows them, for the subscribed names (core code
    cannot read the broker: the caller builds this per request)."""

    def __init__(self, by_name: Mapping[str, tuple[uuid.UUID, int]]) -> None:
        self.by_name = dict(by_name)
        self.by_id = {tid: name for name, (tid, _) in self.by_name.items()}


@dataclass(frozen=True)
class HeartbeatRequest:
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: Assignment | None = None  # None: unchanged since the last heartbeat
    client_id: str = ""
    client_host: str = ""


@dataclass(frozen=True)
class HeartbeatResult:
    error: ErrorCode
    member_id: str = ""
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Assignment | None = None
    message: str | None = None


@dataclass
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    rebalance_timeout_ms: int = -1
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    # Soft state: not in any record.
    session_deadline_ms: int = 0
    rebalance_deadline_ms: int | None = None

    def metadata_record(self) -> MemberMetadataRecord:
        return MemberMetadataRecord(self.instance_id, self.rack_id, self.client_id, self.client_host,
                                    self.subscribed_topic_names, self.subscribed_topic_regex,
                                    self.rebalance_timeout_ms, self.server_assignor)

    def assignment_record(self) -> CurrentAssignmentRecord:
        return CurrentAssignmentRecord(self.member_epoch, self.previous_member_epoch, int(self.state),
                                       as_tuples(self.assigned), as_tuples(self.pending_revocation))


def partitions_of(assignment: Assignment) -> set[tuple[uuid.UUID, int]]:
    return {(t, p) for t, ps in assignment.items() for p in ps}


def _assignment(tps: set[tuple[uuid.UUID, int]]) -> Assignment:
    out: dict[uuid.UUID, set[int]] = {}
    for t, p in tps:
        out.setdefault(t, set()).add(p)
    return {t: frozenset(ps) for t, ps in out.items()}


def metadata_hash(topics: Mapping[str, tuple[uuid.UUID, int]]) -> int:
    """A stable 64-bit digest of the subscribed topics' ids and partition counts (stored in
    the group's record, so it must not depend on the process: no `hash()`)."""
    if not topics:
        return 0
    h = hashlib.sha256()
    for name in sorted(topics):
        tid, count = topics[name]
        h.update(f"{name}\0{tid}\0{count}\n".encode())
    return int.from_bytes(h.digest()[:8], "big", signed=True) or 1


class ConsumerGroup:
    def __init__(self, group_id: str, config: ConsumerGroupConfig) -> None:
        self.group_id = group_id
        self.config = config
        self.group_epoch = 0
        self.metadata_hash = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerMember] = {}
        self.target: dict[str, Assignment] = {}
        # Whether any record of this group has been replayed (a group only a failed
        # validation touched is not kept).
        self.recorded = False

    # --- replay ------------------------------------------------------------------------------

    def replay(self, key: ConsumerGroupKey, value: ConsumerGroupValue | None, now_ms: int) -> None:
        self.recorded = True
        kind = key.record_type
        if kind == CONSUMER_GROUP_METADATA:
            if isinstance(value, GroupMetadataRecord):
                self.group_epoch = value.epoch
                self.metadata_hash = value.metadata_hash
            return  # a tombstone: the shard drops the group
        if kind == CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA:
            self.assignment_epoch = value.assignment_epoch if isinstance(
                value, TargetAssignmentMetadataRecord) else 0
            return
        assert key.member_id is not None
        member_id = key.member_id
        if kind == CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER:
            if isinstance(value, TargetAssignmentMemberRecord):
                self.target[member_id] = from_tuples(value.partitions)
            else:
                self.target.pop(member_id, None)
            return
        member = self.members.get(member_id)
        if value is None:
            if kind == CONSUMER_GROUP_MEMBER_METADATA:
                self.members.pop(member_id, None)
            elif member is not None:
                member.assigned, member.pending_revocation = {}, {}
                member.state = MemberState.STABLE
            return
        if member is None:
            member = self.members[member_id] = ConsumerMember(
                member_id, session_deadline_ms=now_ms + self.config.session_timeout_ms)
        if isinstance(value, MemberMetadataRecord):
            member.instance_id = value.instance_id
            member.rack_id = value.rack_id
            member.client_id = value.client_id
            member.client_host = value.client_host
            member.subscribed_topic_names = value.subscribed_topic_names
            member.subscribed_topic_regex = value.subscribed_topic_regex
            member.rebalance_timeout_ms = value.rebalance_timeout_ms
            member.server_assignor = value.server_assignor
        elif isinstance(value, CurrentAssignmentRecord):
            member.member_epoch = value.member_epoch
            member.previous_member_epoch = value.previous_member_epoch
            member.state = MemberState(value.state) if value.state in (1, 2, 3) else MemberState.STABLE
            member.assigned = from_tuples(value.assigned)
            member.pending_revocation = from_tuples(value.pending_revocation)

    # --- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> ConsumerGroupState:
        if not self.members:
            return ConsumerGroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return ConsumerGroupState.ASSIGNING
        if any(m.member_epoch != self.assignment_epoch or m.state is not MemberState.STABLE
               for m in self.members.values()):
            return ConsumerGroupState.RECONCILING
        return ConsumerGroupState.STABLE

    def static_member(self, instance_id: str) -> ConsumerMember | None:
        for m in self.members.values():
            if m.instance_id == instance_id:
                return m
        return None

    def subscribed_topic_names(self) -> frozenset[str]:
        """The topics named in the members' subscriptions (not those matched by a regex)."""
        return frozenset(n for m in self.members.values() for n in m.subscribed_topic_names)

    def is_subscribed(self, topic: str) -> bool:
        """Whether some member subscribes to `topic`, by name or by regular expression (what
        keeps its offsets from expiring or being deleted)."""
        return topic in self.subscribed_topic_names() or any(
            m.subscribed_topic_regex and matching_topics(m.subscribed_topic_regex, (topic,))
            for m in self.members.values())

    def member_topics(self, member: ConsumerMember, topics: TopicsView) -> set[str]:
        """The existing topics a member subscribes to: its names, and its regex resolved
        against the metadata (topic_regex.py)."""
        names = {n for n in member.subscribed_topic_names if n in topics.by_name}
        if member.subscribed_topic_regex:
            names |= matching_topics(member.subscribed_topic_regex, topics.by_name)
        return names

    def owner_of(self, tp: tuple[uuid.UUID, int]) -> str | None:
        topic_id, partition = tp
        for m in self.members.values():
            if partition in m.assigned.get(topic_id, ()) or partition in m.pending_revocation.get(topic_id, ()):
                return m.member_id
        return None

    def preferred_assignor(self) -> str:
        """The server assignor most members ask for (ties: by name), else the default (the
        first of `group.consumer.assignors`), as Kafka's ConsumerGroup.computePreferredServerAssignor."""
        counts: dict[str, int] = {}
        for m in self.members.values():
            if m.server_assignor:
                counts[m.server_assignor] = counts.get(m.server_assignor, 0) + 1
        if not counts:
            return self.config.assignors[0]
        return min(counts, key=lambda name: (-counts[name], name))

    def validate_offset_commit(self, member_id: str, member_epoch: int, transactional: bool) -> ErrorCode:
        """Kafka's ConsumerGroup.validateOffsetCommit: epoch -1 without a member may commit
        only while the group has no members; a member must exist (UNKNOWN_MEMBER_ID) and send
        its current epoch (STALE_MEMBER_EPOCH; ILLEGAL_GENERATION in a transaction, which the
        producer's API understands)."""
        if member_epoch < 0 and not member_id and not self.members:
            return ErrorCode.none
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch != member.member_epoch:
            return ErrorCode.illegal_generation if transactional else ErrorCode.stale_member_epoch
        return ErrorCode.none

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int) -> ErrorCode:
        """OffsetFetch v9: a request naming a member is checked like a commit; one without
        (epoch -1: admin tools, older consumers) is not."""
        if member_epoch < 0 and not member_id:
            return ErrorCode.none
        member = self.members.get(member_id or "")
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    # --- the heartbeat -----------------------------------------------------------------------

    def heartbeat(self, req: HeartbeatRequest, topics: TopicsView, now_ms: int, emit: Emit) -> HeartbeatResult:
        if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(req, emit)
        if req.subscribed_topic_regex:
            try:
                compile_topic_regex(req.subscribed_topic_regex)
            except RegexError as exc:
                return self._error(req, ErrorCode.invalid_regular_expression, str(exc))
        if req.server_assignor is not None and req.server_assignor not in self.config.assignors:
            return self._error(req, ErrorCode.unsupported_assignor,
                               f"assignor {req.server_assignor!r} is not one of {', '.join(self.config.assignors)}")
        member, error = self._member_for(req, emit)
        if member is None:
            assert error is not None
            return error
        refused, subscription_changed = self._update_member(member, req, emit)
        if refused is not None:
            return refused
        # One new group epoch for whatever changed: the subscriptions, or the subscribed
        # topics' metadata.
        new_hash = metadata_hash(self.subscribed_topics(topics))
        if subscription_changed or new_hash != self.metadata_hash:
            self._bump_epoch(new_hash, emit)
        if self.group_epoch > self.assignment_epoch:
            self._compute_target(topics, emit)
        member = self.members[member.member_id]
        before = (dict(member.assigned), member.member_epoch)
        self._reconcile(member, req.owned, emit)
        member = self.members[member.member_id]
        member.session_deadline_ms = now_ms + self.config.session_timeout_ms
        if member.state is MemberState.UNREVOKED_PARTITIONS:
            if member.rebalance_deadline_ms is None:
                timeout_ms = member.rebalance_timeout_ms
                member.rebalance_deadline_ms = now_ms + (
                    timeout_ms if timeout_ms > 0 else self.config.session_timeout_ms)
        else:
            member.rebalance_deadline_ms = None
        changed = before != (member.assigned, member.member_epoch)
        send = req.member_epoch == 0 or changed or (req.owned is not None and req.owned != member.assigned)
        return HeartbeatResult(ErrorCode.none, member.member_id, member.member_epoch,
                               self.config.heartbeat_interval_ms,
                               dict(member.assigned) if send else None)

    def _error(self, req: HeartbeatRequest, code: ErrorCode, message: str | None = None) -> HeartbeatResult:
        return HeartbeatResult(code, req.member_id, req.member_epoch, 0, None, message)

    def _member_for(self, req: HeartbeatRequest, emit: Emit) -> tuple[ConsumerMember | None, HeartbeatResult | None]:
        """The member the heartbeat is from, new or rejoining for epoch 0; or the error."""
        member = self.members.get(req.member_id)
        if req.instance_id is not None:
            static = self.static_member(req.instance_id)
            if req.member_epoch == 0:
                if static is not None and static.member_id != req.member_id:
                    if static.member_epoch != STATIC_LEAVE_EPOCH:
                        return None, self._error(req, ErrorCode.unreleased_instance_id,
                                                 f"instance {req.instance_id} is still in the group")
                    return self._replace_static(static, req, emit), None
            elif static is None:
                return None, self._error(req, ErrorCode.unknown_member_id)
            elif static.member_id != req.member_id:
                return None, self._error(req, ErrorCode.fenced_instance_id)
        if req.member_epoch == 0:
            if member is None:
                if len(self.members) >= self.config.max_size:
                    return None, self._error(req, ErrorCode.group_max_size_reached)
                return ConsumerMember(req.member_id, req.instance_id), None
            if member.member_epoch != 0 or member.assigned or member.pending_revocation:
                # A member fenced on its side rejoins under its id: it holds nothing now
                # (its client dropped its partitions before sending epoch 0).
                member.member_epoch, member.previous_member_epoch = 0, member.member_epoch
                member.state = MemberState.STABLE
                member.assigned, member.pending_revocation = {}, {}
                emit(ConsumerGroupKey(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, self.group_id, member.member_id),
                     member.assignment_record())
            return member, None
        if member is None:
            return None, self._error(req, ErrorCode.unknown_member_id)
        if req.member_epoch > member.member_epoch:
            return None, self._error(req, ErrorCode.fenced_member_epoch)
        # The reply that moved it to its epoch may have been lost: the previous epoch is
        # accepted if what it holds is part of its assignment (Kafka's
        # throwIfMemberEpochIsInvalid).
        if req.member_epoch < member.member_epoch and (
                req.member_epoch != member.previous_member_epoch or req.owned is None
                or not partitions_of(req.owned) <= partitions_of(member.assigned)):
            return None, self._error(req, ErrorCode.fenced_member_epoch)
        return member, None

    def _replace_static(self, old: ConsumerMember, req: HeartbeatRequest, emit: Emit) -> ConsumerMember:
        """A static member back under a new member id: it takes over the old member's
        assignment, epoch and target, without a new group epoch."""
        target = self.target.get(old.member_id)
        epoch = old.previous_member_epoch
        assigned, pending, state = dict(old.assigned), dict(old.pending_revocation), old.state
        self._remove_records(old.member_id, emit)
        new = ConsumerMember(req.member_id, req.instance_id, old.rack_id, req.client_id, req.client_host,
                             old.subscribed_topic_names, old.subscribed_topic_regex,
                             old.rebalance_timeout_ms, old.server_assignor)
        emit(ConsumerGroupKey(CONSUMER_GROUP_MEMBER_METADATA, self.group_id, new.member_id), new.metadata_record())
        if target is not None:
            emit(ConsumerGroupKey(CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER, self.group_id, new.member_id),
                 TargetAssignmentMemberRecord(as_tuples(target)))
        emit(ConsumerGroupKey(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, self.group_id, new.member_id),
             CurrentAssignmentRecord(epoch, epoch, int(state), as_tuples(assigned), as_tuples(pending)))
        return self.members[new.member_id]

    def _update_member(self, member: ConsumerMember, req: HeartbeatRequest, emit: Emit
                       ) -> tuple[HeartbeatResult | None, bool]:
        """Write the member's metadata if the heartbeat changed it (null fields: unchanged).
        (the refusal, whether the group needs a new epoch: a new member, subscription or
        assignor)."""
        new = member.member_id not in self.members
        if new and req.subscribed_topic_names is None and req.subscribed_topic_regex is None:
            return self._error(req, ErrorCode.invalid_request,
                               "SubscribedTopicNames or SubscribedTopicRegex must be set in the first heartbeat"
                               ), False
        updated = ConsumerMember(
            member.member_id,
            req.instance_id if req.instance_id is not None else member.instance_id,
            req.rack_id if req.rack_id is not None else member.rack_id,
            req.client_id or member.client_id, req.client_host or member.client_host,
            tuple(sorted(set(req.subscribed_topic_names))) if req.subscribed_topic_names is not None
            else member.subscribed_topic_names,
            req.subscribed_topic_regex if req.subscribed_topic_regex is not None else member.subscribed_topic_regex,
            req.rebalance_timeout_ms if req.rebalance_timeout_ms >= 0 else member.rebalance_timeout_ms,
            req.server_assignor if req.server_assignor is not None else member.server_assignor,
        )
        changed = False
        if new or updated.metadata_record() != member.metadata_record():
            emit(ConsumerGroupKey(CONSUMER_GROUP_MEMBER_METADATA, self.group_id, member.member_id),
                 updated.metadata_record())
            subscription = (updated.subscribed_topic_names, updated.subscribed_topic_regex, updated.server_assignor)
            changed = new or subscription != (member.subscribed_topic_names, member.subscribed_topic_regex,
                                              member.server_assignor)
            if new:
                emit(ConsumerGroupKey(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, self.group_id, member.member_id),
                     CurrentAssignmentRecord(0, -1, int(MemberState.STABLE), (), ()))
        return None, changed

    def _bump_epoch(self, new_hash: int, emit: Emit) -> None:
        emit(ConsumerGroupKey(CONSUMER_GROUP_METADATA, self.group_id),
             GroupMetadataRecord(self.group_epoch + 1, new_hash))

    def subscribed_topics(self, topics: TopicsView) -> dict[str, tuple[uuid.UUID, int]]:
        """Every existing topic some member subscribes to (what the metadata hash covers, so a
        new topic matching a regex moves the group to a new epoch)."""
        names: set[str] = set()
        for m in self.members.values():
            names |= self.member_topics(m, topics)
        return {n: topics.by_name[n] for n in names}

    def _compute_target(self, topics: TopicsView, emit: Emit) -> None:
        subscribed = self.subscribed_topics(topics)
        partitions = {tid: count for tid, count in subscribed.values()}
        subscriptions = {
            m.member_id: frozenset(subscribed[n][0] for n in self.member_topics(m, topics))
            for m in self.members.values()
        }
        target = assignor(self.preferred_assignor())(subscriptions, partitions, self.target)
        for member_id, assignment in sorted(target.items()):
            if self.target.get(member_id) != assignment or member_id not in self.target:
                emit(ConsumerGroupKey(CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER, self.group_id, member_id),
                     TargetAssignmentMemberRecord(as_tuples(assignment)))
        emit(ConsumerGroupKey(CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA, self.group_id),
             TargetAssignmentMetadataRecord(self.group_epoch))

    def _reconcile(self, member: ConsumerMember, owned: Assignment | None, emit: Emit) -> None:
        """Kafka's CurrentAssignmentBuilder: one step of the member towards its target."""
        if member.member_epoch == STATIC_LEAVE_EPOCH:
            return
        if member.state is MemberState.UNREVOKED_PARTITIONS:
            if owned is None or partitions_of(owned) & partitions_of(member.pending_revocation):
                return  # still holds what it must give up
        elif member.state is MemberState.STABLE and member.member_epoch == self.assignment_epoch:
            return
        target = partitions_of(self.target.get(member.member_id, {}))
        assigned = partitions_of(member.assigned)
        keep = assigned & target
        revoke = assigned - target
        if revoke:
            record = CurrentAssignmentRecord(member.member_epoch, member.previous_member_epoch,
                                             int(MemberState.UNREVOKED_PARTITIONS),
                                             as_tuples(_assignment(keep)), as_tuples(_assignment(revoke)))
        else:
            free = {tp for tp in target - assigned if self.owner_of(tp) in (None, member.member_id)}
            state = MemberState.UNRELEASED_PARTITIONS if free != target - assigned else MemberState.STABLE
            previous = (member.member_epoch if member.member_epoch != self.assignment_epoch
                        else member.previous_member_epoch)
            record = CurrentAssignmentRecord(self.assignment_epoch, previous, int(state),
                                             as_tuples(_assignment(keep | free)), ())
        if record != member.assignment_record():
            emit(ConsumerGroupKey(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, self.group_id, member.member_id), record)

    # --- leaving -----------------------------------------------------------------------------

    def _leave(self, req: HeartbeatRequest, emit: Emit) -> HeartbeatResult:
        if req.instance_id is not None:
            member = self.static_member(req.instance_id)
            if member is None:
                return self._error(req, ErrorCode.unknown_member_id)
            if member.member_id != req.member_id:
                return self._error(req, ErrorCode.fenced_instance_id)
        else:
            if req.member_epoch == STATIC_LEAVE_EPOCH:
                return self._error(req, ErrorCode.invalid_request, "epoch -2 needs an instance id")
            member = self.members.get(req.member_id)
            if member is None:
                return self._error(req, ErrorCode.unknown_member_id)
        if req.member_epoch == STATIC_LEAVE_EPOCH:
            # A static member leaving for a while: it keeps its partitions until its
            # session ends or it comes back.
            record = CurrentAssignmentRecord(STATIC_LEAVE_EPOCH, member.member_epoch, int(member.state),
                                             as_tuples(member.assigned), as_tuples(member.pending_revocation))
            emit(ConsumerGroupKey(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, self.group_id, member.member_id), record)
            return HeartbeatResult(ErrorCode.none, member.member_id, STATIC_LEAVE_EPOCH,
                                   self.config.heartbeat_interval_ms)
        self.remove_member(member.member_id, emit)
        return HeartbeatResult(ErrorCode.none, member.member_id, LEAVE_EPOCH, self.config.heartbeat_interval_ms)

    def _remove_records(self, member_id: str, emit: Emit) -> None:
        for kind in (CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER,
                     CONSUMER_GROUP_MEMBER_METADATA):
            emit(ConsumerGroupKey(kind, self.group_id, member_id), None)

    def remove_member(self, member_id: str, emit: Emit) -> None:
        """The member left or was fenced: its records go and the group moves to a new epoch
        (the target is recomputed at the next heartbeat)."""
        self._remove_records(member_id, emit)
        self._bump_epoch(self.metadata_hash, emit)

    def delete(self, emit: Emit) -> None:
        """Tombstones for every record of the group (it has no members)."""
        for member_id in sorted(set(self.members) | set(self.target)):
            self._remove_records(member_id, emit)
        emit(ConsumerGroupKey(CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA, self.group_id), None)
        emit(ConsumerGroupKey(CONSUMER_GROUP_METADATA, self.group_id), None)

    # --- time --------------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for m in self.members.values()
                     for d in (m.session_deadline_ms, m.rebalance_deadline_ms) if d is not None]
        return min(deadlines) if deadlines else None

    def on_timer(self, now_ms: int, emit: Emit) -> list[str]:
        """Remove the members whose session or revocation time is up; their ids."""
        expired = sorted(m.member_id for m in self.members.values()
                         if m.session_deadline_ms <= now_ms
                         or (m.rebalance_deadline_ms is not None and m.rebalance_deadline_ms <= now_ms))
        for member_id in expired:
            self.remove_member(member_id, emit)
        return expired

    # --- checks ------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        seen: dict[tuple[uuid.UUID, int], str] = {}
        for m in self.members.values():
            for tp in partitions_of(m.assigned) | partitions_of(m.pending_revocation):
                assert tp not in seen, f"{tp} owned by {seen[tp]} and {m.member_id}"
                seen[tp] = m.member_id
            assert partitions_of(m.assigned).isdisjoint(partitions_of(m.pending_revocation))
            if m.pending_revocation:
                assert m.state is MemberState.UNREVOKED_PARTITIONS, f"{m.member_id} revokes while {m.state}"
            assert m.member_epoch <= self.assignment_epoch, "member epoch past the assignment epoch"
            if m.member_epoch == self.assignment_epoch and m.state is not MemberState.UNREVOKED_PARTITIONS:
                assert partitions_of(m.assigned) <= partitions_of(self.target.get(m.member_id, {})), \
                    f"{m.member_id} holds partitions outside its target"
        assert self.assignment_epoch <= self.group_epoch, "assignment epoch past the group epoch"
        instances = [m.instance_id for m in self.members.values() if m.instance_id is not None]
        assert len(instances) == len(set(instances)), "two members with one instance id"
