"""The controller's decisions, one at a time, on hand-built views."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest

from ackly.cluster.controller import (
    UNCLEAN_CONFIG,
    AlterPartitionRequest,
    ChangeReason,
    Cleanup,
    ControllerPolicy,
    PartitionChange,
    ReplicaStatus,
    alter_partition,
    controlled_shutdown_complete,
    controller_guard,
    elect,
    plan_create_partitions,
    plan_create_topic,
    reconcile,
    replica_status,
    topic_delete,
    topic_write,
)
from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.metadata import (
    NO_LEADER,
    BrokerInfo,
    ClusterMetadata,
    ControllerInfo,
    LeaderRecoveryState,
    PartitionState,
    TopicInfo,
)
from ackly.cluster.store import Command, CommandResult, Compare, CompareTarget, Delete, Put, StoreError
from ackly.errors import ErrorCode, KafkaError
from ackly.types import TopicPartition

TID = uuid.UUID(int=1)
TP = TopicPartition("t", 0)
PARTITION_REVISION = 100  # brokers registered below this are the incarnations the state knows
RESTARTED_EPOCH = 200


def view(
    live: list[int],
    state: PartitionState | None = None,
    *,
    shutting_down: tuple[int, ...] = (),
    restarted: tuple[int, ...] = (),
    configs: dict[str, str] | None = None,
    replicas: tuple[int, ...] = (1, 2, 3),
) -> ClusterMetadata:
    m = ClusterMetadata()
    for b in live:
        epoch = RESTARTED_EPOCH + b if b in restarted else 10 + b
        m = m.with_broker(BrokerInfo(b, "h", 9000 + b, shutting_down=b in shutting_down, epoch=epoch), epoch)
    m = m.with_controller(ControllerInfo(live[0] if live else 0, epoch=50), 50)
    m = m.with_topic(TopicInfo("t", TID, (replicas,), configs or {}), 60)
    if state is not None:
        m = m.with_partition(TP, state, PARTITION_REVISION)
    return m


def state(
    isr: tuple[int, ...], leader: int, replicas: tuple[int, ...] = (1, 2, 3), **kw: object
) -> PartitionState:
    return PartitionState(TID, replicas, isr, leader, leader_epoch=5, partition_epoch=9, **kw)  # type: ignore[arg-type]


def run(m: ClusterMetadata, *, unclean: bool = False, rebalance: bool = True) -> PartitionChange | None:
    current = m.partition(TP)
    assert current is not None
    return elect(m, TP, current, unclean=unclean, rebalance=rebalance)


# --- broker status ---------------------------------------------------------------------------


def test_replica_status() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1), shutting_down=(2,), restarted=(3,))
    assert replica_status(m, 1, PARTITION_REVISION) is ReplicaStatus.ACTIVE
    assert replica_status(m, 2, PARTITION_REVISION) is ReplicaStatus.SHUTTING_DOWN
    assert replica_status(m, 3, PARTITION_REVISION) is ReplicaStatus.RESTARTED
    assert replica_status(m, 4, PARTITION_REVISION) is ReplicaStatus.DEAD


# --- elections -------------------------------------------------------------------------------


def test_stable_partition_needs_nothing() -> None:
    assert run(view([1, 2, 3], state((1, 2, 3), 1))) is None


def test_leader_loss_elects_the_first_live_isr_member_and_bumps_both_epochs() -> None:
    change = run(view([2, 3], state((1, 2, 3), 1)))
    assert change is not None and change.reason is ChangeReason.ELECTION
    after = change.after
    assert (after.leader, after.isr, after.leader_epoch, after.partition_epoch) == (2, (2, 3), 6, 10)
    assert change.expected_mod_revision == PARTITION_REVISION
    # the write relies on 2 and 3 being the incarnations it saw
    assert {(g.key, g.revision, g.target) for g in change.guards} == {
        ("/ackly/brokers/2", 12, CompareTarget.CREATE), ("/ackly/brokers/3", 13, CompareTarget.CREATE),
    }


def test_leader_loss_prefers_isr_order_of_replicas_not_outsiders() -> None:
    change = run(view([1, 2, 3], state((1, 3), 3), restarted=(3,)))  # 2 is alive but out of sync
    assert change is not None and change.after.leader == 1 and change.after.isr == (1,)


def test_a_restarted_single_leader_is_elected_again_unless_it_resumes_its_epoch() -> None:
    m = view([1], state((1,), 1, replicas=(1,)), restarted=(1,), replicas=(1,))
    current = m.partition(TP)
    assert current is not None
    change = elect(m, TP, current, unclean=False, rebalance=True)
    assert change is not None and change.reason is ChangeReason.ELECTION
    assert (change.after.leader, change.after.leader_epoch) == (1, 6)
    # Resumed after a clean stop (single-broker mode): no change at all, the epoch stays.
    assert elect(m, TP, current, unclean=False, rebalance=True, resumed=True) is None
    assert reconcile(m, ControllerPolicy(), resumes=lambda tp, s: s.leader_epoch == 5) == []
    # Only the epoch recorded resumes: another one is an election.
    assert len(reconcile(m, ControllerPolicy(), resumes=lambda tp, s: s.leader_epoch == 4)) == 1


def test_follower_loss_shrinks_the_isr_and_keeps_the_leader_epoch() -> None:
    change = run(view([1, 2], state((1, 2, 3), 1)))
    assert change is not None and change.reason is ChangeReason.ISR_SHRINK
    assert (change.after.leader, change.after.isr, change.after.leader_epoch) == (1, (1, 2), 5)
    assert change.after.partition_epoch == 10


def test_last_isr_member_lost_goes_offline_and_keeps_the_isr() -> None:
    m = view([2, 3], state((1,), 1))
    change = run(m)
    assert change is not None and change.reason is ChangeReason.OFFLINE
    assert (change.after.leader, change.after.isr, change.after.leader_epoch) == (NO_LEADER, (1,), 6)
    # the write holds only while broker 1 is still down: if it comes back first, decide again
    assert change.guards == (Compare("/ackly/brokers/1", 0, CompareTarget.CREATE),)
    # applied: nothing more to do, however often the controller looks (no flapping writes)
    m = m.with_partition(TP, change.after, PARTITION_REVISION + 1)
    assert run(m) is None


def test_a_returning_isr_member_is_elected_cleanly() -> None:
    offline = state((1, 2), NO_LEADER)
    change = run(view([2, 3], offline, restarted=(2,)))
    assert change is not None and change.reason is ChangeReason.ELECTION
    assert (change.after.leader, change.after.isr, change.after.leader_epoch) == (2, (2,), 6)
    assert change.after.leader_recovery_state is LeaderRecoveryState.RECOVERED


def test_no_unclean_election_when_disabled() -> None:
    offline = state((1,), NO_LEADER)
    assert run(view([2, 3], offline)) is None
    assert run(view([2, 3], offline, configs={UNCLEAN_CONFIG: "false"}), unclean=False) is None


@pytest.mark.parametrize("restarted", [(), (2,)])
def test_unclean_election_when_enabled(restarted: tuple[int, ...]) -> None:
    change = run(view([2, 3], state((1,), NO_LEADER), restarted=restarted), unclean=True)
    assert change is not None and change.reason is ChangeReason.UNCLEAN
    after = change.after
    assert (after.leader, after.isr, after.leader_recovery_state) == (2, (2,), LeaderRecoveryState.RECOVERING)
    assert after.leader_epoch == 6


def test_unclean_election_never_picks_a_shutting_down_broker() -> None:
    m = view([2, 3], state((1,), NO_LEADER), shutting_down=(2,))
    change = run(m, unclean=True)
    assert change is not None and change.after.leader == 3


def test_a_restarted_leader_is_replaced_or_re_elected_with_a_new_epoch() -> None:
    change = run(view([1, 2, 3], state((1, 2, 3), 1), restarted=(1,)))
    assert change is not None and (change.after.leader, change.after.isr) == (2, (2, 3))
    alone = run(view([1, 2, 3], state((1,), 1), restarted=(1,)))
    assert alone is not None
    assert (alone.after.leader, alone.after.isr, alone.after.leader_epoch) == (1, (1,), 6)


def test_a_broker_that_restarted_while_shutting_down_counts_as_restarted() -> None:
    m = view([1, 2, 3], state((3,), 3), shutting_down=(3,), restarted=(3,))
    assert replica_status(m, 3, PARTITION_REVISION) is ReplicaStatus.RESTARTED
    change = run(m)
    assert change is not None and change.after.leader == 3 and change.after.leader_epoch == 6
    # but it is never an unclean choice
    change = run(view([2, 3], state((1,), NO_LEADER), shutting_down=(2, 3), restarted=(2,)), unclean=True)
    assert change is None


def test_a_restarted_follower_leaves_the_isr() -> None:
    change = run(view([1, 2, 3], state((1, 2, 3), 1), restarted=(3,)))
    assert change is not None and change.reason is ChangeReason.ISR_SHRINK and change.after.isr == (1, 2)


def test_preferred_leader_is_restored_when_in_sync() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 2))
    change = run(m)
    assert change is not None and change.reason is ChangeReason.PREFERRED
    assert (change.after.leader, change.after.leader_epoch, change.after.isr) == (1, 6, (1, 2, 3))
    assert run(m, rebalance=False) is None
    assert run(view([1, 2, 3], state((2, 3), 2))) is None  # preferred not in the ISR yet
    assert run(view([1, 2, 3], state((1, 2, 3), 2), shutting_down=(1,))) is not None  # it leaves the ISR
    assert run(view([1, 2, 3], state((1, 2, 3), 2), shutting_down=(1,))).after.leader == 2  # type: ignore[union-attr]


def test_controlled_shutdown_moves_leadership_to_an_active_isr_member() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1), shutting_down=(1,))
    assert not controlled_shutdown_complete(m, 1)
    change = run(m)
    assert change is not None and change.reason is ChangeReason.CONTROLLED_SHUTDOWN
    assert (change.after.leader, change.after.isr, change.after.leader_epoch) == (2, (2, 3), 6)
    m = m.with_partition(TP, change.after, PARTITION_REVISION + 1)
    assert controlled_shutdown_complete(m, 1)


def test_controlled_shutdown_without_successor_keeps_the_leader() -> None:
    m = view([1, 2, 3], state((1, 3), 1), shutting_down=(1, 3))
    change = run(m)
    # the other shutting-down member leaves the ISR; leadership cannot move cleanly, so it stays
    assert change is not None and change.reason is ChangeReason.ISR_SHRINK
    assert (change.after.leader, change.after.isr) == (1, (1,))
    assert controlled_shutdown_complete(m, 1)


def test_a_shutting_down_follower_leaves_the_isr() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1), shutting_down=(3,))
    assert not controlled_shutdown_complete(m, 3)
    change = run(m)
    assert change is not None and change.after.isr == (1, 2) and change.after.leader_epoch == 5


def test_a_shutting_down_isr_member_is_elected_rather_than_go_offline() -> None:
    change = run(view([2, 3], state((1, 2), 1), shutting_down=(2,)), unclean=True)
    assert change is not None and change.reason is ChangeReason.ELECTION and change.after.leader == 2


def test_recovering_leader_lost_with_unclean_enabled_stays_recovering() -> None:
    recovering = state((1,), 1, leader_recovery_state=LeaderRecoveryState.RECOVERING)
    change = run(view([2], recovering), unclean=True)
    assert change is not None and change.after.leader_recovery_state is LeaderRecoveryState.RECOVERING
    offline = run(view([2], recovering), unclean=False)
    assert offline is not None and offline.after.leader == NO_LEADER


# --- reconcile -------------------------------------------------------------------------------


def test_reconcile_creates_missing_partition_states_from_the_assignment() -> None:
    m = view([1, 3], replicas=(1, 2, 3))
    (decision,) = reconcile(m, ControllerPolicy())
    assert isinstance(decision, PartitionChange) and decision.reason is ChangeReason.CREATE
    assert decision.before is None and decision.expected_mod_revision == 0
    after = decision.after
    assert (after.leader, after.isr, after.leader_epoch, after.partition_epoch) == (1, (1, 3), 0, 0)


def test_a_partition_created_with_no_live_replica_waits_for_the_first_one() -> None:
    (decision,) = reconcile(view([4], replicas=(1, 2)), ControllerPolicy())
    assert isinstance(decision, PartitionChange)
    assert (decision.after.leader, decision.after.isr) == (NO_LEADER, (1, 2))


def test_reconcile_uses_the_topic_config_for_unclean_election() -> None:
    offline = state((1,), NO_LEADER)
    assert reconcile(view([2, 3], offline), ControllerPolicy()) == []
    enabled = reconcile(view([2, 3], offline, configs={UNCLEAN_CONFIG: "true"}), ControllerPolicy())
    assert [d.after.leader for d in enabled if isinstance(d, PartitionChange)] == [2]
    by_default = reconcile(view([2, 3], offline), ControllerPolicy(unclean_leader_election_default=True))
    assert len(by_default) == 1
    overridden = reconcile(
        view([2, 3], offline, configs={UNCLEAN_CONFIG: "false"}),
        ControllerPolicy(unclean_leader_election_default=True),
    )
    assert overridden == []


def test_reconcile_cleans_up_leftovers() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1))
    m = m.with_partition(TopicPartition("t", 5), state((1,), 1), 70)  # beyond the assignment
    m = m.with_partition(TopicPartition("gone", 0), state((1,), 1), 71)  # topic deleted
    decisions = reconcile(m, ControllerPolicy())
    assert decisions == [Cleanup(TopicPartition("gone", 0), 71), Cleanup(TopicPartition("t", 5), 70)]
    # a topic re-created under the same name: the old state goes before a new one is made
    m = m.with_topic(TopicInfo("t", uuid.UUID(int=2), ((1, 2, 3),)), 80)
    assert Cleanup(TP, PARTITION_REVISION) in reconcile(m, ControllerPolicy())


# --- AlterPartition --------------------------------------------------------------------------


def request(new_isr: tuple[int, ...], **kw: object) -> AlterPartitionRequest:
    fields: dict[str, object] = {"leader_id": 1, "leader_epoch": 5, "partition_epoch": 9}
    fields.update(kw)
    return AlterPartitionRequest(TP, new_isr=new_isr, **fields)  # type: ignore[arg-type]


def test_alter_partition_accepts_a_shrink_and_an_expansion() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1))
    shrink = alter_partition(m, request((1, 2)))
    assert shrink.accepted and shrink.change is not None
    assert shrink.change.reason is ChangeReason.ALTER_PARTITION
    after = shrink.change.after
    assert (after.isr, after.leader_epoch, after.partition_epoch) == ((1, 2), 5, 10)
    m = view([1, 2, 3], state((1,), 1))
    grow = alter_partition(m, request((1, 3), broker_epochs={3: 13}))
    assert grow.accepted and grow.change is not None and grow.change.after.isr == (1, 3)
    guarded = {g.key: g.revision for g in grow.change.guards}
    assert guarded == {"/ackly/brokers/1": 11, "/ackly/brokers/3": 13}


def test_alter_partition_cannot_keep_a_restarted_follower_unless_the_leader_vouches() -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1), restarted=(3,))
    assert alter_partition(m, request((1, 3))).error == ErrorCode.ineligible_replica
    assert alter_partition(m, request((1, 2, 3))).error == ErrorCode.ineligible_replica
    vouched = alter_partition(m, request((1, 3), broker_epochs={3: RESTARTED_EPOCH + 3}))
    assert vouched.accepted
    # a member that is down cannot be kept either
    m = view([1, 2], state((1, 2, 3), 1))
    assert alter_partition(m, request((1, 3))).error == ErrorCode.ineligible_replica
    assert alter_partition(m, request((1, 2))).accepted


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (request((1, 2), leader_epoch=4), ErrorCode.fenced_leader_epoch),
        (request((1, 2), leader_epoch=6), ErrorCode.unknown_leader_epoch),
        (request((1, 2), partition_epoch=8), ErrorCode.invalid_update_version),
        (request((1, 2), partition_epoch=10), ErrorCode.invalid_update_version),
        (request((2, 3), leader_id=2), ErrorCode.not_leader_or_follower),
        (request((2, 3)), ErrorCode.invalid_request),  # the leader must stay in the ISR
        (request((1, 1)), ErrorCode.invalid_request),
        (request((1, 4)), ErrorCode.invalid_request),  # not a replica
        (request((1, 2), leader_broker_epoch=99), ErrorCode.stale_broker_epoch),
        (request((1, 2), leader_id=7), ErrorCode.stale_broker_epoch),
        (request((1,), leader_recovery_state=LeaderRecoveryState.RECOVERING), ErrorCode.invalid_request),
    ],
)
def test_alter_partition_refusals(req: AlterPartitionRequest, code: ErrorCode) -> None:
    m = view([1, 2, 3], state((1, 2, 3), 1))
    decision = alter_partition(m, req)
    assert decision.error == code and decision.change is None
    assert decision.current == m.partition(TP)  # the leader learns the current state


def test_alter_partition_refuses_ineligible_members() -> None:
    m = view([1, 2, 3], state((1,), 1), shutting_down=(2,))
    assert alter_partition(m, request((1, 2))).error == ErrorCode.ineligible_replica  # shutting down
    assert alter_partition(m, request((1, 3), broker_epochs={3: 3})).error == ErrorCode.ineligible_replica
    m = view([1, 2], state((1,), 1))
    assert alter_partition(m, request((1, 3))).error == ErrorCode.ineligible_replica  # not registered


def test_alter_partition_unknown_partition_and_no_op() -> None:
    m = view([1, 2, 3])
    assert alter_partition(m, request((1,))).error == ErrorCode.unknown_topic_or_partition
    m = view([1, 2, 3], state((1, 2), 1))
    same = alter_partition(m, request((2, 1)))
    assert same.accepted and same.change is None


def test_a_recovering_leader_finishes_recovery_before_the_isr_grows() -> None:
    recovering = LeaderRecoveryState.RECOVERING
    m = view([1, 2, 3], state((1,), 1, leader_recovery_state=recovering))
    grow = alter_partition(m, request((1, 2), leader_recovery_state=recovering))
    assert grow.error == ErrorCode.invalid_request
    done = alter_partition(m, request((1,)))
    assert done.accepted and done.change is not None
    assert done.change.after.leader_recovery_state is LeaderRecoveryState.RECOVERED


# --- the commands, against the store -----------------------------------------------------------


def test_a_deposed_controller_cannot_write() -> None:
    """Every controller write is guarded on the controller key's incarnation (create_revision)."""
    store = MemoryStore()
    store.submit("c", Put(1, "/ackly/controller", ControllerInfo(1).encode()))
    store.submit("c", Put(2, "/ackly/brokers/2", BrokerInfo(2, "h", 1).encode()))
    store.drain("c")
    m = ClusterMetadata.from_kvs(store.range("/ackly/"), store.revision)
    m = m.with_topic(TopicInfo("t", TID, ((2,),)), 0)
    (create,) = reconcile(m, ControllerPolicy())
    assert isinstance(create, PartitionChange)
    guard = controller_guard(m)

    def submit(command: Command) -> CommandResult:
        store.submit("c", command)
        (result,) = store.drain("c")
        assert isinstance(result, CommandResult)
        return result

    assert submit(create.command(3, m.keys, (guard,))).ok
    # rewriting the key keeps its incarnation; the controller may go on writing
    assert submit(Put(4, "/ackly/controller", ControllerInfo(1).encode())).ok
    revision = store.get("/ackly/partitions/t/0").mod_revision  # type: ignore[union-attr]
    later = PartitionChange(TP, create.after, replace(create.after, partition_epoch=1), revision,
                            ChangeReason.ISR_SHRINK)
    assert submit(later.command(5, m.keys, (guard,))).ok
    # a new election (the key deleted and created again) deposes it
    assert submit(Delete(6, "/ackly/controller")).ok
    assert submit(Put(7, "/ackly/controller", ControllerInfo(3).encode())).ok
    revision = store.get("/ackly/partitions/t/0").mod_revision  # type: ignore[union-attr]
    again = PartitionChange(TP, later.after, replace(later.after, partition_epoch=2), revision,
                            ChangeReason.ISR_SHRINK)
    refused = submit(again.command(8, m.keys, (guard,)))
    assert refused.error is StoreError.COMPARE_FAILED


