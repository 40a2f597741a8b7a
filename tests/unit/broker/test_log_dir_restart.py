"""A clean stop leaves one set of checkpoints for the data directory; the start after it
trusts them once, and a crash after that start recovers from each log's own checkpoints."""

from __future__ import annotations

import random

from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.log.disk import SimDisk
from ackly.log.log_dir import (
    CLEAN_SHUTDOWN_MARKER,
    LOG_RECOVERY_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    decode_checkpoint,
)
from ackly.log.partition_log import run_flush_round
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches

NOW_MS = 1_700_000_000_000
DATA_DIR = "/data"
PARTITIONS = 4


def make_node(disk: SimDisk) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=disk,
                      data_dir=DATA_DIR, host="127.0.0.1", port=9092, now_ms=NOW_MS,
                      rng=random.Random(0))


def produce_and_flush(node: BrokerNode, rounds: int) -> None:
    for _ in range(rounds):
        for i in range(PARTITIONS):
            p = node.leader_partition("t", i)
            data = bytearray(encode_batch([Record(key=None, value=b"v" * 50)] * 3, now_ms=NOW_MS))
            p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
            node.after_append(p, NOW_MS)
        jobs = node.take_flush_jobs()
        run_flush_round([job for _, job in jobs])
        node.complete_flush(jobs, NOW_MS)


def node_with_segments(seed: int) -> tuple[SimDisk, BrokerNode]:
    """A node whose topic "t" has a few flushed segments per partition, the active one not
    empty."""
    disk = SimDisk(random.Random(seed))
    node = make_node(disk)
    node.create_topic("t", PARTITIONS, {"segment.bytes": "4000"}, NOW_MS)
    produce_and_flush(node, 12)
    return disk, node


def end_offsets(node: BrokerNode) -> list[int]:
    return [node.leader_partition("t", i).log_end_offset for i in range(PARTITIONS)]


def test_a_crash_after_a_clean_restart_keeps_every_flushed_record() -> None:
    for seed in range(8):
        disk = SimDisk(random.Random(seed))
        node = make_node(disk)
        node.create_topic("t", PARTITIONS, {"segment.bytes": "2000"}, NOW_MS)
        produce_and_flush(node, 20)
        assert len(node.leader_partition("t", 0).log.segments) >= 3
        node.close()
        assert disk.read_file(f"{DATA_DIR}/{CLEAN_SHUTDOWN_MARKER}") == b"0\n"
        recorded = decode_checkpoint(disk.read_file(f"{DATA_DIR}/{RECOVERY_POINT_CHECKPOINT}") or b"")
        assert recorded == {("t", i): end for i, end in enumerate(end_offsets(node))}

        again = make_node(disk)
        # The marker is gone before any log changes: a crash from here on is not a clean stop.
        assert not disk.exists(f"{DATA_DIR}/{CLEAN_SHUTDOWN_MARKER}")
        assert end_offsets(again) == end_offsets(node)
        produce_and_flush(again, 15)
        flushed = end_offsets(again)
        disk.crash()

        third = make_node(disk)
        assert end_offsets(third) == flushed, seed
        for i in range(PARTITIONS):
            p = third.leader_partition("t", i)
            assert p.log.read(0, 1 << 30, p.log_end_offset).size > 0
        third.close()


def test_a_log_that_failed_to_close_is_not_vouched_for() -> None:
    disk = SimDisk(random.Random(1))
    node = make_node(disk)
    node.create_topic("t", PARTITIONS, {"segment.bytes": "2000"}, NOW_MS)
    produce_and_flush(node, 3)
    node.leader_partition("t", 2).log.abandon()  # as if its close had failed
    node.close()
    recorded = decode_checkpoint(disk.read_file(f"{DATA_DIR}/{RECOVERY_POINT_CHECKPOINT}") or b"")
    assert recorded is not None and ("t", 2) not in recorded and ("t", 1) in recorded
    again = make_node(disk)
    assert end_offsets(again) == end_offsets(node)  # the abandoned log recovered from its own
    again.close()


def append_and_flush(node: BrokerNode, partitions: list[int]) -> int:
    """One batch to each listed partition, flushed; returns the bytes appended."""
    written = 0
    for i in partitions:
        p = node.leader_partition("t", i)
        data = bytearray(encode_batch([Record(key=None, value=b"w" * 40)] * 2, now_ms=NOW_MS))
        p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
        node.after_append(p, NOW_MS)
        written += len(data)
    jobs = node.take_flush_jobs()
    run_flush_round([job for _, job in jobs])
    node.complete_flush(jobs, NOW_MS)
    return written


def recovered(node: BrokerNode) -> tuple[int, int]:
    """(segments, bytes) the logs checked when they opened."""
    logs = [node.leader_partition("t", i).log for i in range(PARTITIONS)]
    return sum(log.recovered_segments for log in logs), sum(log.recovered_bytes for log in logs)


def test_a_crash_checks_only_what_follows_the_recovery_checkpoint() -> None:
    disk, node = node_with_segments(3)
    node.write_recovery_checkpoint()
    tail = append_and_flush(node, [1]) + append_and_flush(node, [1, 3])
    flushed = end_offsets(node)
    disk.crash()

    again = make_node(disk)
    assert end_offsets(again) == flushed
    # Two logs took writes after the checkpoint: only their bytes after it are checked, in
    # their active segments; the others are not read at all.
    assert recovered(again) == (2, tail)
    for i in range(PARTITIONS):
        p = again.leader_partition("t", i)
        assert p.log.read(0, 1 << 30, p.log_end_offset).size > 0  # indexes rebuilt on use
    again.close()


def test_without_the_checkpoint_a_crash_checks_whole_segments() -> None:
    disk, node = node_with_segments(4)
    node.write_recovery_checkpoint()
    # A truncation removes the checkpoint first (it recorded more than the log keeps).
    p0 = node.leader_partition("t", 0)
    p0.log.truncate_to(p0.log_end_offset - 3)
    assert not disk.exists(f"{DATA_DIR}/{LOG_RECOVERY_CHECKPOINT}")
    # The cut is made durable by the log's next flush job, as the broker's flush round does.
    job = p0.log.begin_flush()
    assert job is not None and job.changes > 0
    run_flush_round([job])
    p0.log.complete_flush(job)
    assert not disk.exists(f"{DATA_DIR}/{LOG_RECOVERY_CHECKPOINT}")
    flushed = end_offsets(node)
    disk.crash()

    again = make_node(disk)
    assert end_offsets(again) == flushed
    segments, scanned = recovered(again)
    assert segments >= PARTITIONS and scanned > 0  # each log from its own recovery point
    again.close()


def test_a_clean_restart_scans_nothing_and_reads_no_index() -> None:
    disk, node = node_with_segments(5)
    node.close()
    again = make_node(disk)
    assert recovered(again) == (0, 0)
    for i in range(PARTITIONS):
        for segment in again.leader_partition("t", i).log.segments:
            assert segment._lazy_next_offset is not None  # indexes read on first use only
    produce_and_flush(again, 1)
    again.close()
