"""SharedMemoryStore: brokers on different event-loop threads share one MemoryStore.

A command of one client reaches the watches of the others, on their own loops, in revision
order; leases expire by the hub's clock without anyone submitting; a closed client's watches
end but its lease lives on until it expires; a durable store's file is written in the writer
thread, one write at a time, before anyone hears of the change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ackly.cluster.durable_store import METADATA_FILE, DurableMemoryStore
from ackly.cluster.store import (
    CommandResult,
    GrantLease,
    LeaseExpired,
    Put,
    StoreInput,
    Watch,
    WatchEvent,
)
from ackly.log.disk import RealDisk
from ackly.server.memory_store_bridge import SharedMemoryStore, monotonic_ms

WAIT_S = 10.0


class LoopClient:
    """A store client living on an event loop of its own thread; `items` collects deliveries
    (and the thread each came on)."""

    def __init__(self, hub: SharedMemoryStore, name: str) -> None:
        self.items: list[StoreInput] = []
        self.threads: set[str] = set()
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"loop-{name}", daemon=True)
        self.thread.start()
        self.client = hub.client(name, self._deliver)
        self.call(lambda: self.loop.create_task(self.client.start()))

    def _deliver(self, items: list[StoreInput]) -> None:
        with self.cond:
            self.items.extend(items)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            result = fn()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Task):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(WAIT_S)

    def submit(self, *commands: Any) -> None:
        self.call(lambda: self.client.submit(list(commands)))

    def wait(self, predicate: Callable[[list[StoreInput]], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.items), WAIT_S), self.items

    def close(self) -> None:
        self.call(self.client.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)


def result(items: list[StoreInput], request_id: int) -> CommandResult | None:
    return next((i for i in items if isinstance(i, CommandResult) and i.request_id == request_id), None)


def test_writes_of_one_client_reach_the_watches_of_others_on_their_own_loops() -> None:
    hub = SharedMemoryStore()
    a, b = LoopClient(hub, "a"), LoopClient(hub, "b")
    try:
        b.submit(Watch(1, "/k/", 0))
        b.wait(lambda items: result(items, 1) is not None)
        a.submit(*[Put(10 + i, f"/k/{i % 3}", str(i).encode()) for i in range(20)])
        a.wait(lambda items: all(result(items, 10 + i) for i in range(20)))
        b.wait(lambda items: len([i for i in items if isinstance(i, WatchEvent)]) == 20)
        events = [i for i in b.items if isinstance(i, WatchEvent)]
        assert [e.value for e in events] == [str(i).encode() for i in range(20)]
        assert [e.mod_revision for e in events] == sorted(e.mod_revision for e in events)
        assert b.threads == {"loop-b"} and a.threads == {"loop-a"}
    finally:
        a.close()
        b.close()


def test_a_lease_expires_by_the_hub_clock_and_a_closed_client_keeps_it_until_then() -> None:
    hub = SharedMemoryStore()
    owner, watcher = LoopClient(hub, "owner"), LoopClient(hub, "watcher")
    try:
        watcher.submit(Watch(1, "/b/", 0))
        owner.submit(GrantLease(1, 300))
        owner.wait(lambda items: result(items, 1) is not None)
        grant = result(owner.items, 1)
        assert grant is not None and grant.lease_id is not None
        owner.submit(Put(2, "/b/owner", b"here", lease_id=grant.lease_id))
        watcher.wait(lambda items: any(isinstance(i, WatchEvent) and i.value for i in items))
        owner.close()  # gone without revoking: its registration stays until the lease runs out
        assert hub.store.get("/b/owner") is not None  # type: ignore[union-attr]
        # Nobody submits anything more: the watcher's timer for the store's next deadline
        # expires the lease (300 ms after the grant, by the hub's monotonic clock).
        watcher.wait(lambda items: any(isinstance(i, WatchEvent) and i.value is None for i in items))
        assert not [i for i in watcher.items if isinstance(i, LeaseExpired)]  # only to its owner
    finally:
        watcher.close()


class ManualWriter(concurrent.futures.Executor):
    """An executor that runs what it is given only when told, in a thread named "writer"."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.queued.append((fn, args, future))
        return future

    def run_one(self) -> None:
        fn, args, future = self.queued.pop(0)

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=run, name="writer")
        thread.start()
        thread.join(WAIT_S)


def test_a_durable_store_is_written_in_the_writer_thread_before_anyone_hears_of_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_threads: list[str] = []
    real_fsync = os.fsync

    def recorded(fd: int) -> None:
        sync_threads.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    writer = ManualWriter()
    store = DurableMemoryStore(RealDisk(), str(tmp_path), now_ms=monotonic_ms())
    hub = SharedMemoryStore(store, writer=writer)
    a, b = LoopClient(hub, "a"), LoopClient(hub, "b")
    try:
        b.submit(Watch(1, "/k/", 0))
        b.wait(lambda items: result(items, 1) is not None)  # no change: nothing to write
        assert writer.queued == []
        a.submit(Put(2, "/k/x", b"one"))
        assert len(writer.queued) == 1 and a.items == [] and not (tmp_path / METADATA_FILE).exists()
        a.submit(Put(3, "/k/x", b"two"))
        a.submit(Put(4, "/k/y", b"three"))
        assert len(writer.queued) == 1, "one writer: the next write waits for this one"
        writer.run_one()
        a.wait(lambda items: result(items, 2) is not None)
        b.wait(lambda items: len([i for i in items if isinstance(i, WatchEvent)]) == 1)
        assert result(a.items, 3) is None, "not durable yet"
        assert len(writer.queued) == 1  # Put 3 and Put 4, coalesced
        writer.run_one()
        a.wait(lambda items: result(items, 4) is not None)
        b.wait(lambda items: len([i for i in items if isinstance(i, WatchEvent)]) == 3)
        assert store.writes == 2 and writer.queued == []
        assert sync_threads and set(sync_threads) == {"writer"}
    finally:
        a.close()
        b.close()
    again = DurableMemoryStore(RealDisk(), str(tmp_path), now_ms=monotonic_ms())
    kv = again.store.get("/k/y")
    assert kv is not None and kv.value == b"three"
