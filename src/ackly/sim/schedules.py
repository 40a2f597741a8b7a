"""Scripted schedules: one fixed sequence of faults on the simulated cluster, not a swarm.

Owns `last_replica_standing`, the schedule KIP-966 was written for. RF 3,
min.insync.replicas 2, acks=all, and Kafka's default flushing (`flush.policy=never`: the
operating system writes the page cache back, so a power loss takes what was not yet written):

1. replica C is killed; the ISR shrinks to {leader A, B};
2. the producer writes, acknowledged: A and B hold the records (in their page caches);
3. B stops cleanly (a rolling restart: its logs are flushed); the ISR shrinks to {A};
4. A loses power: its unflushed copy of the acknowledged records is gone;
5. A comes back, then B, then C.

Before KIP-966 (eligible.leader.replicas.enable=false) the ISR still says {A} at step 5, so A,
the last replica standing, is elected as it returns, without the records; B and C truncate to
it, and the acknowledged writes are lost. With eligible leader replicas B left the ISR for the
ELR at step 3 (the HW cannot advance below min ISR, so it holds every committed record); A's
registration after its unclean shutdown takes it out of the ELR, so the partition waits
without a leader until B is back and elected; A then truncates to B and nothing acknowledged
is lost: unavailability instead of loss.

Every step waits for a condition on the cluster (bounded in virtual time), never for a time.
The per-event checks of the swarm (sim/invariants.py) run throughout; a violation is recorded
in the result, as the loss itself is.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ackly.cluster.metadata import PartitionState
from ackly.sim.clients import Admin, Producer
from ackly.sim.cluster import TOPIC, SimCluster, SimConfig
from ackly.sim.invariants import InvariantViolation, is_leader, partitions_of
from ackly.types import TopicPartition

TP = TopicPartition(TOPIC, 0)
WRITES = 4
STEP_LIMIT_MS = 30_000  # virtual time any one step may take


class ScheduleStuck(AssertionError):
    """A step's condition did not come true within its bound."""


@dataclass
class ScheduleResult:
    eligible_leader_replicas: bool
    acknowledged: int = 0
    problems: list[str] = field(default_factory=list)  # from the end-of-run history check
    violations: list[str] = field(default_factory=list)  # per-event invariants broken
    narrative: list[str] = field(default_factory=list)  # what each step saw, for people
    # The partition state at the end of each step, by step: created, killed, acknowledged,
    # stopped, lost-power, leader-back, elr-back, converged.
    states: dict[str, PartitionState | None] = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)  # A (leader), B (stopped), C (killed)

    @property
    def lost_writes(self) -> list[str]:
        return [p for p in self.problems if p.startswith("lost write")]


class _Script:
    def __init__(self, eligible_leader_replicas: bool, seed: int) -> None:
        self.cluster = c = SimCluster(SimConfig(seed=seed, eligible_leader_replicas=eligible_leader_replicas))
        self.result = ScheduleResult(eligible_leader_replicas)
        # A quiet network and store: the schedule's faults are the only ones.
        c.network.faults.delay_rate = 0.0
        c.store.faults.delay_rate = 0.0
        rng = random.Random(seed)
        c.partitions = 1
        c.admin = Admin("admin", c.env, random.Random(rng.getrandbits(64)), 1, 3, {
            "min.insync.replicas": "2", "flush.policy": "never", "unclean.leader.election.enable": "false",
        })
        self.producer = Producer("p0", c.env, random.Random(rng.getrandbits(64)), acks=-1, producer_id=None,
                                 max_writes=WRITES, think_ms=0)
        c.producers = [self.producer]
        c.consumers = []

    def state(self) -> PartitionState | None:
        assert self.cluster.observer is not None
        return self.cluster.observer.metadata.partition(TP)

    def note(self, step: str, what: str) -> None:
        s = self.state()
        self.result.states[step] = s
        shown = "no state" if s is None else (
            f"leader {s.leader} epoch {s.leader_epoch} ISR {list(s.isr)} ELR {list(s.elr)} "
            f"last known ELR {list(s.last_known_elr)}")
        self.result.narrative.append(f"{what}: {shown}")

    def until(self, step: str, what: str, condition: Callable[[], bool], limit_ms: int = STEP_LIMIT_MS) -> None:
        c = self.cluster
        deadline = c.scheduler.now_ms + limit_ms
        while not condition():
            if c.scheduler.now_ms > deadline or not c.scheduler.step():
                raise ScheduleStuck(f"{what}: not within {limit_ms} ms; {self.result.narrative[-3:]}")
            if not self.result.violations:  # the first violation is the one that tells
                try:
                    c.check()
                except InvariantViolation as exc:
                    self.result.violations.append(str(exc))
        self.note(step, what)

    def acting_leader(self, broker_id: int) -> bool:
        node = self.cluster.hosts[broker_id].node
        return node is not None and any(p.tp == TP and is_leader(p) for p in partitions_of(node))

    def registered(self) -> set[int]:
        assert self.cluster.observer is not None
        return set(self.cluster.observer.metadata.brokers)

    def decided_since_registered(self, broker_id: int) -> bool:
        """The partition state was written after the broker's (new) registration: the
        controller has looked at the partition with this incarnation in view."""
        c = self.cluster
        assert c.observer is not None
        info = c.observer.metadata.brokers.get(broker_id)
        return info is not None and c.observer.metadata.partition_revision(TP) > info.epoch

    def run(self) -> ScheduleResult:
        c = self.cluster
        for b in sorted(c.hosts):
            c.hosts[b].start()
        c.admin.wake()
        self.until("created", "created", lambda: (s := self.state()) is not None and len(s.isr) == 3
                   and self.acting_leader(s.leader))
        s = self.state()
        assert s is not None
        a = s.leader
        b, cc = (r for r in s.replicas if r != a)
        self.result.roles = {"A": a, "B": b, "C": cc}
        c.kill(cc)
        self.until("killed", f"b{cc} killed",
                   lambda: (s := self.state()) is not None and s.isr == tuple(sorted((a, b))))
        self.producer.wake()
        self.until("acknowledged", "writes acknowledged",
                   lambda: self.producer._written == WRITES and self.producer.idle)
        self.result.acknowledged = sum(1 for w in c.history.writes if w.acknowledged)
        c.stop(b)
        self.until("stopped", f"b{b} stopped cleanly", lambda: (s := self.state()) is not None and s.isr == (a,))
        c.kill(a)
        # No broker is left to write anything: wait for A's session to end.
        self.until("lost-power", f"b{a} lost power", lambda: a not in self.registered())
        c.restart(a)
        self.until("leader-back", f"b{a} restarted", lambda: self.decided_since_registered(a))
        c.restart(b)
        self.until("elr-back", f"b{b} restarted", lambda: self.decided_since_registered(b))
        c.restart(cc)
        c.heal()
        self.until("converged", "converged", lambda: c.converged, limit_ms=60_000)
        self.result.problems = c.final_problems()
        return self.result


def last_replica_standing(*, eligible_leader_replicas: bool, seed: int = 1) -> ScheduleResult:
    """Run the schedule (see the module docstring) with or without KIP-966's rules."""
    return _Script(eligible_leader_replicas, seed).run()
