"""KIP-966 eligible leader replicas: the controller's ELR rules on hand-built views."""

from __future__ import annotations

from dataclasses import replace

from ackly.cluster.controller import (
    AlterPartitionRequest,
    ChangeReason,
    ControllerPolicy,
    PartitionChange,
    alter_partition,
    elect,
)
from ackly.cluster.metadata import NO_LEADER, BrokerInfo, ClusterMetadata, LeaderRecoveryState, PartitionState

from .test_controller import PARTITION_REVISION, TP, state, view

ELR = ControllerPolicy(eligible_leader_replicas=True, min_insync_replicas_default=2)
# A topic whose crash can lose what a replica reported (Kafka's default flushing).
LOSSY = {"flush.policy": "never"}


def run(m: ClusterMetadata, policy: ControllerPolicy = ELR, *, unclean: bool = False) -> PartitionChange | None:
    current = m.partition(TP)
    assert current is not None
    return elect(m, TP, current, unclean=unclean, rebalance=False, policy=policy)


def with_unclean_restart(m: ClusterMetadata, broker_id: int) -> ClusterMetadata:
    """Broker `broker_id` registered again (after the state was written), without a clean stop."""
    epoch = PARTITION_REVISION + 100 + broker_id
    return m.with_broker(BrokerInfo(broker_id, "h", 9000 + broker_id, epoch=epoch, unclean_shutdown=True), epoch)


def test_a_follower_leaving_an_isr_at_the_minimum_goes_to_the_elr() -> None:
    change = run(view([1, 3], state((1, 2), 1), configs=LOSSY))
    assert change is not None and change.reason is ChangeReason.ISR_SHRINK
    assert (change.after.isr, change.after.elr, change.after.leader) == ((1,), (2,), 1)
    # The ELR member is guarded like the ISR: a restart between decision and write fails it.
    assert len(change.guards) == 2


def test_above_the_minimum_nothing_goes_to_the_elr() -> None:
    change = run(view([1, 2], state((1, 2, 3), 1), configs=LOSSY))
    assert change is not None
    assert (change.after.isr, change.after.elr) == ((1, 2), ())


def test_without_the_rules_the_dead_last_member_stays_in_the_isr() -> None:
    change = run(view([2, 3], state((1,), 1, elr=()), configs=LOSSY), ControllerPolicy())
    assert change is not None and change.after.leader == NO_LEADER
    assert (change.after.isr, change.after.elr) == ((1,), ())


def test_the_dead_leader_goes_to_the_elr_and_a_live_elr_member_is_elected() -> None:
    # ISR {1} at the minimum 2 already left 2 in the ELR; 1 dies, 2 is alive.
    change = run(view([2, 3], state((1,), 1, elr=(2,)), configs=LOSSY))
    assert change is not None and change.reason is ChangeReason.ELECTION
    assert (change.after.leader, change.after.isr, change.after.elr) == (2, (2,), (1,))
    assert change.after.leader_epoch == 6


def test_with_no_eligible_replica_alive_the_partition_has_no_leader_and_keeps_its_elr() -> None:
    change = run(view([3], state((1,), 1, elr=(2,)), configs=LOSSY))
    assert change is not None and change.reason is ChangeReason.OFFLINE
    assert (change.after.leader, change.after.isr, change.after.elr) == (NO_LEADER, (), (1, 2))


def test_an_unclean_restart_leaves_the_elr_for_the_last_known_elr_and_is_not_elected() -> None:
    offline = PartitionState(state((1,), 1).topic_id, (1, 2, 3), (), NO_LEADER, 6, 10, elr=(1, 2))
    m = with_unclean_restart(view([3], offline, configs=LOSSY), 1)
    change = run(m)
    assert change is not None and change.reason is ChangeReason.ELR
    assert (change.after.leader, change.after.elr, change.after.last_known_elr) == (NO_LEADER, (2,), (1,))
    # The ELR member that stopped cleanly is elected when it comes back...
    m2 = m.with_partition(TP, change.after, PARTITION_REVISION + 500)
    back = m2.with_broker(BrokerInfo(2, "h", 9002, epoch=PARTITION_REVISION + 600), PARTITION_REVISION + 600)
    elected = run(back)
    assert elected is not None and (elected.after.leader, elected.after.isr) == (2, (2,))
    assert elected.after.elr == () and elected.after.last_known_elr == (1,)


