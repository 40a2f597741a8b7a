"""The KIP-848 consumer group in the coordinator core: joins, reconciliation without a
stop-the-world, leaves, static members, fencing, assignors, offsets, and the records that a
reload replays."""

from __future__ import annotations

from ackly.coordinator.assignors import range_assign, uniform_assign
from ackly.coordinator.consumer_group import ConsumerGroupState, MemberState
from ackly.coordinator.group_manager import CommitPartition
from ackly.errors import ErrorCode

from .consumer_helpers import GROUP, Consumer, heartbeat, owned_by, topic_id, view
from .helpers import Box, Harness

E = ErrorCode
T = view({"t": 6})
TID = topic_id("t")


def converge(h: Harness, consumers: list[Consumer], rounds: int = 6) -> None:
    for _ in range(rounds):
        for c in consumers:
            heartbeat(h, c, T)
            owned_by(consumers)
            h.check()


def test_two_members_split_the_partitions_and_a_third_joins_without_stopping_them() -> None:
    h = Harness()
    a, b = Consumer("a", ("t",)), Consumer("b", ("t",))
    first = heartbeat(h, a, T)
    assert first.error is E.none and first.member_epoch == 1
    assert first.assignment == {TID: frozenset(range(6))}
    converge(h, [a, b])
    assert sorted(len(c.owned[TID]) for c in (a, b)) == [3, 3]
    before = {c.member_id: set(c.owned[TID]) for c in (a, b)}
    c = Consumer("c", ("t",))
    heartbeat(h, c, T)
    assert c.owned == {}  # everything is still owned by a and b
    # a and b give up one partition each, and keep the others the whole time.
    for _ in range(6):
        for m in (a, b, c):
            heartbeat(h, m, T)
            owned_by([a, b, c])
            for old in (a, b):
                kept = set(old.owned.get(TID, ()))
                assert len(before[old.member_id] - kept) <= 1
    assert sorted(len(m.owned[TID]) for m in (a, b, c)) == [2, 2, 2]
    group = h.shard(GROUP).consumer_groups[GROUP]
    assert group.state is ConsumerGroupState.STABLE
    assert {m.member_epoch for m in group.members.values()} == {group.group_epoch}


def test_leave_hands_the_partitions_to_the_others() -> None:
    h = Harness()
    a, b = Consumer("a", ("t",)), Consumer("b", ("t",))
    converge(h, [a, b])
    left = heartbeat(h, a, T, epoch=-1)
    assert left.member_epoch == -1
    converge(h, [b], rounds=2)
    assert b.owned == {TID: frozenset(range(6))}
    assert list(h.shard(GROUP).consumer_groups[GROUP].members) == ["b"]


def test_fencing_errors() -> None:
    h = Harness()
    a = Consumer("a", ("t",))
    heartbeat(h, a, T)
    assert heartbeat(h, Consumer("zz", ("t",), epoch=3), T).error is E.unknown_member_id
    a.epoch += 5
    assert heartbeat(h, a, T).error is E.fenced_member_epoch
    # The fenced client rejoins with epoch 0 under its id.
    assert heartbeat(h, a, T).error is E.none and a.epoch > 0
    assert heartbeat(h, Consumer("b", ("t",), assignor="nope"), T).error is E.unsupported_assignor


def test_session_timeout_removes_a_silent_member() -> None:
    h = Harness()
    a, b = Consumer("a", ("t",)), Consumer("b", ("t",))
    converge(h, [a, b])
    for _ in range(50):
        h.advance(1_000)
        heartbeat(h, b, T)
    assert list(h.shard(GROUP).consumer_groups[GROUP].members) == ["b"]
    assert b.owned == {TID: frozenset(range(6))}
    assert heartbeat(h, a, T).error is E.unknown_member_id


