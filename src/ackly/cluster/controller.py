"""The controller's decisions, as pure functions of a ClusterMetadata view.

Owns: how partition states change. Leader elections on broker loss, restart and return,
unclean elections, preferred-leader rebalancing, controlled shutdown, creation of the states of
new partitions, clean-up of states left by deleted topics (Kafka's ReplicationControlManager and
PartitionChangeBuilder in KRaft's QuorumController; the ZooKeeper-era KafkaController's
PartitionStateMachine did the same job), and the validation of ISR changes asked for by leaders
(AlterPartition, KIP-497). Nothing here applies a change: every decision is a `PartitionChange`
(or `Cleanup`) that becomes one compare-and-set on the store, and the view changes only when the
store's watch reports the write. A decision from a stale view is therefore harmless: its
compare-and-set fails and the next view decides again. `reconcile` is level-triggered (it looks
at the whole view, not at what just happened), so a new controller finishes whatever its
predecessor left half done.

Invariants of every PartitionState written:
- leader_epoch rises exactly when the leader changes (to NO_LEADER too) or a restarted leader is
  elected again; partition_epoch rises with every change. Neither ever falls.
- A new leader is a live ISR member (clean election), unless the topic's
  unclean.leader.election.enable is true and no ISR member is alive (rule 12); then ISR =
  {leader} and leader_recovery_state = RECOVERING (KIP-704).
- Without eligible leader replicas (eligible.leader.replicas.enable=false): the ISR is never
  emptied: when its last live member goes, the partition goes offline (NO_LEADER) and keeps
  its ISR, so that whichever member returns first is elected cleanly (Kafka's "last replica
  stays in the ISR"), even one whose crash lost what it had acknowledged.
- With them (KIP-966, PartitionChangeBuilder's ELR rules): while the ISR written is below the
  topic's min.insync.replicas, every replica that was in the ISR or the ELR and is not in the
  new ISR is in the ELR (the HW cannot pass an ISR below the minimum, so each of them holds
  every committed offset), except those that restarted after an unclean shutdown on a topic
  whose crash loses unflushed records: they go to the last known ELR. The ISR may then be
  empty (NO_LEADER). Once the ISR is back at the minimum, both lists are cleared. Election
  order: a live ISR member, else a live ELR member (clean), else, with unclean election only,
  a live last-known-ELR member, then any live replica. ISR, ELR and last known ELR are
  disjoint.
- Every write guards every member of the ISR it writes: a registered member on its registration
  create_revision (KIP-903's broker epoch), a member that is down on its registration still
  being absent. A broker that restarts between the decision and the write makes the write
  fail, so a new incarnation, which has not caught up, never stays in the ISR (rule 9); it has
  to rejoin, except as the last ISR member of an offline partition, elected alone.

Broker status, relative to a partition state written at revision M (`replica_status`):
RESTARTED: registered after M, a new incarnation the state has never seen (Kafka fences the old
incarnation and bumps the epoch; so do we), whether or not it is shutting down; SHUTTING_DOWN:
registered before M, controlled shutdown asked; ACTIVE: registered before M and not shutting
down; DEAD: not registered. One exception, `resumes`: a single broker restarted after a clean
stop counts as ACTIVE for the partitions it led then, in the epoch it led them in (nothing it
acknowledged can have been lost, and there is no other replica to fence), so its start elects
nothing (ClusterMember's resumed leadership).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from ackly.cluster.metadata import (
    NO_LEADER,
    BrokerInfo,
    ClusterMetadata,
    KeySpace,
    LeaderRecoveryState,
    PartitionState,
    TopicInfo,
)
from ackly.cluster.placement import PlacementError, assignment_problem, place_replicas
from ackly.cluster.store import Compare, CompareAndSet, CompareTarget, Delete
from ackly.config import TOPIC_CONFIGS
from ackly.errors import ConfigError, ErrorCode, KafkaError
from ackly.types import TopicPartition

UNCLEAN_CONFIG = "unclean.leader.election.enable"
MIN_ISR_CONFIG = "min.insync.replicas"

# Whether the leader a partition state names, registered again after it was written, resumes
# that leadership in the same epoch (see the module docstring).
Resumes = Callable[[TopicPartition, PartitionState], bool]


class ReplicaStatus(Enum):
    ACTIVE = "active"
    SHUTTING_DOWN = "shutting_down"
    RESTARTED = "restarted"
    DEAD = "dead"


class ChangeReason(Enum):
    CREATE = "create"  # first state of a new partition
    ELECTION = "election"  # clean election: the leader died, restarted, or the partition was offline
    ISR_SHRINK = "isr_shrink"  # dead, restarted or shutting-down followers leave the ISR
    CONTROLLED_SHUTDOWN = "controlled_shutdown"  # leadership moved off a broker that is leaving
    PREFERRED = "preferred"  # leadership moved back to the first replica
    UNCLEAN = "unclean"  # a replica outside the ISR was elected (rule 12)
    OFFLINE = "offline"  # no replica can lead: leader = NO_LEADER
    ELR = "elr"  # only the eligible leader replicas (or the last known ones) changed (KIP-966)
    ALTER_PARTITION = "alter_partition"  # the leader changed the ISR (KIP-497)


@dataclass(frozen=True)
class ControllerPolicy:
    """The controller's knobs (broker configs in Kafka's names)."""

    auto_leader_rebalance: bool = True  # auto.leader.rebalance.enable
    unclean_leader_election_default: bool = False  # the broker's unclean.leader.election.enable
    eligible_leader_replicas: bool = False  # eligible.leader.replicas.enable (KIP-966)
    min_insync_replicas_default: int = 1  # the broker's min.insync.replicas
    # The broker's log.flush.policy and log.flush.interval.messages: whether a crash can lose
    # records a replica already reported to its leader (see `crash_loses_reported`).
    flush_policy_default: str = "always"
    flush_messages_default: int = 2**63 - 1


@dataclass(frozen=True)
class PartitionChange:
    """Write `after` over `before` (None: create) iff the key is still at expected_mod_revision
    and every guard holds."""

    tp: TopicPartition
    before: PartitionState | None
    after: PartitionState
    expected_mod_revision: int
    reason: ChangeReason
    guards: tuple[Compare, ...] = ()

    def command(
        self, request_id: int, keys: KeySpace, extra_guards: tuple[Compare, ...] = ()
    ) -> CompareAndSet:
        return CompareAndSet(
            request_id, keys.partition(self.tp), self.expected_mod_revision, self.after.encode(),
            guards=self.guards + extra_guards,
        )


@dataclass(frozen=True)
class Cleanup:
    """Delete a partition state that belongs to no live topic."""

    tp: TopicPartition
    expected_mod_revision: int

    def command(self, request_id: int, keys: KeySpace) -> Delete:
        return Delete(request_id, keys.partition(self.tp), self.expected_mod_revision)


Decision = PartitionChange | Cleanup


def controller_guard(metadata: ClusterMetadata) -> Compare:
    """The compare that makes a write fail unless the controller that decided it still holds
    the controller key (the same incarnation of it): etcd's election-key fencing."""
    assert metadata.controller is not None
    return Compare(metadata.keys.controller, metadata.controller.epoch, CompareTarget.CREATE)


