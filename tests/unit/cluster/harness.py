"""An in-process cluster for tests: ClusterMembers around one MemoryStore, on a virtual clock.

The harness is the "network": it carries each member's commands to the store and the store's
answers back. With `reorder=True` it keeps every watch's events in order (the one guarantee the
store gives) but moves command results around them at random and holds some messages back for
a later round, so members see results before or after the watch events of the same write.

`Observer` is an independent store client that watches everything from the first revision and
checks, event by event, the invariants of the metadata history (docs/guarantees.md rules 10 and 12):
one leader per leader epoch, epochs never fall, a new leader was a live ISR member when elected
(or the election was an allowed unclean one), the ISR stays within the replicas.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ackly.cluster.controller import UNCLEAN_CONFIG
from ackly.cluster.member import ClusterMember, MemberConfig
from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.metadata import (
    NO_LEADER,
    BrokerInfo,
    ClusterMetadata,
    KeyKind,
    LeaderRecoveryState,
    PartitionState,
)
from ackly.cluster.store import CommandResult, StoreInput, Watch, WatchEvent
from ackly.types import TopicPartition

FAST = MemberConfig(session_timeout_ms=3_000, heartbeat_interval_ms=1_000, request_timeout_ms=2_000)


class InvariantViolation(AssertionError):
    pass


@dataclass
class Observer:
    """Checks the metadata history as the store's one ordered watch stream tells it."""

    store: MemoryStore
    client: str = "observer"
    metadata: ClusterMetadata = field(default_factory=ClusterMetadata)
    leaders: dict[tuple[TopicPartition, uuid.UUID, int], int] = field(default_factory=dict)
    # Per partition, the incarnation (broker epoch) under which each ISR member is in sync;
    # None: it was not registered when it got there (an ISR kept for members that are down).
    isr_incarnations: dict[tuple[TopicPartition, uuid.UUID], dict[int, int | None]] = field(
        default_factory=dict
    )
    elections: int = 0
    unclean_elections: int = 0
    elr_enabled: bool = False  # the members run KIP-966's rules: ELR members may be elected
    elr_elections: int = 0
    offline_transitions: int = 0

    def __post_init__(self) -> None:
        # From revision 1: the whole history, so nothing happens unobserved.
        self.store.submit(self.client, Watch(request_id=1, prefix="/ackly/", start_revision=1))

    def poll(self) -> None:
        for item in self.store.drain(self.client):
            if isinstance(item, WatchEvent):
                self._check(item)
                self.metadata = self.metadata.apply([item])
            elif isinstance(item, CommandResult):
                assert item.ok, item
            else:
                raise InvariantViolation(f"observer lost its watch: {item}")

    def _check(self, event: WatchEvent) -> None:
        parsed = self.metadata.keys.parse(event.key)
        if parsed is None or parsed.kind is not KeyKind.PARTITION or event.value is None:
            return
        tp = parsed.tp
        new = PartitionState.decode(event.value)  # decoding checks the state's own invariants
        before = self.metadata.partitions.get(tp)
        old = before if before is not None and before.topic_id == new.topic_id else None
        brokers = self.metadata.brokers  # the store as it was just before this write
        topic = self.metadata.topics.get(tp.topic)

        def fail(why: str) -> None:
            raise InvariantViolation(
                f"{tp} at revision {event.mod_revision}: {why}\n  before {old}\n  after  {new}"
            )

        if not set(new.isr) <= set(new.replicas):
            fail("ISR not within replicas")
        if new.leader != NO_LEADER and new.leader not in new.isr:
            fail("leader not in ISR")
        key = (tp, new.topic_id, new.leader_epoch)
        if self.leaders.setdefault(key, new.leader) != new.leader:
            fail(f"two leaders in leader epoch {new.leader_epoch}: {self.leaders[key]} and {new.leader}")
        incarnations = self.isr_incarnations.setdefault((tp, new.topic_id), {})
        if old is None:
            if (new.leader_epoch, new.partition_epoch) != (0, 0):
                fail("a new partition state does not start at epoch 0")
            if new.leader != NO_LEADER and new.leader not in brokers:
                fail("created with a leader that is not registered")
            incarnations.update({b: brokers[b].epoch if b in brokers else None for b in new.isr})
            return
        self._check_incarnations(new, old, incarnations, fail)
        if new.leader_epoch < old.leader_epoch or new.partition_epoch <= old.partition_epoch:
            fail("an epoch went backwards (or the partition epoch did not rise)")
        if new.leader != old.leader and new.leader_epoch <= old.leader_epoch:
            fail("the leader changed without a new leader epoch")
        if new.leader_epoch > old.leader_epoch:
            if new.leader == NO_LEADER:
                self.offline_transitions += 1
                return
            self.elections += 1
            if new.leader not in brokers:
                fail(f"elected leader {new.leader} is not registered")
            if self.elr_enabled and new.leader in old.elr and not set(old.isr) & set(new.isr):
                if new.isr != (new.leader,) or new.leader in new.elr:
                    fail("a leader elected from the ELR must start alone in the ISR, out of the ELR")
                self.elr_elections += 1
            elif new.leader not in old.isr:
                unclean = topic is not None and topic.configs.get(UNCLEAN_CONFIG) == "true"
                if not unclean:
                    fail(f"unclean election of {new.leader} with {UNCLEAN_CONFIG} off")
                recovering = new.leader_recovery_state is LeaderRecoveryState.RECOVERING
                if not recovering or new.isr != (new.leader,):
                    fail("an unclean leader must start RECOVERING with ISR = {leader}")
                self.unclean_elections += 1
        for b in set(new.isr) - set(old.isr):
            if b not in brokers:
                fail(f"broker {b} joined the ISR while not registered")

    def _check_incarnations(
        self,
        new: PartitionState,
        old: PartitionState,
        incarnations: dict[int, int | None],
        fail: Callable[[str], None],
    ) -> None:
        """A broker that restarted has to rejoin the ISR (rule 9) before it counts as in sync; the
        only exception is the last ISR member coming back to an offline partition, which is
        elected alone in a new leader epoch."""
        brokers = self.metadata.brokers
        for b in new.isr:
            if b not in brokers:
                continue  # down: kept so that it can be elected cleanly when it returns
            epoch = brokers[b].epoch
            if b not in old.isr:
                incarnations[b] = epoch  # joined now
            elif incarnations.get(b) != epoch:
                returning = new.leader == b and new.isr == (b,) and new.leader_epoch > old.leader_epoch
                if not returning:
                    fail(f"broker {b}'s new incarnation (epoch {epoch}) stayed in the ISR without rejoining")
                incarnations[b] = epoch
        for b in list(incarnations):
            if b not in new.isr:
                del incarnations[b]


