"""The classic group protocol, driven request by request with a virtual clock.

Each test plays one situation from Kafka's rules (docs/guarantees.md rules 24 and 25) against the
coordinator on in-memory logs, checks the group's invariants, and ends by rebuilding the
coordinator from the records and comparing what they say with the live state.
"""

from __future__ import annotations

import pytest

from ackly.coordinator.group import COMPLETING, EMPTY, PREPARING, STABLE, GroupConfig
from ackly.coordinator.group_manager import OffsetsConfig
from ackly.errors import ErrorCode

from .helpers import (
    GROUP,
    REBALANCE_MS,
    SESSION_MS,
    Box,
    Harness,
    consumer_subscription,
    durable_view,
    stable_group,
)

E = ErrorCode


def assert_replays_equal(h: Harness) -> None:
    h.check()
    again = h.reopened()
    again.check()
    assert durable_view(again) == durable_view(h)


def test_first_join_needs_a_member_id_then_forms_generation_one() -> None:
    h = Harness()
    first = h.join()
    assert first.value.error is E.member_id_required and first.value.member_id.startswith("client-")
    box = h.join(first.value.member_id)
    assert not box.done, "the join phase waits for the initial delay"
    h.advance(0)
    result = box.value
    assert (result.error, result.generation, result.leader) == (E.none, 1, result.member_id)
    assert [m.member_id for m in result.members] == [result.member_id]
    assert h.group().state is COMPLETING
    sync = h.sync(result.member_id, 1, {result.member_id: b"all"})
    assert sync.value.assignment == b"all" and h.group().state is STABLE
    assert h.heartbeat(result.member_id, 1) is E.none
    assert_replays_equal(h)


def test_join_v0_to_v3_gets_a_member_id_without_a_second_round() -> None:
    h = Harness()
    box = h.join(version=3)
    h.advance(0)
    assert box.value.error is E.none and box.value.member_id


def test_replies_wait_until_the_records_are_committed() -> None:
    h = Harness()
    (member,), generation, _ = stable_group(h, 1)
    log = h.logs[h.shard().index]
    log.auto_commit = False
    commit = h.commit(member, generation, {("t", 0): 5})
    assert not commit.done, "an offset commit is answered only once its record is committed"
    fetched = Box()  # a read must not show the uncommitted offset either
    h.coordinator.fetch_offsets([(GROUP, None)], fetched, h.now_ms)
    heartbeat = Box()  # nor may any answer overtake the records written before it
    h.coordinator.heartbeat(GROUP, member, None, generation, heartbeat, h.now_ms)
    assert not fetched.done and not heartbeat.done
    log.commit()
    h.settle()
    assert commit.value == [E.none] and heartbeat.value is E.none
    (offsets,) = fetched.value
    assert offsets.topics[0][1][0][1].offset == 5
    assert h.committed() == {("t", 0): 5}


def test_a_second_member_triggers_a_rebalance_and_heartbeats_say_so() -> None:
    h = Harness()
    (a,), gen1, _ = stable_group(h, 1)
    b_join = h.join_new(client_id="b")
    assert h.group().state is PREPARING
    assert h.heartbeat(a, gen1) is E.rebalance_in_progress
    a_join = h.join(a)
    a_result, b_result = a_join.value, b_join.value
    assert a_result.generation == b_result.generation == gen1 + 1
    assert a_result.leader == a and len(a_result.members) == 2 and b_result.members == ()
    # a stale generation is fenced
    assert h.heartbeat(a, gen1) is E.illegal_generation
    assert h.sync(a, gen1).value.error is E.illegal_generation
    follower = h.sync(b_result.member_id, gen1 + 1)
    assert not follower.done, "followers wait for the leader's assignment"
    h.sync(a, gen1 + 1, {a: b"p0", b_result.member_id: b"p1"})
    assert follower.value.assignment == b"p1"
    assert_replays_equal(h)