def registration_guard(metadata: ClusterMetadata, broker_id: int, epoch: int | None = None) -> Compare:
    """The write fails unless the broker is still registered with this epoch (incarnation)."""
    info = metadata.brokers.get(broker_id)
    if epoch is None:
        assert info is not None, f"broker {broker_id} is not registered"
        epoch = info.epoch
    return Compare(metadata.keys.broker(broker_id), epoch, CompareTarget.CREATE)


def isr_guards(metadata: ClusterMetadata, isr: tuple[int, ...]) -> tuple[Compare, ...]:
    """Guards that the ISR's members are the incarnations (or the absences) this view shows."""
    return tuple(
        registration_guard(metadata, b) if b in metadata.brokers
        else Compare(metadata.keys.broker(b), 0, CompareTarget.CREATE)
        for b in isr
    )


def replica_status(metadata: ClusterMetadata, broker_id: int, partition_revision: int) -> ReplicaStatus:
    info = metadata.brokers.get(broker_id)
    if info is None:
        return ReplicaStatus.DEAD
    # A new incarnation first: whatever else it is doing, the state has never seen it.
    if info.epoch > partition_revision:
        return ReplicaStatus.RESTARTED
    if info.shutting_down:
        return ReplicaStatus.SHUTTING_DOWN
    return ReplicaStatus.ACTIVE


def unclean_allowed(topic: TopicInfo, policy: ControllerPolicy) -> bool:
    raw = topic.configs.get(UNCLEAN_CONFIG)
    if raw is None:
        return policy.unclean_leader_election_default
    return bool(TOPIC_CONFIGS[UNCLEAN_CONFIG].parse(raw))


