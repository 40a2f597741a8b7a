"""Creating and reloading N partitions costs disk writes linear in N, with a small constant.

A single broker once rewrote its whole metadata file (every partition's state) after each
partition state written by a CreateTopics or a start-up election: N writes of an N-sized file,
each fsynced. Timing would not catch that reliably on a shared machine; counting the writes
does: every count here is exact (SimDisk), so a cost per partition that grows with the
partition count shows as a count that is not an affine function of N. A start after a clean
stop elects nothing (each leadership is resumed); one after a crash elects every partition,
in one batch.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from ackly.broker.node import BrokerNode
from ackly.cluster.durable_store import METADATA_FILE
from ackly.cluster.metadata import ClusterMetadata
from ackly.cluster.store import WatchEvent
from ackly.config import BrokerConfig
from ackly.log.disk import DiskFile, SimDisk
from ackly.log.log_dir import (
    CLEAN_SHUTDOWN_MARKER,
    HIGH_WATERMARK_CHECKPOINT,
    LOG_START_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
)
from ackly.log.partition_log import run_flush_round
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import validate_batches

NOW_MS = 1_700_000_000_000
DATA_DIR = "/data"
SIZES = (1, 10, 40)


class CountingFile:
    """A SimFile whose flushes (each an fdatasync on RealDisk) are counted."""

    def __init__(self, inner: DiskFile, disk: CountingDisk) -> None:
        self._inner = inner
        self._disk = disk
        self.path = inner.path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def flush(self) -> None:
        self._disk.durable_writes["(flushed log file)"] += 1
        self._inner.flush()


class CountingDisk:
    """SimDisk, counting by file name the calls that cost an fsync on RealDisk: durable
    writes (`write_atomic`, a new file by `open`, `remove`, a durable `rename`) and syncs
    (`sync_file`, `sync_dir`, a log file's flush). Writes without an fsync are not counted."""

    def __init__(self) -> None:
        self.inner = SimDisk(random.Random(0))
        self.durable_writes: Counter[str] = Counter()
        self.metadata_bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write_atomic(self, path: str, data: bytes) -> None:
        name = path.rsplit("/", 1)[-1]
        self.durable_writes[name] += 1
        if name == METADATA_FILE:
            self.metadata_bytes += len(data)
        self.inner.write_atomic(path, data)

    def open(self, path: str) -> DiskFile:
        if not self.inner.exists(path):
            self.durable_writes["(new file)"] += 1
        return CountingFile(self.inner.open(path), self)

    def create(self, path: str) -> DiskFile:
        return CountingFile(self.inner.create(path), self)

    def remove(self, path: str) -> None:
        self.durable_writes["(removed file)"] += 1
        self.inner.remove(path)

    def rename(self, src: str, dst: str, *, durable: bool = True) -> None:
        if durable:
            self.durable_writes["(renamed file)"] += 1
        self.inner.rename(src, dst, durable=durable)

    def sync_file(self, path: str) -> None:
        self.durable_writes["(synced) " + path.rsplit("/", 1)[-1].split(".")[-1]] += 1
        self.inner.sync_file(path)

    def sync_dir(self, path: str) -> None:
        self.durable_writes["(synced directory)"] += 1
        self.inner.sync_dir(path)

    def take(self) -> tuple[Counter[str], int]:
        counts, size = self.durable_writes, self.metadata_bytes
        self.durable_writes, self.metadata_bytes = Counter(), 0
        return counts, size


def make_node(disk: CountingDisk) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=disk, data_dir=DATA_DIR,  # type: ignore[arg-type]
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


Phase = tuple[Counter[str], int]


def run(partitions: int, view_updates: list[int]) -> dict[str, Phase]:
    """The durable writes of: CreateTopics of `partitions`, a clean stop, a start-up, and a
    start-up after a crash of that one. `view_updates` counts ClusterMetadata.apply calls
    (each copies every partition)."""
    disk = CountingDisk()
    node = make_node(disk)
    disk.take()
    view_updates.clear()
    node.create_topic("t", partitions, {}, NOW_MS)
    created = disk.take()
    created[0]["(view updates)"] = len(view_updates)
    for i in range(partitions):
        p = node.leader_partition("t", i)
        data = bytearray(encode_batch([Record(key=None, value=b"v")], now_ms=NOW_MS))
        p.append_as_leader(data, validate_batches(data, 1 << 20), -1, NOW_MS)
        node.after_append(p, NOW_MS)
    jobs = node.take_flush_jobs()
    run_flush_round([job for _, job in jobs])  # one group flush, as the shell runs it
    node.complete_flush(jobs, NOW_MS)
    flushed = disk.take()
    node.close()
    closed = disk.take()
    view_updates.clear()
    again = make_node(disk)
    assert len(again.replicas.partitions) == partitions
    assert all(again.leader_partition("t", i).is_leader for i in range(partitions))
    restarted = disk.take()
    restarted[0]["(view updates)"] = len(view_updates)
    epochs = [again.leader_partition("t", i).leader_epoch for i in range(partitions)]
    disk.inner.crash()
    view_updates.clear()
    crashed = make_node(disk)
    assert [crashed.leader_partition("t", i).leader_epoch for i in range(partitions)] == [
        e + 1 for e in epochs]
    after_crash = disk.take()
    after_crash[0]["(view updates)"] = len(view_updates)
    crashed.close()
    return {"create": created, "flush": flushed, "close": closed, "restart": restarted,
            "crash restart": after_crash}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[int, dict[str, Phase]]]:
    view_updates: list[int] = []
    apply = ClusterMetadata.apply

    def counted(self: ClusterMetadata, events: Iterable[WatchEvent]) -> ClusterMetadata:
        view_updates.append(1)
        return apply(self, events)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClusterMetadata, "apply", counted)
        yield {n: run(n, view_updates) for n in SIZES}