def test_static_member_comes_back_under_a_new_id_with_its_partitions() -> None:
    h = Harness()
    a, b = Consumer("a", ("t",), instance_id="i-a"), Consumer("b", ("t",))
    converge(h, [a, b])
    owned = a.owned
    epoch = h.shard(GROUP).consumer_groups[GROUP].group_epoch
    assert heartbeat(h, a, T, epoch=-2).member_epoch == -2
    # Still in the group: another member id with the instance id is refused meanwhile?
    # No: epoch -2 released it; a new process rejoins.
    a2 = Consumer("a2", ("t",), instance_id="i-a")
    assert heartbeat(h, a2, T).error is E.none
    assert a2.owned == owned
    assert h.shard(GROUP).consumer_groups[GROUP].group_epoch == epoch  # no rebalance
    a3 = Consumer("a3", ("t",), instance_id="i-a")
    assert heartbeat(h, a3, T).error is E.unreleased_instance_id
    h.check()


def test_offset_commit_and_fetch_check_the_member_epoch() -> None:
    h = Harness()
    a = Consumer("a", ("t",))
    heartbeat(h, a, T)
    parts = [CommitPartition("t", 0, 42, -1, "")]

    def commit(member_id: str, epoch: int) -> ErrorCode:
        box = Box()
        h.coordinator.commit_offsets(GROUP, member_id, None, epoch, -1, parts, E.group_id_not_found,
                                     box, h.now_ms)
        h.settle()
        (code,) = box.value
        return code

    assert commit("a", a.epoch + 1) is E.stale_member_epoch
    assert commit("x", a.epoch) is E.unknown_member_id
    assert commit("", -1) is E.unknown_member_id  # the group has members
    assert commit("a", a.epoch) is E.none
    box = Box()
    h.coordinator.fetch_offsets([(GROUP, [("t", [0])])], box, h.now_ms, members={GROUP: ("a", a.epoch + 1)})
    h.settle()
    assert box.value[0].error is E.stale_member_epoch
    box = Box()
    h.coordinator.fetch_offsets([(GROUP, [("t", [0])])], box, h.now_ms, members={GROUP: ("a", a.epoch)})
    h.settle()
    assert box.value[0].topics[0][1][0][1].offset == 42


def test_reload_replays_the_group() -> None:
    h = Harness()
    a, b = Consumer("a", ("t",), instance_id="s"), Consumer("b", ("t",))
    converge(h, [a, b])
    old = h.shard(GROUP).consumer_groups[GROUP]
    h2 = h.reopened()
    new = h2.shard(GROUP).consumer_groups[GROUP]
    assert (new.group_epoch, new.assignment_epoch, new.target) == (old.group_epoch, old.assignment_epoch,
                                                                   old.target)
    for member_id, m in old.members.items():
        n = new.members[member_id]
        assert (n.member_epoch, n.assigned, n.state, n.instance_id, n.subscribed_topic_names) == (
            m.member_epoch, m.assigned, m.state, m.instance_id, m.subscribed_topic_names)
    # The members carry on against the reloaded coordinator.
    converge(h2, [a, b], rounds=1)
    assert all(m.state is MemberState.STABLE for m in new.members.values())


def test_classic_group_with_members_refuses_and_empty_groups_switch() -> None:
    h = Harness()
    join = h.join(group_id="mixed", version=3)
    h.advance(0)
    assert join.value.error is E.none
    assert heartbeat(h, Consumer("a", ("t",)), T, group_id="mixed").error is E.group_id_not_found
    # An empty consumer group may become classic, and a consumer group with members refuses
    # classic members.
    a = Consumer("a", ("t",))
    heartbeat(h, a, T, group_id="cg2")
    refused = h.join(group_id="cg2", version=3)
    h.advance(0)
    assert refused.value.error is E.inconsistent_group_protocol
    heartbeat(h, a, T, epoch=-1, group_id="cg2")
    joined = h.join(group_id="cg2", version=3)
    h.advance(0)
    assert joined.value.error is E.none
    assert "cg2" not in h.shard("cg2").consumer_groups
    h.check()
    h.reopened().check()