def min_insync_replicas(topic: TopicInfo | None, policy: ControllerPolicy) -> int:
    """The topic's min.insync.replicas; a stored value that does not validate (its partitions
    are offline on the brokers until it is fixed) counts as the broker's default."""
    raw = None if topic is None else topic.configs.get(MIN_ISR_CONFIG)
    if raw is None:
        return policy.min_insync_replicas_default
    try:
        return int(TOPIC_CONFIGS[MIN_ISR_CONFIG].parse(raw))
    except ConfigError:
        return policy.min_insync_replicas_default


def crash_loses_reported(topic: TopicInfo | None, policy: ControllerPolicy) -> bool:
    """Whether an unclean shutdown of a replica of this topic can lose records it had already
    reported to its leader (and so counted towards the HW). Not under flush.policy=always or
    flush.messages=1: a follower fsyncs before its next fetch reports the new LEO and a leader
    before the HW passes its own records (rule 6), so a crash keeps all of them. Kafka, which
    never assumes that, drops every unclean shutdown from the ELR."""
    configs = {} if topic is None else topic.configs
    raw_policy = configs.get("flush.policy")
    flush_policy = policy.flush_policy_default if raw_policy is None else str(raw_policy)
    raw_messages = configs.get("flush.messages")
    try:
        flush_messages = (policy.flush_messages_default if raw_messages is None
                          else int(TOPIC_CONFIGS["flush.messages"].parse(raw_messages)))
    except ConfigError:
        return True  # a value that does not validate promises nothing
    return flush_policy != "always" and flush_messages != 1


def unclean_restarts(
    metadata: ClusterMetadata, state: PartitionState, revision: int, topic: TopicInfo | None,
    policy: ControllerPolicy,
) -> set[int]:
    """The replicas of `state` registered since it was written after an unclean shutdown that
    may have lost what they held (KIP-966 removes them from the ELR; Kafka sees it in the
    registration's previous broker epoch, ackly in the registration's unclean_shutdown)."""
    if not crash_loses_reported(topic, policy):
        return set()
    return {
        b for b in state.replicas
        if (info := metadata.brokers.get(b)) is not None and info.epoch > revision and info.unclean_shutdown
    }


