"""Creating and reloading N partitions costs disk writes linear in N, with a small constant.

A single broker once rewrote its whole metadata file (every partition's state) after each
partition state written by a CreateTopics or a start-up election: N writes of an N-sized file,
each fsynced. Timing would not catch that reliably on a shared machine; counting the writes
does: every count here is exact (SimDisk), so a cost per partition that grows with the
partition count shows as a count that is not an affine function of N.
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

NOW_MS = 1_700_000_000_000
DATA_DIR = "/data"
SIZES = (1, 10, 40)


class CountingDisk:
    """SimDisk, counting the calls that write durably (each an fsync on RealDisk) by file name."""

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
        return self.inner.open(path)

    def remove(self, path: str) -> None:
        self.durable_writes["(removed file)"] += 1
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.durable_writes["(renamed file)"] += 1
        self.inner.rename(src, dst)

    def take(self) -> tuple[Counter[str], int]:
        counts, size = self.durable_writes, self.metadata_bytes
        self.durable_writes, self.metadata_bytes = Counter(), 0
        return counts, size


def make_node(disk: CountingDisk) -> BrokerNode:
    return BrokerNode(config=BrokerConfig.from_properties({}), disk=disk, data_dir=DATA_DIR,  # type: ignore[arg-type]
                      host="127.0.0.1", port=9092, now_ms=NOW_MS, rng=random.Random(0))


Phase = tuple[Counter[str], int]


def run(partitions: int, view_updates: list[int]) -> dict[str, Phase]:
    """The durable writes of: CreateTopics of `partitions`, a clean stop, and a start-up.
    `view_updates` counts ClusterMetadata.apply calls (each copies every partition)."""
    disk = CountingDisk()
    node = make_node(disk)
    disk.take()
    view_updates.clear()
    node.create_topic("t", partitions, {}, NOW_MS)
    created = disk.take()
    created[0]["(view updates)"] = len(view_updates)
    node.close()
    closed = disk.take()
    view_updates.clear()
    again = make_node(disk)
    assert len(again.replicas.partitions) == partitions
    assert all(again.leader_partition("t", i).is_leader for i in range(partitions))
    restarted = disk.take()
    restarted[0]["(view updates)"] = len(view_updates)
    again.close()
    return {"create": created, "close": closed, "restart": restarted}


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


@pytest.mark.parametrize("phase", ["create", "restart"])
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


@pytest.mark.parametrize("phase", ["create", "restart"])
def test_the_view_is_updated_once_per_batch_not_once_per_partition(
    runs: dict[int, dict[str, Phase]], phase: str
) -> None:
    updates = {n: runs[n][phase][0]["(view updates)"] for n in SIZES}
    assert len(set(updates.values())) == 1, f"{phase}: view updates by partition count {updates}"


@pytest.mark.parametrize("phase", ["create", "close", "restart"])
def test_durable_writes_are_linear_in_the_partition_count(
    runs: dict[int, dict[str, Phase]], phase: str
) -> None:
    for name in set().union(*(runs[n][phase][0] for n in SIZES)):
        counts = [runs[n][phase][0][name] for n in SIZES]
        # Affine in N: the same cost for each partition added, whatever the count already is.
        (n0, n1, n2), (c0, c1, c2) = SIZES, counts
        assert (c2 - c1) * (n1 - n0) == (c1 - c0) * (n2 - n1), f"{phase}: {name} by partition count {counts}"


def test_a_new_partition_costs_two_small_file_writes(
    runs: dict[int, dict[str, Phase]],
) -> None:
    """partition.metadata (KIP-516) and the leader-epoch checkpoint of the first leader epoch;
    offset checkpoints that would hold 0 are not written (absent reads as 0)."""
    per_partition = Counter({
        name: (runs[SIZES[-1]]["create"][0][name] - runs[SIZES[0]]["create"][0][name])
        // (SIZES[-1] - SIZES[0])
        for name in runs[SIZES[-1]]["create"][0] if not name.startswith("(view")
    })
    assert +per_partition == Counter({
        "partition.metadata": 1, "leader-epoch-checkpoint": 1, "(new file)": 1,
    }), per_partition
