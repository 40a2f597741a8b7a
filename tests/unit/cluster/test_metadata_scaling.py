"""A view change costs the partitions it changed, not every partition of the cluster.

A broker diffs its view after every batch of watch events (`partition_changes`, Kafka's
MetadataDelta). Comparing every partition on each change made a cluster of N partitions pay
N comparisons for each of its N ISR changes. Counting the partitions looked at is exact, so a
complexity test needs no clock.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.cluster.metadata import ClusterMetadata, KeySpace, PartitionState, TopicInfo
from ackly.cluster.store import KeyValue, WatchEvent
from ackly.types import TopicPartition

TOPIC_ID = uuid.UUID(int=7)
KEYS = KeySpace()


def state(isr: tuple[int, ...], epoch: int = 0) -> PartitionState:
    return PartitionState(TOPIC_ID, (1, 2, 3), isr, isr[0], leader_epoch=epoch, partition_epoch=epoch)


def view(partitions: int) -> ClusterMetadata:
    topic = TopicInfo("t", TOPIC_ID, tuple((1, 2, 3) for _ in range(partitions)))
    kvs = [KeyValue(KEYS.topic("t"), topic.encode(), 2, 2, 1)]
    kvs += [KeyValue(KEYS.partition(TopicPartition("t", i)), state((1,)).encode(), 3, 3, 1)
            for i in range(partitions)]
    return ClusterMetadata.from_kvs(kvs, 3, KEYS)


def isr_change(before: ClusterMetadata, index: int, revision: int) -> ClusterMetadata:
    key = KEYS.partition(TopicPartition("t", index))
    return before.apply([WatchEvent(1, key, state((1, 2), 1).encode(), revision, 3)])


def looked_at(monkeypatch: pytest.MonkeyPatch, partitions: int, changes: int) -> int:
    """Partitions read by partition_changes over `changes` single-partition ISR changes."""
    current = view(partitions)
    calls = [0]
    original = ClusterMetadata.partition

    def counted(self: ClusterMetadata, tp: TopicPartition) -> PartitionState | None:
        calls[0] += 1
        return original(self, tp)

    monkeypatch.setattr(ClusterMetadata, "partition", counted)
    for i in range(changes):
        after = isr_change(current, i, 4 + i)
        assert [tp.partition for tp, _, _ in current.partition_changes(after)] == [i]
        current = after
    return calls[0]


def test_an_isr_change_looks_at_its_own_partition_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert looked_at(monkeypatch, 100, 50) == looked_at(monkeypatch, 1_000, 50) == 2 * 50


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=8),
       st.booleans())
def test_the_narrow_diff_equals_the_full_one(steps: list[tuple[int, bool]], retopic: bool) -> None:
    """Whatever the steps between two views, diffing only what they touched finds exactly
    what comparing every partition finds."""
    start = view(4)
    current = start
    chain = [start]  # strong references: the lineage stays followable
    revision = 10
    for index, delete in steps:
        key = KEYS.partition(TopicPartition("t", index))
        value = None if delete else state((1, 2), revision).encode()
        current = current.apply([WatchEvent(1, key, value, revision, 0 if delete else 3)])
        chain.append(current)
        revision += 1
    if retopic:  # the topic re-created with a new id and fewer partitions
        topic = TopicInfo("t", uuid.UUID(int=8), ((1, 2, 3),) * 2)
        current = current.apply([WatchEvent(1, KEYS.topic("t"), topic.encode(), revision, revision)])
        chain.append(current)
    full = {tp: s for tp, s in start.all_partitions()}, {tp: s for tp, s in current.all_partitions()}
    expected = [(tp, full[0].get(tp), full[1].get(tp)) for tp in sorted(full[0].keys() | full[1].keys())
                if full[0].get(tp) != full[1].get(tp)]
    assert start.partition_changes(current) == expected
