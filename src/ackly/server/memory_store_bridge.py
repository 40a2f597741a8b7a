"""One in-process MemoryStore shared by several brokers of this process (`ackly cluster`
without etcd, in-process cluster tests), behind the same client interface as EtcdStore.

The store itself is a plain object without a clock or threads (cluster/memory_store.py). This
bridge gives it both: `submit` applies a client's commands at once (under a lock, so brokers may
run on different event-loop threads), then hands every client what its outbox holds (a command
of one client can queue watch events for all the others) on that client's own loop, one batch
per client per step, in order. Lease deadlines are kept by a timer that each client arms on its
loop for the store's next deadline; whichever fires first expires the leases (the store's clock
is this process's monotonic clock) and the others find nothing to do.

A DurableMemoryStore (`ackly cluster` without etcd) given a `writer` executor (one thread)
has its file written there, not on the submitting loop: what each client receives waits until
the write covering it is durable (DurableMemoryStore.drain_durable), commands submitted while
a write is out are coalesced into the next one, and a failed write hands nothing out any more
(`failure`, `on_failure`): no broker acts on a change the file may not hold.

`close()` is a broker going away: its watches end and its outbox is dropped, but its leases run
until they expire, as etcd's do, so the other brokers notice it late, not at once (a broker that
leaves on purpose revokes its lease first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable

from ackly.cluster.durable_store import DurableMemoryStore
from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.store import Command, StoreInput

log = logging.getLogger("ackly.memory_store")

Deliver = Callable[[list[StoreInput]], None]


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class SharedMemoryStore:
    """The store and the clients attached to it. Thread-safe. The store may be a
    DurableMemoryStore (`ackly cluster` without etcd keeps its topics across restarts); its
    clock must then have been started from `clock()` too."""

    def __init__(self, store: MemoryStore | DurableMemoryStore | None = None,
                 clock: Callable[[], int] = monotonic_ms,
                 writer: concurrent.futures.Executor | None = None,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.clock = clock
        self.store = store if store is not None else MemoryStore(now_ms=clock())
        self._lock = threading.Lock()
        self._clients: dict[str, MemoryStoreClient] = {}
        # Off-loop writing of a durable store's file (see the module docstring).
        self._writer = writer if isinstance(self.store, DurableMemoryStore) else None
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    def client(self, client_id: str, deliver: Deliver) -> MemoryStoreClient:
        """A new client; `client_id` must be unique among the open ones (e.g. "broker-1")."""
        with self._lock:
            assert client_id not in self._clients, f"client {client_id} is already attached"
            client = MemoryStoreClient(self, client_id, deliver)
            self._clients[client_id] = client
            return client

    def submit(self, client_id: str, commands: Iterable[Command]) -> None:
        with self._lock:
            self.store.tick(self.clock())
            for command in commands:
                self.store.submit(client_id, command)
            self._distribute()

    def tick(self) -> None:
        with self._lock:
            self.store.tick(self.clock())
            self._distribute()

    def next_deadline_ms(self) -> int | None:
        with self._lock:
            return self.store.next_deadline_ms()

    def detach(self, client_id: str) -> None:
        with self._lock:
            self._clients.pop(client_id, None)
            self.store.disconnect(client_id)

    def _distribute(self) -> None:
        store = self.store
        if self._writer is not None and isinstance(store, DurableMemoryStore):
            if self.failure is not None:
                return
            write = store.take_write()
            if write is not None:
                revision, data = write
                future = self._writer.submit(store.write_file, data)
                future.add_done_callback(functools.partial(self._written, revision))
            drain = store.drain_durable
        else:
            drain = store.drain
        for client_id, client in self._clients.items():
            items = drain(client_id)
            if items:
                client.hand_over(items)

    def _written(self, revision: int, future: concurrent.futures.Future[None]) -> None:
        """In the writer thread: the file for `revision` is durable (or failed)."""
        error = future.exception()
        with self._lock:
            if error is not None:
                self.failure = error
                log.critical("the metadata store's file could not be written: %s; nothing more "
                             "is handed out", error)
            else:
                assert isinstance(self.store, DurableMemoryStore)
                self.store.written(revision)
                self._distribute()
        if error is not None and self._on_failure is not None:
            self._on_failure(error)


class MemoryStoreClient:
    """One broker's connection to the shared store: `start()`, `submit(commands)`, `close()`;
    results and watch events arrive through `deliver` on the loop that called `start()`."""

    def __init__(self, hub: SharedMemoryStore, client_id: str, deliver: Deliver) -> None:
        self.hub = hub
        self.client_id = client_id
        self._deliver = deliver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_ms: int | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def submit(self, commands: Iterable[Command]) -> None:
        if self._closed:
            return
        self.hub.submit(self.client_id, commands)
        self._arm()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.hub.detach(self.client_id)

    def hand_over(self, items: list[StoreInput]) -> None:
        """Called under the hub's lock, from any thread: deliver on this client's loop."""
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: this broker is gone
            loop.call_soon_threadsafe(self._on_items, items)

    def _on_items(self, items: list[StoreInput]) -> None:
        if self._closed:
            return
        try:
            self._deliver(items)
        except Exception:
            log.exception("delivering %d store inputs to %s failed", len(items), self.client_id)
        self._arm()

    def _arm(self) -> None:
        """Keep a timer for the store's next lease deadline on this client's loop."""
        if self._closed or self._loop is None:
            return
        due = self.hub.next_deadline_ms()
        if due == self._timer_due_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due_ms = due
        if due is not None:
            delay_s = max(due - self.hub.clock(), 0) / 1000
            self._timer = self._loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due_ms = None
        if self._closed:
            return
        self.hub.tick()
        self._arm()
