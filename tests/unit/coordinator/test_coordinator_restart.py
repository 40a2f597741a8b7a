"""Groups and offsets survive a broker restart: a BrokerNode driven through encoded frames,
closed (or crashed, on SimDisk) and reopened on the same data directory.

Requests go through `BrokerNode.handle_frame` as encoded kio frames, so dispatch, the handlers
and the version handling run too. The test plays the shell: it runs flush jobs (HW moves with
the flush under flush.policy=always, and group answers wait for HW) and ticks the clock.
"""

from __future__ import annotations

import datetime
import io
import random
import struct
import sys
from pathlib import Path
from typing import Any

from kio.serial import entity_reader, entity_writer

from ackly.broker.context import RequestContext
from ackly.broker.node import BrokerNode
from ackly.config import BrokerConfig
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC
from ackly.errors import ErrorCode
from ackly.log.disk import Disk, RealDisk, SimDisk
from ackly.protocol.headers import RequestHeader
from ackly.protocol.messages import header_version, is_flexible, request_type, response_type

T0 = 1_700_000_000_000
E = ErrorCode
PROPS = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "3"}


class Answer:
    def __init__(self, api_key: int, version: int) -> None:
        self.api_key, self.version = api_key, version
        self.frames: list[bytes] = []

    def sink(self, pieces: Any) -> None:
        assert pieces is not None
        self.frames.append(b"".join(bytes(p) for p in pieces))

    @property
    def done(self) -> bool:
        return bool(self.frames)

    def value(self) -> Any:
        assert len(self.frames) == 1, f"{len(self.frames)} answers"
        data = self.frames[0]
        offset = 8 + (1 if is_flexible(self.api_key, self.version) else 0)
        response, _ = entity_reader(response_type(self.api_key, self.version))(data, offset)
        return response


class Broker:
    def __init__(self, disk: Disk, data_dir: str, now_ms: int = T0) -> None:
        self.now_ms = now_ms
        self.node = BrokerNode(config=BrokerConfig.from_properties(PROPS), disk=disk,
                               data_dir=data_dir, host="127.0.0.1", port=9092, now_ms=now_ms,
                               rng=random.Random(7))
        self.correlation = 0

    def entity(self, api_key: int, version: int, class_name: str, /, **fields: Any) -> Any:
        module = sys.modules[request_type(api_key, version).__module__]
        return getattr(module, class_name)(**fields)

    def send(self, api_key: int, version: int, **fields: Any) -> Answer:
        request = request_type(api_key, version)(**fields)
        self.correlation += 1
        frame = io.BytesIO()
        frame.write(struct.pack(">hhih", api_key, version, self.correlation, 4) + b"test")
        if header_version(api_key, version) >= 2:
            frame.write(b"\x00")
        entity_writer(type(request))(frame, request)
        answer = Answer(api_key, version)
        ctx = RequestContext(header=RequestHeader(api_key, version, self.correlation, "test"),
                             now_ms=self.now_ms, sink=answer.sink, client_host="127.0.0.1")
        self.node.handle_frame(ctx, frame.getvalue())
        self.pump()
        return answer

    def pump(self) -> None:
        """Play the shell's flusher: run every flush job, report it back."""
        while self.node.has_flush_work:
            jobs = self.node.take_flush_jobs()
            for _, job in jobs:
                job.run()
            self.node.complete_flush(jobs, self.now_ms)

    def tick(self, advance_ms: int = 0) -> None:
        """Advance the clock and run what is due, as the shell's timer does (a timer due now
        may arm another one due now: the initial rebalance delay of 0 does)."""
        self.now_ms += advance_ms
        for _ in range(100):
            self.node.tick(self.now_ms)
            self.pump()
            due = self.node.next_deadline_ms()
            if due is None or due > self.now_ms:
                return
        raise AssertionError("timers keep firing at the same instant")

    def call(self, api_key: int, version: int, **fields: Any) -> Any:
        answer = self.send(api_key, version, **fields)
        return answer.value()


def join(b: Broker, member_id: str = "", instance_id: str | None = None) -> Answer:
    protocol = b.entity(11, 5, "JoinGroupRequestProtocol", name="range", metadata=b"meta")
    return b.send(11, 5, group_id="g", session_timeout=datetime.timedelta(seconds=30),
                  rebalance_timeout=datetime.timedelta(seconds=60), member_id=member_id,
                  group_instance_id=instance_id, protocol_type="consumer", protocols=(protocol,))


def form_group(b: Broker) -> tuple[str, str, int]:
    """A dynamic and a static member in a Stable generation; (dynamic id, static id, gen)."""
    first = join(b).value()
    assert first.error_code == E.member_id_required
    dynamic = join(b, first.member_id)
    static = join(b, instance_id="static-1")
    assert not dynamic.done and not static.done
    b.tick()  # the initial delay (0) ends
    d, s = dynamic.value(), static.value()
    assert d.error_code == s.error_code == E.none and d.generation_id == s.generation_id
    generation = d.generation_id
    leader = d if d.leader == d.member_id else s
    assignments = tuple(
        b.entity(14, 3, "SyncGroupRequestAssignment", member_id=m, assignment=f"for-{m}".encode())
        for m in (d.member_id, s.member_id))
    for r in (d, s):
        sync = b.call(14, 3, group_id="g", generation_id=generation, member_id=r.member_id,
                      group_instance_id="static-1" if r is s else None,
                      assignments=assignments if r is leader else ())
        assert sync.error_code == E.none and sync.assignment == f"for-{r.member_id}".encode()
    return d.member_id, s.member_id, generation


