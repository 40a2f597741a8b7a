"""A restarted BrokerNode loads a long `__consumer_offsets` partition in slices from its tick
(the shell's timer): requests for the group meanwhile are answered COORDINATOR_LOAD_IN_PROGRESS
(FindCoordinator still names this broker, as Kafka's), and the node asks for its next tick at
once until the shard is loaded; then the group's offsets are served."""

from __future__ import annotations

import datetime
import random

from ackly.coordinator.runtime import FIRST_SLICE_RECORDS, LOAD_SLICE_RECORDS
from ackly.errors import ErrorCode
from ackly.log.disk import SimDisk

from .test_coordinator_restart import Broker

E = ErrorCode
COMMITS = FIRST_SLICE_RECORDS + 2 * LOAD_SLICE_RECORDS


def commit_v2(b: Broker, offset: int, partitions: int) -> list[int]:
    topic = b.entity(8, 2, "OffsetCommitRequestTopic", name="t", partitions=tuple(
        b.entity(8, 2, "OffsetCommitRequestPartition", partition_index=p, committed_offset=offset,
                 committed_metadata="") for p in range(partitions)))
    r = b.call(8, 2, group_id="g", generation_id_or_member_epoch=-1, member_id="",
               retention_time=datetime.timedelta(milliseconds=-1), topics=(topic,))
    return [int(p.error_code) for t in r.topics for p in t.partitions]


def fetch_v2(b: Broker, partitions: int) -> tuple[int, dict[int, tuple[int, int]]]:
    topic = b.entity(9, 2, "OffsetFetchRequestTopic", name="t", partition_indexes=tuple(range(partitions)))
    r = b.call(9, 2, group_id="g", topics=(topic,))
    return int(r.error_code), {p.partition_index: (p.committed_offset, int(p.error_code))
                               for t in r.topics for p in t.partitions}


def test_a_restarted_broker_loads_the_group_shard_in_slices_from_its_tick() -> None:
    disk = SimDisk(random.Random(5))
    b = Broker(disk, "/data")
    b.node.create_topic("t", 50, {}, b.now_ms)
    for i in range(COMMITS // 50):
        assert commit_v2(b, i, 50) == [E.none] * 50
    b.node.close()

    again = Broker(disk, "/data", now_ms=b.now_ms + 1_000)
    assert again.node.group_coordinator.loading
    found = again.call(10, 3, key="g", key_type=0)
    assert (found.error_code, found.node_id) == (E.none, 0)
    error, offsets = fetch_v2(again, 10)
    assert error == E.coordinator_load_in_progress
    assert set(offsets.values()) == {(-1, E.coordinator_load_in_progress)}
    assert commit_v2(again, 7, 10) == [E.coordinator_load_in_progress] * 10
    listed = again.call(16, 4, states_filter=())
    assert listed.error_code == E.coordinator_load_in_progress

    ticks = 0
    while again.node.group_coordinator.loading:
        assert again.node.next_deadline_ms() == again.now_ms, "the next slice is due at once"
        again.node.tick(again.now_ms)
        again.pump()
        ticks += 1
        assert ticks < 100
    assert ticks >= 2
    error, offsets = fetch_v2(again, 10)
    last = COMMITS // 50 - 1
    assert (error, offsets) == (E.none, {p: (last, E.none) for p in range(10)})
    again.node.close()
