"""What a start after a clean stop reads, counted per file kind: a fixed number of files per
partition (no producer snapshot, no index), however many records the logs hold; a clean stop
of a broker whose logs were not used rewrites no snapshot; and a log's producer state, loaded
at its first use, still knows every producer (a retried batch is a duplicate). The start-up
elections: none after a clean stop (every leadership resumed, the metadata file not written),
and after a crash one write of the metadata file for all of them. No segment file is opened
before its first use."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.log.disk import DiskFile, RealDisk
from ackly.log.partition_log import run_flush_round
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches

NOW_MS = 1_700_000_000_000
PARTITIONS = 12
PRODUCER_ID = 4000


def kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1] if "." in name and not name.startswith(".") else name


class CountingDisk(RealDisk):
    """RealDisk counting files read whole, opened and written whole, by kind (suffix or name)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.opens: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def read_file(self, path: str) -> bytes | None:
        self.reads[kind(path)] += 1
        return super().read_file(path)

    def open(self, path: str) -> DiskFile:
        self.opens[kind(path)] += 1
        return super().open(path)

    def write_atomic(self, path: str, data: bytes) -> None:
        self.writes[kind(path)] += 1
        super().write_atomic(path, data)

    def write_atomic_unsynced(self, path: str, data: bytes) -> None:
        self.writes[kind(path)] += 1
        super().write_atomic_unsynced(path, data)


def make_node(data_dir: Path, disk: RealDisk) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=disk, data_dir=str(data_dir),
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


def idempotent_batch(partition: int, sequence: int) -> bytearray:
    return bytearray(encode_batch(
        [Record(key=None, value=b"v" * 50)] * 3, producer_id=PRODUCER_ID + partition,
        producer_epoch=0, base_sequence=sequence, now_ms=NOW_MS))


def append(node: BrokerNode, partition: int, data: bytearray) -> int:
    p = node.leader_partition("t", partition)
    result = p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
    node.after_append(p, NOW_MS)
    return result.first_offset


def flush(node: BrokerNode) -> None:
    jobs = node.take_flush_jobs()
    run_flush_round([job for _, job in jobs])
    node.complete_flush(jobs, NOW_MS)


def fill(data_dir: Path, batches: int) -> None:
    node = make_node(data_dir, RealDisk())
    node.create_topic("t", PARTITIONS, {}, NOW_MS)
    for i in range(PARTITIONS):
        for sequence in range(0, 3 * batches, 3):
            append(node, i, idempotent_batch(i, sequence))
    flush(node)
    node.close()


def counted_start(data_dir: Path) -> tuple[BrokerNode, CountingDisk]:
    disk = CountingDisk()
    return make_node(data_dir, disk), disk


def test_a_clean_start_reads_a_fixed_number_of_files_per_partition(tmp_path: Path) -> None:
    starts = []
    for batches in (1, 20):
        data_dir = tmp_path / f"b{batches}"
        fill(data_dir, batches)
        node, disk = counted_start(data_dir)
        starts.append((disk.reads.copy(), disk.opens.copy()))
        # Loaded at the first use, not at the start: no snapshot, no index read.
        assert disk.reads["snapshot"] == 0
        assert disk.reads["index"] == disk.reads["timeindex"] == 0
        # No file opened at all: a segment's .log opens at its first read or append.
        assert disk.opens == Counter()
        # Per partition: its topic id and its leader epochs; the rest is the data directory's.
        assert disk.reads["metadata"] == PARTITIONS
        assert disk.reads["leader-epoch-checkpoint"] == PARTITIONS
        per_directory = sum(disk.reads.values()) - 2 * PARTITIONS
        assert per_directory <= 10, disk.reads
        # No election: every partition resumes its leadership, nothing is written to the
        # metadata file (metadata.json) or any other, but the next producer-id block.
        assert not node.member.controller_changes
        assert disk.writes == Counter({"producer-id-block": 1})
        assert all(p.is_leader for p in node.topics["t"].partitions)
        node.close()
    # The bytes stored do not change what a start reads.
    assert starts[0] == starts[1]


def test_a_clean_stop_of_logs_never_used_rewrites_no_snapshot(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    node, disk = counted_start(tmp_path)
    node.close()
    assert disk.writes["snapshot"] == 0
    # Each log still reloads its producers from the snapshot the first stop left.
    again, disk = counted_start(tmp_path)
    offsets = [append(again, i, idempotent_batch(i, 3)) for i in range(PARTITIONS)]
    assert disk.reads["snapshot"] == PARTITIONS
    assert offsets == [3] * PARTITIONS  # the retry of the last batch: its original offset
    again.close()


def test_the_first_use_of_a_log_loads_its_producers(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    node, disk = counted_start(tmp_path)
    # A retry of each partition's last batch is a duplicate (its offset is the original
    # one, LEO does not move); the next sequence is appended after it.
    assert append(node, 0, idempotent_batch(0, 3)) == 3
    assert disk.reads["snapshot"] == 1  # only the log used
    assert disk.opens == Counter()  # a duplicate: nothing read or appended
    assert node.leader_partition("t", 0).log_end_offset == 6
    assert append(node, 0, idempotent_batch(0, 6)) == 6
    assert node.leader_partition("t", 0).log_end_offset == 9
    assert disk.opens == Counter({"log": 1})  # only the .log appended to
    flush(node)
    node.close()
    assert disk.writes["snapshot"] == 1  # the one log whose producers changed
    again, _ = counted_start(tmp_path)
    assert append(again, 0, idempotent_batch(0, 6)) == 6
    assert again.leader_partition("t", 0).log_end_offset == 9
    again.close()


def test_a_start_after_a_crash_elects_every_partition_with_one_metadata_write(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    counted_start(tmp_path)  # not closed: the next start follows a crash
    node, disk = counted_start(tmp_path)
    assert node.member.controller_changes == Counter({"election": PARTITIONS})
    # Nothing was written since the last recovery checkpoint: no segment is read or opened.
    assert disk.opens == Counter()
    assert disk.writes["json"] == 1  # metadata.json: one batch for every election
    assert all(p.is_leader and p.leader_epoch == 1 for p in node.topics["t"].partitions)
    node.close()