def test_delete_group_writes_tombstones() -> None:
    h = Harness()
    a = Consumer("a", ("t",))
    heartbeat(h, a, T)
    heartbeat(h, a, T, epoch=-1)
    box = Box()
    h.coordinator.delete_groups([GROUP], box, h.now_ms)
    h.settle()
    assert box.value == [(GROUP, E.none)]
    assert GROUP not in h.shard(GROUP).consumer_groups
    assert GROUP not in h.reopened().shard(GROUP).consumer_groups


def test_assignors() -> None:
    t, u = topic_id("t"), topic_id("u")
    subs = {"a": frozenset({t, u}), "b": frozenset({t, u})}
    ranged = range_assign(subs, {t: 3, u: 3}, {})
    assert ranged == {"a": {t: frozenset({0, 1}), u: frozenset({0, 1})}, "b": {t: frozenset({2}), u: frozenset({2})}}
    uniform = uniform_assign(subs, {t: 3, u: 3}, {})
    assert sorted(sum(len(p) for p in m.values()) for m in uniform.values()) == [3, 3]
    # Sticky: adding a member moves only what it must.
    subs3 = {**subs, "c": frozenset({t, u})}
    moved = uniform_assign(subs3, {t: 3, u: 3}, uniform)
    for m in ("a", "b"):
        kept = {(x, p) for x, ps in moved[m].items() for p in ps}
        had = {(x, p) for x, ps in uniform[m].items() for p in ps}
        assert kept <= had and len(had - kept) == 1


def test_regex_subscription_picks_up_a_new_topic() -> None:
    h = Harness()
    a = Consumer("a", (), regex="orders-.*")
    topics = view({"orders-eu": 2, "payments": 3})
    heartbeat(h, a, topics)
    assert a.owned == {topic_id("orders-eu"): frozenset({0, 1})}
    epoch = h.shard(GROUP).consumer_groups[GROUP].group_epoch
    grown = view({"orders-eu": 2, "payments": 3, "orders-us": 1, "__consumer_offsets": 3})
    heartbeat(h, a, grown)
    assert a.owned == {topic_id("orders-eu"): frozenset({0, 1}), topic_id("orders-us"): frozenset({0})}
    assert h.shard(GROUP).consumer_groups[GROUP].group_epoch == epoch + 1
    assert h.shard(GROUP).consumer_groups[GROUP].is_subscribed("orders-xx")
    h.check()


def test_invalid_and_non_re2_regexes_are_refused() -> None:
    h = Harness()
    for pattern in ("orders-(", "(?=x)orders", r"(a)\1", "[[:alpha:]]+"):
        result = heartbeat(h, Consumer("a", (), regex=pattern), T)
        assert result.error is E.invalid_regular_expression, pattern


def test_an_empty_classic_group_becomes_a_consumer_group_keeping_its_offsets() -> None:
    h = Harness()
    join = h.join(group_id="old", version=3)
    h.advance(0)
    member_id = join.value.member_id
    box = Box()
    h.coordinator.commit_offsets("old", "", None, -1, -1, [CommitPartition("t", 1, 9, -1, "")],
                                 E.group_id_not_found, box, h.now_ms)
    h.settle()
    assert box.value == [E.unknown_member_id]  # the classic group has a member
    left = Box()
    h.coordinator.leave_group("old", [(member_id, None)], left, h.now_ms)
    h.settle()
    assert left.value[0] is E.none
    h.coordinator.commit_offsets("old", "", None, -1, -1, [CommitPartition("t", 1, 9, -1, "")],
                                 E.group_id_not_found, box := Box(), h.now_ms)
    h.settle()
    assert box.value == [E.none]
    a = Consumer("a", ("t",))
    assert heartbeat(h, a, T, group_id="old").error is E.none
    shard = h.shard("old")
    assert "old" in shard.consumer_groups and "old" not in shard.groups and "old" not in shard.group_values
    for reloaded in (h, h.reopened()):
        fetched = Box()
        reloaded.coordinator.fetch_offsets([("old", [("t", [1])])], fetched, reloaded.now_ms)
        reloaded.settle()
        assert fetched.value[0].topics[0][1][0][1].offset == 9
        s = reloaded.shard("old")
        assert "old" in s.consumer_groups and "old" not in s.groups
        reloaded.check()