def test_silent_member_is_expelled_after_its_session_timeout() -> None:
    h = Harness()
    (a, b), gen, _ = stable_group(h, 2)
    h.advance(SESSION_MS - 1)
    assert h.heartbeat(a, gen) is E.none  # b stays silent
    assert b in h.group().members
    h.advance(1)
    assert b not in h.group().members
    assert h.heartbeat(a, gen) is E.rebalance_in_progress
    rejoin = h.join(a)
    assert rejoin.value.generation == gen + 1 and [m.member_id for m in rejoin.value.members] == [a]
    assert h.heartbeat(b, gen) is E.unknown_member_id
    assert_replays_equal(h)


def test_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() -> None:
    h = Harness()
    (a, b), gen, _ = stable_group(h, 2)
    a_join = h.join(a, protocols=(("range", b"changed"),))  # new metadata: rebalance
    # b keeps heartbeating (and is told to rejoin) but never does
    h.advance_heartbeating(REBALANCE_MS - 1, [(b, gen)])
    assert not a_join.done and b in h.group().members
    h.advance(1)
    assert a_join.value.generation == gen + 1 and b not in h.group().members
    assert_replays_equal(h)


def test_member_that_does_not_sync_is_dropped_and_the_group_rebalances() -> None:
    h = Harness()
    (a, b), gen, _ = stable_group(h, 2)
    a_join, b_join = h.join(a, protocols=(("range", b"x"),)), h.join(b)
    assert a_join.value.generation == b_join.value.generation == gen + 1
    leader_sync = h.sync(a, gen + 1, {a: b"1", b: b"2"})
    assert leader_sync.value.error is E.none  # b never syncs, but heartbeats
    h.advance_heartbeating(REBALANCE_MS, [(a, gen + 1), (b, gen + 1)])
    assert b not in h.group().members and h.group().state is PREPARING
    h.check()


def test_commit_fencing_stale_generation_and_unknown_member() -> None:
    h = Harness()
    (a, b), gen, _ = stable_group(h, 2)
    assert h.commit(a, gen, {("t", 0): 1}).value == [E.none]
    assert h.commit(a, gen - 1, {("t", 0): 2}).value == [E.illegal_generation]
    assert h.commit("nobody", gen, {("t", 0): 3}).value == [E.unknown_member_id]
    # group-less commits are refused while the group has members ...
    assert h.commit("", -1, {("t", 0): 4}).value == [E.unknown_member_id]
    # ... and while the next generation is being assigned
    h.join(a, protocols=(("range", b"y"),))
    h.join(b)
    assert h.group().state is COMPLETING
    assert h.commit(a, gen + 1, {("t", 0): 5}).value == [E.rebalance_in_progress]
    assert h.commit(a, gen, {("t", 0): 6}).value == [E.illegal_generation]
    assert h.committed() == {("t", 0): 1}
    assert_replays_equal(h)


def test_group_less_commits_create_a_simple_group_and_need_it_empty() -> None:
    h = Harness()
    assert h.commit("", -1, {("t", 0): 10, ("t", 1): 11}, group_id="simple").value == [E.none] * 2
    assert h.committed("simple") == {("t", 0): 10, ("t", 1): 11}
    assert h.commit("", 3, {("t", 0): 1}, group_id="missing").value == [E.illegal_generation]
    assert h.commit("m", -1, {("t", 0): 1}, group_id="missing").value == [E.unknown_member_id]
    assert_replays_equal(h)


def test_commit_metadata_is_kept_and_bounded() -> None:
    h = Harness(offsets_config=OffsetsConfig(metadata_max_bytes=5))
    assert h.commit("", -1, {("t", 0): 1}, metadata="12345").value == [E.none]
    assert h.commit("", -1, {("t", 0): 2}, metadata="123456").value == [E.offset_metadata_too_large]
    (value,) = h.shard().offsets[GROUP].values()
    assert (value.offset, value.metadata, value.leader_epoch) == (1, "12345", 7)


