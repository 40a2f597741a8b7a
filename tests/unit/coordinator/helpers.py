"""A group coordinator on in-memory shard logs, driven by hand with a virtual clock.

`MemoryLog` is a ShardLog whose HW follows its LEO at once (`auto_commit`) or only when the
test says (`commit()`), so a test can hold replies back the way an unflushed or unreplicated
partition would. `Scheduler` is a minimal purgatory. `Box` is a waiter that remembers every
answer, so a test can check each request got exactly one.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ackly.coordinator.group import (
    ClassicGroup,
    GroupConfig,
    JoinRequest,
    JoinResult,
    SyncResult,
)
from ackly.coordinator.group_coordinator import GroupCoordinator, partition_for
from ackly.coordinator.group_manager import CommitPartition, OffsetsConfig
from ackly.coordinator.records import GroupMetadataValue, OffsetCommitValue
from ackly.coordinator.runtime import AwaitCommitted
from ackly.errors import ErrorCode
from ackly.protocol.records import patch_base_offset, read_header

T0 = 1_700_000_000_000
GROUP = "g"
SESSION_MS = 10_000
REBALANCE_MS = 30_000


class MemoryLog:
    def __init__(self, index: int) -> None:
        self.index = index
        self.batches: list[bytes] = []
        self.leo = 0
        self.hw = 0
        self.auto_commit = True

    @property
    def key(self) -> Hashable:
        return ("memory", self.index)

    @property
    def high_watermark(self) -> int:
        return self.hw

    @property
    def log_end_offset(self) -> int:
        return self.leo

    def append(self, batch: bytes, now_ms: int) -> None:
        data = bytearray(batch)
        patch_base_offset(data, 0, self.leo)
        self.batches.append(bytes(data))
        self.leo += read_header(data).last_offset_delta + 1
        if self.auto_commit:
            self.hw = self.leo

    def read_batches(self, start_offset: int) -> Iterator[bytes]:
        for batch in list(self.batches):
            header = read_header(batch)
            if header.base_offset + header.last_offset_delta >= start_offset:
                yield batch

    def commit(self) -> None:
        self.hw = self.leo


class Scheduler:
    """Held replies, retried on `check` and expired on `expire` (a tiny purgatory)."""

    def __init__(self) -> None:
        self.waiting: list[AwaitCommitted] = []

    def defer(self, op: AwaitCommitted, keys: Iterable[Hashable], now_ms: int) -> None:
        if not op.try_complete(now_ms):
            self.waiting.append(op)

    def check(self, now_ms: int) -> None:
        self.waiting = [op for op in self.waiting if not op.try_complete(now_ms)]

    def expire(self, now_ms: int) -> None:
        for op in [op for op in self.waiting if op.deadline_ms <= now_ms]:
            op.on_expire(now_ms)
        self.waiting = [op for op in self.waiting if op.deadline_ms > now_ms]


@dataclass
class Box:
    """A waiter: every answer it got, in order."""

    answers: list[Any] = field(default_factory=list)

    def complete(self, result: Any) -> None:
        self.answers.append(result)

    def fail(self, code: ErrorCode) -> None:
        self.answers.append(("failed", code))

    @property
    def done(self) -> bool:
        return bool(self.answers)

    @property
    def value(self) -> Any:
        assert len(self.answers) == 1, f"expected exactly one answer, got {self.answers}"
        return self.answers[0]


def consumer_subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user data (null)."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


class Harness:
    """One coordinator over `partitions` memory logs, and a clock."""

    def __init__(self, *, partitions: int = 3, config: GroupConfig | None = None,
                 offsets_config: OffsetsConfig | None = None, seed: int = 0,
                 logs: list[MemoryLog] | None = None, now_ms: int = T0) -> None:
        self.now_ms = now_ms
        self.config = config or GroupConfig(initial_rebalance_delay_ms=0)
        self.offsets_config = offsets_config or OffsetsConfig()
        self.scheduler = Scheduler()
        self.logs = logs if logs is not None else [MemoryLog(i) for i in range(partitions)]
        self.seed = seed
        self.coordinator = GroupCoordinator(
            config=self.config, offsets_config=self.offsets_config, scheduler=self.scheduler,
            rng=random.Random(seed), write_timeout_ms=5_000,
        )
        self.coordinator.load(self.logs, self.now_ms)

    # --- plumbing ------------------------------------------------------------------------------

    def settle(self) -> None:
        """Deliver whatever the logs' HW allows."""
        self.scheduler.check(self.now_ms)

    def advance(self, ms: int) -> None:
        """Move the clock, firing every timer due on the way, in order."""
        target = self.now_ms + ms
        for _ in range(10_000):
            due = self.coordinator.next_deadline_ms()
            if due is None or due > target:
                break
            self.now_ms = max(self.now_ms, due)
            self.coordinator.tick(self.now_ms)
            self.scheduler.expire(self.now_ms)
            self.settle()
        else:  # pragma: no cover
            raise AssertionError("timers keep firing at the same instant")
        self.now_ms = target
        self.coordinator.tick(self.now_ms)
        self.scheduler.expire(self.now_ms)
        self.settle()

    def advance_heartbeating(self, ms: int, members: list[tuple[str, int]], step_ms: int = 1_000,
                             group_id: str = GROUP) -> None:
        """Advance the clock while these (member id, generation) keep heartbeating."""
        end = self.now_ms + ms
        while self.now_ms < end:
            self.advance(min(step_ms, end - self.now_ms))
            for member_id, generation in members:
                box = Box()
                self.coordinator.heartbeat(group_id, member_id, None, generation, box, self.now_ms)

    def shard(self, group_id: str = GROUP) -> Any:
        return self.coordinator.runtime.shard(partition_for(group_id, len(self.logs)))

    def group(self, group_id: str = GROUP) -> ClassicGroup:
        group: ClassicGroup = self.shard(group_id).groups[group_id]
        return group

    def check(self) -> None:
        for shard in self.coordinator.shards():
            shard.check_invariants()

    def reopened(self) -> Harness:
        """A new coordinator loaded from the same logs (a broker restart)."""
        return Harness(config=self.config, offsets_config=self.offsets_config, seed=self.seed + 1,
                       logs=self.logs, now_ms=self.now_ms)

    # --- requests ------------------------------------------------------------------------------

    def join(self, member_id: str = "", *, instance_id: str | None = None,
             protocols: tuple[tuple[str, bytes], ...] = (("range", b"m"),),
             session_ms: int = SESSION_MS, rebalance_ms: int = REBALANCE_MS,
             group_id: str = GROUP, client_id: str = "client", version: int = 9,
             protocol_type: str = "consumer") -> Box:
        box = Box()
        self.coordinator.join_group(group_id, JoinRequest(
            member_id=member_id, group_instance_id=instance_id, protocol_type=protocol_type,
            protocols=protocols, session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
            client_id=client_id, client_host="/127.0.0.1",
            require_known_member_id=version >= 4, supports_skip_assignment=version >= 9,
        ), box, self.now_ms)
        return box

    def join_new(self, **kwargs: Any) -> Box:
        """A dynamic member's first join: MEMBER_ID_REQUIRED, then the join with that id."""
        first = self.join(**kwargs)
        result: JoinResult = first.value
        assert result.error is ErrorCode.member_id_required, result
        return self.join(result.member_id, **kwargs)

    def sync(self, member_id: str, generation: int, assignments: dict[str, bytes] | None = None,
             *, instance_id: str | None = None, group_id: str = GROUP) -> Box:
        box = Box()
        self.coordinator.sync_group(group_id, generation, member_id, instance_id, None, None,
                                    assignments or {}, box, self.now_ms)
        return box

    def heartbeat(self, member_id: str, generation: int, *, instance_id: str | None = None,
                  group_id: str = GROUP) -> ErrorCode:
        box = Box()
        self.coordinator.heartbeat(group_id, member_id, instance_id, generation, box, self.now_ms)
        result: ErrorCode = box.value
        return result

    def leave(self, *members: tuple[str, str | None], group_id: str = GROUP
              ) -> tuple[ErrorCode, list[ErrorCode]]:
        box = Box()
        self.coordinator.leave_group(group_id, list(members), box, self.now_ms)
        result: tuple[ErrorCode, list[ErrorCode]] = box.value
        return result

    def commit(self, member_id: str, generation: int, offsets: dict[tuple[str, int], int], *,
               instance_id: str | None = None, group_id: str = GROUP, metadata: str = "meta",
               expire_timestamp_ms: int = -1) -> Box:
        box = Box()
        self.coordinator.commit_offsets(
            group_id, member_id, instance_id, generation, expire_timestamp_ms,
            [CommitPartition(t, p, o, 7, metadata) for (t, p), o in offsets.items()],
            ErrorCode.illegal_generation, box, self.now_ms)
        return box

    def committed(self, group_id: str = GROUP) -> dict[tuple[str, int], int]:
        box = Box()
        self.coordinator.fetch_offsets([(group_id, None)], box, self.now_ms)
        (result,) = box.value
        return {(t, p): v.offset for t, parts in result.topics for p, v in parts if v is not None}


