"""The etcd adapter against a real etcd: every command kind, compare-and-set with guards, lease
expiry, watches from a revision, failures; and the equivalence test: one command script run
against MemoryStore (virtual time), against etcd, and against the in-process bridge gives the
same results, the same watch events and the same lease expiries (lease ids renumbered).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aetcd import rpc

from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.store import (
    CancelWatch,
    Command,
    CommandResult,
    Compare,
    CompareAndSet,
    CompareTarget,
    Delete,
    Get,
    GrantLease,
    KeepAlive,
    LeaseExpired,
    Put,
    RevokeLease,
    StoreError,
    StoreInput,
    Watch,
    WatchCanceled,
    WatchEvent,
)
from ackly.server.etcd_process import EtcdProcess
from ackly.server.etcd_store import EtcdStore, grpc_target, parse_etcd_url
from ackly.server.memory_store_bridge import SharedMemoryStore

pytestmark = pytest.mark.slow

WAIT_S = 15.0
LEASE_TTL_MS = 1000  # etcd started by EtcdProcess grants 1 s leases as asked


# --- a client on this test's loop ---------------------------------------------------------------


class Driver:
    """Collects what a store client delivers and waits for it (bounded)."""

    def __init__(self) -> None:
        self.items: list[StoreInput] = []
        self.changed = asyncio.Event()
        self.client: Any = None

    def deliver(self, items: list[StoreInput]) -> None:
        self.items.extend(items)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def result(self, request_id: int) -> CommandResult | None:
        for item in self.items:
            if isinstance(item, CommandResult) and item.request_id == request_id:
                return item
        return None

    async def request(self, command: Command, timeout_s: float = WAIT_S) -> CommandResult:
        self.client.submit([command])
        await self.until(lambda: self.result(command.request_id) is not None, timeout_s)
        found = self.result(command.request_id)
        assert found is not None
        return found

    def events(self, watch_id: int) -> list[WatchEvent]:
        return [i for i in self.items if isinstance(i, WatchEvent) and i.watch_id == watch_id]


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(90):
            await coro_fn()

    asyncio.run(bounded())


async def etcd_driver(etcd: EtcdProcess, **kwargs: Any) -> Driver:
    driver = Driver()
    driver.client = EtcdStore(parse_etcd_url(etcd.client_url), driver.deliver, **kwargs)
    await driver.client.start()
    return driver


# --- the equivalence script ----------------------------------------------------------------------
# Each step builds its command from the leases granted so far (ids differ between stores) or is
# "expire lease k": MemoryStore's clock jumps past the deadline; the real stores wait for the
# deletion of the lease's keys, seen on the first watch.

Step = Callable[[list[int]], Command] | tuple[str, int]

WATCH_ALL = 2
WATCH_A_FROM_3 = 30


def script() -> list[Step]:
    steps: list[Step] = [
        lambda L: Get(1, "/t/"),
        lambda L: Watch(WATCH_ALL, "/t/", 0),
        lambda L: Put(3, "/t/a", b"1"),
        lambda L: Put(4, "/t/b", b"2"),
        lambda L: CompareAndSet(5, "/t/a", 2, b"1b"),
        lambda L: CompareAndSet(6, "/t/a", 2, b"stale"),  # refused: a is at 4 now
        lambda L: CompareAndSet(7, "/t/c", 0, b"created"),  # create-if-absent
        lambda L: CompareAndSet(8, "/t/c", 0, b"again"),  # refused: exists
        lambda L: CompareAndSet(9, "/t/d", 0, b"guarded", guards=(Compare("/t/a", 4),)),
        lambda L: CompareAndSet(10, "/t/e", 0, b"x", guards=(Compare("/t/a", 3),)),  # stale guard
        lambda L: CompareAndSet(11, "/t/e", 0, b"x",
                                guards=(Compare("/t/a", 2, CompareTarget.CREATE),
                                        Compare("/t/nope", 0))),
        lambda L: CompareAndSet(12, "/t/e", 7, b"y",
                                guards=(Compare("/t/c", 5), Compare("/t/b", 0))),  # b exists
        lambda L: Delete(13, "/t/b", expected_mod_revision=2),  # refused: b is at 3
        lambda L: Delete(14, "/t/b", expected_mod_revision=3),
        lambda L: Delete(15, "/t/zzz"),  # absent, no expectation: ok, writes nothing
        lambda L: Delete(16, "/t/zzz", expected_mod_revision=0),
        lambda L: GrantLease(17, LEASE_TTL_MS),
        lambda L: Put(18, "/t/l1", b"leased", lease_id=L[0]),
        lambda L: CompareAndSet(19, "/t/l2", 0, b"leased too", lease_id=L[0]),
        lambda L: KeepAlive(20, L[0]),
        lambda L: Put(21, "/t/x", b"v", lease_id=123456789),  # no such lease
        lambda L: GrantLease(22, LEASE_TTL_MS),
        lambda L: Put(23, "/t/l3", b"v", lease_id=L[1]),
        lambda L: Put(24, "/t/l3", b"detached"),  # a put without a lease detaches the key
        lambda L: Put(25, "/t/l4", b"v", lease_id=L[1]),
        lambda L: RevokeLease(26, L[1]),  # deletes l4 (not l3) in one revision
        lambda L: RevokeLease(27, L[1]),
        lambda L: KeepAlive(28, L[1]),  # revoked by us: no LeaseExpired
        lambda L: CompareAndSet(29, "/t/a", 4, b"1c", lease_id=L[1]),  # compares hold, lease gone
        lambda L: Watch(WATCH_A_FROM_3, "/t/a", 3),  # replays a's history from revision 3
        ("expire", 0),
        lambda L: KeepAlive(32, L[0]),
        lambda L: Put(33, "", b"v"),
        lambda L: CompareAndSet(34, "", 0, b"v"),
        lambda L: GrantLease(35, 0),
        lambda L: CompareAndSet(36, "/t/a", -1, b"v"),
        lambda L: CancelWatch(37, WATCH_A_FROM_3),
        lambda L: CancelWatch(38, WATCH_A_FROM_3),
        lambda L: Put(39, "/t/a", b"after cancel"),
        lambda L: Get(40, "/t/"),
    ]
    return steps


def run_on_memory_store() -> list[StoreInput]:
    store = MemoryStore(now_ms=0)
    leases: list[int] = []
    out: list[StoreInput] = []
    for step in script():
        if isinstance(step, tuple):
            store.tick(store.now_ms + 10 * LEASE_TTL_MS)
        else:
            store.submit("c", step(leases))
        for item in store.drain("c"):
            out.append(item)
            if isinstance(item, CommandResult) and item.lease_id is not None and item.ttl_ms and \
                    item.lease_id not in leases:
                leases.append(item.lease_id)
    return out


async def run_on_async_store(driver: Driver) -> list[StoreInput]:
    leases: list[int] = []
    for step in script():
        if isinstance(step, tuple):
            # Wait until the lease's keys are gone (etcd expires leases on its own clock).
            await driver.until(lambda: any(
                e.key == "/t/l1" and e.value is None for e in driver.events(WATCH_ALL)
            ))
            continue
        result = await driver.request(step(leases))
        if result.lease_id is not None and result.ttl_ms and result.lease_id not in leases:
            leases.append(result.lease_id)
    return list(driver.items)


def normalized(items: list[StoreInput]) -> dict[str, Any]:
    """Results by request id, events by watch, expiries; lease ids renumbered 1, 2, ... in the
    order they were granted."""
    numbering: dict[int, int] = {}
    for item in items:
        if isinstance(item, CommandResult) and item.ok and item.lease_id is not None and item.ttl_ms:
            numbering.setdefault(item.lease_id, len(numbering) + 1)

    def lease(value: int | None) -> int | None:
        return None if value is None else numbering.get(value, -1)

    results: dict[int, CommandResult] = {}
    events: dict[int, list[WatchEvent]] = {}
    other: list[Any] = []
    for item in items:
        if isinstance(item, CommandResult):
            kvs = tuple(dataclasses.replace(kv, lease_id=lease(kv.lease_id)) for kv in item.kvs)
            results[item.request_id] = dataclasses.replace(item, lease_id=lease(item.lease_id), kvs=kvs)
        elif isinstance(item, WatchEvent):
            events.setdefault(item.watch_id, []).append(
                dataclasses.replace(item, lease_id=lease(item.lease_id)))
        elif isinstance(item, LeaseExpired):
            other.append(LeaseExpired(lease(item.lease_id) or -1))
        else:
            other.append(item)
    return {"results": results, "events": events, "other": other}


def assert_same(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert sorted(actual["results"]) == sorted(expected["results"])
    for rid, want in expected["results"].items():
        assert actual["results"][rid] == want, f"request {rid}"
    assert actual["events"] == expected["events"]
    assert actual["other"] == expected["other"]


def test_the_reference_script_means_what_it_says() -> None:
    """Spot checks of the MemoryStore run, so the equivalence below compares something real."""
    out = normalized(run_on_memory_store())
    r = out["results"]
    assert r[6].error is StoreError.COMPARE_FAILED and [kv.mod_revision for kv in r[6].kvs] == [4]
    assert r[8].error is StoreError.COMPARE_FAILED
    assert r[9].ok and not r[10].ok and r[11].ok and not r[12].ok
    assert [kv.key for kv in r[12].kvs] == ["/t/b", "/t/c", "/t/e"]
    assert r[13].error is StoreError.COMPARE_FAILED and r[14].ok
    assert r[15].ok and r[15].revision == r[14].revision
    assert r[21].error is StoreError.LEASE_NOT_FOUND
    assert r[27].error is StoreError.LEASE_NOT_FOUND and r[28].error is StoreError.LEASE_NOT_FOUND
    assert r[29].error is StoreError.LEASE_NOT_FOUND
    assert r[32].error is StoreError.LEASE_NOT_FOUND
    assert all(r[i].error is StoreError.INVALID for i in (33, 34, 35, 36))
    assert r[37].ok and r[38].error is StoreError.WATCH_NOT_FOUND
    assert out["other"] == [LeaseExpired(1)]
    assert [e.mod_revision for e in out["events"][WATCH_A_FROM_3]] == [4]
    assert {kv.key for kv in r[40].kvs} == {"/t/a", "/t/c", "/t/d", "/t/e", "/t/l3"}


def test_etcd_gives_the_same_results_events_and_expiries_as_memory_store(
    etcd_server: EtcdProcess,
) -> None:
    expected = normalized(run_on_memory_store())

    async def scenario() -> None:
        driver = await etcd_driver(etcd_server)
        try:
            items = await run_on_async_store(driver)
        finally:
            await driver.client.close()
        assert_same(expected, normalized(items))

    run(scenario)


def test_the_in_process_bridge_gives_the_same_results_as_memory_store() -> None:
    expected = normalized(run_on_memory_store())

    async def scenario() -> None:
        hub = SharedMemoryStore()
        driver = Driver()
        driver.client = hub.client("c", driver.deliver)
        await driver.client.start()
        items = await run_on_async_store(driver)
        await driver.client.close()
        assert_same(expected, normalized(items))

    run(scenario)


# --- etcd-specific behaviour ---------------------------------------------------------------------


def test_lease_expiry_is_reported_once_and_deletes_the_keys_in_one_revision(
    etcd_server: EtcdProcess,
) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server)
        grant = await driver.request(GrantLease(1, LEASE_TTL_MS))
        assert grant.ok and grant.lease_id and grant.ttl_ms == LEASE_TTL_MS
        lease = grant.lease_id
        await driver.request(Watch(2, "/e/", 0))
        for i, key in enumerate(("/e/1", "/e/2", "/e/3")):
            assert (await driver.request(Put(10 + i, key, b"v", lease_id=lease))).ok
        # Keep it alive past its TTL: still there.
        for i in range(3):
            assert (await driver.request(KeepAlive(20 + i, lease))).ok
            await asyncio.sleep(LEASE_TTL_MS / 2000)  # pacing the keep-alives, not a wait for state
        assert not [e for e in driver.events(2) if e.value is None]
        await driver.until(lambda: len([e for e in driver.events(2) if e.value is None]) == 3)
        deletes = [e for e in driver.events(2) if e.value is None]
        assert len({e.mod_revision for e in deletes}) == 1
        expired = await driver.request(KeepAlive(30, lease))
        assert expired.error is StoreError.LEASE_NOT_FOUND
        again = await driver.request(KeepAlive(31, lease))
        assert again.error is StoreError.LEASE_NOT_FOUND
        assert [i for i in driver.items if isinstance(i, LeaseExpired)] == [LeaseExpired(lease)]
        # LeaseExpired comes before the result that revealed it.
        kinds = [(type(i).__name__, getattr(i, "request_id", None)) for i in driver.items]
        assert kinds.index(("LeaseExpired", None)) < kinds.index(("CommandResult", 30))
        await driver.client.close()

    run(scenario)


def test_a_watch_from_a_revision_replays_history_in_order_with_no_gaps(etcd_server: EtcdProcess) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server)
        revisions = []
        for i in range(50):
            result = await driver.request(Put(100 + i, f"/w/{i % 7}", str(i).encode()))
            revisions.append(result.revision)
        # Watch from the middle of that history, while more writes go on concurrently.
        start = revisions[20]
        driver.client.submit([Watch(1, "/w/", start)] + [Put(200 + i, "/w/late", b"x") for i in range(20)])
        await driver.until(lambda: len(driver.events(1)) == 30 + 20)
        got = [e.mod_revision for e in driver.events(1)]
        assert got == sorted(got) and got == list(range(start, start + 50))
        await driver.client.close()

    run(scenario)


def test_commands_on_one_key_apply_in_submission_order(etcd_server: EtcdProcess) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server)
        batch: list[Command] = []
        for i in range(40):
            batch.append(Put(i + 1, "/o/same", str(i).encode()))
            batch.append(Put(100 + i, f"/o/k{i}", b"x"))  # other keys may go in any order
        driver.client.submit(batch)
        await driver.until(lambda: all(driver.result(c.request_id) for c in batch))
        same = [driver.result(i + 1) for i in range(40)]
        revs = [r.revision for r in same if r is not None]
        assert revs == sorted(revs) and len(set(revs)) == 40
        final = await driver.request(Get(500, "/o/same"))
        assert final.kvs[0].value == b"39" and final.kvs[0].version == 40
        await driver.client.close()

    run(scenario)


def test_compacted_history_is_refused_to_a_watch(etcd_server: EtcdProcess) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server)
        for i in range(10):
            await driver.request(Put(10 + i, "/c/k", str(i).encode()))
        channel = rpc.insecure_channel(etcd_server.endpoint)
        await rpc.KVStub(channel).Compact(rpc.CompactionRequest(revision=8, physical=True), timeout=10)
        await channel.close()
        driver.client.submit([Watch(1, "/c/", 3)])
        # etcd 3.4 creates the watch and then cancels it; newer ones refuse it at once.
        await driver.until(lambda: any(isinstance(i, WatchCanceled) and i.watch_id == 1
                                       for i in driver.items)
                           or (driver.result(1) is not None and not driver.result(1).ok))  # type: ignore[union-attr]
        result = driver.result(1)
        canceled = [i for i in driver.items if isinstance(i, WatchCanceled)]
        assert (result is not None and result.error is StoreError.COMPACTED) or \
            canceled == [WatchCanceled(1, StoreError.COMPACTED)]
        # A watch from the compaction point on works.
        ok = await driver.request(Watch(2, "/c/", 8))
        assert ok.ok
        await driver.until(lambda: len(driver.events(2)) == 4)
        await driver.client.close()

    run(scenario)


def test_etcd_down_gives_unavailable_and_ends_watches_then_recovers(etcd_server: EtcdProcess) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server, request_timeout_ms=1000)
        await driver.request(Watch(1, "/u/", 0))
        last = await driver.request(Put(2, "/u/a", b"1"))
        etcd_server.kill()
        down = await driver.request(Put(3, "/u/a", b"2"))
        assert down.error is StoreError.UNAVAILABLE
        await driver.until(lambda: WatchCanceled(1, StoreError.UNAVAILABLE) in driver.items)
        etcd_server.start()  # same ports, same data
        # The client reconnects by itself; re-watch from where the last watch stopped.
        deadline = asyncio.get_running_loop().time() + WAIT_S
        rid = 10
        while True:
            rid += 1
            result = await driver.request(Put(rid, "/u/b", b"after"))
            if result.ok:
                break
            assert asyncio.get_running_loop().time() < deadline, "etcd did not come back"
            await asyncio.sleep(0.1)  # pacing retries while etcd restarts
        rewatch = await driver.request(Watch(100, "/u/", last.revision + 1))
        assert rewatch.ok
        await driver.until(lambda: any(e.key == "/u/b" for e in driver.events(100)))
        assert driver.events(100)[-1].mod_revision == result.revision
        await driver.client.close()

    run(scenario)


def test_a_paused_etcd_times_out_as_unavailable(etcd_server: EtcdProcess) -> None:
    async def scenario() -> None:
        driver = await etcd_driver(etcd_server, request_timeout_ms=500)
        assert (await driver.request(Put(1, "/p/a", b"1"))).ok
        etcd_server.pause()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await driver.request(Put(2, "/p/a", b"2"), timeout_s=5)
            assert result.error is StoreError.UNAVAILABLE
            assert 0.4 < loop.time() - started < 3
            keepalive = await driver.request(KeepAlive(3, 42), timeout_s=5)
            assert keepalive.error is StoreError.UNAVAILABLE
        finally:
            etcd_server.resume()
        await driver.client.close()

    run(scenario)


# --- URLs ----------------------------------------------------------------------------------------


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379") == [("127.0.0.1", 2379)]
    assert parse_etcd_url("etcd://10.0.0.1:1,10.0.0.2:2/") == [("10.0.0.1", 1), ("10.0.0.2", 2)]
    assert parse_etcd_url("etcd://localhost") == [("localhost", 2379)]
    assert grpc_target([("127.0.0.1", 1), ("127.0.0.2", 2)]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert grpc_target([("localhost", 2379)]) == "localhost:2379"
    for bad in ("http://x:1", "etcd://", "etcd://h:port", "etcd://h:0", "etcd://h:1/root"):
        with pytest.raises(ValueError):
            parse_etcd_url(bad)
    with pytest.raises(ValueError):
        grpc_target([("a.example", 1), ("b.example", 2)])


def test_several_endpoints_fail_over_to_one_that_answers(etcd_server: EtcdProcess) -> None:
    from ackly.server.etcd_process import free_port

    async def scenario() -> None:
        driver = Driver()
        dead = free_port()  # nothing listens there
        driver.client = EtcdStore([("127.0.0.1", dead), ("127.0.0.1", etcd_server.client_port)],
                                  driver.deliver)
        await driver.client.start()
        assert (await driver.request(Put(1, "/m/a", b"1"))).ok
        await driver.client.close()

    run(scenario)
