"""Swarm faults: each seed draws its own fault mix and rates, then an injector plays them.

Owns: `FaultPlan` (which kinds of fault this seed uses, how often, how long they last, and the
network, store and disk latencies) and `FaultInjector` (fires one fault at a time at seeded
intervals and schedules its end). Swarm testing (TigerBeetle's simulator, Groce et al.): a seed
that leaves some fault kinds out explores histories that a fixed mix of every fault would
almost never reach (a long run of partitions without kills, say).

Fault kinds: "kill" (kill -9 with power loss, restart later), "partition" (two brokers cut
from each other), "isolate" (one broker cut from every other broker, and from the store with
probability 1/2, while clients can still reach it: the zombie-leader case), "store" (one broker
cut from the store), "pause" (a process stops for a while: GC, SIGSTOP), "reset" (one
connection closed), "stall" (one link holds its messages for a while), "client" (a client cut
from one broker), "disk-error" (a broker's next fsync or append of a log fails, EIO or ENOSPC:
the broker takes its log directory offline, leaves and exits; it restarts later; drawn last,
for about half the seeds, so that the other kinds' histories did not change when it came),
"wall-step" (`WallSteps`: a machine's wall clock jumps forwards or backwards, as an NTP step
does, and is put right later; for about half the seeds, on a schedule and PRNG of its own so
that every other fault stays where it was). Deadlines run on the monotonic clock, so a wall
step may change the times written (LogAppendTime, coordinator records) and nothing else.

Invariants:
- Kills never lose the disks of two replicas of a partition at once: a broker whose disk
  crashed counts as lost until it is back in the ISR of every partition it replicates, and no
  other broker sharing a partition with it is killed meanwhile (rule 13's premise). A broker
  with a disk error armed counts as lost from the moment it is armed until it has failed,
  restarted and caught up.
- Every fault ends by itself (a restart, a heal, a resume), and `stop` ends them all at once for
  the liveness phase; an end scheduled before `stop` is then a no-op.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ackly.sim.network import NetworkFaults, broker_endpoint
from ackly.sim.store import StoreFaults

if TYPE_CHECKING:
    from ackly.sim.cluster import SimCluster

KINDS = ("kill", "partition", "isolate", "store", "pause", "reset", "stall", "client")
DISK_ERROR = "disk-error"
WALL_STEP = "wall-step"
# Where a step puts a machine's wall clock, from true time: backwards by less than
# message.timestamp.after.max.ms (1 h), so that the clients' CreateTime stays acceptable to
# KIP-937's check; forwards by up to a day, short of every retention by stored time the
# simulation uses (retention.ms, offsets and transactional-id expiry: 7 days).
WALL_STEP_OFFSETS_MS = (-20 * 60_000, -60_000, 60_000, 3_600_000, 24 * 3_600_000)


@dataclass
class FaultPlan:
    weights: dict[str, float] = field(default_factory=dict)
    interval_ms: tuple[int, int] = (200, 1_500)
    duration_ms: tuple[int, int] = (200, 4_000)
    network: NetworkFaults = field(default_factory=NetworkFaults)
    store: StoreFaults = field(default_factory=StoreFaults)
    flush_delay_max_ms: int = 5
    wall_steps: bool = False

    @classmethod
    def draw(cls, rng: random.Random, *, brokers: int) -> FaultPlan:
        # Partitions between brokers need two of them.
        kinds = list(KINDS) if brokers > 1 else ["kill", "store", "pause", "reset", "stall", "client"]
        chosen = [k for k in kinds if rng.random() < 0.6] or [rng.choice(kinds)]
        weights = {k: rng.uniform(0.2, 1.0) for k in chosen}
        lo = rng.choice((50, 150, 400))
        interval = (lo, lo * rng.choice((2, 4, 8)))
        duration_hi = rng.choice((800, 2_500, 6_000))
        plan = cls(
            weights=weights,
            interval_ms=interval,
            duration_ms=(100, duration_hi),
            network=NetworkFaults(
                # Never 0: a network without latency lets a polling client spin in zero time.
                latency_ms=rng.choice((1, 2)),
                delay_rate=rng.choice((0.0, 0.05, 0.3)),
                delay_max_ms=rng.choice((5, 50, 400)),
            ),
            store=StoreFaults(
                latency_ms=rng.choice((1, 3)),
                delay_rate=rng.choice((0.0, 0.1, 0.4)),
                delay_max_ms=rng.choice((5, 100, 600)),
            ),
            flush_delay_max_ms=rng.choice((0, 2, 20)),
        )
        # Drawn after everything else, so the plans of seeds without it are what they were.
        if rng.random() < 0.5:
            plan.weights[DISK_ERROR] = rng.uniform(0.1, 0.5)
        plan.wall_steps = rng.random() < 0.5  # drawn after that, for the same reason
        return plan

    def describe(self) -> str:
        kinds = ",".join(f"{k}:{w:.2f}" for k, w in self.weights.items())
        return (
            f"faults[{kinds}] every {self.interval_ms[0]}-{self.interval_ms[1]} ms lasting "
            f"{self.duration_ms[0]}-{self.duration_ms[1]} ms; "
            f"net delay {self.network.delay_rate:.2f}x{self.network.delay_max_ms} ms; "
            f"store delay {self.store.delay_rate:.2f}x{self.store.delay_max_ms} ms; "
            f"flush <= {self.flush_delay_max_ms} ms"
            + ("; wall steps" if self.wall_steps else "")
        )


class FaultInjector:
    def __init__(self, cluster: SimCluster, plan: FaultPlan, rng: random.Random) -> None:
        self.cluster = cluster
        self.plan = plan
        self.rng = rng
        self.active = False
        self.lost_disks: set[int] = set()
        self.injected: dict[str, int] = {}
        self._epoch = 0  # bumped by stop(): ends scheduled before it do nothing

    def start(self) -> None:
        if not self.plan.weights:
            return
        self.active = True
        self._schedule_next()

    def stop(self) -> None:
        self.active = False
        self._epoch += 1
        for host in self.cluster.hosts.values():
            host.disk.disarm()  # the liveness phase has no new faults

    def _schedule_next(self) -> None:
        lo, hi = self.plan.interval_ms
        self.cluster.scheduler.after(self.rng.randint(lo, hi), "fault", self._fire)

    def _duration(self) -> int:
        lo, hi = self.plan.duration_ms
        return self.rng.randint(lo, hi)

    def _later(self, delay_ms: int, label: str, action: Callable[[], None]) -> None:
        epoch = self._epoch

        def run() -> None:
            if epoch == self._epoch:
                action()

        self.cluster.scheduler.after(delay_ms, label, run)

    def _fire(self) -> None:
        if not self.active:
            return
        kinds = list(self.plan.weights)
        kind = self.rng.choices(kinds, weights=[self.plan.weights[k] for k in kinds])[0]
        if getattr(self, f"_{kind.replace('-', '_')}")():
            self.injected[kind] = self.injected.get(kind, 0) + 1
        self._schedule_next()

    # --- the faults (each returns whether it did something) --------------------------------------

    def _running(self) -> list[int]:
        return [b for b, h in self.cluster.hosts.items() if h.running]

    def kill_allowed(self, broker_id: int) -> bool:
        self._refresh_lost_disks()
        peers = self.cluster.replica_peers(broker_id)
        return not (self.lost_disks & peers)

    def _refresh_lost_disks(self) -> None:
        for b in sorted(self.lost_disks):
            host = self.cluster.hosts[b]
            if host.running and not host.disk.armed and not host.leaving \
                    and self.cluster.fully_in_sync(b):
                self.lost_disks.discard(b)

    def _kill(self) -> bool:
        candidates = [b for b in self._running() if self.kill_allowed(b)]
        if not candidates:
            return False
        b = self.rng.choice(candidates)
        self.cluster.kill(b)
        self.lost_disks.add(b)
        self._later(self._duration(), f"restart b{b}", lambda: self.cluster.restart(b))
        return True

    def _disk_error(self) -> bool:
        candidates = [b for b in self._running() if self.kill_allowed(b)
                      and not self.cluster.hosts[b].disk.armed]
        if not candidates:
            return False
        b = self.rng.choice(candidates)
        if self.rng.random() < 0.75:
            # Linux's write-back error: the unflushed writes of that file are gone.
            self.cluster.hosts[b].disk.fail_next("fsync", ".log", errno.EIO)
        else:
            self.cluster.hosts[b].disk.fail_next("append to", ".log", errno.ENOSPC)
        self.lost_disks.add(b)
        return True

    def after_disk_error(self, broker_id: int) -> None:
        """The broker whose disk failed has exited: restart it after a while (at once in the
        liveness phase, which restarts every broker)."""
        self.lost_disks.add(broker_id)
        if not self.active:
            self.cluster.scheduler.after(
                0, f"restart b{broker_id}", lambda: self.cluster.restart(broker_id)
            )
            return
        self._later(self._duration(), f"restart b{broker_id}",
                    lambda: self.cluster.restart(broker_id))

    def _partition(self) -> bool:
        brokers = sorted(self.cluster.hosts)
        if len(brokers) < 2:
            return False
        a, b = self.rng.sample(brokers, 2)
        ea, eb = broker_endpoint(a), broker_endpoint(b)
        self.cluster.network.cut(ea, eb)
        self._later(self._duration(), f"heal b{a}|b{b}", lambda: self.cluster.network.heal(ea, eb))
        return True

    def _isolate(self) -> bool:
        brokers = sorted(self.cluster.hosts)
        if len(brokers) < 2:
            return False
        b = self.rng.choice(brokers)
        eb = broker_endpoint(b)
        others = [broker_endpoint(o) for o in brokers if o != b]
        for other in others:
            self.cluster.network.cut(eb, other)
        from_store = self.rng.random() < 0.5
        if from_store:
            self.cluster.store.cut_off(b)

        def heal() -> None:
            for other in others:
                self.cluster.network.heal(eb, other)
            if from_store:
                self.cluster.store.reconnect(b)

        self._later(self._duration(), f"heal isolated b{b}", heal)
        return True

    def _store(self) -> bool:
        b = self.rng.choice(sorted(self.cluster.hosts))
        if b in self.cluster.store.cut:
            return False
        self.cluster.store.cut_off(b)
        self._later(self._duration(), f"store heal b{b}", lambda: self.cluster.store.reconnect(b))
        return True

    def _pause(self) -> bool:
        candidates = [b for b in self._running() if not self.cluster.hosts[b].paused]
        if not candidates:
            return False
        b = self.rng.choice(candidates)
        host = self.cluster.hosts[b]
        host.pause()
        incarnation = host.incarnation

        def resume() -> None:
            if host.incarnation == incarnation:
                host.resume()

        self._later(self._duration(), f"resume b{b}", resume)
        return True

    def _reset(self) -> bool:
        connections = self.cluster.network.connections()
        if not connections:
            return False
        conn = self.rng.choice(connections)
        self.cluster.network.reset(conn, "connection reset (fault)")
        return True

    def _stall(self) -> bool:
        brokers = sorted(self.cluster.hosts)
        endpoints = [broker_endpoint(b) for b in brokers] + self.cluster.client_names()
        a = self.rng.choice(endpoints)
        b = broker_endpoint(self.rng.choice(brokers))
        if a == b:
            return False
        until = self.cluster.scheduler.now_ms + self._duration()
        self.cluster.network.stall(a, b, until)
        self.cluster.network.stall(b, a, until)
        return True

    def _client(self) -> bool:
        clients = self.cluster.client_names()
        if not clients:
            return False
        c = self.rng.choice(clients)
        b = broker_endpoint(self.rng.choice(sorted(self.cluster.hosts)))
        self.cluster.network.cut(c, b)
        self._later(self._duration(), f"heal {c}|{b}", lambda: self.cluster.network.heal(c, b))
        return True


class WallSteps:
    """The "wall-step" fault: one machine's wall clock jumps to an offset from true time
    (WALL_STEP_OFFSETS_MS) and is put right after a fault's duration; `stop` puts every clock
    right. Counted in the injector's `injected`."""

    INTERVAL_MS = (1_000, 5_000)

    def __init__(self, cluster: SimCluster, plan: FaultPlan, rng: random.Random,
                 injected: dict[str, int]) -> None:
        self.cluster = cluster
        self.plan = plan
        self.rng = rng
        self.injected = injected
        self.active = False
        self._epoch = 0

    def start(self) -> None:
        if self.plan.wall_steps:
            self.active = True
            self._schedule_next()

    def stop(self) -> None:
        self.active = False
        self._epoch += 1
        for host in self.cluster.hosts.values():
            host.wall_offset_ms = 0

    def _schedule_next(self) -> None:
        self.cluster.scheduler.after(self.rng.randint(*self.INTERVAL_MS), "wall step", self._fire)

    def _fire(self) -> None:
        if not self.active:
            return
        host = self.cluster.hosts[self.rng.choice(sorted(self.cluster.hosts))]
        offset_ms = self.rng.choice(WALL_STEP_OFFSETS_MS)
        host.wall_offset_ms = offset_ms
        self.injected[WALL_STEP] = self.injected.get(WALL_STEP, 0) + 1
        epoch = self._epoch

        def put_right() -> None:
            if epoch == self._epoch and host.wall_offset_ms == offset_ms:
                host.wall_offset_ms = 0

        lo, hi = self.plan.duration_ms
        self.cluster.scheduler.after(self.rng.randint(lo, hi), f"wall back b{host.broker_id}", put_right)
        self._schedule_next()
