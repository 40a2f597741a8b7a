"""ClusterMember: sessions, registration, controller election and failover through the store."""

from __future__ import annotations

import random

import pytest

from ackly.cluster.controller import AlterPartitionRequest
from ackly.cluster.member import ClusterMember
from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.metadata import NO_LEADER, BrokerInfo
from ackly.cluster.store import CommandResult, GrantLease, Put, StoreError, WatchCanceled
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

from .harness import FAST, SimCluster

TP = TopicPartition("t", 0)


def test_brokers_register_and_exactly_one_becomes_controller() -> None:
    c = SimCluster([1, 2, 3])
    view = c.view()
    assert sorted(view.brokers) == [1, 2, 3]
    assert view.cluster_id is not None
    assert len(c.controllers()) == 1 and view.controller is not None
    assert view.controller.broker_id == c.controllers()[0]
    for b, m in c.members.items():
        assert m.synced and m.broker_epoch == view.brokers[b].epoch
        assert m.metadata.revision == view.revision  # every view caught up


def test_topic_creation_is_completed_by_the_controller() -> None:
    c = SimCluster([1, 2, 3])
    creator = c.members[2]
    rid = creator.create_topic("t", 3, 3, c.now_ms, configs={"min.insync.replicas": "2"})
    c.pump()
    (result,) = creator.take_results()
    assert result.request_id == rid and result.ok
    view = c.view()
    states = dict(view.partitions_of("t"))
    assert len(states) == 3
    for tp, state in states.items():
        assert state.leader == state.replicas[0] and state.isr == (1, 2, 3)
        assert state.leader_epoch == 0 and tp.topic == "t"
    # the same name again loses the compare-and-set
    with pytest.raises(Exception, match="already exists"):
        creator.create_topic("t", 1, 1, c.now_ms)


def test_controller_failover_after_its_lease_expires() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 6, 3, c.now_ms)
    c.pump()
    old = c.controllers()[0]
    led_before = c.view().led_by(old)
    c.kill(old)
    c.advance(FAST.session_timeout_ms - 500)
    assert c.controllers() == []  # nobody can be elected while the old lease lives
    assert c.view().controller is not None and c.view().controller.broker_id == old  # type: ignore[union-attr]
    c.advance(1_000)
    (new,) = c.controllers()
    assert new != old
    view = c.view()
    assert view.led_by(old) == []
    for tp in led_before:
        state = view.partition(tp)
        assert state is not None and state.leader != NO_LEADER and old not in state.isr
        assert state.leader_epoch == 1


def test_a_restarted_broker_waits_for_its_old_registration_then_gets_a_new_epoch() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 1, 3, c.now_ms)
    c.pump()
    follower = next(b for b in (1, 2, 3) if b != c.view().partition(TP).leader)  # type: ignore[union-attr]
    old_epoch = c.view().brokers[follower].epoch
    c.kill(follower)
    c.start(follower)
    c.pump()
    # the old incarnation's key still stands: the new one may not overwrite it
    assert c.view().brokers[follower].epoch == old_epoch
    assert c.members[follower].registration() is None
    c.advance(FAST.session_timeout_ms + 500)
    assert c.view().brokers[follower].epoch > old_epoch
    assert c.members[follower].registration() is not None
    state = c.view().partition(TP)
    assert state is not None and follower not in state.isr  # it must catch up again (rule 9)


def test_a_paused_broker_fences_itself_and_comes_back_as_a_new_incarnation() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 1, 3, c.now_ms)
    c.pump()
    controller = c.controllers()[0]
    leader = c.view().partition(TP).leader  # type: ignore[union-attr]
    old_epoch = c.view().brokers[controller].epoch
    c.paused.add(controller)
    c.advance(FAST.session_timeout_ms + 1_000)
    assert not c.members[controller].is_controller(c.now_ms)  # its own clock says the lease is over
    assert len(c.controllers()) == 1 and c.controllers()[0] != controller
    c.paused.discard(controller)
    c.members[controller].tick(c.now_ms)
    c.pump()
    c.advance(1_000)
    assert c.view().brokers[controller].epoch > old_epoch
    state = c.view().partition(TP)
    assert state is not None and state.leader != NO_LEADER
    if leader == controller:
        assert state.leader_epoch >= 1


def test_preferred_leader_returns_after_rejoining_the_isr() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 1, 3, c.now_ms)
    c.pump()
    preferred = c.view().partition(TP).replicas[0]  # type: ignore[union-attr]
    c.kill(preferred)
    c.advance(FAST.session_timeout_ms + 500)
    state = c.view().partition(TP)
    assert state is not None and state.leader != preferred and preferred not in state.isr
    c.start(preferred)
    c.advance(1_000)
    # the leader says it caught up (rule 9 is the replication layer's): it asks to add it
    leader = c.members[state.leader]
    decision = leader.alter_partition(
        AlterPartitionRequest(TP, state.leader, state.leader_epoch, state.partition_epoch,
                              tuple(sorted({*state.isr, preferred}))),
        c.now_ms,
    )
    assert decision.accepted and leader.isr_change_pending(TP)
    c.pump()
    assert not leader.isr_change_pending(TP)
    (result,) = leader.take_results()
    assert result.ok
    final = c.view().partition(TP)
    assert final is not None and final.leader == preferred
    assert final.leader_epoch == state.leader_epoch + 1


