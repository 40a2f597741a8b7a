"""Simulated members of a KIP-848 consumer group (`ackly sim --consumer-groups`).

Owns: each member's view of its group membership (coordinator, member id, member epoch, the
partitions it owns) and the `GroupHistory` of every assignment the coordinator gave. A member
finds the group's coordinator (FindCoordinator), sends ConsumerGroupHeartbeat v1 every
heartbeat interval the broker names, owns exactly the assignment it was last given (it revokes
at once, as a consumer with nothing in flight does), rejoins under its id with epoch 0 when
fenced (FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID), and now and then leaves (epoch -1) and joins
again under a new member id, as a restarted process does.

Checked as answers arrive (`GroupHistory.record`), from what the coordinator said:
- a member's epoch never goes down while it stays in the group (between joins);
- two members given partitions at the same member epoch never share one: each member holds at
  an epoch a part of that epoch's target assignment.
At the end (`GroupHistory.problems`), in virtual time: no partition was owned by two members
at once. A member owns a partition from the answer that gave it until the answer that took it
away or the leave it sent (a consumer stops reading then); the coordinator gives it to the
next member only after the owner confirmed, so the two spans never overlap. The spans of a
member that learned it was fenced are left out: the coordinator had removed it (session
timeout) while it could not hear, and it is a zombie until it hears, as in Kafka.
After healing, the group must converge (`converged`): every member at one epoch, stable, and
every partition of the topic owned by exactly one member.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from ackly.errors import ErrorCode
from ackly.sim import frames
from ackly.sim.clients import ClientEnv, ClientViolation, _Client

FIND_COORDINATOR, CONSUMER_GROUP_HEARTBEAT = 10, 68
FIND_COORDINATOR_VERSION, HEARTBEAT_VERSION = 3, 1
GROUP_KEY_TYPE = 0
GROUP = "sim-group"
COORDINATOR_MOVED = frozenset({ErrorCode.not_coordinator, ErrorCode.coordinator_not_available,
                               ErrorCode.coordinator_load_in_progress})
FENCED = frozenset({ErrorCode.fenced_member_epoch, ErrorCode.unknown_member_id})

Partitions = frozenset[tuple[uuid.UUID, int]]


@dataclass
class GroupHistory:
    # (member epoch) -> member id -> partitions the coordinator gave it at that epoch
    by_epoch: dict[int, dict[str, Partitions]] = field(default_factory=dict)
    last_epoch: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    fenced: int = 0
    leaves: int = 0
    # Spans of ownership: closed ones (member, partition, start ms, end ms), and open ones by
    # member id and partition (start ms).
    spans: list[tuple[str, tuple[uuid.UUID, int], int, int]] = field(default_factory=list)
    open_spans: dict[str, dict[tuple[uuid.UUID, int], int]] = field(default_factory=dict)

    def owns(self, member_id: str, held: Partitions, now_ms: int) -> None:
        """The member holds exactly `held` from now on."""
        spans = self.open_spans.setdefault(member_id, {})
        for tp in set(spans) - held:
            self.spans.append((member_id, tp, spans.pop(tp), now_ms))
        for tp in held - set(spans):
            spans[tp] = now_ms

    def zombie(self, member_id: str) -> None:
        """The member learned it was fenced: its open spans do not count."""
        self.open_spans.pop(member_id, None)

    def problems(self, now_ms: int) -> list[str]:
        by_tp: dict[tuple[uuid.UUID, int], list[tuple[int, int, str]]] = {}
        for member_id, tp, start, end in self.spans:
            by_tp.setdefault(tp, []).append((start, end, member_id))
        for member_id, spans in self.open_spans.items():
            for tp, start in spans.items():
                by_tp.setdefault(tp, []).append((start, now_ms, member_id))
        out = []
        for tp, tp_spans in by_tp.items():
            tp_spans.sort()
            for (s1, e1, m1), (s2, e2, m2) in itertools.pairwise(tp_spans):
                if m1 != m2 and s2 < e1:
                    out.append(f"group: partition {tp[1]} owned by {m1} ({s1}-{e1}) and {m2} ({s2}-{e2}) at once")
        return out

    def joined(self, member_id: str) -> None:
        self.last_epoch.pop(member_id, None)

    def record(self, member: str, member_id: str, epoch: int, owned: Partitions) -> None:
        self.answers += 1
        last = self.last_epoch.get(member_id)
        if last is not None and epoch < last:
            raise ClientViolation(f"{member}: member epoch went back from {last} to {epoch}")
        self.last_epoch[member_id] = epoch
        at_epoch = self.by_epoch.setdefault(epoch, {})
        for other, parts in at_epoch.items():
            if other != member_id and parts & owned:
                raise ClientViolation(
                    f"{member}: at member epoch {epoch}, {sorted(str(p) for p in parts & owned)} "
                    f"also given to {other}")
        at_epoch[member_id] = at_epoch.get(member_id, frozenset()) | owned


class GroupMember(_Client):
    def __init__(self, name: str, env: ClientEnv, rng: random.Random, history: GroupHistory, *,
                 leave_rate: float) -> None:
        super().__init__(name, env, rng)
        self.history = history
        self.leave_rate = leave_rate
        self.coordinator: int | None = None
        self.member_id = self._new_id()
        self.epoch = 0
        self.owned: dict[uuid.UUID, frozenset[int]] = {}
        self.interval_ms = 500
        self._inflight = False
        self._leaving = False
        self._leave_sent_ms = 0

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def step(self) -> None:
        if self._inflight:
            return
        if self.coordinator is None:
            self._inflight = True
            request = frames.request(FIND_COORDINATOR, FIND_COORDINATOR_VERSION,
                                     {"key": GROUP, "key_type": GROUP_KEY_TYPE})
            self.send(self.rng.choice(self.env.brokers), request, self._on_find, self._lost)
            return
        if self.epoch > 0 and self.rng.random() < self.leave_rate:
            self._leaving = True
            self._leave_sent_ms = self.scheduler.now_ms  # it stops consuming before it says so
            self._heartbeat(-1)
            return
        self._heartbeat(self.epoch)

    def _heartbeat(self, epoch: int) -> None:
        assert self.coordinator is not None
        full = epoch == 0
        self._inflight = True
        request = frames.request(CONSUMER_GROUP_HEARTBEAT, HEARTBEAT_VERSION, {
            "group_id": GROUP, "member_id": self.member_id, "member_epoch": epoch,
            "rebalance_timeout": 5_000 if full else -1,
            "subscribed_topic_names": [self.env.topic] if full else None,
            "topic_partitions": [] if full else [
                {"topic_id": t, "partitions": sorted(ps)} for t, ps in sorted(self.owned.items())],
        })
        self.send(self.coordinator, request, self._on_heartbeat, self._lost)

    def _on_find(self, response: Any) -> None:
        self._inflight = False
        if response.error_code == ErrorCode.none and int(response.node_id) in self.env.brokers:
            self.coordinator = int(response.node_id)
            self.wake(0)
        else:
            self.wake(self.env.backoff_ms)

    def _lost(self, reason: str) -> None:
        self._inflight = False
        self._leaving = False
        self.coordinator = None
        self.wake(self.env.backoff_ms)

    def _on_heartbeat(self, response: Any) -> None:
        self._inflight = False
        code = response.error_code
        if code in COORDINATOR_MOVED:
            self._lost(ErrorCode(code).name)
            return
        if self._leaving:
            self._leaving = False
            # Left (or already gone): a new process, a new member id.
            self.history.leaves += 1
            if code in FENCED:
                self.history.zombie(self.member_id)  # it had been removed already
            else:
                self.history.owns(self.member_id, frozenset(), self._leave_sent_ms)
            self._rejoin(new_id=True)
            return
        if code in FENCED:
            self.history.fenced += 1
            self.history.zombie(self.member_id)
            self._rejoin(new_id=False)
            return
        if code != ErrorCode.none:
            raise ClientViolation(f"{self.name}: heartbeat answered {ErrorCode(code).name}")
        self.epoch = int(response.member_epoch)
        self.interval_ms = max(int(response.heartbeat_interval.total_seconds() * 1000), 50)
        if response.assignment is not None:
            self.owned = {tp.topic_id: frozenset(int(p) for p in tp.partitions)
                          for tp in response.assignment.topic_partitions if tp.partitions}
        owned = frozenset((t, p) for t, ps in self.owned.items() for p in ps)
        self.history.record(self.name, self.member_id, self.epoch, owned)
        self.history.owns(self.member_id, owned, self.scheduler.now_ms)
        self.wake(self.interval_ms)

    def _rejoin(self, *, new_id: bool) -> None:
        """Drop every partition and join again with epoch 0."""
        if new_id:
            self.member_id = self._new_id()
        self.history.joined(self.member_id)
        self.epoch, self.owned = 0, {}
        self.wake(self.env.backoff_ms)

    def held(self) -> Partitions:
        return frozenset((t, p) for t, ps in self.owned.items() for p in ps)


def converged(members: list[GroupMember], partitions: int) -> str | None:
    """None once the group settled: one epoch for all, every partition owned exactly once;
    else what is still missing."""
    if not members:
        return None
    epochs = {m.epoch for m in members}
    owned = [p for m in members for p in m.held()]
    if len(epochs) != 1 or 0 in epochs:
        return f"group members at epochs {sorted(epochs)}"
    if len(owned) != len(set(owned)) or len({p for _, p in owned}) != partitions:
        return f"group owns {len(owned)} partitions of {partitions}"
    return None
