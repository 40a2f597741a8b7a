"""Followers' fetch sessions (KIP-227) across BrokerNodes on a virtual clock: once replication
is idle, a follower's fetches name no partition; an append is fetched by naming only what
moved; the ISR stays whole on fetches that name nothing; a leader that lost its sessions is
answered with a full fetch and replication goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ackly.errors import ErrorCode

from .core_cluster import CoreCluster, batch, log_bytes
from .test_cluster_core import create, produce, result

PARTITIONS = 6


def _record_fetches(c: CoreCluster) -> list[tuple[int, Any]]:
    """(sender, request) of every follower fetch from now on."""
    seen: list[tuple[int, Any]] = []
    send = c._send

    def spy(src: Any, request: Any) -> None:
        if int(request.request.__api_key__) == 1:
            seen.append((src.broker_id, request.request))
        send(src, request)

    c._send = spy  # type: ignore[method-assign]
    return seen


def _named(request: Any) -> int:
    return sum(len(t.partitions) for t in request.topics)


def test_idle_followers_name_no_partition_and_appends_still_replicate(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    assert create(c, 1, "t", partitions=PARTITIONS).topics[0].error_code == ErrorCode.none
    c.settle(1_000)
    fetches = _record_fetches(c)
    c.advance(3_000)  # longer than replica.lag.time.max.ms (2 s in this harness)
    assert fetches, "followers keep fetching"
    assert all(int(r.session_id) != 0 and int(r.session_epoch) > 0 for _, r in fetches)
    assert all(_named(r) == 0 and not r.forgotten_topics_data for _, r in fetches), \
        "an idle follower names no partition"
    for p in range(PARTITIONS):
        assert c.state("t", p).isr == (1, 2, 3), "fetches naming nothing keep the followers in sync"

    leader = c.leader("t", 2)
    fetches.clear()
    assert result(c.wait(produce(c, leader, "t", batch(b"x"), partition=2))) == (ErrorCode.none, 0)
    c.settle(1_000)
    assert max(_named(r) for _, r in fetches) == 1, "only the partition that moved is named"
    for b in (1, 2, 3):
        assert c.node(b).partition("t", 2).high_watermark == 1
        assert log_bytes(c.node(b), "t", 2) == log_bytes(c.node(leader), "t", 2)


def test_a_leader_that_lost_its_sessions_gets_a_full_fetch(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", partitions=PARTITIONS)
    c.settle(1_000)
    leader = c.leader("t", 0)
    sessions = c.node(leader).fetch_sessions
    for session_id in sessions.session_ids():
        sessions.remove(session_id)
    fetches = _record_fetches(c)
    reply = produce(c, leader, "t", batch(b"after"), partition=0)
    assert result(c.wait(reply)) == (ErrorCode.none, 0), "acks=all completes once followers re-open"
    c.settle(1_000)
    to_leader = [r for _, r in fetches if _named(r) and int(r.session_epoch) == 0]
    assert to_leader, "a full fetch (epoch 0) opened a new session"
    assert len(sessions) == 2
    for b in (1, 2, 3):
        assert log_bytes(c.node(b), "t", 0) == log_bytes(c.node(leader), "t", 0)


def test_an_epoch_mismatch_closes_the_session_and_opens_a_new_one(tmp_path: Path) -> None:
    c = CoreCluster(tmp_path, [1, 2, 3])
    create(c, 1, "t", partitions=PARTITIONS)
    c.settle(1_000)
    leader = c.leader("t", 0)
    sessions = c.node(leader).fetch_sessions
    before = set(sessions.session_ids())
    for session_id in before:
        session = sessions.get(session_id)
        assert session is not None
        session.epoch += 7  # as if fetches had been lost between them
    fetches = _record_fetches(c)
    assert result(c.wait(produce(c, leader, "t", batch(b"v"), partition=0))) == (ErrorCode.none, 0)
    c.settle(1_000)
    reopened = [r for _, r in fetches if int(r.session_epoch) == 0 and int(r.session_id) in before]
    assert reopened, "the follower closed its session by id with a full fetch"
    assert len(sessions) == 2 and not set(sessions.session_ids()) & before, "old sessions closed"
    for b in (1, 2, 3):
        assert log_bytes(c.node(b), "t", 0) == log_bytes(c.node(leader), "t", 0)