def durable_view(h: Harness) -> dict[str, Any]:
    """Everything the records say: each group's last record and every committed offset."""
    groups: dict[str, GroupMetadataValue | None] = {}
    offsets: dict[tuple[str, str, int], OffsetCommitValue] = {}
    for shard in h.coordinator.shards():
        for gid, g in shard.groups.items():
            groups[gid] = g.snapshot
        for gid, group_offsets in shard.offsets.items():
            for (t, p), v in group_offsets.items():
                offsets[(gid, t, p)] = v
    return {"groups": groups, "offsets": offsets}


def stable_group(h: Harness, members: int = 2, group_id: str = GROUP
                 ) -> tuple[list[str], int, dict[str, bytes]]:
    """Bring `members` dynamic members into a Stable generation; (member ids, generation,
    assignments) with member i assigned b"a<i>"."""
    boxes = [h.join_new(group_id=group_id, client_id=f"c{i}") for i in range(members)]
    h.advance(0)  # the initial delay (0 here) ends on the next tick
    results = [b.value for b in boxes]
    assert all(r.error is ErrorCode.none for r in results), results
    generation = results[0].generation
    leader = results[0].leader
    ids = [r.member_id for r in results]
    assignments = {m: f"a{i}".encode() for i, m in enumerate(ids)}
    syncs = [h.sync(m, generation, assignments if m == leader else None, group_id=group_id)
             for m in ids]
    for m, box in zip(ids, syncs, strict=True):
        result: SyncResult = box.value
        assert result.error is ErrorCode.none and result.assignment == assignments[m], result
    return ids, generation, assignments