def commit(b: Broker, member_id: str, generation: int, offsets: dict[int, int]) -> Any:
    topic = b.entity(8, 8, "OffsetCommitRequestTopic", name="t", partitions=tuple(
        b.entity(8, 8, "OffsetCommitRequestPartition", partition_index=p, committed_offset=o,
                 committed_leader_epoch=0, committed_metadata="m")
        for p, o in offsets.items()))
    return b.call(8, 8, group_id="g", generation_id_or_member_epoch=generation, member_id=member_id,
                  group_instance_id=None, topics=(topic,))


def fetch(b: Broker) -> dict[int, int]:
    group = b.entity(9, 8, "OffsetFetchRequestGroup", group_id="g", topics=None)
    response = b.call(9, 8, groups=(group,), require_stable=True)
    (g,) = response.groups
    assert g.error_code == E.none
    return {p.partition_index: p.committed_offset for t in g.topics for p in t.partitions}


def describe(b: Broker) -> Any:
    (group,) = b.call(15, 5, groups=("g",), include_authorized_operations=False).groups
    return group


def test_groups_and_offsets_survive_a_clean_restart(tmp_path: Path) -> None:
    b = Broker(RealDisk(), str(tmp_path / "data"))
    found = b.call(10, 3, key="g", key_type=0)
    assert (found.error_code, found.node_id, found.port) == (E.none, 0, 9092)
    metadata = b.call(3, 1, topics=None)
    (internal,) = [t for t in metadata.topics if t.name == OFFSETS_TOPIC]
    assert internal.is_internal and len(internal.partitions) == 3
    b.node.create_topic("t", 2, {}, b.now_ms)
    dynamic, static, generation = form_group(b)
    assert [e.error_code for t in commit(b, dynamic, generation, {0: 10, 1: 20}).topics
            for e in t.partitions] == [E.none, E.none]
    assert [e.error_code for t in commit(b, dynamic, generation - 1, {0: 99}).topics
            for e in t.partitions] == [E.illegal_generation]
    before = describe(b)
    b.node.close()

    again = Broker(RealDisk(), str(tmp_path / "data"), now_ms=b.now_ms + 1_000)
    after = describe(again)
    assert (after.group_state, after.protocol_type, after.protocol_data) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.group_instance_id, m.member_assignment) for m in after.members] == \
        [(m.member_id, m.group_instance_id, m.member_assignment) for m in before.members]
    assert fetch(again) == {0: 10, 1: 20}
    # Members that come back within their session carry on in the same generation.
    hb = again.call(12, 3, group_id="g", generation_id=generation, member_id=dynamic,
                    group_instance_id=None)
    assert hb.error_code == E.none
    # The static member restarts too: same generation, its assignment back, no rebalance.
    rejoined = join(again, instance_id="static-1").value()
    assert (rejoined.error_code, rejoined.generation_id) == (E.none, generation)
    assert rejoined.member_id != static
    sync = again.call(14, 3, group_id="g", generation_id=generation, member_id=rejoined.member_id,
                      group_instance_id="static-1", assignments=())
    assert sync.assignment == f"for-{static}".encode()
    fenced = again.call(12, 3, group_id="g", generation_id=generation, member_id=static,
                        group_instance_id="static-1")
    assert fenced.error_code == E.fenced_instance_id
    again.node.close()


def test_acknowledged_offsets_survive_a_crash(tmp_path: Path) -> None:
    disk = SimDisk(random.Random(3))
    b = Broker(disk, "/data")
    b.call(10, 3, key="g", key_type=0)
    b.node.create_topic("t", 2, {}, b.now_ms)
    dynamic, _, generation = form_group(b)
    commit(b, dynamic, generation, {0: 5})
    commit(b, dynamic, generation, {0: 6, 1: 7})
    disk.crash()  # unflushed bytes vanish; acknowledged ones were flushed (flush.policy=always)
    again = Broker(disk, "/data", now_ms=b.now_ms)
    assert fetch(again) == {0: 6, 1: 7}
    assert describe(again).group_state == "Stable"


def test_unanswered_while_unflushed_then_answered(tmp_path: Path) -> None:
    """A group answer waits for HW, which under flush.policy=always waits for the flush."""
    b = Broker(RealDisk(), str(tmp_path / "data"))
    b.call(10, 3, key="g", key_type=0)
    b.node.create_topic("t", 1, {}, b.now_ms)
    dynamic, _, generation = form_group(b)
    topic = b.entity(8, 8, "OffsetCommitRequestTopic", name="t", partitions=(
        b.entity(8, 8, "OffsetCommitRequestPartition", partition_index=0, committed_offset=1,
                 committed_leader_epoch=0, committed_metadata=None),))
    b.pump = lambda: None  # type: ignore[method-assign]  # hold the flusher
    pending = b.send(8, 8, group_id="g", generation_id_or_member_epoch=generation,
                     member_id=dynamic, group_instance_id=None, topics=(topic,))
    assert not pending.done
    Broker.pump(b)
    assert pending.value().topics[0].partitions[0].error_code == E.none
