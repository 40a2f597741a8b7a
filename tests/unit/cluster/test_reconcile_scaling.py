"""The controller looks again only at what changed: an ISR change of one partition out of
thousands costs one election, not one per partition (the controller ran every partition's
election after every change of the view: O(N) per ISR change, O(N^2) for a broker's restart)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.cluster import controller
from ackly.cluster.controller import ControllerPolicy, reconcile, reconcile_scope
from ackly.cluster.metadata import BrokerInfo, ClusterMetadata, KeySpace, PartitionState, TopicInfo
from ackly.cluster.store import KeyValue, WatchEvent
from ackly.types import TopicPartition

TOPIC_ID = uuid.UUID(int=7)
KEYS = KeySpace()
POLICY = ControllerPolicy()


def state(isr: tuple[int, ...], epoch: int = 0, leader: int | None = None) -> PartitionState:
    return PartitionState(TOPIC_ID, (1, 2, 3), isr, isr[0] if leader is None else leader,
                          leader_epoch=epoch, partition_epoch=epoch)


def view(partitions: int) -> ClusterMetadata:
    topic = TopicInfo("t", TOPIC_ID, tuple((1, 2, 3) for _ in range(partitions)))
    kvs = [KeyValue(KEYS.topic("t"), topic.encode(), 2, 2, 1)]
    kvs += [KeyValue(KEYS.broker(b), BrokerInfo(b, "h", 9000 + b).encode(), 1, 1, 1) for b in (1, 2, 3)]
    kvs += [KeyValue(KEYS.partition(TopicPartition("t", i)), state((1, 2, 3)).encode(), 3, 3, 1)
            for i in range(partitions)]
    return ClusterMetadata.from_kvs(kvs, 3, KEYS)


def set_partition(before: ClusterMetadata, index: int, new: PartitionState, revision: int) -> ClusterMetadata:
    key = KEYS.partition(TopicPartition("t", index))
    return before.apply([WatchEvent(1, key, new.encode(), revision, 3)])


def elections(monkeypatch: pytest.MonkeyPatch, partitions: int, changes: int) -> int:
    """elect() calls of a controller that reconciles after each of `changes` ISR changes."""
    calls = [0]
    original = controller.elect

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(controller, "elect", counted)
    current = view(partitions)
    for i in range(changes):
        after = set_partition(current, i, state((1, 2), 1), 4 + i)
        scope = reconcile_scope(current, after)
        assert scope == {TopicPartition("t", i)}
        reconcile(after, POLICY, scope)
        current = after
    return calls[0]


def test_an_isr_change_costs_one_election(monkeypatch: pytest.MonkeyPatch) -> None:
    assert elections(monkeypatch, 100, 50) == elections(monkeypatch, 2_000, 50) == 50


def test_a_broker_change_looks_at_everything() -> None:
    before = view(10)
    after = before.apply([WatchEvent(1, KEYS.broker(3), None, 10, 1)])
    assert reconcile_scope(before, after) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from([(1,), (1, 2), (2, 3), (3,)]),
                          st.integers(0, 3)), min_size=1, max_size=6))
def test_the_scoped_decisions_are_the_full_ones(steps: list[tuple[int, tuple[int, ...], int]]) -> None:
    """Outside the scope nothing can decide differently; inside it, the same decisions."""
    old = view(8)
    lineage = [old]  # a view knows its parent weakly: the member keeps what it needs alive
    for revision, (index, isr, leader_pick) in enumerate(steps, start=10):
        lineage.append(set_partition(lineage[-1], index, state(isr, revision, isr[leader_pick % len(isr)]),
                                     revision))
    new = lineage[-1]
    scope = reconcile_scope(old, new)
    assert scope is not None
    full_old = {d.tp: d for d in reconcile(old, POLICY)}
    full_new = {d.tp: d for d in reconcile(new, POLICY)}
    for i in range(8):
        tp = TopicPartition("t", i)
        if tp not in scope:
            assert full_old.get(tp) == full_new.get(tp)
    assert {d.tp: d for d in reconcile(new, POLICY, scope)} == {
        tp: d for tp, d in full_new.items() if tp in scope
    }


def member_elections(monkeypatch: pytest.MonkeyPatch, partitions: int) -> int:
    """elect() calls while the leaders add a restarted broker back to each partition's ISR,
    one AlterPartition at a time, in a 3-broker cluster (the controller's member runs)."""
    from ackly.cluster.controller import AlterPartitionRequest

    from .harness import FAST, SimCluster

    c = SimCluster([1, 2, 3])
    c.any_member().create_topic("t", partitions, 3, c.now_ms)
    c.pump()
    c.kill(3)
    c.advance(FAST.session_timeout_ms + 500)
    c.start(3)
    c.advance(1_000)
    calls = [0]
    original = controller.elect

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(controller, "elect", counted)
    expanded = 0
    for i in range(partitions):
        tp = TopicPartition("t", i)
        state = c.view().partition(tp)
        assert state is not None and 3 not in state.isr
        decision = c.members[state.leader].alter_partition(
            AlterPartitionRequest(tp, state.leader, state.leader_epoch, state.partition_epoch,
                                  tuple(sorted({*state.isr, 3}))),
            c.now_ms,
        )
        assert decision.accepted
        c.pump()
        now = c.view().partition(tp)
        expanded += now is not None and 3 in now.isr
    assert expanded == partitions
    monkeypatch.undo()
    return calls[0]


def test_a_broker_rejoining_every_isr_costs_elections_linear_in_the_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small, big = member_elections(monkeypatch, 10), member_elections(monkeypatch, 40)
    # Each expansion looks at its own partition (and a preferred-leader move after it): with
    # every partition's election after every change, 4x the partitions made 16x the calls.
    assert big <= 5 * small, (small, big)