def test_stale_alter_partition_is_refused_by_the_store() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 1, 3, c.now_ms)
    c.pump()
    state = c.view().partition(TP)
    assert state is not None
    leader = c.members[state.leader]
    first = leader.alter_partition(
        AlterPartitionRequest(TP, state.leader, state.leader_epoch, state.partition_epoch, (state.leader,)),
        c.now_ms,
    )
    assert first.accepted
    busy = leader.alter_partition(
        AlterPartitionRequest(TP, state.leader, state.leader_epoch, state.partition_epoch, state.isr),
        c.now_ms,
    )
    assert busy.error == ErrorCode.operation_not_attempted
    c.pump()
    leader.take_results()
    stale = leader.alter_partition(
        AlterPartitionRequest(TP, state.leader, state.leader_epoch, state.partition_epoch, state.isr),
        c.now_ms,
    )
    assert stale.error == ErrorCode.invalid_update_version
    assert stale.current is not None and stale.current.isr == (state.leader,)


def test_controlled_shutdown_moves_leadership_then_leaves() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 6, 3, c.now_ms)
    c.pump()
    leaving = next(b for b in (1, 2, 3) if b not in c.controllers())
    member = c.members[leaving]
    assert c.view().led_by(leaving)
    member.begin_controlled_shutdown(c.now_ms)
    assert not member.shutdown_ready(c.now_ms)
    c.pump()
    assert member.shutdown_ready(c.now_ms)
    view = c.view()
    assert view.brokers[leaving].shutting_down
    assert view.led_by(leaving) == []
    assert all(leaving not in s.isr for _, s in view.partitions_of("t"))
    epochs = {tp: s.leader_epoch for tp, s in view.partitions_of("t")}
    c.leave(leaving)
    c.pump()
    view = c.view()
    assert leaving not in view.brokers  # gone at once, not after a session timeout
    assert {tp: s.leader_epoch for tp, s in view.partitions_of("t")} == epochs  # no second election


def test_controller_steps_down_after_moving_its_own_leadership() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 3, 3, c.now_ms)
    c.pump()
    controller = c.controllers()[0]
    c.members[controller].begin_controlled_shutdown(c.now_ms)
    c.pump()
    assert c.view().led_by(controller) == []
    assert c.members[controller].shutdown_ready(c.now_ms)
    assert c.controllers() and c.controllers()[0] != controller
    c.leave(controller)
    c.advance(100)
    assert c.view().brokers.keys() == {1, 2, 3} - {controller}


def test_members_resync_when_their_watch_is_canceled() -> None:
    c = SimCluster([1, 2], history_limit=5)
    member = c.members[2]
    watch_id = member._watch_id
    assert watch_id is not None
    member.handle(WatchCanceled(watch_id, StoreError.COMPACTED), c.now_ms)
    assert not member.synced
    c.pump()
    assert member.synced and member._watch_id != watch_id
    c.any_member().create_topic("t", 1, 2, c.now_ms)
    c.pump()
    assert dict(member.metadata.partitions_of("t")) == dict(c.view().partitions_of("t"))


def test_shuffled_delivery_still_converges() -> None:
    for seed in range(5):
        c = SimCluster([1, 2, 3, 4], seed=seed, reorder=True)
        c.any_member().create_topic("t", 4, 3, c.now_ms)
        c.pump()
        c.kill(c.controllers()[0])
        c.advance(FAST.session_timeout_ms * 2)
        view = c.view()
        assert len(c.controllers()) == 1
        assert all(s.leader != NO_LEADER for _, s in view.partitions_of("t"))
        for m in c.members.values():
            assert m.metadata.revision == view.revision


def test_lost_keepalives_end_the_session() -> None:
    store = MemoryStore()
    member = ClusterMember(BrokerInfo(1, "h", 1), config=FAST, rng=random.Random(0), now_ms=0)
    for command in member.take_commands():
        store.submit("m", command)
    member.handle_all(store.drain("m"), 0)
    lease = member.lease_id
    assert lease is not None
    # the store loses the lease (e.g. a keep-alive that never arrived): the next one is refused
    store.tick(FAST.session_timeout_ms)
    member.handle_all(store.drain("m"), FAST.session_timeout_ms - 1)
    assert member.lease_id != lease
    assert any(isinstance(c, GrantLease) for c in member.take_commands())


def test_an_unanswered_request_is_reported_as_unknown() -> None:
    store = MemoryStore()
    member = ClusterMember(BrokerInfo(1, "h", 1), config=FAST, rng=random.Random(0), now_ms=0)
    for _ in range(5):
        for command in member.take_commands():
            store.submit("m", command)
        member.handle_all(store.drain("m"), 0)
    rid = member.create_topic("t", 1, 1, 0)
    member.take_commands()  # lost on the way
    member.tick(FAST.request_timeout_ms)
    (result,) = member.take_results()
    assert result == CommandResult(rid, False, error=StoreError.UNAVAILABLE)


def test_a_foreign_registration_is_never_overwritten() -> None:
    c = SimCluster([1], start=False)
    c.store.submit("squatter", Put(1, "/ackly/brokers/2", BrokerInfo(2, "other", 1).encode()))
    c.start(1)
    c.start(2)
    c.advance(5_000)
    assert c.view().brokers[2].host == "other"
    assert c.members[2].registration() is None and not c.members[2].is_controller(c.now_ms)


def test_an_unregistered_session_cannot_change_an_isr() -> None:
    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", 1, 3, c.now_ms)
    c.pump()
    state = c.view().partition(TP)
    assert state is not None
    leader = c.members[state.leader]
    c.paused.add(state.leader)
    c.advance(FAST.session_timeout_ms + 1_000)  # the paused leader's session is over
    leader.tick(c.now_ms)  # it notices, before it has registered again
    decision = leader.alter_partition(
        AlterPartitionRequest(TP, state.leader, state.leader_epoch, state.partition_epoch, (state.leader,)),
        c.now_ms,
    )
    assert decision.error == ErrorCode.stale_broker_epoch and not leader.isr_change_pending(TP)