class SimCluster:
    def __init__(
        self,
        broker_ids: list[int],
        *,
        seed: int = 0,
        config: MemberConfig = FAST,
        reorder: bool = False,
        racks: dict[int, str] | None = None,
        start: bool = True,
        history_limit: int = 100_000,
    ) -> None:
        self.store = MemoryStore(history_limit=history_limit)
        self.observer = Observer(self.store)
        self.config = config
        self.now_ms = 0
        self.rng = random.Random(seed)
        self.reorder = reorder
        self.racks = racks or {}
        self.broker_ids = list(broker_ids)
        self.members: dict[int, ClusterMember] = {}
        self.paused: set[int] = set()
        self.incarnations: dict[int, int] = {b: 0 for b in broker_ids}
        self._transit: dict[int, list[StoreInput]] = {}
        if start:
            for b in broker_ids:
                self.start(b)
            self.pump()

    # --- processes ---------------------------------------------------------------------------------

    def client(self, broker_id: int) -> str:
        return f"broker-{broker_id}.{self.incarnations[broker_id]}"

    def start(self, broker_id: int) -> ClusterMember:
        assert broker_id not in self.members
        self.incarnations[broker_id] = self.incarnations.get(broker_id, 0) + 1
        info = BrokerInfo(broker_id, "127.0.0.1", 19092 + broker_id, rack=self.racks.get(broker_id))
        member = ClusterMember(
            info, config=self.config, rng=random.Random(self.rng.getrandbits(64)), now_ms=self.now_ms
        )
        self.members[broker_id] = member
        self._transit[broker_id] = []
        return member

    def kill(self, broker_id: int) -> None:
        """kill -9: the process and its connections go; its lease lives on until it expires."""
        self.store.disconnect(self.client(broker_id))
        del self.members[broker_id]
        self._transit.pop(broker_id, None)
        self.paused.discard(broker_id)

    def leave(self, broker_id: int) -> None:
        """A clean exit after controlled shutdown: revoke the lease, then stop."""
        self.members[broker_id].leave(self.now_ms)
        self.pump()
        self.kill(broker_id)

    @property
    def running(self) -> list[int]:
        return [b for b in self.members if b not in self.paused]

    # --- the network and the clock ------------------------------------------------------------------

    def pump(self, max_rounds: int = 500) -> None:
        for _ in range(max_rounds):
            moved = False
            for b in self.running:
                for command in self.members[b].take_commands():
                    self.store.submit(self.client(b), command)
                    moved = True
            self.observer.poll()
            for b in self.running:
                self._transit[b].extend(self.store.drain(self.client(b)))
                batch = self._take_batch(b)
                if batch:
                    self.members[b].handle_all(batch, self.now_ms)
                    moved = True
            self.check()
            if not moved and not any(self._transit[b] for b in self.running):
                return
        raise AssertionError("the cluster did not quiesce")

    def _take_batch(self, broker_id: int) -> list[StoreInput]:
        pending = self._transit[broker_id]
        if not self.reorder or not pending:
            self._transit[broker_id] = []
            return pending
        # Keep the watch events in order; scatter everything else among them; hold back a tail.
        events = [m for m in pending if isinstance(m, WatchEvent)]
        others = [m for m in pending if not isinstance(m, WatchEvent)]
        self.rng.shuffle(others)
        merged: list[StoreInput] = list(events)
        for message in others:
            merged.insert(self.rng.randint(0, len(merged)), message)
        cut = len(merged) if self.rng.random() < 0.5 else self.rng.randint(1, len(merged))
        self._transit[broker_id] = merged[cut:]
        return merged[:cut]

    def advance(self, ms: int, step_ms: int = 250) -> None:
        """Move the clock on by `ms`, ticking the store and every running member on the way."""
        end = self.now_ms + ms
        while self.now_ms < end:
            self.now_ms = min(end, self.now_ms + step_ms)
            self.store.tick(self.now_ms)
            for b in self.running:
                self.members[b].tick(self.now_ms)
            self.pump()

    # --- checks -----------------------------------------------------------------------------------

    def controllers(self) -> list[int]:
        return [b for b, m in self.members.items() if m.is_controller(self.now_ms)]

    def check(self) -> None:
        believers = self.controllers()
        if len(believers) > 1:
            raise InvariantViolation(f"brokers {believers} all believe they are the controller")
        for b in believers:
            lease = self.members[b].lease_id
            assert lease is not None and self.store.lease_alive(lease), f"controller {b} has no live lease"

    def view(self) -> ClusterMetadata:
        """The store's true state (the observer has seen all of it after a pump)."""
        self.observer.poll()
        return self.observer.metadata

    def any_member(self) -> ClusterMember:
        return self.members[self.running[0]]