@pytest.mark.parametrize("phase", ["create", "crash restart"])
def test_the_metadata_file_is_written_once_per_batch_not_once_per_partition(
    runs: dict[int, dict[str, Phase]], phase: str
) -> None:
    writes = {n: runs[n][phase][0][METADATA_FILE] for n in SIZES}
    assert writes[SIZES[0]] >= 1  # the topic (or the start-up elections) is made durable
    assert len(set(writes.values())) == 1, f"{phase}: metadata file writes by partition count {writes}"
    # The bytes written grow with the file, which grows linearly: not N times N.
    sizes = {n: runs[n][phase][1] for n in SIZES}
    small, big = SIZES[1], SIZES[-1]
    assert sizes[big] / sizes[small] < 1.5 * big / small, sizes


def test_a_clean_restart_writes_no_metadata(runs: dict[int, dict[str, Phase]]) -> None:
    """No election: every partition resumes its leadership in its epoch."""
    assert [runs[n]["restart"][0][METADATA_FILE] for n in SIZES] == [0] * len(SIZES)


@pytest.mark.parametrize("phase", ["create", "restart", "crash restart"])
def test_the_view_is_updated_once_per_batch_not_once_per_partition(
    runs: dict[int, dict[str, Phase]], phase: str
) -> None:
    updates = {n: runs[n][phase][0]["(view updates)"] for n in SIZES}
    assert len(set(updates.values())) == 1, f"{phase}: view updates by partition count {updates}"


@pytest.mark.parametrize("phase", ["create", "flush", "close", "restart", "crash restart"])
def test_durable_writes_are_linear_in_the_partition_count(
    runs: dict[int, dict[str, Phase]], phase: str
) -> None:
    for name in set().union(*(runs[n][phase][0] for n in SIZES)):
        counts = [runs[n][phase][0][name] for n in SIZES]
        # Affine in N: the same cost for each partition added, whatever the count already is.
        (n0, n1, n2), (c0, c1, c2) = SIZES, counts
        assert (c2 - c1) * (n1 - n0) == (c1 - c0) * (n2 - n1), f"{phase}: {name} by partition count {counts}"


