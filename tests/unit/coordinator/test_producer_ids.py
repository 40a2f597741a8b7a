"""The producer id allocator (durable blocks) and InitProducerId's epoch rules (KIP-360)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.coordinator.producer_ids import (
    BLOCK_FILE,
    EPOCH_EXHAUSTED,
    MAX_TRACKED_PRODUCERS,
    InitProducerIdResult,
    ProducerIdFileError,
    ProducerIdManager,
)
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import SimDisk

DATA = "/data"


def make_disk(seed: int = 0) -> SimDisk:
    disk = SimDisk(random.Random(seed))
    disk.makedirs(DATA)
    return disk


@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.integers(1, 50))
def test_no_id_is_ever_handed_out_twice_across_crashes(runs: list[int], block_size: int) -> None:
    disk = make_disk()
    seen: set[int] = set()
    for count in runs:
        manager = ProducerIdManager(disk, DATA, block_size)
        for _ in range(count):
            producer_id = manager.generate()
            assert producer_id not in seen
            # The reservation covering it was durable before it was handed out.
            assert producer_id < int(disk.read_file(f"{DATA}/{BLOCK_FILE}").split()[1])  # type: ignore[union-attr]
            seen.add(producer_id)
        disk.crash()


def test_ids_are_dense_within_a_run_and_a_restart_skips_the_rest_of_the_block() -> None:
    disk = make_disk()
    manager = ProducerIdManager(disk, DATA, block_size=10)
    assert [manager.generate() for _ in range(12)] == list(range(12))
    assert disk.read_file(f"{DATA}/{BLOCK_FILE}") == b"1\n20\n"
    assert ProducerIdManager(disk, DATA, block_size=10).generate() == 20


def test_reserving_ahead_writes_no_block_on_the_event_loop() -> None:
    disk = make_disk()
    disk.loop_guard = True  # every sync outside `off_loop` is recorded
    seen: set[int] = set()
    for _run in range(2):
        with disk.off_loop():  # start-up: the first block, durably
            manager = ProducerIdManager(disk, DATA, block_size=10, reserve_ahead=True)
        ids = [manager.generate() for _ in range(5)]
        assert manager.reservation_due  # half the block is used: the next one is on its way
        ids += [manager.generate() for _ in range(5)]
        # The block is used up before its successor is durable: retriable, nothing handed out.
        with pytest.raises(KafkaError) as refused:
            manager.generate()
        assert refused.value.code == ErrorCode.coordinator_load_in_progress
        job = manager.take_reservation()
        assert job is not None and manager.take_reservation() is None
        with disk.off_loop():  # the flush round, in the sync pool
            job.run()
        manager.reserved(job)
        ids.append(manager.generate())
        stored = disk.read_file(f"{DATA}/{BLOCK_FILE}")
        assert stored is not None and max(ids) < int(stored.split()[1])
        assert not seen & set(ids) and len(set(ids)) == len(ids)
        seen.update(ids)
        disk.crash()  # the next run starts above every reservation
    assert disk.loop_syncs == []


def test_a_garbled_reservation_stops_the_broker_rather_than_reuse_ids() -> None:
    disk = make_disk()
    disk.write_atomic(f"{DATA}/{BLOCK_FILE}", b"1\n12x\n")
    with pytest.raises(ProducerIdFileError):
        ProducerIdManager(disk, DATA)


class _FullDisk(SimDisk):
    def write_atomic(self, path: str, data: bytes) -> None:
        raise KafkaError(ErrorCode.kafka_storage_error, "disk full")


def test_a_failed_reservation_hands_out_nothing() -> None:
    disk = _FullDisk(random.Random(0))
    disk.makedirs(DATA)
    manager = ProducerIdManager(disk, DATA)
    with pytest.raises(KafkaError):
        manager.init_producer_id(-1, -1)
    assert (manager.next_id, manager.block_end) == (0, 0)


def test_a_new_producer_gets_a_fresh_id_at_epoch_zero() -> None:
    manager = ProducerIdManager(make_disk(), DATA)
    first = manager.init_producer_id(-1, -1)
    second = manager.init_producer_id(-1, -1)
    assert first == InitProducerIdResult(ErrorCode.none, 0, 0)
    assert second == InitProducerIdResult(ErrorCode.none, 1, 0)


def test_epoch_bump_retry_and_fencing() -> None:
    manager = ProducerIdManager(make_disk(), DATA)
    pid = manager.init_producer_id(-1, -1).producer_id
    assert manager.init_producer_id(pid, 0) == InitProducerIdResult(ErrorCode.none, pid, 1)
    # The answer was lost and the producer asks again with the epoch it had: same answer.
    assert manager.init_producer_id(pid, 0) == InitProducerIdResult(ErrorCode.none, pid, 1)
    assert manager.init_producer_id(pid, 1) == InitProducerIdResult(ErrorCode.none, pid, 2)
    assert manager.init_producer_id(pid, 0).error == ErrorCode.producer_fenced  # stale
    # A producer that bumped locally (KIP-360, the Java client) is ahead of us: accepted.
    assert manager.init_producer_id(pid, 7) == InitProducerIdResult(ErrorCode.none, pid, 8)
    assert manager.init_producer_id(pid, 2).error == ErrorCode.producer_fenced


def test_an_exhausted_epoch_moves_the_producer_to_a_new_id() -> None:
    manager = ProducerIdManager(make_disk(), DATA)
    pid = manager.init_producer_id(-1, -1).producer_id
    assert manager.init_producer_id(pid, EPOCH_EXHAUSTED - 1).producer_epoch == EPOCH_EXHAUSTED
    moved = manager.init_producer_id(pid, EPOCH_EXHAUSTED)
    assert moved.error == ErrorCode.none and moved.producer_id != pid and moved.producer_epoch == 0
    assert manager.init_producer_id(pid, EPOCH_EXHAUSTED) == moved  # a retry of that answer
    assert manager.init_producer_id(pid, 3).error == ErrorCode.producer_fenced


def test_unknown_ids_get_a_fresh_id_and_half_given_ids_are_invalid() -> None:
    disk = make_disk()
    manager = ProducerIdManager(disk, DATA)
    pid = manager.init_producer_id(-1, -1).producer_id
    restarted = ProducerIdManager(disk, DATA)  # the epochs it knew are gone
    fresh = restarted.init_producer_id(pid, 0)
    assert fresh.error == ErrorCode.none and fresh.producer_id != pid and fresh.producer_epoch == 0
    assert restarted.init_producer_id(5, -1).error == ErrorCode.invalid_request
    assert restarted.init_producer_id(-1, 0).error == ErrorCode.invalid_request


def test_remembered_epochs_are_bounded() -> None:
    manager = ProducerIdManager(make_disk(), DATA, block_size=MAX_TRACKED_PRODUCERS + 10)
    first = manager.init_producer_id(-1, -1).producer_id
    for _ in range(MAX_TRACKED_PRODUCERS):
        manager.init_producer_id(-1, -1)
    assert manager.init_producer_id(first, 0).producer_id != first  # forgotten: a fresh id


def test_claimed_blocks_come_from_the_cluster_and_queue_one_ahead() -> None:
    disk = make_disk()
    manager = ProducerIdManager(disk, DATA, block_size=10, reserve_ahead=True, claimed_blocks=True)
    assert disk.read_file(f"{DATA}/{BLOCK_FILE}") is None, "no file in a cluster"
    assert manager.claim_due
    with pytest.raises(KafkaError) as refused:  # before the first block: retriable
        manager.generate()
    assert refused.value.code == ErrorCode.coordinator_load_in_progress
    manager.claim_sent()
    assert not manager.claim_due
    manager.claimed(100, 110)
    assert [manager.generate() for _ in range(5)] == list(range(100, 105))
    assert manager.claim_due  # half used
    manager.claim_sent()
    manager.claim_lost()  # another broker won: asked again
    assert manager.claim_due
    manager.claim_sent()
    manager.claimed(300, 310)  # not contiguous: others claimed in between
    assert not manager.claim_due  # one block queued is enough
    ids = [manager.generate() for _ in range(10)]
    assert ids == [105, 106, 107, 108, 109, 300, 301, 302, 303, 304]
    assert manager.claim_due