def test_static_member_restart_within_session_keeps_generation_and_assignment() -> None:
    h = Harness()
    a_join = h.join(instance_id="ia", client_id="a")
    b_join = h.join(instance_id="ib", client_id="b")
    h.advance(0)
    a, b = a_join.value.member_id, b_join.value.member_id
    gen = a_join.value.generation
    h.sync(a, gen, {a: b"pa", b: b"pb"})
    assert h.sync(b, gen, instance_id="ib").value.assignment == b"pb"
    # b's process dies without LeaveGroup and comes back before its session expires
    h.advance(SESSION_MS - 1)
    h.heartbeat(a, gen)
    again = h.join(instance_id="ib", client_id="b")
    result = again.value
    assert result.error is E.none and result.generation == gen, "no rebalance"
    assert result.member_id != b and result.leader == a and not result.skip_assignment
    assert h.group().state is STABLE
    assert h.sync(result.member_id, gen, instance_id="ib").value.assignment == b"pb"
    # the old process, if it were still around, is fenced everywhere
    assert h.heartbeat(b, gen, instance_id="ib") is E.fenced_instance_id
    assert h.commit(b, gen, {("t", 0): 1}, instance_id="ib").value == [E.fenced_instance_id]
    assert h.heartbeat(a, gen) is E.none, "the other member saw no rebalance"
    assert_replays_equal(h)


def test_static_leader_rejoin_skips_assignment_v9_and_names_the_old_leader_before() -> None:
    for version, skip in ((9, True), (8, False)):
        h = Harness()
        a_join = h.join(instance_id="ia", client_id="a")
        b_join = h.join(instance_id="ib", client_id="b")
        h.advance(0)
        a, b = a_join.value.member_id, b_join.value.member_id
        gen = a_join.value.generation
        h.sync(a, gen, {a: b"pa", b: b"pb"})
        result = h.join(instance_id="ia", client_id="a", version=version).value
        assert result.generation == gen
        if skip:
            assert result.skip_assignment and result.leader == result.member_id
            assert len(result.members) == 2
        else:
            assert result.leader == a and result.members == (), "believes it follows"
        assert h.sync(result.member_id, gen, {}, instance_id="ia").value.assignment == b"pa"
        assert h.group().leader_id == result.member_id


def test_duplicate_static_instance_fences_the_older_one() -> None:
    h = Harness()
    first = h.join(instance_id="same")
    h.advance(0)
    m1 = first.value.member_id
    gen = first.value.generation
    waiting_sync = h.sync(m1, gen, instance_id="same")  # leader hands in nothing yet? it is the leader
    assert waiting_sync.value.error is E.none
    second = h.join(instance_id="same", client_id="dup")
    m2 = second.value.member_id
    assert m2 != m1 and second.value.generation == gen
    assert h.heartbeat(m1, gen, instance_id="same") is E.fenced_instance_id
    assert h.sync(m1, gen, instance_id="same").value.error is E.fenced_instance_id
    assert h.heartbeat(m2, gen, instance_id="same") is E.none


def test_join_of_replaced_static_member_waiting_in_the_join_phase_is_fenced() -> None:
    h = Harness()
    (a,), gen, _ = stable_group(h, 1)
    s1 = h.join(instance_id="s", client_id="s1")  # joins: rebalance starts, s1 waits
    assert not s1.done
    s2 = h.join(instance_id="s", client_id="s2")
    assert s1.value.error is E.fenced_instance_id
    h.join(a)
    assert s2.value.error is E.none and s2.value.generation == gen + 1


def test_static_member_that_does_not_rejoin_keeps_its_place_through_the_join_phase() -> None:
    """KIP-345: a static member missing from a rebalance is not dropped when the join phase
    ends (its assignment is computed by the leader as usual); it goes if it has not synced by
    the end of the sync phase (Kafka's pending-sync expiry) or when its session ends."""
    h = Harness()
    long_session = 3 * REBALANCE_MS
    a_join = h.join(instance_id="ia")
    b_join = h.join(instance_id="ib", session_ms=long_session)
    h.advance(0)
    a, b = a_join.value.member_id, b_join.value.member_id
    gen = a_join.value.generation
    h.sync(a, gen, {a: b"pa", b: b"pb"})
    h.sync(b, gen, instance_id="ib")
    rejoin = h.join(a, instance_id="ia", protocols=(("range", b"new"),))
    h.advance(REBALANCE_MS)  # b neither heartbeats nor rejoins
    result = rejoin.value
    assert result.generation == gen + 1 and b in {m.member_id for m in result.members}
    h.sync(a, gen + 1, {a: b"pa2", b: b"pb2"}, instance_id="ia")
    assert h.group().state is STABLE
    h.advance_heartbeating(REBALANCE_MS - 1, [(a, gen + 1)])
    assert b in h.group().members and h.group().state is STABLE
    h.advance_heartbeating(2, [(a, gen + 1)])
    assert b not in h.group().members, "gone: it never synced the generation it was given"
    assert h.group().state is PREPARING
    h.check()