def next_elr(
    state: PartitionState, target_isr: tuple[int, ...], min_isr: int, dropped: set[int], enabled: bool,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ELR, last known ELR) to write with `target_isr` (PartitionChangeBuilder's
    maybePopulateTargetElr): cleared while the ISR is at least the minimum; below it, every
    member of the old ISR or ELR outside the new ISR, but `dropped` (unclean restarts) go to
    the last known ELR, which keeps its members until the ISR is back at the minimum."""
    if not enabled or len(target_isr) >= min_isr:
        return (), ()
    isr = set(target_isr)
    candidates = (set(state.isr) | set(state.elr)) - isr
    elr = candidates - dropped
    last_known = (candidates | set(state.last_known_elr)) - isr - elr
    return tuple(sorted(elr)), tuple(sorted(last_known))


def eligible_brokers(metadata: ClusterMetadata) -> list[BrokerInfo]:
    """Brokers that may receive new replicas: registered and not shutting down."""
    return [b for _, b in sorted(metadata.brokers.items()) if not b.shutting_down]


# --- elections ---------------------------------------------------------------------------------


def elect(
    metadata: ClusterMetadata,
    tp: TopicPartition,
    state: PartitionState,
    *,
    unclean: bool,
    rebalance: bool,
    policy: ControllerPolicy | None = None,
    resumed: bool = False,
) -> PartitionChange | None:
    """What `state` should become given which brokers are alive (PartitionChangeBuilder with
    election ONLINE, or UNCLEAN when `unclean`; PREFERRED when `rebalance`). None: no change.
    `policy` brings the eligible leader replicas rules (KIP-966) when it enables them.
    `resumed`: the restarted leader resumes its leadership (counts as ACTIVE)."""
    policy = policy or ControllerPolicy()
    elr_on = policy.eligible_leader_replicas
    topic = metadata.topics.get(tp.topic)
    revision = metadata.partition_revision(tp)
    status = {b: replica_status(metadata, b, revision) for b in state.replicas}
    if resumed and status.get(state.leader) is ReplicaStatus.RESTARTED:
        status[state.leader] = ReplicaStatus.ACTIVE
    # Replicas back from an unclean shutdown that may have lost what they acknowledged: under
    # the ELR rules they are not clean candidates any more (KIP-966).
    dropped = unclean_restarts(metadata, state, revision, topic, policy) if elr_on else set()
    isr = set(state.isr)
    active_isr = [b for b in state.replicas if b in isr and status[b] is ReplicaStatus.ACTIVE]
    old = state.leader
    old_status = status[old] if old != NO_LEADER else ReplicaStatus.DEAD

    reason: ChangeReason | None = None
    new_term = False  # a new leadership, even by the same broker: leader_epoch + 1
    recovery = state.leader_recovery_state
    if old_status is ReplicaStatus.ACTIVE:
        leader = old
    elif old_status is ReplicaStatus.SHUTTING_DOWN:
        successors = [b for b in active_isr if b != old]
        # Without a clean successor the leaving broker keeps leading until it is gone; moving
        # leadership out of the ISR would lose data for the sake of a shutdown.
        leader = successors[0] if successors else old
        if successors:
            reason, new_term = ChangeReason.CONTROLLED_SHUTDOWN, True
    elif active_isr:
        leader, reason, new_term = active_isr[0], ChangeReason.ELECTION, True
    else:
        # No ACTIVE ISR member. A live member that restarted or is shutting down still holds
        # what it had when it was last in sync: electing it is clean (it is the "last replica
        # in the ISR" coming back). Otherwise: unclean, if allowed, or offline.
        returning = [
            b for b in state.replicas
            if b in isr and status[b] in (ReplicaStatus.RESTARTED, ReplicaStatus.SHUTTING_DOWN)
            and b not in dropped
        ]
        alive = (ReplicaStatus.ACTIVE, ReplicaStatus.RESTARTED)
        outsiders = [
            b for b in state.replicas if status[b] in alive and not metadata.brokers[b].shutting_down
        ]
        # KIP-966: an ELR member holds every committed offset; one back from an unclean
        # shutdown that may have lost them does not.
        eligible = [b for b in outsiders if b in state.elr and b not in dropped] if elr_on else []
        # An unclean election tries the replicas that held the data most recently first.
        last_known = set(state.last_known_elr) | (dropped & (isr | set(state.elr)))
        outsiders.sort(key=lambda b: b not in last_known)
        if returning:
            leader, reason, new_term = returning[0], ChangeReason.ELECTION, True
        elif eligible:
            leader, reason, new_term = eligible[0], ChangeReason.ELECTION, True
        elif unclean and outsiders:
            leader, reason, new_term = outsiders[0], ChangeReason.UNCLEAN, True
            recovery = LeaderRecoveryState.RECOVERING
        else:
            leader = NO_LEADER
            if old != NO_LEADER:
                reason, new_term = ChangeReason.OFFLINE, True

    if (
        rebalance
        and leader != NO_LEADER
        and reason is None
        and state.preferred_leader != leader
        and state.preferred_leader in active_isr
    ):
        leader, reason, new_term = state.preferred_leader, ChangeReason.PREFERRED, True

    if leader == NO_LEADER:
        if elr_on and recovery is not LeaderRecoveryState.RECOVERING:
            # KIP-966: the ISR keeps only live members (none here); the others move to the ELR,
            # whose members stay electable while they are gone.
            new_isr: tuple[int, ...] = tuple(b for b in state.isr if b in active_isr)
        else:
            # Every member is dead: keep them all electable. (A state the ELR rules emptied
            # puts back in the ISR whoever they kept, now that the rules are off. An unclean
            # leader still RECOVERING keeps its ISR of one, KIP-704, whatever the rules.)
            new_isr = state.isr or tuple(sorted(set(state.elr) | set(state.last_known_elr)))
    elif reason is ChangeReason.UNCLEAN:
        new_isr = (leader,)
    else:
        new_isr = tuple(sorted({leader, *active_isr}))
    min_isr = min(min_insync_replicas(topic, policy), len(state.replicas)) if elr_on else 0
    elr, last_known_elr = next_elr(state, new_isr, min_isr, dropped, elr_on)

    if reason is None and new_isr != state.isr:
        reason = ChangeReason.ISR_SHRINK
    if reason is None and (elr, last_known_elr) != (state.elr, state.last_known_elr):
        reason = ChangeReason.ELR
    if reason is None:
        return None
    after = replace(
        state, leader=leader, isr=new_isr, leader_recovery_state=recovery,
        leader_epoch=state.leader_epoch + 1 if new_term else state.leader_epoch,
        partition_epoch=state.partition_epoch + 1, elr=elr, last_known_elr=last_known_elr,
    )
    return PartitionChange(tp, state, after, revision, reason, isr_guards(metadata, after.isr + after.elr))


def initial_state(metadata: ClusterMetadata, topic: TopicInfo, index: int) -> PartitionChange:
    """The first state of a partition: every live replica is in sync (the log is empty) and the
    first of them leads. With none alive, all replicas form the ISR and the first to come
    back leads."""
    tp = TopicPartition(topic.name, index)
    replicas = topic.assignment[index]
    alive = [b for b in replicas if b in metadata.brokers and not metadata.brokers[b].shutting_down]
    if alive:
        state = PartitionState(topic.topic_id, replicas, tuple(alive), alive[0])
    else:
        state = PartitionState(topic.topic_id, replicas, replicas, NO_LEADER)
    revision = metadata.partition_revision(tp)
    return PartitionChange(tp, None, state, revision, ChangeReason.CREATE, isr_guards(metadata, state.isr))


def reconcile_scope(older: ClusterMetadata, newer: ClusterMetadata) -> set[TopicPartition] | None:
    """The partitions whose decisions may differ between a view `reconcile` ran on and a newer
    one, or None for all of them. A partition's decision depends only on its own state and
    its revision, its topic, and the brokers' registrations: when the brokers are the same,
    only the partitions set since (and those of the topics set since) need another look, so
    an ISR change of one partition out of thousands costs one election, not thousands."""
    if older.brokers != newer.brokers or older.controller != newer.controller:
        return None
    touched = newer.touched_since(older)
    if touched is None:
        return None
    tps, topics = touched
    scope = set(tps)
    for name in topics:
        for view in (older, newer):
            info = view.topics.get(name)
            if info is not None:
                scope.update(TopicPartition(name, i) for i in info.partition_ids())
    return scope


def reconcile(
    metadata: ClusterMetadata,
    policy: ControllerPolicy,
    scope: Iterable[TopicPartition] | None = None,
    resumes: Resumes | None = None,
) -> list[Decision]:
    """Every change the view calls for, in a deterministic order: create missing partition
    states, clean up leftovers, and run an election on every partition (on the partitions of
    `scope` only, when given: see `reconcile_scope`). `resumes`: see the module docstring."""
    if scope is not None:
        return [d for tp in sorted(set(scope))
                if (d := _decide(metadata, policy, tp, resumes)) is not None]
    decisions: list[Decision] = []
    for name in sorted(metadata.topics):
        topic = metadata.topics[name]
        unclean = unclean_allowed(topic, policy)
        for index in topic.partition_ids():
            tp = TopicPartition(name, index)
            state = metadata.partitions.get(tp)
            if state is None:
                decisions.append(initial_state(metadata, topic, index))
            elif state.topic_id != topic.topic_id:
                # Left by an earlier topic of the same name; clear it, then create.
                decisions.append(Cleanup(tp, metadata.partition_revision(tp)))
            else:
                change = elect(metadata, tp, state, unclean=unclean, rebalance=policy.auto_leader_rebalance,
                               policy=policy, resumed=resumes is not None and resumes(tp, state))
                if change is not None:
                    decisions.append(change)
    for tp in sorted(metadata.partitions):
        topic_info = metadata.topics.get(tp.topic)
        if topic_info is None or tp.partition >= topic_info.partitions:
            decisions.append(Cleanup(tp, metadata.partition_revision(tp)))
    return decisions


def _decide(metadata: ClusterMetadata, policy: ControllerPolicy, tp: TopicPartition,
            resumes: Resumes | None = None) -> Decision | None:
    """What `reconcile` decides for one partition."""
    topic = metadata.topics.get(tp.topic)
    state = metadata.partitions.get(tp)
    if topic is None or tp.partition >= topic.partitions:
        return None if state is None else Cleanup(tp, metadata.partition_revision(tp))
    if state is None:
        return initial_state(metadata, topic, tp.partition)
    if state.topic_id != topic.topic_id:
        return Cleanup(tp, metadata.partition_revision(tp))
    return elect(metadata, tp, state, unclean=unclean_allowed(topic, policy),
                 rebalance=policy.auto_leader_rebalance, policy=policy,
                 resumed=resumes is not None and resumes(tp, state))


def controlled_shutdown_complete(metadata: ClusterMetadata, broker_id: int) -> bool:
    """True once the broker leads no partition and is in no ISR that has another ACTIVE member:
    nothing is left that the controller could still hand over cleanly. Partitions whose ISR is
    the broker alone go offline when it leaves (Kafka's controlled shutdown does the same)."""
    for tp, state in metadata.all_partitions():
        if broker_id not in state.isr:
            continue
        revision = metadata.partition_revision(tp)
        if any(
            b != broker_id and replica_status(metadata, b, revision) is ReplicaStatus.ACTIVE
            for b in state.isr
        ):
            return False
    return True


# --- AlterPartition (KIP-497, KIP-704, KIP-903) -------------------------------------------------


@dataclass(frozen=True)
class AlterPartitionRequest:
    """A leader's request to change the ISR of one partition.

    Rule 9 is the caller's: a follower is added only once the leader has seen it reach HW and
    the start offset of the current leader epoch. broker_epochs: the epoch each member had when
    the leader saw it fetch (KIP-903); a member listed with an epoch that is no longer its
    registration's is refused, so a restarted follower cannot ride on its old incarnation's
    progress. A member kept in the ISR that has restarted since the state was written must be
    listed with its new epoch (the leader vouches that this incarnation caught up), or it is
    refused. A member that is down cannot be kept; one shutting down cannot be added.
    """

    tp: TopicPartition
    leader_id: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[int, ...]
    leader_recovery_state: LeaderRecoveryState = LeaderRecoveryState.RECOVERED
    leader_broker_epoch: int | None = None
    broker_epochs: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AlterPartitionDecision:
    """error NONE and change None: nothing to change. current: the state as the view has it
    (what Kafka's AlterPartition response returns so the leader can catch up)."""

    error: ErrorCode
    current: PartitionState | None
    change: PartitionChange | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.error == ErrorCode.none


def alter_partition(
    metadata: ClusterMetadata, request: AlterPartitionRequest, policy: ControllerPolicy | None = None,
) -> AlterPartitionDecision:
    """Validate an ISR change as the controller would, against this view. On acceptance the
    change's compare-and-set carries the rest of the validation to the store: the partition's
    mod_revision (so a stale partition epoch fails there too) and the registration of every
    member of the new ISR, the leader included."""
    tp = request.tp
    state = metadata.partition(tp)

    def refuse(code: ErrorCode, message: str) -> AlterPartitionDecision:
        return AlterPartitionDecision(code, state, None, message)

    if state is None:
        return refuse(ErrorCode.unknown_topic_or_partition, f"{tp} is unknown")
    leader_info = metadata.brokers.get(request.leader_id)
    if leader_info is None or (
        request.leader_broker_epoch is not None and request.leader_broker_epoch != leader_info.epoch
    ):
        return refuse(ErrorCode.stale_broker_epoch, f"broker {request.leader_id} is not registered so")
    epochs = f"leader epoch {request.leader_epoch}, current {state.leader_epoch}"
    if request.leader_epoch < state.leader_epoch:
        return refuse(ErrorCode.fenced_leader_epoch, epochs)
    if request.leader_epoch > state.leader_epoch:
        return refuse(ErrorCode.unknown_leader_epoch, epochs)
    if state.leader != request.leader_id:
        return refuse(ErrorCode.not_leader_or_follower, f"broker {request.leader_id} does not lead {tp}")
    if request.partition_epoch != state.partition_epoch:
        return refuse(
            ErrorCode.invalid_update_version,
            f"partition epoch {request.partition_epoch} != {state.partition_epoch}",
        )
    new_isr = tuple(sorted(request.new_isr))
    if len(set(new_isr)) != len(new_isr) or request.leader_id not in new_isr:
        return refuse(ErrorCode.invalid_request, f"ISR {list(new_isr)} must list the leader, once each")
    if not set(new_isr) <= set(state.replicas):
        return refuse(ErrorCode.invalid_request, f"ISR {list(new_isr)} is not within {list(state.replicas)}")
    recovering = LeaderRecoveryState.RECOVERING
    if request.leader_recovery_state is recovering and state.leader_recovery_state is not recovering:
        return refuse(ErrorCode.invalid_request, "a recovered partition cannot go back to RECOVERING")
    if request.leader_recovery_state is recovering and len(new_isr) > 1:
        return refuse(ErrorCode.invalid_request, "the ISR cannot grow while the leader is RECOVERING")
    revision = metadata.partition_revision(tp)
    for b in new_isr:
        info = metadata.brokers.get(b)
        claimed = request.broker_epochs.get(b)
        added = b not in state.isr
        if (
            info is None
            or (claimed is not None and claimed != info.epoch)
            or (added and info.shutting_down)
            or (not added and claimed is None and info.epoch > revision)  # restarted, not vouched for
        ):
            return refuse(ErrorCode.ineligible_replica, f"broker {b} is not eligible for the ISR of {tp}")
    policy = policy or ControllerPolicy()
    topic = metadata.topics.get(tp.topic)
    dropped = (unclean_restarts(metadata, state, revision, topic, policy)
               if policy.eligible_leader_replicas else set())
    # A replica that joins the ISR leaves the ELR; one that leaves it below the minimum joins.
    elr_on = policy.eligible_leader_replicas
    min_isr = min(min_insync_replicas(topic, policy), len(state.replicas)) if elr_on else 0
    elr, last_known_elr = next_elr(state, new_isr, min_isr, dropped, elr_on)
    if (
        new_isr == state.isr and request.leader_recovery_state is state.leader_recovery_state
        and (elr, last_known_elr) == (state.elr, state.last_known_elr)
    ):
        return AlterPartitionDecision(ErrorCode.none, state, None, "no change")
    after = replace(
        state, isr=new_isr, leader_recovery_state=request.leader_recovery_state,
        partition_epoch=state.partition_epoch + 1, elr=elr, last_known_elr=last_known_elr,
    )
    guards = isr_guards(metadata, new_isr + elr)
    change = PartitionChange(tp, state, after, revision, ChangeReason.ALTER_PARTITION, guards)
    return AlterPartitionDecision(ErrorCode.none, state, change)


# --- topics ------------------------------------------------------------------------------------


def plan_create_topic(
    metadata: ClusterMetadata,
    name: str,
    partitions: int,
    replication_factor: int,
    rng: random.Random,
    *,
    configs: Mapping[str, str] | None = None,
    assignment: list[tuple[int, ...]] | None = None,
) -> TopicInfo:
    """A new topic placed on the eligible brokers, or on the caller's explicit assignment.
    The caller has validated the name and the configs. Raises KafkaError (TOPIC_ALREADY_EXISTS,
    INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT). Its partition
    states are created by the controller once the topic key is written (`reconcile`)."""
    if name in metadata.topics:
        raise KafkaError(ErrorCode.topic_already_exists, f"topic {name!r} already exists")
    if assignment is not None:
        problem = assignment_problem(assignment, metadata.brokers)
        if problem is not None:
            raise KafkaError(ErrorCode.invalid_replica_assignment, problem)
    else:
        assignment = place_replicas(eligible_brokers(metadata), partitions, replication_factor, rng)
    topic_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    return TopicInfo(name, topic_id, tuple(assignment), dict(configs or {}))


def plan_create_partitions(
    metadata: ClusterMetadata, name: str, total: int, rng: random.Random
) -> TopicInfo:
    """The topic with partitions added up to `total` (CreatePartitions), placed like the first
    ones with the topic's replication factor."""
    topic = metadata.topics.get(name)
    if topic is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
    if total <= topic.partitions:
        raise PlacementError(
            ErrorCode.invalid_partitions,
            f"topic {name!r} has {topic.partitions} partitions; the new count must be larger, not {total}",
        )
    added = place_replicas(
        eligible_brokers(metadata), total - topic.partitions, len(topic.assignment[0]), rng,
        first_partition=topic.partitions,
    )
    return topic.with_assignment([*topic.assignment, *added])


def topic_write(request_id: int, metadata: ClusterMetadata, topic: TopicInfo) -> CompareAndSet:
    """Create the topic (if absent in this view) or replace it (if unchanged since this view)."""
    key = metadata.keys.topic(topic.name)
    return CompareAndSet(request_id, key, metadata.mod_revision(key), topic.encode())


def topic_delete(request_id: int, metadata: ClusterMetadata, name: str) -> Delete:
    """Delete the topic as this view knows it; the controller then removes its partition states."""
    key = metadata.keys.topic(name)
    return Delete(request_id, key, metadata.mod_revision(key))
