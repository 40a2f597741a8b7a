"""The metadata store as the simulated brokers reach it: a MemoryStore behind seeded delays.

Owns: the one `MemoryStore` of the simulated cluster, its lease clock (a timer at the store's
next lease deadline), each broker incarnation's session with it (client id `b<id>.<incarnation>`),
the delays of commands and of what comes back, and the store partition fault (a broker that
cannot reach the store).

Delivery model (cluster/store.py states what a client may assume, and no more):
- A broker's commands reach the store in the order it sent them (one connection), each after a
  seeded delay; the store applies a command when it arrives.
- Results and LeaseExpired come back each after its own delay, so they may overtake each other
  and watch events. Watch events stay in order, per watch, with no gaps.
- A broker cut from the store loses its session's connection: its watches end (the client
  library sees the stream die and reports WatchCanceled), commands it sends are lost, and what
  the store had queued for it is dropped. Its lease is not renewed, so it expires at the store,
  which deletes its registration: the cluster sees the broker gone.
- A killed broker's session is disconnected; its lease lives on until it expires, as etcd's do.

Invariants: nothing queued for one incarnation reaches another; a watch's events are delivered
in the order the store produced them, or not at all after the watch was canceled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.store import CancelWatch, StoreError, StoreInput, Watch, WatchCanceled, WatchEvent
from ackly.sim.scheduler import Scheduler, Timer

if TYPE_CHECKING:
    from ackly.sim.broker import BrokerHost


@dataclass
class StoreFaults:
    latency_ms: int = 1
    delay_rate: float = 0.0
    delay_max_ms: int = 0


@dataclass
class _Session:
    broker_id: int
    incarnation: int
    client_id: str
    alive: bool = True
    generation: int = 0  # bumped when the connection breaks: late deliveries are dropped
    last_command_ms: int = 0


class StoreBridge:
    def __init__(
        self, scheduler: Scheduler, rng: random.Random, hosts: Callable[[int], BrokerHost | None],
        faults: StoreFaults, on_change: Callable[[], None],
    ) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.hosts = hosts
        self.faults = faults
        self.on_change = on_change  # the observer polls the store after every change
        self.store = MemoryStore(now_ms=scheduler.now_ms, history_limit=1_000_000)
        self.cut: set[int] = set()
        self._sessions: dict[str, _Session] = {}
        self._current: dict[int, _Session] = {}
        self._watches: dict[str, list[int]] = {}
        self._last_watch_ms: dict[tuple[str, int], int] = {}
        self._timer = Timer(scheduler, "store lease clock", self._on_tick)
        self.commands = 0

    # --- sessions ------------------------------------------------------------------------------

    def client_id(self, host: BrokerHost) -> str:
        return f"b{host.broker_id}.{host.incarnation}"

    def _session(self, host: BrokerHost) -> _Session:
        client_id = self.client_id(host)
        session = self._sessions.get(client_id)
        if session is None:
            session = _Session(host.broker_id, host.incarnation, client_id)
            self._sessions[client_id] = session
            self._current[host.broker_id] = session
        return session

    def broker_died(self, broker_id: int) -> None:
        session = self._current.pop(broker_id, None)
        if session is not None and session.alive:
            session.alive = False
            session.generation += 1
            self.store.disconnect(session.client_id)
            self._watches.pop(session.client_id, None)

    def cut_off(self, broker_id: int) -> None:
        """The broker loses its connection to the store until `reconnect`."""
        if broker_id in self.cut:
            return
        self.cut.add(broker_id)
        session = self._current.get(broker_id)
        if session is None or not session.alive:
            return
        session.generation += 1
        self.store.disconnect(session.client_id)
        host = self.hosts(broker_id)
        for watch_id in self._watches.pop(session.client_id, []):
            if host is not None:
                item = WatchCanceled(watch_id, StoreError.UNAVAILABLE)
                self._schedule_delivery(session, item, self.scheduler.now_ms + self.faults.latency_ms)

    def reconnect(self, broker_id: int) -> None:
        self.cut.discard(broker_id)

    # --- commands ------------------------------------------------------------------------------

    def send(self, host: BrokerHost, commands: list[Any]) -> None:
        session = self._session(host)
        for command in commands:
            if host.broker_id in self.cut:
                continue  # lost: the member times it out and decides again
            t = max(self.scheduler.now_ms + self._delay_ms(), session.last_command_ms)
            session.last_command_ms = t
            self._schedule_command(session, command, t)

    def _schedule_command(self, session: _Session, command: Any, t: int) -> None:
        generation = session.generation
        self.scheduler.at(
            t, f"store<-{session.client_id} {type(command).__name__}#{command.request_id}",
            lambda: self._arrive(session, generation, command),
        )

    def _arrive(self, session: _Session, generation: int, command: Any) -> None:
        if not session.alive or session.generation != generation or session.broker_id in self.cut:
            return
        self.commands += 1
        self.store.tick(self.scheduler.now_ms)
        self.store.submit(session.client_id, command)
        if isinstance(command, Watch):
            self._watches.setdefault(session.client_id, []).append(command.request_id)
        elif isinstance(command, CancelWatch):
            watches = self._watches.get(session.client_id, [])
            if command.watch_id in watches:
                watches.remove(command.watch_id)
        self.pump()

    # --- what comes back -------------------------------------------------------------------------

    def pump(self) -> None:
        """Hand out everything the store queued, and re-arm the lease clock."""
        self.on_change()
        for session in list(self._current.values()):
            items = self.store.drain(session.client_id)
            if not session.alive or session.broker_id in self.cut:
                continue  # nobody is listening: dropped
            now = self.scheduler.now_ms
            for item in items:
                if isinstance(item, WatchEvent):
                    key = (session.client_id, item.watch_id)
                    t = max(now + self._delay_ms(), self._last_watch_ms.get(key, 0))
                    self._last_watch_ms[key] = t
                else:
                    t = now + self._delay_ms()
                self._schedule_delivery(session, item, t)
        self._timer.set(self.store.next_deadline_ms())

    def _schedule_delivery(self, session: _Session, item: StoreInput, t: int) -> None:
        generation = session.generation
        self.scheduler.at(
            t, f"store->{session.client_id} {_describe(item)}",
            lambda: self._deliver(session, generation, item),
        )

    def _deliver(self, session: _Session, generation: int, item: StoreInput) -> None:
        if not session.alive or session.generation != generation:
            return
        host = self.hosts(session.broker_id)
        if host is None:
            return
        host.deliver(session.incarnation, lambda node: node.on_store_inputs([item], self.scheduler.now_ms))

    def _on_tick(self) -> None:
        self.store.tick(self.scheduler.now_ms)
        self.pump()

    def _delay_ms(self) -> int:
        faults = self.faults
        delay = faults.latency_ms
        if faults.delay_rate > 0 and self.rng.random() < faults.delay_rate:
            delay += self.rng.randint(0, max(faults.delay_max_ms, 0))
        return delay


def _describe(item: StoreInput) -> str:
    if isinstance(item, WatchEvent):
        return f"event w{item.watch_id} {item.key}@{item.mod_revision}"
    if isinstance(item, WatchCanceled):
        return f"canceled w{item.watch_id}"
    return type(item).__name__ + (f"#{item.request_id}" if hasattr(item, "request_id") else "")
