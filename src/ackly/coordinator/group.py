"""One classic consumer group (JoinGroup/SyncGroup protocol) as an I/O-free state machine.

Mirrors Kafka's ClassicGroup and the classic-group half of its GroupMetadataManager
(group-coordinator module), with KIP-345 static membership and KIP-394 member ids.

What it owns
- Durable state, which changes only by replaying a GroupMetadataValue record (`replay`): the
  generation, protocol type and selected protocol, leader, and the members of the last Stable
  or Empty generation with their subscriptions and assignments. Operations never set these
  fields for a Stable/Empty outcome directly: they write the record through `Effects.append`,
  which replays it at once (the same code that loads the group at start-up).
- Soft state, which Kafka too keeps only in memory and never writes: the rebalance in
  progress (members that joined, the next generation being formed, PreparingRebalance and
  CompletingRebalance), the requests waiting for it (JoinGroup/SyncGroup waiters), member ids
  handed out but not yet used (KIP-394 pending members), and every deadline. After a restart
  the group is what its last record says, Stable or Empty; members rejoin. A generation is
  written only when its assignment is (SyncGroup from the leader), and members learn their
  assignment only after that record is committed, so no assignment a member ever received
  can be lost or reissued under the same generation.

Transitions (Kafka's ClassicGroupState), each entered only from the states in
`VALID_PREVIOUS_STATES`:
    Empty --first join--> PreparingRebalance --join phase done--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup record--> Stable
    Stable / CompletingRebalance --join with new metadata, leader rejoin, leave, expiry-->
        PreparingRebalance
    PreparingRebalance --join phase done, nobody left--> Empty (record)
    any --group deleted (tombstone)--> Dead
The join phase ends when every member has rejoined or at the rebalance timeout (the largest
of the members'); the first rebalance of an Empty group waits group.initial.rebalance.delay.ms
first, extended while new members keep arriving, up to the rebalance timeout. Members that
did not rejoin are dropped then, except static ones (KIP-345), who keep their place until
their session times out. The sync phase ends when the leader sends the assignment; members
that have not sent SyncGroup within the rebalance timeout are dropped and a new rebalance
starts. What each request gets in each state is in the tables below the state enum.

Invariants (`check_invariants`)
- Empty has no members; Stable and CompletingRebalance have at least one; the leader is a
  member whenever there are members; `static_members` maps exactly the members' instance ids.
- In Stable and Empty the group's durable fields equal its last record (`snapshot`).
- Generations only grow; a generation's assignment is delivered once, from its record.
- Every waiting request is answered exactly once: on completion, on error, or when its
  member is removed or fenced.
The broker stays assignor-agnostic: it selects a protocol all members support and relays the
leader's assignment bytes, so eager, cooperative-sticky (which just rebalances more often) and
any other assignor work unchanged.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ackly.coordinator.records import (
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadata,
    encode_group_metadata_value,
    encode_key,
    subscribed_topics,
)
from ackly.coordinator.runtime import Effects, Waiter
from ackly.errors import ErrorCode
from ackly.types import WallClock, same_clock

log = logging.getLogger("ackly.coordinator")

CONSUMER_PROTOCOL_TYPE = "consumer"
NO_GENERATION = -1


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

# Kafka's ClassicGroupState.validPreviousStates: the only edges of the state machine.
VALID_PREVIOUS_STATES: dict[GroupState, frozenset[GroupState]] = {
    EMPTY: frozenset({PREPARING}),
    PREPARING: frozenset({STABLE, COMPLETING, EMPTY}),
    COMPLETING: frozenset({PREPARING}),
    STABLE: frozenset({COMPLETING}),
    DEAD: frozenset({STABLE, PREPARING, COMPLETING, EMPTY, DEAD}),
}

# Heartbeat from a known member of the current generation (GroupMetadataManager
# classicGroupHeartbeat): during a rebalance the answer tells it to rejoin.
HEARTBEAT_ANSWER: dict[GroupState, ErrorCode] = {
    EMPTY: ErrorCode.unknown_member_id,
    PREPARING: ErrorCode.rebalance_in_progress,
    COMPLETING: ErrorCode.none,
    STABLE: ErrorCode.none,
}


class SyncAction(enum.Enum):
    REFUSE_UNKNOWN = "unknown member"
    REFUSE_REBALANCING = "rebalance in progress"
    AWAIT_LEADER = "wait for the leader's assignment"
    CURRENT = "answer with the current assignment"


SYNC_ACTION: dict[GroupState, SyncAction] = {
    EMPTY: SyncAction.REFUSE_UNKNOWN,
    PREPARING: SyncAction.REFUSE_REBALANCING,
    COMPLETING: SyncAction.AWAIT_LEADER,
    STABLE: SyncAction.CURRENT,
}


class RejoinAction(enum.Enum):
    REBALANCE = "update the member and rebalance"
    CURRENT_IF_UNCHANGED = "same metadata: answer with the current generation"
    CURRENT_IF_UNCHANGED_FOLLOWER = "same metadata, not the leader: answer with the current generation"
    REFUSE_UNKNOWN = "unknown member"


# JoinGroup from a member the group knows (GroupMetadataManager classicGroupJoinExistingMember).
# A leader that rejoins a Stable group forces a rebalance: that is how a consumer leader reacts
# to changes that do not show in member metadata (new partitions of a subscribed topic).
REJOIN_ACTION: dict[GroupState, RejoinAction] = {
    PREPARING: RejoinAction.REBALANCE,
    COMPLETING: RejoinAction.CURRENT_IF_UNCHANGED,
    STABLE: RejoinAction.CURRENT_IF_UNCHANGED_FOLLOWER,
    EMPTY: RejoinAction.REFUSE_UNKNOWN,
}

# OffsetCommit from a member of the current generation: refused while the generation's
# assignment is not known yet (the member has not synced: its positions are not final).
COMMIT_ANSWER: dict[GroupState, ErrorCode] = {
    EMPTY: ErrorCode.none,
    PREPARING: ErrorCode.none,
    COMPLETING: ErrorCode.rebalance_in_progress,
    STABLE: ErrorCode.none,
}


@dataclass(frozen=True)
class GroupConfig:
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    max_size: int = 2**31 - 1
    initial_rebalance_delay_ms: int = 3_000
    # Kafka's classicGroupNewMemberJoinTimeoutMs: a new member parked in a long join phase
    # cannot heartbeat; if its client gave up and retried under a new id, this drops the old.
    new_member_join_timeout_ms: int = 300_000
    # Group state timestamps are written into __consumer_offsets and shown by DescribeGroups:
    # wall-clock time; every session, join and sync deadline runs on the monotonic now_ms.
    wall_clock: WallClock = same_clock


# --- requests and results --------------------------------------------------------------------


@dataclass(frozen=True)
class JoinRequest:
    member_id: str
    group_instance_id: str | None
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata), in the member's preference order
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    require_known_member_id: bool = True  # JoinGroup v4+ (KIP-394)
    supports_skip_assignment: bool = True  # JoinGroup v9+ (KIP-814)


@dataclass(frozen=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True)
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    members: tuple[JoinedMember, ...] = ()  # for the leader only


@dataclass(frozen=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: GroupState
    protocol_type: str
    protocol_data: str
    members: tuple[MemberDescription, ...]


@dataclass(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    # soft state
    join_waiter: Waiter[JoinResult] | None = None
    sync_waiter: Waiter[SyncResult] | None = None
    is_new: bool = False
    deadline_ms: int | None = None  # session (or new-member) expiry; None while it waits on us

    @property
    def awaiting_join(self) -> bool:
        return self.join_waiter is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_waiter is not None

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def supports(self, protocol: str) -> bool:
        return any(name == protocol for name, _ in self.protocols)


class ClassicGroup:
    def __init__(self, group_id: str, config: GroupConfig, now_ms: int) -> None:
        self.group_id = group_id
        self.config = config
        self.state = EMPTY
        self.previous_state = EMPTY
        self.state_timestamp_ms = config.wall_clock(now_ms)  # wall-clock (stored, offset expiry)
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}  # in join order
        self.static_members: dict[str, str] = {}  # group instance id -> member id
        self.pending_members: dict[str, int] = {}  # KIP-394 ids handed out -> expiry
        self.pending_sync: set[str] = set()
        self.join_deadline_ms: int | None = None
        # The first rebalance of an Empty group: (delay, remaining) of Kafka's initial delayed
        # join, which is extended while new members keep joining.
        self.initial_join: tuple[int, int] | None = None
        self.new_member_added = False
        self.sync_deadline_ms: int | None = None
        self.sync_generation = NO_GENERATION
        self.snapshot: GroupMetadataValue | None = None  # the last record replayed

    def __repr__(self) -> str:
        return (f"ClassicGroup({self.group_id!r}, {self.state.value}, generation={self.generation}, "
                f"members={list(self.members)})")

    # --- queries -----------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return self.state is EMPTY

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def has_all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    def subscribed_topics(self) -> frozenset[str] | None:
        """Topics the members of a consumer-protocol group subscribe to, None if unknown."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            member_topics = subscribed_topics(m.metadata_for(self.protocol_name))
            if member_topics is None:
                return None
            topics |= member_topics
        return frozenset(topics)

    def current_members(self) -> tuple[JoinedMember, ...]:
        return tuple(JoinedMember(m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name))
                     for m in self.members.values())

    def describe(self) -> GroupDescription:
        """DescribeGroups: metadata and assignments only once the group is Stable (Kafka)."""
        stable = self.state is STABLE
        return GroupDescription(
            group_id=self.group_id, state=self.state, protocol_type=self.protocol_type or "",
            protocol_data=(self.protocol_name or "") if stable else "",
            members=tuple(
                MemberDescription(
                    m.member_id, m.group_instance_id, m.client_id, m.client_host,
                    m.metadata_for(self.protocol_name) if stable else b"",
                    m.assignment if stable else b"",
                )
                for m in self.members.values()
            ),
        )

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for d in (self.join_deadline_ms, self.sync_deadline_ms) if d is not None]
        deadlines += self.pending_members.values()
        deadlines += [m.deadline_ms for m in self.members.values() if m.deadline_ms is not None]
        return min(deadlines) if deadlines else None

    # --- JoinGroup ---------------------------------------------------------------------------

    def join(self, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int,
             new_member_id: Callable[[str], str], fx: Effects) -> None:
        """JoinGroup. The caller checked the group id and the session timeout bounds."""
        if self.state is DEAD:
            # Deleted meanwhile: the client looks the coordinator up again and rejoins.
            fx.reply(waiter, JoinResult(ErrorCode.coordinator_not_available, req.member_id))
            return
        if not self._accept_joining_member(req.member_id):
            member = self.members.get(req.member_id)
            if member is not None:
                self._remove_member_and_update_group(member, now_ms, fx, "group.max.size reached")
            fx.reply(waiter, JoinResult(ErrorCode.group_max_size_reached))
            return
        if not self._supports_protocols(req.protocol_type, req.protocols):
            fx.reply(waiter, JoinResult(ErrorCode.inconsistent_group_protocol, req.member_id))
            return
        if req.member_id == "":
            self._join_new_member(req, waiter, now_ms, new_member_id, fx)
        else:
            self._join_existing_member(req, waiter, now_ms, fx)

    def _accept_joining_member(self, member_id: str) -> bool:
        """group.max.size (Kafka's acceptJoiningMember): while rebalancing count the members
        already waiting, so that the last ones to rejoin of an over-full group are refused."""
        limit = self.config.max_size
        if self.state in (EMPTY, DEAD):
            return True
        member = self.members.get(member_id)
        if self.state is PREPARING:
            waiting = sum(1 for m in self.members.values() if m.awaiting_join)
            return (member is not None and member.awaiting_join) or waiting < limit
        return member is not None or len(self.members) < limit

    def _supports_protocols(self, protocol_type: str, protocols: tuple[tuple[str, bytes], ...]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        if protocol_type != self.protocol_type:
            return False
        return any(all(m.supports(name) for m in self.members.values()) for name, _ in protocols)

    def _join_new_member(self, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int,
                         new_member_id: Callable[[str], str], fx: Effects) -> None:
        instance_id = req.group_instance_id
        if instance_id is not None:
            member_id = new_member_id(instance_id)
            existing = self.static_members.get(instance_id)
            if existing is not None:
                self._replace_static_member(existing, member_id, req, waiter, now_ms, fx)
            else:
                self._add_member_and_rebalance(req, member_id, waiter, now_ms, fx)
            return
        member_id = new_member_id(req.client_id)
        if req.require_known_member_id:
            # KIP-394: hand out the id first, so a client whose JoinGroup times out retries
            # under the same id instead of leaving a ghost member in the join phase.
            self.pending_members[member_id] = now_ms + req.session_timeout_ms
            fx.reply(waiter, JoinResult(ErrorCode.member_id_required, member_id))
            return
        self._add_member_and_rebalance(req, member_id, waiter, now_ms, fx)

    def _join_existing_member(self, req: JoinRequest, waiter: Waiter[JoinResult], now_ms: int,
                              fx: Effects) -> None:
        member_id = req.member_id
        if member_id in self.pending_members:
            if req.group_instance_id is not None:
                # Static members never get a pending id: this client is confused.
                fx.reply(waiter, JoinResult(ErrorCode.unknown_member_id, member_id))
                return
            del self.pending_members[member_id]
            self._add_member_and_rebalance(req, member_id, waiter, now_ms, fx)
            return
        error = self.validate_member(member_id, req.group_instance_id)
        if error is not ErrorCode.none:
            fx.reply(waiter, JoinResult(error, member_id))
            return
        member = self.members[member_id]
        action = REJOIN_ACTION[self.state]
        unchanged = member.protocols == req.protocols
        if action is RejoinAction.REFUSE_UNKNOWN:
            fx.reply(waiter, JoinResult(ErrorCode.unknown_member_id, member_id))
        elif (action is RejoinAction.CURRENT_IF_UNCHANGED and unchanged) or (
            action is RejoinAction.CURRENT_IF_UNCHANGED_FOLLOWER and unchanged
            and member_id != self.leader_id
        ):
            # It probably lost the JoinGroup answer: give it the current generation again.
            leader = member_id == self.leader_id and self.state is COMPLETING
            fx.reply(waiter, self._join_result(member_id, self.current_members() if leader else ()))
        else:
            self._update_member(member, req, waiter, fx)
            self._maybe_prepare_rebalance_or_complete_join(
                now_ms, fx, f"member {member_id} rejoined in {self.state.value}")

    def _join_result(self, member_id: str, members: tuple[JoinedMember, ...],
                     leader: str | None = None, skip_assignment: bool = False) -> JoinResult:
        return JoinResult(
            ErrorCode.none, member_id, self.generation, self.protocol_type, self.protocol_name,
            (self.leader_id or "") if leader is None else leader, skip_assignment, members,
        )

    def _add_member_and_rebalance(self, req: JoinRequest, member_id: str, waiter: Waiter[JoinResult],
                                  now_ms: int, fx: Effects) -> None:
        member = Member(
            member_id=member_id, group_instance_id=req.group_instance_id, client_id=req.client_id,
            client_host=req.client_host, rebalance_timeout_ms=req.rebalance_timeout_ms,
            session_timeout_ms=req.session_timeout_ms, protocol_type=req.protocol_type,
            protocols=req.protocols, join_waiter=waiter, is_new=True,
            deadline_ms=now_ms + self.config.new_member_join_timeout_ms,
        )
        if self.state is PREPARING and self.initial_join is not None:
            self.new_member_added = True  # extends the initial delay
        if not self.members:
            self.protocol_type = req.protocol_type
        self.members[member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member_id
        if self.leader_id is None:
            self.leader_id = member_id
        self._maybe_prepare_rebalance_or_complete_join(now_ms, fx, f"new member {member_id}")

    def _update_member(self, member: Member, req: JoinRequest, waiter: Waiter[JoinResult] | None,
                       fx: Effects) -> None:
        member.protocols = req.protocols
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        if member.join_waiter is not None and waiter is not None:
            # A second JoinGroup while the first waits: the first gets an answer too (every
            # request gets exactly one), telling it to rejoin.
            fx.reply(member.join_waiter, JoinResult(ErrorCode.rebalance_in_progress, member.member_id))
        member.join_waiter = waiter

    def _replace_static_member(self, old_id: str, new_id: str, req: JoinRequest,
                               waiter: Waiter[JoinResult], now_ms: int, fx: Effects) -> None:
        """KIP-345: a static member came back (a restart, or a duplicate instance). It takes
        over the old member id's place and assignment; whoever used the old id is fenced."""
        old = self.members.pop(old_id)
        if old.join_waiter is not None:
            fx.reply(old.join_waiter, JoinResult(ErrorCode.fenced_instance_id, old_id))
        if old.sync_waiter is not None:
            fx.reply(old.sync_waiter, SyncResult(ErrorCode.fenced_instance_id))
        previous_leader = self.leader_id
        member = Member(
            member_id=new_id, group_instance_id=old.group_instance_id, client_id=req.client_id,
            client_host=req.client_host, rebalance_timeout_ms=old.rebalance_timeout_ms,
            session_timeout_ms=old.session_timeout_ms, protocol_type=old.protocol_type,
            protocols=old.protocols, assignment=old.assignment,
            deadline_ms=now_ms + req.session_timeout_ms,
        )
        self.members[new_id] = member
        assert member.group_instance_id is not None
        self.static_members[member.group_instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        self._update_member(member, req, waiter, fx)

        if self.state is STABLE:
            if self._select_protocol() == self.protocol_name:
                # Nothing the assignment depends on changed: no rebalance. The new member id
                # is written (so a restart of the coordinator keeps it) and, once that record
                # is committed, the member gets the current generation and syncs to get its
                # assignment back.
                member.join_waiter = None
                self._emit_group(self._stable_value(now_ms), fx)
                is_leader = new_id == self.leader_id
                if req.supports_skip_assignment:
                    # KIP-814: the leader learns it leads, and that it must not reassign.
                    result = self._join_result(new_id, self.current_members() if is_leader else (),
                                               skip_assignment=is_leader)
                else:
                    # Older clients cannot be told to skip the assignment: name the old leader
                    # id, so a returning leader believes it follows and does not reassign.
                    result = self._join_result(new_id, (), leader=previous_leader or "")
                fx.reply(waiter, result)
            else:
                self._maybe_prepare_rebalance_or_complete_join(
                    now_ms, fx, f"static member {new_id} changes the selected protocol")
        elif self.state is COMPLETING:
            # The leader may be assigning to the old member id: start over.
            self._prepare_rebalance(now_ms, fx, f"static member {new_id} replaced {old_id}")
        else:
            self._maybe_complete_join_phase(now_ms, fx)

    # --- the join phase ------------------------------------------------------------------------

    def _maybe_prepare_rebalance_or_complete_join(self, now_ms: int, fx: Effects, reason: str) -> None:
        if self.state in (STABLE, COMPLETING, EMPTY):
            self._prepare_rebalance(now_ms, fx, reason)
        else:
            self._maybe_complete_join_phase(now_ms, fx)

    def _prepare_rebalance(self, now_ms: int, fx: Effects, reason: str) -> None:
        log.info("group %s: preparing to rebalance from %s, generation %d: %s",
                 self.group_id, self.state.value, self.generation, reason)
        if self.state is COMPLETING:
            self._reset_and_propagate_assignment_error(ErrorCode.rebalance_in_progress, now_ms, fx)
        self._clear_pending_sync()
        initial = self.state is EMPTY
        self._transition(PREPARING, now_ms)
        if initial:
            delay = self.config.initial_rebalance_delay_ms
            self.initial_join = (delay, max(self.rebalance_timeout_ms() - delay, 0))
            self.new_member_added = False
            self.join_deadline_ms = now_ms + delay
            return
        self.initial_join = None
        if self.has_all_members_joined():
            self._complete_join(now_ms, fx)
        else:
            self.join_deadline_ms = now_ms + self.rebalance_timeout_ms()

    def _maybe_complete_join_phase(self, now_ms: int, fx: Effects) -> None:
        # The initial rebalance only ends on its timer: more members are expected.
        if self.state is PREPARING and self.has_all_members_joined() and self.initial_join is None:
            self._complete_join(now_ms, fx)

    def _on_join_deadline(self, now_ms: int, fx: Effects) -> None:
        if self.initial_join is not None:
            delay, remaining = self.initial_join
            if self.new_member_added and remaining > 0:
                self.new_member_added = False
                new_delay = min(self.config.initial_rebalance_delay_ms, remaining)
                self.initial_join = (new_delay, max(remaining - delay, 0))
                self.join_deadline_ms = now_ms + new_delay
                return
        self._complete_join(now_ms, fx)

    def _complete_join(self, now_ms: int, fx: Effects) -> None:
        self.join_deadline_ms = None
        self.initial_join = None
        self.new_member_added = False
        for member in list(self.members.values()):
            if not member.awaiting_join and member.group_instance_id is None:
                self._remove(member)
        if self.members and not self._elect_joined_leader():
            # Only static members that have not rejoined are left: wait for them (or for
            # their sessions to expire) for another rebalance timeout.
            self.join_deadline_ms = now_ms + self.rebalance_timeout_ms()
            return
        if not self.members:
            self._emit_group(GroupMetadataValue(
                protocol_type=self.protocol_type or "", generation=self.generation + 1,
                protocol=None, leader=None, current_state_timestamp_ms=self.config.wall_clock(now_ms),
                members=(),
            ), fx)
            return
        self.generation += 1
        self.protocol_name = self._select_protocol()
        self._transition(COMPLETING, now_ms)
        log.info("group %s: generation %d formed with %d members (leader %s, protocol %s)",
                 self.group_id, self.generation, len(self.members), self.leader_id, self.protocol_name)
        members = self.current_members()
        for member in self.members.values():
            waiter = member.join_waiter
            member.join_waiter = None
            if waiter is not None:
                fx.reply(waiter, self._join_result(
                    member.member_id, members if member.member_id == self.leader_id else ()))
            member.deadline_ms = now_ms + member.session_timeout_ms
            member.is_new = False
            self.pending_sync.add(member.member_id)
        self.sync_deadline_ms = now_ms + self.rebalance_timeout_ms()
        self.sync_generation = self.generation

    def _elect_joined_leader(self) -> bool:
        leader = self.members.get(self.leader_id) if self.leader_id is not None else None
        if leader is not None and leader.awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def _select_protocol(self) -> str:
        """The protocol every member supports that most members prefer (Kafka's vote); a tie
        goes to the one listed first by the first member, so the choice is deterministic."""
        members = list(self.members.values())
        candidates = [name for name, _ in members[0].protocols
                      if all(m.supports(name) for m in members)]
        if not candidates:
            return members[0].protocols[0][0] if members[0].protocols else ""
        votes = Counter(next(name for name, _ in m.protocols if name in candidates) for m in members)
        best = max(votes.values())
        return next(name for name in candidates if votes[name] == best)

    # --- SyncGroup -----------------------------------------------------------------------------

    def sync(self, generation: int, member_id: str, instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
             waiter: Waiter[SyncResult], now_ms: int, fx: Effects) -> None:
        if self.state is DEAD:
            fx.reply(waiter, SyncResult(ErrorCode.coordinator_not_available))
            return
        error = self.validate_member(member_id, instance_id)
        if error is ErrorCode.none and generation != self.generation:
            error = ErrorCode.illegal_generation
        if error is ErrorCode.none and (
            (protocol_type is not None and protocol_type != self.protocol_type)
            or (protocol_name is not None and protocol_name != self.protocol_name)
        ):
            error = ErrorCode.inconsistent_group_protocol
        if error is not ErrorCode.none:
            fx.reply(waiter, SyncResult(error))
            return
        action = SYNC_ACTION[self.state]
        member = self.members[member_id]
        if action is SyncAction.REFUSE_UNKNOWN:
            fx.reply(waiter, SyncResult(ErrorCode.unknown_member_id))
        elif action is SyncAction.REFUSE_REBALANCING:
            fx.reply(waiter, SyncResult(ErrorCode.rebalance_in_progress))
        elif action is SyncAction.CURRENT:
            self._remove_pending_sync(member_id)
            fx.reply(waiter, SyncResult(ErrorCode.none, self.protocol_type, self.protocol_name,
                                        member.assignment))
        else:
            if member.sync_waiter is not None:
                fx.reply(member.sync_waiter, SyncResult(ErrorCode.rebalance_in_progress))
            member.sync_waiter = waiter
            member.deadline_ms = None  # waiting on us; re-armed when answered
            self._remove_pending_sync(member_id)
            if member_id == self.leader_id:
                # Members the leader left out get an empty assignment (Kafka does the same).
                # The record, replayed at once, is what makes the group Stable.
                self._emit_group(self._stable_value(now_ms, assignments), fx)
                log.info("group %s: generation %d stable", self.group_id, self.generation)
                self._propagate_assignment(ErrorCode.none, now_ms, fx)

    def _remove_pending_sync(self, member_id: str) -> None:
        self.pending_sync.discard(member_id)
        if not self.pending_sync:
            self.sync_deadline_ms = None

    def _clear_pending_sync(self) -> None:
        self.pending_sync.clear()
        self.sync_deadline_ms = None

    def _reset_and_propagate_assignment_error(self, error: ErrorCode, now_ms: int, fx: Effects) -> None:
        for m in self.members.values():
            m.assignment = b""
        self._propagate_assignment(error, now_ms, fx)

    def _propagate_assignment(self, error: ErrorCode, now_ms: int, fx: Effects) -> None:
        ok = error is ErrorCode.none
        for m in self.members.values():
            waiter = m.sync_waiter
            if waiter is None:
                continue
            m.sync_waiter = None
            fx.reply(waiter, SyncResult(
                error, self.protocol_type if ok else None, self.protocol_name if ok else None,
                m.assignment if ok else b"",
            ))
            # Its session was not counting while it waited on us.
            m.deadline_ms = now_ms + m.session_timeout_ms

    # --- Heartbeat, OffsetCommit checks, LeaveGroup ----------------------------------------------

    def validate_member(self, member_id: str, instance_id: str | None) -> ErrorCode:
        """KIP-345 fencing: a static member is known by its instance id; an older process
        with the same instance id but a replaced member id is FENCED_INSTANCE_ID."""
        if instance_id is not None:
            existing = self.static_members.get(instance_id)
            if existing is None:
                return ErrorCode.unknown_member_id
            if existing != member_id:
                return ErrorCode.fenced_instance_id
            return ErrorCode.none
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        return ErrorCode.none

    def heartbeat(self, member_id: str, instance_id: str | None, generation: int, now_ms: int) -> ErrorCode:
        if self.state is DEAD:
            return ErrorCode.coordinator_not_available
        error = self.validate_member(member_id, instance_id)
        if error is not ErrorCode.none:
            return error
        if generation != self.generation:
            return ErrorCode.illegal_generation
        answer = HEARTBEAT_ANSWER[self.state]
        if self.state is not EMPTY:
            member = self.members[member_id]
            if not member.awaiting_join and not member.awaiting_sync:
                member.deadline_ms = now_ms + member.session_timeout_ms
        return answer

    def validate_offset_commit(self, member_id: str, instance_id: str | None, generation: int,
                               now_ms: int, transactional: bool = False) -> ErrorCode:
        """May this offset commit go in? Kafka's ClassicGroup.validateOffsetCommit:
        generation -1 with no member is a group-less consumer (or an admin tool) and is
        accepted only while the group has no members.

        A transactional one (TxnOffsetCommit, KIP-447) is fenced the same way by member id,
        instance id and generation, but one without them is accepted whatever the group's
        state (TxnOffsetCommit v0-v2 carry no member), and one from the current generation
        is accepted while the assignment is being decided: Kafka skips both checks for it."""
        if self.state is DEAD:
            return ErrorCode.coordinator_not_available
        if generation < 0 and self.state is EMPTY:
            return ErrorCode.none
        if generation >= 0 or member_id or instance_id is not None:
            error = self.validate_member(member_id, instance_id)
            if error is not ErrorCode.none:
                return error
            if generation != self.generation:
                return ErrorCode.illegal_generation
        elif self.state is not EMPTY and not transactional:
            return ErrorCode.unknown_member_id
        if transactional:
            return ErrorCode.none
        answer = COMMIT_ANSWER[self.state]
        member = self.members.get(member_id)
        if answer is ErrorCode.none and member is not None and not (
            member.awaiting_join or member.awaiting_sync
        ):
            member.deadline_ms = now_ms + member.session_timeout_ms  # a commit shows it is alive
        return answer

    def leave(self, leaving: list[tuple[str, str | None]], now_ms: int, fx: Effects) -> list[ErrorCode]:
        """LeaveGroup for each (member id, instance id); an empty member id with an instance id
        removes that static member (KIP-345 admin removal). One error per entry."""
        errors = []
        for member_id, instance_id in leaving:
            if member_id == "":
                existing = self.static_members.get(instance_id) if instance_id is not None else None
                if existing is None:
                    errors.append(ErrorCode.unknown_member_id)
                    continue
                member_id = existing
            elif member_id in self.pending_members:
                del self.pending_members[member_id]
                self._maybe_complete_join_phase(now_ms, fx)
                errors.append(ErrorCode.none)
                continue
            else:
                error = self.validate_member(member_id, instance_id)
                if error is not ErrorCode.none:
                    errors.append(error)
                    continue
            self._remove_member_and_update_group(self.members[member_id], now_ms, fx, "LeaveGroup")
            errors.append(ErrorCode.none)
        return errors

    def _remove_member_and_update_group(self, member: Member, now_ms: int, fx: Effects,
                                        reason: str) -> None:
        log.info("group %s: member %s removed (%s)", self.group_id, member.member_id, reason)
        if member.join_waiter is not None:
            fx.reply(member.join_waiter, JoinResult(ErrorCode.unknown_member_id))
            member.join_waiter = None
        if member.sync_waiter is not None:
            fx.reply(member.sync_waiter, SyncResult(ErrorCode.unknown_member_id))
            member.sync_waiter = None
        self._remove(member)
        if self.state in (STABLE, COMPLETING):
            self._maybe_prepare_rebalance_or_complete_join(
                now_ms, fx, f"member {member.member_id} removed ({reason})")
        elif self.state is PREPARING and self.has_all_members_joined():
            self._complete_join(now_ms, fx)

    def _remove(self, member: Member) -> None:
        del self.members[member.member_id]
        instance_id = member.group_instance_id
        if instance_id is not None and self.static_members.get(instance_id) == member.member_id:
            del self.static_members[instance_id]
        self.pending_sync.discard(member.member_id)
        if self.leader_id == member.member_id:
            self.leader_id = next(iter(self.members), None)

    # --- timers --------------------------------------------------------------------------------

    def on_timer(self, now_ms: int, fx: Effects) -> None:
        """Everything due at now_ms: pending member ids, sessions, the join and sync phases."""
        for member_id, due in list(self.pending_members.items()):
            if due <= now_ms and member_id in self.pending_members:
                del self.pending_members[member_id]
                if self.state is PREPARING and self.has_all_members_joined():
                    self._complete_join(now_ms, fx)
        for member_id in list(self.members):
            member = self.members.get(member_id)
            if member is None or member.deadline_ms is None or member.deadline_ms > now_ms:
                continue
            if member.is_new or not (member.awaiting_join or member.awaiting_sync):
                self._remove_member_and_update_group(
                    member, now_ms, fx, "new member not joined in time" if member.is_new
                    else "session timed out")
            else:
                member.deadline_ms = None  # waits on the rebalance, which is bounded itself
        if self.join_deadline_ms is not None and self.join_deadline_ms <= now_ms:
            if self.state is PREPARING:
                self._on_join_deadline(now_ms, fx)
            else:
                self.join_deadline_ms = None
        if self.sync_deadline_ms is not None and self.sync_deadline_ms <= now_ms:
            self.sync_deadline_ms = None
            if (self.state in (COMPLETING, STABLE) and self.generation == self.sync_generation
                    and self.pending_sync):
                # Members that never sent SyncGroup after the join phase: drop them, rebalance.
                missing = sorted(self.pending_sync)
                for member_id in missing:
                    member = self.members.get(member_id)
                    if member is not None:
                        self._remove(member)
                self._prepare_rebalance(now_ms, fx, f"no SyncGroup in time from {missing}")

    # --- records ---------------------------------------------------------------------------------

    def _stable_value(self, now_ms: int, assignments: dict[str, bytes] | None = None
                      ) -> GroupMetadataValue:
        """The record of the current generation: members and assignments (by default the
        ones they hold)."""
        return GroupMetadataValue(
            protocol_type=self.protocol_type or "", generation=self.generation,
            protocol=self.protocol_name, leader=self.leader_id,
            current_state_timestamp_ms=self.config.wall_clock(now_ms),
            members=tuple(
                MemberMetadata(
                    member_id=m.member_id, group_instance_id=m.group_instance_id,
                    client_id=m.client_id, client_host=m.client_host,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    session_timeout_ms=m.session_timeout_ms,
                    subscription=m.metadata_for(self.protocol_name),
                    assignment=m.assignment if assignments is None else assignments.get(m.member_id, b""),
                )
                for m in self.members.values()
            ),
        )

    def _emit_group(self, value: GroupMetadataValue, fx: Effects) -> None:
        fx.append(encode_key(GroupMetadataKey(self.group_id)), encode_group_metadata_value(value))

    def replay(self, value: GroupMetadataValue, now_ms: int, loading: bool) -> None:
        """Install a GroupMetadataValue: the group becomes Stable (members) or Empty (none).

        Live (not `loading`), the record was just written by an operation of this group and
        the move must be an edge of the state machine; members the group already has keep
        their soft state (deadlines, waiting requests). Loading installs the record as is.
        """
        target = STABLE if value.members else EMPTY
        if not loading and target is not self.state:
            assert self.state in VALID_PREVIOUS_STATES[target], (
                f"{self.group_id}: record moves {self.state.value} -> {target.value}")
        self.generation = value.generation
        self.protocol_type = value.protocol_type or None
        self.protocol_name = value.protocol
        self.leader_id = value.leader
        members: dict[str, Member] = {}
        for mm in value.members:
            member = self.members.get(mm.member_id)
            if member is None:
                member = Member(
                    member_id=mm.member_id, group_instance_id=mm.group_instance_id,
                    client_id=mm.client_id, client_host=mm.client_host,
                    rebalance_timeout_ms=mm.rebalance_timeout_ms,
                    session_timeout_ms=mm.session_timeout_ms, protocol_type=value.protocol_type,
                    protocols=(), deadline_ms=now_ms + mm.session_timeout_ms,
                )
            member.group_instance_id = mm.group_instance_id
            member.client_id = mm.client_id
            member.client_host = mm.client_host
            member.rebalance_timeout_ms = mm.rebalance_timeout_ms
            member.session_timeout_ms = mm.session_timeout_ms
            member.protocol_type = value.protocol_type
            if member.metadata_for(value.protocol) != mm.subscription or not member.supports(
                value.protocol or ""
            ):
                member.protocols = ((value.protocol or "", mm.subscription),)
            member.assignment = mm.assignment
            members[mm.member_id] = member
        for gone in set(self.members) - set(members):
            dropped = self.members[gone]
            assert loading or not (dropped.awaiting_join or dropped.awaiting_sync), (
                f"{self.group_id}: record drops member {gone} with a request waiting")
        self.members = members
        self.static_members = {m.group_instance_id: m.member_id for m in members.values()
                               if m.group_instance_id is not None}
        self.pending_sync &= set(members)
        if target is EMPTY:
            self.join_deadline_ms = None
            self.initial_join = None
            self.new_member_added = False
            self._clear_pending_sync()
        if target is not self.state:
            self.previous_state = self.state
            self.state = target
        self.state_timestamp_ms = (value.current_state_timestamp_ms
                                   if value.current_state_timestamp_ms >= 0
                                   else self.config.wall_clock(now_ms))
        self.snapshot = value

    def fail_waiters(self, code: ErrorCode) -> None:
        """Answer every parked JoinGroup and SyncGroup with `code` (the shard is going away, so
        not through Effects: there is nothing left to write)."""
        for member in self.members.values():
            join_waiter, sync_waiter = member.join_waiter, member.sync_waiter
            member.join_waiter = member.sync_waiter = None
            if join_waiter is not None:
                join_waiter.fail(code)
            if sync_waiter is not None:
                sync_waiter.fail(code)

    def mark_dead(self) -> None:
        """The group was deleted (a tombstone was replayed)."""
        self.previous_state = self.state
        self.state = DEAD
        self.members.clear()
        self.static_members.clear()
        self.pending_members.clear()
        self._clear_pending_sync()
        self.join_deadline_ms = None

    def _transition(self, target: GroupState, now_ms: int) -> None:
        assert self.state in VALID_PREVIOUS_STATES[target], (
            f"{self.group_id}: illegal transition {self.state.value} -> {target.value}")
        self.previous_state = self.state
        self.state = target
        self.state_timestamp_ms = self.config.wall_clock(now_ms)

    # --- checks ----------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Assert the invariants in the module docstring (tests call this after every step)."""
        if self.state is DEAD:
            return
        # PreparingRebalance may have no members for a while: they all left while KIP-394
        # pending ids were still out; the join deadline then empties the group.
        assert (self.state is not EMPTY) == bool(self.members) or self.state is PREPARING, (
            f"{self}: members vs state")
        if self.members:
            assert self.leader_id in self.members, f"{self}: leader {self.leader_id} not a member"
        assert self.static_members == {
            m.group_instance_id: m.member_id for m in self.members.values()
            if m.group_instance_id is not None
        }, f"{self}: static member map"
        assert self.pending_sync <= set(self.members), f"{self}: pending sync of non-members"
        assert self.state is not PREPARING or self.join_deadline_ms is not None, (
            f"{self}: a join phase without a deadline")
        assert self.state is PREPARING or (self.join_deadline_ms is None
                                            and not any(m.awaiting_join for m in self.members.values())
                                            ), f"{self}: join waiters outside the join phase"
        assert self.state is COMPLETING or not any(m.awaiting_sync for m in self.members.values()), (
            f"{self}: sync waiters outside the sync phase")
        for m in self.members.values():
            assert m.deadline_ms is not None or m.awaiting_join or m.awaiting_sync, (
                f"{self}: member {m.member_id} has no session deadline")
        if self.state in (STABLE, EMPTY):
            snap = self.snapshot
            assert snap is not None, f"{self}: {self.state.value} without a record"
            assert snap.generation == self.generation, f"{self}: generation differs from record"
            assert snap.protocol == self.protocol_name and snap.leader == self.leader_id
            assert [mm.member_id for mm in snap.members] == list(self.members), (
                f"{self}: members differ from record")
            for mm in snap.members:
                m = self.members[mm.member_id]
                assert m.assignment == mm.assignment, f"{self}: assignment of {m.member_id}"
                assert m.metadata_for(self.protocol_name) == mm.subscription

