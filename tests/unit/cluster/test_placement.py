"""Replica placement: distinct live brokers, leaders spread evenly, racks spread, clear refusals."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.cluster.metadata import BrokerInfo
from ackly.cluster.placement import PlacementError, assignment_problem, place_replicas
from ackly.errors import ErrorCode


def brokers(ids: list[int], racks: list[str | None] | None = None) -> list[BrokerInfo]:
    racks = racks or [None] * len(ids)
    return [BrokerInfo(b, "h", 9000 + b, rack) for b, rack in zip(ids, racks, strict=True)]


@given(
    st.lists(st.integers(0, 100), min_size=1, max_size=9, unique=True),
    st.integers(1, 40),
    st.data(),
    st.integers(0, 2**32),
)
def test_every_partition_gets_distinct_live_brokers_and_leaders_are_balanced(
    ids: list[int], partitions: int, data: st.DataObject, seed: int
) -> None:
    rf = data.draw(st.integers(1, len(ids)))
    assignment = place_replicas(brokers(ids), partitions, rf, random.Random(seed))
    assert len(assignment) == partitions
    for replicas in assignment:
        assert len(replicas) == rf and len(set(replicas)) == rf and set(replicas) <= set(ids)
    leaders = Counter(r[0] for r in assignment)
    counts = [leaders.get(b, 0) for b in ids]
    assert max(counts) - min(counts) <= 1
    replicas_per_broker = Counter(b for r in assignment for b in r)
    # every broker holds about its share of replicas
    share = partitions * rf / len(ids)
    assert all(abs(replicas_per_broker.get(b, 0) - share) <= rf + 1 for b in ids)


@given(st.integers(2, 4), st.integers(1, 4), st.integers(1, 30), st.integers(0, 2**32))
def test_replicas_span_racks(racks: int, per_rack: int, partitions: int, seed: int) -> None:
    ids = list(range(racks * per_rack))
    rack_of = {b: f"rack-{b % racks}" for b in ids}
    rf = min(racks, len(ids))
    assignment = place_replicas(
        brokers(ids, [rack_of[b] for b in ids]), partitions, rf, random.Random(seed)
    )
    for replicas in assignment:
        assert len({rack_of[b] for b in replicas}) == rf
    leader_racks = Counter(rack_of[r[0]] for r in assignment)
    assert max(leader_racks.values()) - min(leader_racks.get(f"rack-{i}", 0) for i in range(racks)) <= 1


def test_more_replicas_than_racks_uses_every_rack_first() -> None:
    ids = [1, 2, 3, 4]
    racks: list[str | None] = ["a", "a", "b", "b"]
    rack_of = dict(zip(ids, racks, strict=True))
    for replicas in place_replicas(brokers(ids, racks), 8, 3, random.Random(1)):
        assert {rack_of[b] for b in replicas[:2]} == {"a", "b"}


def test_placement_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    b = brokers([1, 2, 3, 4, 5])
    assert place_replicas(b, 10, 3, random.Random(5)) == place_replicas(b, 10, 3, random.Random(5))
    results = {tuple(place_replicas(b, 10, 3, random.Random(s))) for s in range(20)}
    assert len(results) > 1


def test_new_partitions_continue_the_leader_rotation() -> None:
    b = brokers([1, 2, 3])
    first = place_replicas(b, 3, 2, random.Random(9))
    more = place_replicas(b, 3, 2, random.Random(9), first_partition=3)
    assert [r[0] for r in more] == [r[0] for r in first]  # same start: partition p and p+3 share a leader


def test_refusals_say_why() -> None:
    too_many = r"replication factor 4 is larger than the number of live brokers \(3: 1, 2, 3\)"
    with pytest.raises(PlacementError, match=too_many) as e:
        place_replicas(brokers([1, 2, 3]), 1, 4, random.Random())
    assert e.value.code == ErrorCode.invalid_replication_factor
    with pytest.raises(PlacementError) as e:
        place_replicas(brokers([]), 1, 1, random.Random())
    assert "none" in str(e.value)
    with pytest.raises(PlacementError) as e:
        place_replicas(brokers([1]), 0, 1, random.Random())
    assert e.value.code == ErrorCode.invalid_partitions
    with pytest.raises(PlacementError) as e:
        place_replicas(brokers([1]), 1, 0, random.Random())
    assert e.value.code == ErrorCode.invalid_replication_factor


def test_explicit_assignments_are_checked() -> None:
    assert assignment_problem([(1, 2), (2, 3)], {1, 2, 3}) is None
    assert "same number" in (assignment_problem([(1, 2), (2,)], {1, 2}) or "")
    assert "twice" in (assignment_problem([(1, 1)], {1}) or "")
    assert "not live" in (assignment_problem([(1, 9)], {1}) or "")
    assert "no partitions" in (assignment_problem([], {1}) or "")
