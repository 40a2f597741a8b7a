"""MemoryStore keeps etcd's semantics: revisions, compare-and-set, leases, ordered watches."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.cluster.memory_store import MemoryStore
from ackly.cluster.store import (
    CancelWatch,
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
    Watch,
    WatchCanceled,
    WatchEvent,
)


def result(store: MemoryStore, client: str = "c") -> CommandResult:
    items = store.drain(client)
    results = [i for i in items if isinstance(i, CommandResult)]
    assert len(results) == 1, items
    return results[0]


def test_revisions_and_versions() -> None:
    store = MemoryStore()
    assert store.revision == 1
    store.submit("c", Put(1, "/k", b"a"))
    r = result(store)
    assert r.ok and r.revision == 2
    store.submit("c", Put(2, "/k", b"b"))
    assert result(store).revision == 3
    kv = store.get("/k")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"b")
    store.submit("c", Get(3, "/"))
    got = result(store)
    assert got.revision == 3 and [k.key for k in got.kvs] == ["/k"]


def test_compare_and_set_create_if_absent_and_by_revision() -> None:
    store = MemoryStore()
    store.submit("c", CompareAndSet(1, "/k", 0, b"first"))
    assert result(store).ok
    store.submit("c", CompareAndSet(2, "/k", 0, b"second"))
    refused = result(store)
    assert not refused.ok and refused.error is StoreError.COMPARE_FAILED
    assert [kv.value for kv in refused.kvs] == [b"first"]  # the caller sees why
    store.submit("c", CompareAndSet(3, "/k", 2, b"second"))
    assert result(store).ok
    store.submit("c", CompareAndSet(4, "/k", 2, b"third"))  # stale expectation
    assert not result(store).ok
    assert store.get("/k").value == b"second"  # type: ignore[union-attr]


def test_guards_on_other_keys_by_create_revision() -> None:
    store = MemoryStore()
    store.submit("c", Put(1, "/owner", b"x"))
    owner_rev = result(store).revision
    guard = Compare("/owner", owner_rev, CompareTarget.CREATE)
    store.submit("c", CompareAndSet(2, "/k", 0, b"v", guards=(guard,)))
    assert result(store).ok
    store.submit("c", Put(3, "/owner", b"y"))  # same incarnation: create_revision unchanged
    result(store)
    store.submit("c", CompareAndSet(4, "/k", store.get("/k").mod_revision, b"w", guards=(guard,)))  # type: ignore[union-attr]
    assert result(store).ok
    store.submit("c", Delete(5, "/owner"))
    result(store)
    store.submit("c", Put(6, "/owner", b"z"))  # a new incarnation
    result(store)
    store.submit("c", CompareAndSet(7, "/k", store.get("/k").mod_revision, b"u", guards=(guard,)))  # type: ignore[union-attr]
    refused = result(store)
    assert not refused.ok and {kv.key for kv in refused.kvs} == {"/k", "/owner"}


def test_delete_with_and_without_expectation() -> None:
    store = MemoryStore()
    store.submit("c", Delete(1, "/absent"))
    r = result(store)
    assert r.ok and store.revision == 1  # nothing written
    store.submit("c", Put(2, "/k", b"v"))
    rev = result(store).revision
    store.submit("c", Delete(3, "/k", rev + 5))
    assert result(store).error is StoreError.COMPARE_FAILED
    store.submit("c", Delete(4, "/k", rev))
    assert result(store).ok and store.get("/k") is None


def test_lease_expiry_deletes_keys_at_one_revision_and_tells_the_owner() -> None:
    store = MemoryStore(now_ms=0)
    store.submit("owner", GrantLease(1, 1000))
    lease = result(store, "owner").lease_id
    assert lease is not None
    store.submit("w", Watch(1, "/"))
    store.drain("w")
    store.submit("owner", Put(2, "/a", b"1", lease))
    store.submit("owner", Put(3, "/b", b"2", lease))
    store.drain("owner")
    store.tick(999)
    assert store.get("/a") is not None
    store.tick(1000)
    assert store.get("/a") is None and store.get("/b") is None and not store.lease_alive(lease)
    assert store.drain("owner") == [LeaseExpired(lease)]
    events = [e for e in store.drain("w") if isinstance(e, WatchEvent)]
    deletes = [e for e in events if e.value is None]
    assert [e.key for e in deletes] == ["/a", "/b"]
    assert deletes[0].mod_revision == deletes[1].mod_revision == store.revision


def test_keepalive_restarts_the_ttl_and_unknown_leases_are_refused() -> None:
    store = MemoryStore(now_ms=0)
    store.submit("c", GrantLease(1, 1000))
    lease = result(store).lease_id
    assert lease is not None
    store.tick(800)
    store.submit("c", KeepAlive(2, lease))
    assert result(store).ttl_ms == 1000
    store.tick(1500)
    assert store.lease_alive(lease)
    store.tick(1800)
    assert not store.lease_alive(lease)
    store.drain("c")
    store.submit("c", KeepAlive(3, lease))
    assert result(store).error is StoreError.LEASE_NOT_FOUND
    store.submit("c", Put(4, "/k", b"v", lease))
    assert result(store).error is StoreError.LEASE_NOT_FOUND
    store.submit("c", CompareAndSet(5, "/k", 0, b"v", lease))
    assert result(store).error is StoreError.LEASE_NOT_FOUND
    assert store.get("/k") is None


def test_revoke_deletes_now_and_put_without_lease_detaches() -> None:
    store = MemoryStore()
    store.submit("c", GrantLease(1, 10_000))
    lease = result(store).lease_id
    store.submit("c", Put(2, "/a", b"1", lease))
    store.submit("c", Put(3, "/b", b"1", lease))
    store.submit("c", Put(4, "/b", b"2"))  # detached from the lease
    store.drain("c")
    store.submit("c", RevokeLease(5, lease))  # type: ignore[arg-type]
    assert result(store).ok
    assert store.get("/a") is None and store.get("/b") is not None
    assert store.drain("c") == []  # no LeaseExpired for a revocation


def test_watch_replays_history_then_follows_in_order() -> None:
    store = MemoryStore()
    for i in range(5):
        store.submit("c", Put(i, f"/x/{i}", b"v"))
        store.submit("c", Put(100 + i, f"/y/{i}", b"v"))
    store.drain("c")
    store.submit("w", Watch(7, "/x/", start_revision=4))
    items = store.drain("w")
    assert isinstance(items[0], CommandResult) and items[0].ok
    replayed = [e for e in items[1:] if isinstance(e, WatchEvent)]
    assert [e.key for e in replayed] == ["/x/1", "/x/2", "/x/3", "/x/4"]
    assert all(e.watch_id == 7 for e in replayed)
    store.submit("c", Put(50, "/x/9", b"v"))
    store.submit("c", Put(51, "/y/9", b"v"))
    live = store.drain("w")
    assert [e.key for e in live if isinstance(e, WatchEvent)] == ["/x/9"]
    store.submit("w", CancelWatch(8, 7))
    assert result(store, "w").ok
    store.submit("c", Put(52, "/x/10", b"v"))
    assert store.drain("w") == []
    store.submit("w", CancelWatch(9, 7))
    assert result(store, "w").error is StoreError.WATCH_NOT_FOUND


def test_compacted_history_refuses_old_watches() -> None:
    store = MemoryStore(history_limit=3)
    for i in range(6):
        store.submit("c", Put(i, "/k", str(i).encode()))
    store.drain("c")
    assert store.compact_revision == 4
    store.submit("w", Watch(1, "/", start_revision=2))
    refused = result(store, "w")
    assert refused.error is StoreError.COMPACTED and refused.compact_revision == 4
    store.submit("w", Watch(2, "/", start_revision=5))
    items = store.drain("w")
    assert [e.mod_revision for e in items if isinstance(e, WatchEvent)] == [5, 6, 7]


def test_a_slow_watcher_loses_its_watch_not_its_results() -> None:
    store = MemoryStore(outbox_limit=3)
    store.submit("w", Watch(1, "/"))
    for i in range(5):
        store.submit("c", Put(i, "/k", b"v"))
        store.drain("c")
    items = store.drain("w")
    assert isinstance(items[-1], WatchCanceled) and items[-1].watch_id == 1
    assert len(items) <= 4
    store.submit("w", Get(2, "/"))
    assert result(store, "w").ok


def test_disconnect_drops_watches_but_leases_live_on() -> None:
    store = MemoryStore()
    store.submit("c", GrantLease(1, 1000))
    lease = result(store).lease_id
    store.submit("c", Watch(2, "/"))
    store.disconnect("c")
    store.submit("d", Put(3, "/k", b"v", lease))
    assert store.drain("c") == []
    assert store.lease_alive(lease)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.sampled_from(["/a", "/b", "/c/d"]), st.booleans()), max_size=30),
    st.integers(1, 20),
)
def test_any_watch_sees_exactly_the_changes_after_its_start(ops: list[tuple[str, bool]], start: int) -> None:
    """Replaying from any revision and following live give the same ordered, gap-free stream."""
    store = MemoryStore()
    store.submit("all", Watch(1, "/", start_revision=1))
    for i, (key, put) in enumerate(ops):
        store.submit("c", Put(i, key, b"v") if put else Delete(i, key))
        if i == len(ops) // 2:
            store.submit("late", Watch(1, "/", start_revision=start))
    if not ops:
        store.submit("late", Watch(1, "/", start_revision=start))
    everything = [e for e in store.drain("all") if isinstance(e, WatchEvent)]
    late = [e for e in store.drain("late") if isinstance(e, WatchEvent)]
    assert [e.mod_revision for e in everything] == sorted(e.mod_revision for e in everything)
    assert late == [e for e in everything if e.mod_revision >= start]
