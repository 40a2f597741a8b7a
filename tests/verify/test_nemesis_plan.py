"""The nemesis's schedule is a pure function of its seed and the run's shape (`--seed` replays it)."""

from __future__ import annotations

import pytest

from ackly.verify.nemesis import FAULT_KINDS, MIN_WINDOW_S, base_kind, parse_faults, plan
from ackly.verify.settings import parse_assignments, preset, with_overrides


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    kinds = ("kill", "partition", "pause", "drop-leader")
    first = plan(42, kinds, 60.0, 3, 4)
    assert first == plan(42, kinds, 60.0, 3, 4)
    assert first != plan(43, kinds, 60.0, 3, 4)
    assert len(first) >= 3


@pytest.mark.parametrize("seed", range(30))
def test_windows_fit_the_run_and_never_overlap(seed: int) -> None:
    duration_s = 20.0
    events = plan(seed, FAULT_KINDS, duration_s, 3, 3, heal_share=0.25)
    assert events, "a run with faults gets at least one window"
    end = 0.0
    for e in events:
        assert e.start_s >= end, "one fault at a time"
        assert e.start_s + e.duration_s <= duration_s * 0.75 + 1e-9 or e is events[0]
        assert e.duration_s >= min(MIN_WINDOW_S.get(base_kind(e.kind), 1.5), duration_s * 0.75 - e.start_s)
        if e.kind.endswith("-leader"):
            assert e.target.startswith("leader:")
        what, _, number = e.target.partition(":")
        assert what in ("leader", "broker") and 0 <= int(number) < 3
        end = e.start_s + e.duration_s


def test_no_faults_no_schedule_and_unknown_faults_refused() -> None:
    assert plan(1, (), 30.0, 3, 3) == []
    assert parse_faults("none") == ()
    assert parse_faults("kill,pause-leader") == ("kill", "pause-leader")
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("kill,meteor")


def test_set_routes_each_key_to_producer_consumer_or_topic() -> None:
    s = with_overrides(preset("at-least-once"), parse_assignments(
        ["acks=1", "unclean.leader.election.enable=true", "isolation.level=read_committed",
         "producer.linger.ms=5", "flush.policy=never", "offset.commit=before"]))
    assert s.producer["acks"] == "1" and s.producer["linger.ms"] == "5"
    assert s.topic["unclean.leader.election.enable"] == "true" and s.topic["flush.policy"] == "never"
    assert s.consumer["isolation.level"] == "read_committed"
    assert s.offset_commit == "before"
    with pytest.raises(ValueError):
        parse_assignments(["acks"])


def test_lose_unflushed_is_a_known_process_fault_the_plan_schedules() -> None:
    from ackly.verify.nemesis import PROCESS_FAULTS, UNDO

    assert parse_faults("lose-unflushed,lose-unflushed-leader") == ("lose-unflushed", "lose-unflushed-leader")
    assert "lose-unflushed" in PROCESS_FAULTS and UNDO["lose-unflushed"] == "restart"
    events = plan(5, ("lose-unflushed", "lose-unflushed-leader"), 12.0, 1, 2)
    assert events and events == plan(5, ("lose-unflushed", "lose-unflushed-leader"), 12.0, 1, 2)
    assert {e.kind for e in events} <= {"lose-unflushed", "lose-unflushed-leader"}
    assert all(e.target.startswith("leader:") for e in events if e.kind == "lose-unflushed-leader")