def per_partition(runs: dict[int, dict[str, Phase]], phase: str) -> Counter[str]:
    """What one more partition adds to a phase's counts (they are affine in N, tested above)."""
    big, small = runs[SIZES[-1]][phase][0], runs[SIZES[0]][phase][0]
    return +Counter({
        name: (big[name] - small[name]) // (SIZES[-1] - SIZES[0])
        for name in big if not name.startswith("(view")
    })


def test_a_new_partition_costs_no_fsync(runs: dict[int, dict[str, Phase]]) -> None:
    """Nothing of an empty partition needs to be durable: its directory, segment name,
    partition.metadata (KIP-516) and first leader epoch are synced by its first flush. (It was
    six fsyncs each; 10,000 partitions took 50 s to create.)"""
    assert per_partition(runs, "create") == Counter(), per_partition(runs, "create")


def test_the_first_flush_syncs_what_creating_the_partition_wrote(runs: dict[int, dict[str, Phase]]) -> None:
    """The log file, partition.metadata and the leader-epoch checkpoint, and the partition's
    directory; the data directory once per round, however many partitions are new."""
    assert per_partition(runs, "flush") == Counter({
        "(flushed log file)": 1, "(synced) metadata": 1, "(synced) leader-epoch-checkpoint": 1,
        "(synced directory)": 1,
    }), per_partition(runs, "flush")
    assert runs[SIZES[0]]["flush"][0]["(synced directory)"] == 2  # its own, and the data directory


def test_a_clean_stop_costs_a_few_fsyncs_per_partition_with_new_data(runs: dict[int, dict[str, Phase]]) -> None:
    """The producer snapshot and the active segment's two indexes, and the directory once;
    the offsets and the clean-shutdown marker go to four files for the whole data directory
    (it was twelve fsyncs per partition: three checkpoints and a marker each)."""
    assert per_partition(runs, "close") == Counter({
        "(synced) snapshot": 1, "(synced) index": 1, "(synced) timeindex": 1,
        "(synced directory)": 1,
    }), per_partition(runs, "close")
    fixed = runs[SIZES[0]]["close"][0]
    for name in (RECOVERY_POINT_CHECKPOINT, LOG_START_CHECKPOINT, HIGH_WATERMARK_CHECKPOINT,
                 CLEAN_SHUTDOWN_MARKER):
        assert fixed[name] == 1, fixed


def test_a_clean_restart_costs_no_fsync_per_partition(runs: dict[int, dict[str, Phase]]) -> None:
    """The data directory's marker is removed (one directory fsync); no log reads or writes a
    checkpoint of its own, and a new leader epoch is written without an fsync (it was three
    fsyncs per partition)."""
    assert per_partition(runs, "restart") == Counter(), per_partition(runs, "restart")
    assert runs[SIZES[0]]["restart"][0]["(removed file)"] == 1


@pytest.mark.slow
def test_a_start_up_election_beyond_a_thousand_partitions_is_one_batch() -> None:
    """The single broker's controller once sent at most 1,000 writes a run: a start-up of
    10,000 partitions took ten batches, each rewriting the whole metadata file (35 MB written
    for a 3.5 MB file) and copying the whole view."""
    writes: dict[int, tuple[int, int]] = {}
    for partitions in (10, 1_001):
        disk = CountingDisk()
        node = make_node(disk)
        node.create_topic("t", partitions, {}, NOW_MS)
        created = disk.take()[0][METADATA_FILE]
        disk.inner.crash()  # a clean stop would leave nothing to elect (resumed leaderships)
        again = make_node(disk)
        writes[partitions] = (created, disk.take()[0][METADATA_FILE])
        assert again.member.controller_changes["election"] == partitions
        again.close()
    assert writes[10] == writes[1_001], writes
