"""The fetch session cache (KIP-227) against a model of its fetchers.

Fetchers (two followers and a consumer) fetch a few partitions whose HW moves, as Kafka's
FetchSessionHandler does: a full fetch opens a session, later fetches name only the partitions
whose parameters changed and forget those no longer wanted, and a session error starts over
with a full fetch. The cache is small, so sessions are evicted. Properties: whatever the
eviction, every fetcher that got an answer knows the true HW of every partition it fetches
(an incremental answer leaves out only what the fetcher already knows); a replayed epoch is
refused; the cache never holds more than its slots; ids are unique and non-zero; a consumer's
session never evicts a follower's in use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ackly.errors import ErrorCode
from ackly.replication.fetch_sessions import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    CachedPartition,
    FetchSessionCache,
    PartitionKey,
    new_context,
    next_epoch,
)

TOPIC = "t"
PARTITIONS = range(5)
SLOTS = 2
EVICTION_MS = 1_000


@dataclass
class Fetcher:
    replica_id: int  # -1: a consumer
    session_id: int = INVALID_SESSION_ID
    epoch: int = INITIAL_EPOCH
    holds: dict[PartitionKey, int] = field(default_factory=dict)  # what the session holds
    wanted: dict[PartitionKey, int] = field(default_factory=lambda: {(TOPIC, 0): 0})
    known_hw: dict[PartitionKey, int] = field(default_factory=dict)


def _request(offsets: dict[PartitionKey, int]) -> dict[PartitionKey, CachedPartition]:
    return {k: CachedPartition(fetch_offset=o, partition_max_bytes=1024) for k, o in offsets.items()}


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now_ms = 0
        self.cache = FetchSessionCache(SLOTS, random.Random(7), eviction_ms=EVICTION_MS)
        self.hw = {(TOPIC, p): 0 for p in PARTITIONS}
        self.fetchers = [Fetcher(1), Fetcher(2), Fetcher(-1)]

    @rule(ms=st.integers(0, 2 * EVICTION_MS))
    def time_passes(self, ms: int) -> None:
        self.now_ms += ms

    @rule(p=st.sampled_from(PARTITIONS), by=st.integers(1, 3))
    def append(self, p: int, by: int) -> None:
        self.hw[(TOPIC, p)] += by

    @rule(i=st.integers(0, 2), p=st.sampled_from(PARTITIONS), offset=st.integers(0, 5), drop=st.booleans())
    def change_wanted(self, i: int, p: int, offset: int, drop: bool) -> None:
        f = self.fetchers[i]
        if drop and len(f.wanted) > 1:
            # What the fetcher was told stays true: a partition it names again before its next
            # fetch is still in the session, unchanged, and is not answered again until it
            # moves (Kafka's FetchSessionHandler sends no change for it either).
            f.wanted.pop((TOPIC, p), None)
        else:
            f.wanted[(TOPIC, p)] = offset

    @rule(i=st.integers(0, 2))
    def fetch(self, i: int) -> None:
        f = self.fetchers[i]
        full = f.session_id == INVALID_SESSION_ID or f.epoch == INITIAL_EPOCH
        named = f.wanted if full else {k: o for k, o in f.wanted.items() if f.holds.get(k) != o}
        forgotten = [] if full else [k for k in f.holds if k not in f.wanted]
        followers_before = {  # those in use: a stale session goes to anyone (Kafka's tryEvict)
            s for s in self._live_ids()
            if self.cache.get(s).privileged  # type: ignore[union-attr]
            and self.now_ms - self.cache.get(s).last_used_ms < EVICTION_MS  # type: ignore[union-attr]
        }
        ctx = new_context(self.cache, f.session_id, INITIAL_EPOCH if full else f.epoch, f.replica_id,
                          _request(named), forgotten, self.now_ms)
        if f.replica_id < 0:
            assert followers_before <= set(self._live_ids()), "a consumer evicted a follower's session"
        if ctx.error != ErrorCode.none:
            assert not full
            if ctx.error == ErrorCode.fetch_session_id_not_found:
                assert self.cache.get(f.session_id) is None or self.cache.get(f.session_id).owner != f.replica_id  # type: ignore[union-attr]
                f.session_id = INVALID_SESSION_ID
            f.epoch, f.holds = INITIAL_EPOCH, {}
            return
        covered = ctx.session.partitions if ctx.incremental and ctx.session is not None else _request(f.wanted)
        assert set(covered) == set(f.wanted), "the session covers exactly what the fetcher wants"
        for key in covered:
            hw = self.hw[key]
            if ctx.include(key, False, False, hw, hw, 0):
                f.known_hw[key] = hw
        if full:
            f.session_id = ctx.session_id
            f.epoch = INITIAL_EPOCH if ctx.session_id == INVALID_SESSION_ID else 1
        else:
            assert ctx.session_id == f.session_id
            f.epoch = next_epoch(f.epoch)
        f.holds = dict(f.wanted) if f.epoch != INITIAL_EPOCH else {}
        for key in f.wanted:
            assert f.known_hw.get(key) == self.hw[key], f"{key}: the fetcher missed an HW change"

    @precondition(lambda self: any(f.epoch > 1 for f in self.fetchers))
    @rule(i=st.integers(0, 2))
    def replay_an_epoch(self, i: int) -> None:
        f = self.fetchers[i]
        if f.epoch <= 1:
            return
        ctx = new_context(self.cache, f.session_id, f.epoch - 1, f.replica_id, {}, [], self.now_ms)
        assert ctx.error in (ErrorCode.invalid_fetch_session_epoch, ErrorCode.fetch_session_id_not_found)

    @rule(i=st.integers(0, 2))
    def close(self, i: int) -> None:
        f = self.fetchers[i]
        ctx = new_context(self.cache, f.session_id, FINAL_EPOCH, f.replica_id, _request(f.wanted), [],
                          self.now_ms)
        assert ctx.session is None and ctx.error == ErrorCode.none
        if f.session_id != INVALID_SESSION_ID:
            assert self.cache.get(f.session_id) is None or self.cache.get(f.session_id).owner != f.replica_id  # type: ignore[union-attr]
        f.session_id, f.epoch, f.holds = INVALID_SESSION_ID, INITIAL_EPOCH, {}

    def _live_ids(self) -> list[int]:
        return [f.session_id for f in self.fetchers if self.cache.get(f.session_id) is not None]

    @invariant()
    def bounded_and_unique(self) -> None:
        assert len(self.cache) <= SLOTS
        ids = [s for s in self._live_ids() if s != INVALID_SESSION_ID]
        assert len(ids) == len(set(ids))
        assert self.cache.get(INVALID_SESSION_ID) is None


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


def test_a_stale_session_is_evicted_for_a_new_one() -> None:
    cache = FetchSessionCache(1, random.Random(1), eviction_ms=100)
    old = cache.create(False, -1, {}, now_ms=0)
    assert old is not None
    assert cache.create(False, -1, {}, now_ms=50) is None, "the cache is full and its session is fresh"
    new = cache.create(False, -1, {}, now_ms=100)
    assert new is not None and cache.get(old.session_id) is None and cache.evictions == 1


def test_a_follower_evicts_a_busy_consumer_session_only_once_it_has_aged() -> None:
    cache = FetchSessionCache(1, random.Random(1), eviction_ms=100)
    consumer = cache.create(False, -1, {(TOPIC, 0): CachedPartition(0)}, now_ms=0)
    assert consumer is not None
    consumer.last_used_ms = 99
    assert cache.create(True, 1, {}, now_ms=99) is None, "a session is protected while young"
    follower = cache.create(True, 1, {}, now_ms=120)
    assert follower is not None and cache.get(consumer.session_id) is None
    follower.last_used_ms = 300
    # A consumer's session, however large, never evicts a follower's.
    assert cache.create(False, -1, {(TOPIC, p): CachedPartition(0) for p in PARTITIONS}, now_ms=300) is None


def test_incremental_errors() -> None:
    cache = FetchSessionCache(10, random.Random(1))
    ctx = new_context(cache, 0, INITIAL_EPOCH, 1, _request({(TOPIC, 0): 0}), [], 0)
    assert ctx.session is not None and not ctx.incremental
    sid = ctx.session_id
    assert new_context(cache, sid, 2, 1, {}, [], 0).error == ErrorCode.invalid_fetch_session_epoch
    assert new_context(cache, sid, 1, 2, {}, [], 0).error == ErrorCode.fetch_session_id_not_found, \
        "another replica cannot use the session"
    assert new_context(cache, sid, -2, 1, {}, [], 0).error == ErrorCode.invalid_fetch_session_epoch
    ok = new_context(cache, sid, 1, 1, {}, [], 0)
    assert ok.incremental and ok.session_id == sid and ok.session is not None and ok.session.epoch == 2
    assert next_epoch(2**31 - 1) == 1