def test_topic_plans() -> None:
    m = view([1, 2, 3])
    rng = random.Random(3)
    with pytest.raises(KafkaError) as e:
        plan_create_topic(m, "t", 1, 1, rng)
    assert e.value.code == ErrorCode.topic_already_exists
    with pytest.raises(KafkaError) as e:
        plan_create_topic(m, "u", 1, 4, rng)
    assert e.value.code == ErrorCode.invalid_replication_factor
    topic = plan_create_topic(m, "u", 4, 2, rng, configs={"retention.ms": "5"})
    assert topic.partitions == 4 and all(len(r) == 2 for r in topic.assignment)
    assert topic.topic_id.version == 4
    create = topic_write(1, m, topic)
    assert create.expected_mod_revision == 0 and TopicInfo.decode(create.value) == topic
    grown = plan_create_partitions(m, "t", 3, rng)
    assert grown.partitions == 3 and grown.assignment[0] == (1, 2, 3) and grown.topic_id == TID
    with pytest.raises(KafkaError) as e:
        plan_create_partitions(m, "t", 1, rng)
    assert e.value.code == ErrorCode.invalid_partitions
    with pytest.raises(KafkaError) as e:
        plan_create_partitions(m, "nope", 3, rng)
    assert e.value.code == ErrorCode.unknown_topic_or_partition
    assert topic_write(2, m, grown).expected_mod_revision == 60
    assert topic_delete(3, m, "t").expected_mod_revision == 60
    explicit = plan_create_topic(m, "w", 0, 0, rng, assignment=[(3, 1), (1, 2)])
    assert explicit.assignment == ((3, 1), (1, 2))
    with pytest.raises(KafkaError) as e:
        plan_create_topic(m, "w", 0, 0, rng, assignment=[(3, 9)])
    assert e.value.code == ErrorCode.invalid_replica_assignment
    # shutting-down brokers get no new replicas
    placed = plan_create_topic(view([1, 2, 3], shutting_down=(2,)), "v", 6, 2, rng)
    assert all(2 not in r for r in placed.assignment)
