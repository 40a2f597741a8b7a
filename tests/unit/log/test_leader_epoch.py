"""The leader-epoch cache (log/leader_epoch.py) and the log that keeps it aligned."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ackly.log.disk import SimDisk
from ackly.log.leader_epoch import (
    LEADER_EPOCH_FILE,
    UNDEFINED_EPOCH,
    EpochEntry,
    LeaderEpochCache,
    decode_checkpoint,
    encode_checkpoint,
    entries_from_batches,
)
from ackly.log.partition_log import PartitionLog
from ackly.protocol.records import validate_batches

from .helpers import DIR, append, batch, config


def cache_with(*entries: tuple[int, int]) -> LeaderEpochCache:
    disk = SimDisk(random.Random(0))
    disk.makedirs(DIR)
    cache = LeaderEpochCache(disk, DIR)
    for epoch, start in entries:
        cache.assign(epoch, start)
    return cache


def pairs(cache: LeaderEpochCache) -> list[tuple[int, int]]:
    return [(e.epoch, e.start_offset) for e in cache.entries]


def test_end_offset_for_matches_kafkas_cases() -> None:
    cache = cache_with((2, 6), (3, 8), (5, 11))
    leo = 15
    assert cache.end_offset_for(5, leo) == (5, leo)  # the latest epoch ends at LEO
    assert cache.end_offset_for(3, leo) == (3, 11)  # where the next epoch starts
    assert cache.end_offset_for(4, leo) == (3, 11)  # unknown epoch: the largest below it
    assert cache.end_offset_for(1, leo) == (1, 6)  # below every entry: the first start
    assert cache.end_offset_for(6, leo) == (UNDEFINED_EPOCH, -1)  # above every entry
    assert cache.end_offset_for(UNDEFINED_EPOCH, leo) == (UNDEFINED_EPOCH, -1)
    assert cache_with().end_offset_for(0, leo) == (UNDEFINED_EPOCH, -1)


def test_assign_keeps_epochs_and_offsets_increasing() -> None:
    cache = cache_with((1, 0), (2, 5))
    cache.assign(2, 7)  # same epoch, later offset: nothing new
    assert pairs(cache) == [(1, 0), (2, 5)]
    cache.assign(3, 5)  # a new epoch at the same offset replaces the empty epoch before it
    assert pairs(cache) == [(1, 0), (3, 5)]
    cache.assign(2, 9)  # an older epoch: later entries that break monotonicity go
    assert pairs(cache) == [(1, 0), (2, 9)]


def test_truncation_from_both_ends() -> None:
    cache = cache_with((0, 0), (1, 10), (4, 20), (6, 30))
    cache.truncate_from_end(20)
    assert pairs(cache) == [(0, 0), (1, 10)]
    cache.truncate_from_start(12)
    assert pairs(cache) == [(1, 12)]
    cache.truncate_from_start(5)  # below the first entry: nothing
    assert pairs(cache) == [(1, 12)]


def test_the_checkpoint_file_is_kafkas_format_and_garbage_is_refused() -> None:
    entries = [EpochEntry(0, 0), EpochEntry(3, 17)]
    data = encode_checkpoint(entries)
    assert data == b"0\n2\n0 0\n3 17\n"
    assert decode_checkpoint(data) == entries
    for garbled in (b"", b"0\n2\n0 0\n", b"1\n1\n0 0\n", b"0\n2\n3 5\n1 9\n", b"0\n1\n-1 0\n", b"0\n1\nx y\n"):
        assert decode_checkpoint(garbled) is None, garbled


@given(st.lists(st.tuples(st.integers(-1, 6), st.integers(1, 3)), max_size=20))
def test_rebuilding_from_batches_keeps_the_first_start_of_each_rising_epoch(spec: list[tuple[int, int]]) -> None:
    offset = 0
    batches = []
    for epoch, size in spec:
        batches.append((epoch, offset))
        offset += size
    entries = entries_from_batches(batches)
    assert [e.epoch for e in entries] == sorted({e.epoch for e in entries})
    for e in entries:
        assert (e.epoch, e.start_offset) in batches
        assert all(start >= e.start_offset for ep, start in batches if ep == e.epoch)


class CacheMachine(RuleBasedStateMachine):
    """Random assigns and truncations; the file always says what memory says, and entries
    stay strictly increasing in both epoch and offset."""

    def __init__(self) -> None:
        super().__init__()
        self.disk = SimDisk(random.Random(1))
        self.disk.makedirs(DIR)
        self.cache = LeaderEpochCache(self.disk, DIR)

    @rule(epoch=st.integers(0, 20), offset=st.integers(0, 200))
    def assign(self, epoch: int, offset: int) -> None:
        before = pairs(self.cache)
        self.cache.assign(epoch, offset)
        after = pairs(self.cache)
        assert after[-1][0] == epoch or (before and before[-1][0] == epoch)
        kept = [e for e in before if e[0] < epoch and e[1] < offset]
        assert after[: len(kept)] == kept

    @rule(offset=st.integers(0, 200))
    def truncate_end(self, offset: int) -> None:
        self.cache.truncate_from_end(offset)
        assert all(start < offset for _, start in pairs(self.cache))

    @precondition(lambda self: bool(self.cache.entries))
    @rule(offset=st.integers(0, 200))
    def truncate_start(self, offset: int) -> None:
        before = pairs(self.cache)
        self.cache.truncate_from_start(offset)
        after = pairs(self.cache)
        if before[0][1] < offset:
            assert after[0][1] == offset
            assert after[0][0] == max(e for e, s in before if s <= offset)

    @invariant()
    def monotonic_and_durable(self) -> None:
        entries = pairs(self.cache)
        for (e1, s1), (e2, s2) in itertools.pairwise(entries):
            assert e1 < e2 and s1 < s2
        reloaded = LeaderEpochCache(self.disk, DIR)
        reloaded.load()  # absent until the first change: then empty, as in memory
        assert pairs(reloaded) == entries


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# --- the log keeps its cache aligned -------------------------------------------------------


def open_log(disk: SimDisk) -> PartitionLog:
    return PartitionLog.open(disk, DIR, config(segment_bytes=400), 1_000)


def test_leader_appends_assign_their_epoch_and_truncation_drops_it() -> None:
    disk = SimDisk(random.Random(2))
    log = open_log(disk)
    append(log, batch(2), leader_epoch=0)
    append(log, batch(1), leader_epoch=3)
    append(log, batch(1), leader_epoch=3)
    assert pairs(log.leader_epochs) == [(0, 0), (3, 2)]
    log.truncate_to(3)
    assert pairs(log.leader_epochs) == [(0, 0), (3, 2)]
    log.truncate_to(2)
    assert pairs(log.leader_epochs) == [(0, 0)]


def test_a_follower_append_keeps_the_leaders_offsets_and_epochs() -> None:
    leader_disk, follower_disk = SimDisk(random.Random(3)), SimDisk(random.Random(4))
    leader, follower = open_log(leader_disk), open_log(follower_disk)
    _, first = append(leader, batch(3), leader_epoch=1)
    _, second = append(leader, batch(2), leader_epoch=4)
    for data in (first, second):
        follower.append_replicated(bytearray(data), validate_batches(data, 1 << 20), 2_000)
    assert follower.log_end_offset == leader.log_end_offset == 5
    assert pairs(follower.leader_epochs) == pairs(leader.leader_epochs) == [(1, 0), (4, 3)]
    assert leader.read_bytes(leader.read(0, 1 << 20, 5).ranges[0]) == \
        follower.read_bytes(follower.read(0, 1 << 20, 5).ranges[0])


def test_a_missing_or_garbled_checkpoint_is_rebuilt_from_the_log() -> None:
    disk = SimDisk(random.Random(5))
    log = open_log(disk)
    for epoch in (0, 0, 2, 2, 5):
        append(log, batch(1), leader_epoch=epoch)
    expected = pairs(log.leader_epochs)
    log.close()
    disk.write_atomic(f"{DIR}/{LEADER_EPOCH_FILE}", b"garbage")
    assert pairs(open_log(disk).leader_epochs) == expected == [(0, 0), (2, 2), (5, 4)]


def test_after_a_crash_the_cache_has_nothing_at_or_above_the_recovered_end() -> None:
    disk = SimDisk(random.Random(6))
    log = open_log(disk)
    append(log, batch(1), leader_epoch=0)
    log.flush_now()
    append(log, batch(1), leader_epoch=7)  # its epoch entry is durable, its bytes are not
    disk.crash()
    recovered = open_log(disk)
    assert recovered.log_end_offset == 1
    assert pairs(recovered.leader_epochs) == [(0, 0)]
