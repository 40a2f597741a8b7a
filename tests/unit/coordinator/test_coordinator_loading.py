"""Loading a coordinator shard in slices (coordinator/runtime.py): while a shard loads, its
groups and transactional ids answer COORDINATOR_LOAD_IN_PROGRESS (a Heartbeat NONE, as Kafka's
handleHeartbeat); the tick replays a slice at a time; once loaded the shard serves exactly
what a load at once would have given."""

from __future__ import annotations

import random

from ackly.coordinator.group_coordinator import GroupCoordinator, partition_for
from ackly.coordinator.group_manager import CommitPartition
from ackly.coordinator.runtime import FIRST_SLICE_RECORDS, LOAD_SLICE_RECORDS
from ackly.coordinator.transaction_state import TransactionShard
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

from .helpers import GROUP, Box, Harness, MemoryLog, Scheduler, durable_view
from .test_txn_offsets import full_view, harness, marker, txn_commit
from .txn_helpers import TxnHarness

E = ErrorCode
# More records than a first slice and than one tick's slice: the load takes several ticks.
COMMITS = FIRST_SLICE_RECORDS + 2 * LOAD_SLICE_RECORDS + 17


def _commit_many(h: Harness, group_id: str = GROUP, count: int = COMMITS) -> None:
    for i in range(count):
        box = Box()
        h.coordinator.commit_offsets(group_id, "", None, -1, -1, [CommitPartition("t", i % 7, i, -1, "")],
                                     E.illegal_generation, box, h.now_ms)
        assert box.value == [E.none]


def _loading_coordinator(h: Harness) -> GroupCoordinator:
    """A new coordinator over `h`'s logs that starts loading every shard in slices."""
    coordinator = GroupCoordinator(config=h.config, offsets_config=h.offsets_config,
                                   scheduler=h.scheduler, rng=random.Random(7), write_timeout_ms=5_000)
    coordinator.set_partition_count(len(h.logs))
    for i, log in enumerate(h.logs):
        coordinator.load_shard(i, log, h.now_ms, at_once=False)
    return coordinator


def test_a_loading_shard_answers_load_in_progress_then_serves_what_its_log_holds() -> None:
    h = Harness()
    _commit_many(h)
    expected = h.committed()
    loading = _loading_coordinator(h)
    index = partition_for(GROUP, len(h.logs))
    assert loading.runtime.is_loading(index) and not loading.here(GROUP)
    # The other shards hold nothing: their first slice loaded them at once.
    assert all(i in loading.runtime for i in range(len(h.logs)) if i != index)

    fetched = Box()
    loading.fetch_offsets([(GROUP, None)], fetched, h.now_ms)
    assert fetched.value == ("failed", E.coordinator_load_in_progress)
    committed = Box()
    loading.commit_offsets(GROUP, "", None, -1, -1, [CommitPartition("t", 0, 1, -1, "")],
                           E.illegal_generation, committed, h.now_ms)
    assert committed.value == ("failed", E.coordinator_load_in_progress)
    heartbeat = Box()
    loading.heartbeat(GROUP, "m", None, 1, heartbeat, h.now_ms)
    assert heartbeat.value == E.none, "Kafka answers a loading group's heartbeat blindly"
    listed = Box()
    loading.list_groups(listed, h.now_ms)
    assert listed.value == ("failed", E.coordinator_load_in_progress)
    # A group in a loaded shard is served meanwhile.
    other = next(g for g in (f"g{i}" for i in range(100)) if partition_for(g, len(h.logs)) != index)
    other_fetch = Box()
    loading.fetch_offsets([(other, None)], other_fetch, h.now_ms)
    assert other_fetch.value[0].error is E.none

    ticks = 0
    while loading.loading:
        assert loading.next_deadline_ms() == h.now_ms, "a loading shard asks for the next tick now"
        h.now_ms += 1
        loading.tick(h.now_ms)
        ticks += 1
        assert ticks < 100
    assert ticks >= 2, "the log took more than one slice"
    assert loading.here(GROUP)
    box = Box()
    loading.fetch_offsets([(GROUP, None)], box, h.now_ms)
    (result,) = box.value
    assert {(t, p): v.offset for t, parts in result.topics for p, v in parts} == expected
    at_once = h.reopened()
    h.coordinator = loading
    assert durable_view(h) == durable_view(at_once)