def test_initial_delay_waits_for_more_members_up_to_the_rebalance_timeout() -> None:
    h = Harness(config=GroupConfig(initial_rebalance_delay_ms=3_000))
    a = h.join_new(client_id="a", rebalance_ms=10_000)
    h.advance(2_000)
    b = h.join_new(client_id="b", rebalance_ms=10_000)
    h.advance(2_000)  # the delay was extended by b's arrival
    assert not a.done and not b.done
    h.advance(2_000)
    assert a.value.generation == b.value.generation == 1
    assert len(a.value.members) == 2


def test_last_member_leaving_empties_the_group_with_a_record() -> None:
    h = Harness()
    (a,), gen, _ = stable_group(h, 1)
    h.commit(a, gen, {("t", 0): 3})
    assert h.leave((a, None)) == (E.none, [E.none])
    group = h.group()
    assert group.state is EMPTY and group.generation == gen + 1 and not group.members
    assert h.leave((a, None)) == (E.none, [E.unknown_member_id])
    assert h.commit("", -1, {("t", 0): 4}).value == [E.none], "simple commits once empty"
    assert_replays_equal(h)


def test_leave_by_instance_id_and_leave_of_a_waiting_joiner() -> None:
    h = Harness()
    a_join = h.join(instance_id="ia")
    h.advance(0)
    a = a_join.value.member_id
    h.sync(a, a_join.value.generation, {a: b"x"})
    waiting = h.join_new(client_id="b")  # rebalance: b waits for a
    assert h.leave(("", "ia")) == (E.none, [E.none])
    assert waiting.value.error is E.none and waiting.value.generation == a_join.value.generation + 1
    assert h.leave(("", "nobody")) == (E.none, [E.unknown_member_id])
    assert h.leave(("x", None), group_id="no-group") == (E.none, [E.unknown_member_id])


def test_protocol_selection_and_inconsistent_protocols() -> None:
    h = Harness()
    a = h.join_new(client_id="a", protocols=(("range", b"r"), ("roundrobin", b"rr")))
    b = h.join_new(client_id="b", protocols=(("roundrobin", b"rr2"), ("range", b"r2")))
    c = h.join_new(client_id="c", protocols=(("roundrobin", b"rr3"),))
    h.advance(0)
    assert a.value.protocol_name == "roundrobin" == c.value.protocol_name
    assert {m.metadata for m in a.value.members} == {b"rr", b"rr2", b"rr3"}
    bad = h.join(client_id="d", protocols=(("sticky", b""),))
    assert bad.value.error is E.inconsistent_group_protocol
    other_type = h.join(client_id="e", protocol_type="connect", protocols=(("roundrobin", b""),))
    assert other_type.value.error is E.inconsistent_group_protocol
    assert b.value.error is E.none


def test_group_max_size() -> None:
    h = Harness(config=GroupConfig(initial_rebalance_delay_ms=0, max_size=1))
    stable_group(h, 1)
    assert h.join(client_id="two").value.error is E.group_max_size_reached


def test_offsets_of_an_empty_group_expire_after_retention_then_the_group_goes() -> None:
    retention = 60_000
    h = Harness(offsets_config=OffsetsConfig(retention_ms=retention, retention_check_interval_ms=1_000))
    (a,), gen, _ = stable_group(h, 1)
    h.commit(a, gen, {("t", 0): 1})
    h.advance_heartbeating(retention * 2, [(a, gen)])
    assert h.committed() == {("t", 0): 1}, "members present: nothing expires"
    h.leave((a, None))
    h.advance(retention - 1_000)
    assert h.committed() == {("t", 0): 1}
    h.advance(2_000)
    assert h.committed() == {}
    assert GROUP not in h.shard().groups
    assert_replays_equal(h)