def test_an_unclean_restart_on_a_topic_that_flushes_always_stays_eligible() -> None:
    offline = PartitionState(state((1,), 1).topic_id, (1, 2, 3), (), NO_LEADER, 6, 10, elr=(1, 2))
    m = with_unclean_restart(view([3], offline, configs={"flush.policy": "always"}), 1)
    change = run(m)
    assert change is not None and (change.after.leader, change.after.isr) == (1, (1,))


def test_unclean_election_prefers_the_last_known_elr() -> None:
    offline = PartitionState(state((1,), 1).topic_id, (1, 2, 3), (), NO_LEADER, 6, 10, last_known_elr=(2,))
    m = view([2, 3], offline, configs=LOSSY)
    assert run(m) is None  # no eligible replica: stays offline
    change = run(m, unclean=True)
    assert change is not None and change.reason is ChangeReason.UNCLEAN and change.after.leader == 2


def test_a_restarted_isr_member_after_an_unclean_shutdown_is_not_elected_cleanly() -> None:
    m = with_unclean_restart(view([3], state((1,), NO_LEADER), configs=LOSSY), 1)
    change = run(m)
    assert change is not None
    assert (change.after.leader, change.after.isr, change.after.elr, change.after.last_known_elr) == (
        NO_LEADER, (), (), (1,))


def test_alter_partition_moves_replicas_between_isr_and_elr() -> None:
    m = view([1, 2, 3], state((1, 2), 1), configs=LOSSY)
    shrink = alter_partition(m, AlterPartitionRequest(TP, 1, 5, 9, (1,)), ELR)
    assert shrink.change is not None
    assert (shrink.change.after.isr, shrink.change.after.elr) == ((1,), (2,))
    m2 = m.with_partition(TP, shrink.change.after, PARTITION_REVISION + 1)
    grow = alter_partition(m2, AlterPartitionRequest(TP, 1, 5, 10, (1, 2)), ELR)
    assert grow.change is not None
    assert (grow.change.after.isr, grow.change.after.elr) == ((1, 2), ())


def test_lowering_min_isr_clears_the_elr() -> None:
    m = view([1, 2, 3], replace(state((1,), 1), elr=(2,)), configs={**LOSSY, "min.insync.replicas": "1"})
    change = run(m, ELR)
    assert change is not None and change.reason is ChangeReason.ELR
    assert (change.after.isr, change.after.elr) == ((1,), ())


def test_turning_the_rules_off_puts_the_elr_back_in_an_emptied_isr() -> None:
    offline = PartitionState(state((1,), 1).topic_id, (1, 2, 3), (), NO_LEADER, 6, 10, elr=(2,),
                             last_known_elr=(1,))
    change = run(view([3], offline, configs=LOSSY), ControllerPolicy())
    assert change is not None
    assert (change.after.leader, change.after.isr, change.after.elr, change.after.last_known_elr) == (
        NO_LEADER, (1, 2), (), ())


def test_a_recovering_unclean_leader_that_dies_keeps_its_isr_of_one() -> None:
    recovering = replace(state((3,), 3), leader_recovery_state=LeaderRecoveryState.RECOVERING)
    change = run(view([1], recovering, configs=LOSSY))
    assert change is not None
    assert (change.after.leader, change.after.isr) == (NO_LEADER, (3,))


def test_a_stored_config_that_does_not_validate_never_stops_the_controller() -> None:
    bad = {"min.insync.replicas": "abc", "flush.messages": "lots"}
    change = run(view([1, 3], state((1, 2), 1), configs=bad))
    # min ISR falls back to the broker's default (2): the follower that left goes to the ELR.
    assert change is not None and (change.after.isr, change.after.elr) == ((1,), (2,))
    assert run(view([1, 3], state((1, 2), 1), configs=bad), ControllerPolicy()) is not None