def test_a_marker_written_while_the_shard_loads_is_replayed_from_the_log() -> None:
    h = harness()
    _commit_many(h)
    assert txn_commit(h, {("t", 0): 99_999}).value == [E.none]
    loading = _loading_coordinator(h)
    index = partition_for(GROUP, len(h.logs))
    assert loading.runtime.is_loading(index)
    # The marker is appended to the partition while its shard loads; the runtime ignores the
    # live call for a loading shard and replays the marker when the load reaches it.
    h.coordinator = loading
    marker(h, committed=True)
    while loading.loading:
        h.now_ms += 1
        loading.tick(h.now_ms)
    assert h.committed()[("t", 0)] == 99_999
    assert full_view(h) == full_view(h.reopened())


def test_a_shard_unloaded_while_loading_can_be_loaded_again() -> None:
    h = Harness()
    _commit_many(h)
    expected = h.committed()
    loading = _loading_coordinator(h)
    index = partition_for(GROUP, len(h.logs))
    loading.tick(h.now_ms + 1)
    loading.unload_shard(index)
    assert not loading.runtime.is_loading(index) and index not in loading.runtime
    box = Box()
    loading.fetch_offsets([(GROUP, None)], box, h.now_ms)
    assert box.value == ("failed", E.not_coordinator)
    loading.load_shard(index, h.logs[index], h.now_ms, at_once=False)
    while loading.loading:
        h.now_ms += 1
        loading.tick(h.now_ms)
    h.coordinator = loading
    assert h.committed() == expected


def test_a_loading_transaction_shard_answers_load_in_progress_and_resends_its_decisions() -> None:
    h = TxnHarness()
    txn = "tx"
    r = h.begin(txn, TopicPartition("t", 0))
    # Enough records that the shard's load takes slices.
    for i in range(FIRST_SLICE_RECORDS + LOAD_SLICE_RECORDS):
        other = h.init(f"other-{i}")
        assert other.error is E.none
    assert h.end(txn, r.producer_id, r.producer_epoch, True) == E.none
    h.commit_logs()
    assert [d.transactional_id for d in h.decisions] == [txn]
    index = h.coordinator.partition_for(txn)

    # A new coordinator epoch: the partition's next leader loads it in slices.
    h.coordinator.unload_shard(index)
    h.decisions.clear()
    h.coordinator.load_shard(index, h.logs[index], 1, h.now_ms, at_once=False)
    assert h.coordinator.runtime.is_loading(index)
    box = Box()
    h.coordinator.init_producer_id(txn, 60_000, None, box, h.now_ms)
    assert box.value == ("failed", E.coordinator_load_in_progress)
    assert h.coordinator.verify_partitions(txn, r.producer_id, r.producer_epoch, [TopicPartition("t", 0)]) == {
        TopicPartition("t", 0): E.coordinator_load_in_progress}
    assert h.coordinator.describe(txn) is E.coordinator_load_in_progress
    while h.coordinator.loading:
        h.advance(1)
    # The Prepare state decided by the previous epoch goes to the markers again.
    shard: TransactionShard = h.shard_of(txn)
    assert shard.coordinator_epoch == 1
    assert [(d.transactional_id, d.coordinator_epoch) for d in h.decisions] == [(txn, 1)]


def test_a_shard_loaded_at_once_when_its_log_fits_the_first_slice() -> None:
    logs = [MemoryLog(0)]
    coordinator = GroupCoordinator(config=Harness().config, offsets_config=Harness().offsets_config,
                                   scheduler=Scheduler(), rng=random.Random(1), write_timeout_ms=5_000)
    coordinator.set_partition_count(1)
    coordinator.load_shard(0, logs[0], 0, at_once=False)
    assert coordinator.here(GROUP) and not coordinator.loading