def test_stable_consumer_group_expires_only_offsets_of_topics_it_does_not_read() -> None:
    retention = 60_000
    h = Harness(offsets_config=OffsetsConfig(retention_ms=retention, retention_check_interval_ms=1_000))
    protocols = (("range", consumer_subscription("kept")),)
    join = h.join_new(protocols=protocols)
    h.advance(0)
    m, gen = join.value.member_id, join.value.generation
    h.sync(m, gen, {m: b""})
    h.commit(m, gen, {("kept", 0): 1, ("old", 0): 2})
    h.commit("", -1, {("x", 0): 3}, group_id="simple", expire_timestamp_ms=h.now_ms + 5_000)
    h.advance_heartbeating(retention * 3 // 2, [(m, gen)])
    assert h.committed() == {("kept", 0): 1}
    assert h.committed("simple") == {}
    assert_replays_equal(h)


def test_delete_groups_and_offsets() -> None:
    h = Harness()
    (a,), gen, _ = stable_group(h, 1)
    h.commit(a, gen, {("t", 0): 1, ("u", 0): 2})
    box = Box()
    h.coordinator.delete_groups([GROUP, "none"], box, h.now_ms)
    assert box.value == [(GROUP, E.non_empty_group), ("none", E.group_id_not_found)]
    h.leave((a, None))
    box = type(box)()
    h.coordinator.delete_offsets(GROUP, [("t", 0)], box, h.now_ms)
    assert box.value == (E.none, [E.none])
    assert h.committed() == {("u", 0): 2}
    box = type(box)()
    h.coordinator.delete_groups([GROUP], box, h.now_ms)
    assert box.value == [(GROUP, E.none)]
    assert h.committed() == {} and GROUP not in h.shard().groups
    assert_replays_equal(h)


def test_offset_delete_refuses_subscribed_topics_of_a_live_consumer_group() -> None:
    h = Harness()
    join = h.join_new(protocols=(("range", consumer_subscription("t")),))
    h.advance(0)
    m, gen = join.value.member_id, join.value.generation
    h.sync(m, gen, {m: b""})
    h.commit(m, gen, {("t", 0): 1, ("u", 0): 2})
    box = Box()
    h.coordinator.delete_offsets(GROUP, [("t", 0), ("u", 0)], box, h.now_ms)
    assert box.value == (E.none, [E.group_subscribed_to_topic, E.none])
    assert h.committed() == {("t", 0): 1}


@pytest.mark.parametrize("seed", range(3))
def test_restart_mid_rebalance_comes_back_at_the_last_stable_generation(seed: int) -> None:
    h = Harness(seed=seed)
    (a, b), gen, assignments = stable_group(h, 2)
    h.join(a, protocols=(("range", b"z"),))  # rebalance in progress, not written
    again = h.reopened()
    group = again.group()
    assert group.state is STABLE and group.generation == gen
    assert {m: group.members[m].assignment for m in group.members} == assignments
    # members that do not come back are expelled after a session; one that does, rejoins
    again.advance_heartbeating(SESSION_MS, [(a, gen)])
    assert b not in again.group().members
    assert again.join(a).value.generation == gen + 1


def test_unloading_a_shard_answers_the_requests_it_parked() -> None:
    """Leadership of the partition moved: every parked JoinGroup/SyncGroup gets
    NOT_COORDINATOR at once (each request is answered exactly once), as Kafka's onUnloaded."""
    h = Harness()
    (a, _), _, _ = stable_group(h, 2)
    a_join = h.join(a, protocols=(("range", b"other"),))  # parked: b has not rejoined
    assert not a_join.done
    h.coordinator.unload_shard(h.shard().index)
    assert a_join.value == ("failed", E.not_coordinator)
    assert not h.coordinator.here(GROUP)
