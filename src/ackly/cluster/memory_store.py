"""MemoryStore: the MetadataStore protocol (store.py) answered in-process, deterministically.

Owns: the key space, the global revision, leases and their deadlines, watches, the bounded
event history that watches replay from, and one outbox per client. It is a plain object: no
clock (time arrives through `tick(now_ms)`), no threads, no I/O. `submit` applies a command at
once, as a linearizable store would at its commit point, and queues the result and any watch
events in the outboxes of the clients concerned; `drain` hands a client what is queued for it.
A simulator interposes between the two (delaying, reordering results, failing commands); an
in-process cluster calls them back to back.

Invariants:
- `revision` only grows; every write (or lease expiry/revocation, which deletes all the lease's
  keys at one revision) takes exactly one new revision.
- For every live key, 0 < create_revision <= mod_revision <= revision, and a leased key's lease
  is alive (an expired lease's keys are gone in the same step).
- A watch's events reach its client in revision order with no gaps from its start revision,
  or the watch is canceled (WatchCanceled) and sends nothing more.
- Every outbox is bounded: a client whose outbox overflows loses its watches (WatchCanceled,
  as etcd cancels a watcher that cannot keep up), never a command result.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

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
    KeyValue,
    LeaseExpired,
    Put,
    RevokeLease,
    StoreError,
    StoreInput,
    Watch,
    WatchCanceled,
    WatchEvent,
)

ClientId = str

DEFAULT_HISTORY_LIMIT = 10_000
DEFAULT_OUTBOX_LIMIT = 100_000
MAX_GUARDS = 128  # etcd's default --max-txn-ops bounds the compares of one Txn


@dataclass
class _Lease:
    lease_id: int
    ttl_ms: int
    deadline_ms: int
    owner: ClientId
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Change:
    revision: int
    key: str
    kv: KeyValue | None  # None: deleted


class MemoryStore:
    def __init__(
        self,
        *,
        now_ms: int = 0,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
    ) -> None:
        assert history_limit > 0 and outbox_limit > 0
        self.now_ms = now_ms
        # etcd starts an empty store at revision 1; the first write creates revision 2.
        self.revision = 1
        # Events with revision <= compact_revision are no longer in the history.
        self.compact_revision = 0
        self._history_limit = history_limit
        self._outbox_limit = outbox_limit
        self._kvs: dict[str, KeyValue] = {}
        self._leases: dict[int, _Lease] = {}
        self._next_lease_id = 1
        # (client, watch id) -> (prefix, start revision)
        self._watches: dict[tuple[ClientId, int], tuple[str, int]] = {}
        self._history: deque[_Change] = deque()
        self._outboxes: dict[ClientId, deque[StoreInput]] = {}

    def restore(self, kvs: list[KeyValue], revision: int) -> None:
        """Load keys kept from an earlier life of this store (durable_store.py), before any
        client uses it. Leases do not survive a restart: leased keys must not be given."""
        assert self.revision == 1 and not self._kvs and not self._history, "restore a fresh store only"
        assert all(kv.lease_id is None and 0 < kv.mod_revision <= revision for kv in kvs), kvs
        self._kvs = {kv.key: kv for kv in kvs}
        self.revision = max(revision, 1)
        # No history before this point: a watch must start after it (Get, then watch).
        self.compact_revision = self.revision

    # --- the client-facing API ---------------------------------------------------------------

    def submit(self, client_id: ClientId, command: Command) -> None:
        """Apply one command now; its result (and the watch events it causes) are queued."""
        if isinstance(command, Watch):
            self._watch(client_id, command)  # queues its result, then the history it replays
            return
        self._queue(client_id, self._execute(client_id, command))

    def drain(self, client_id: ClientId, limit: int | None = None) -> list[StoreInput]:
        """Take what is queued for the client, oldest first (at most `limit` items)."""
        box = self._outboxes.get(client_id)
        if not box:
            return []
        count = len(box) if limit is None else min(limit, len(box))
        return [box.popleft() for _ in range(count)]

    def pending(self, client_id: ClientId) -> int:
        box = self._outboxes.get(client_id)
        return len(box) if box else 0

    def tick(self, now_ms: int) -> None:
        """Advance the store's clock; expire every lease whose deadline has passed."""
        self.now_ms = max(self.now_ms, now_ms)
        due = sorted(
            (lease for lease in self._leases.values() if lease.deadline_ms <= self.now_ms),
            key=lambda lease: (lease.deadline_ms, lease.lease_id),
        )
        for lease in due:
            self._end_lease(lease)
            self._queue(lease.owner, LeaseExpired(lease.lease_id))

    def next_deadline_ms(self) -> int | None:
        """When the next lease expires, if any lease is alive."""
        return min((lease.deadline_ms for lease in self._leases.values()), default=None)

    def disconnect(self, client_id: ClientId) -> None:
        """The client is gone: drop its watches and its outbox. Its leases live on until they
        expire, as etcd's do (that is what lets the cluster notice a dead broker late)."""
        for watch in [w for w in self._watches if w[0] == client_id]:
            del self._watches[watch]
        self._outboxes.pop(client_id, None)

    # --- inspection (tests and the simulator's invariant checks) -------------------------------

    def get(self, key: str) -> KeyValue | None:
        return self._kvs.get(key)

    def range(self, prefix: str) -> list[KeyValue]:
        return [self._kvs[k] for k in sorted(self._kvs) if k.startswith(prefix)]

    def lease_alive(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def lease_deadline_ms(self, lease_id: int) -> int | None:
        lease = self._leases.get(lease_id)
        return None if lease is None else lease.deadline_ms

    # --- commands ------------------------------------------------------------------------------

    def _execute(self, client_id: ClientId, command: Get | Put | CompareAndSet | Delete | GrantLease
                 | KeepAlive | RevokeLease | CancelWatch) -> CommandResult:
        rid = command.request_id
        if isinstance(command, Get):
            return CommandResult(rid, True, self.revision, kvs=tuple(self.range(command.prefix)))
        if isinstance(command, Put):
            if not command.key:
                return self._refuse(rid, StoreError.INVALID)
            if command.lease_id is not None and command.lease_id not in self._leases:
                return self._refuse(rid, StoreError.LEASE_NOT_FOUND)
            revision = self._write([(command.key, command.value, command.lease_id)])
            return CommandResult(rid, True, revision)
        if isinstance(command, CompareAndSet):
            return self._compare_and_set(command)
        if isinstance(command, Delete):
            return self._delete(command)
        if isinstance(command, GrantLease):
            if command.ttl_ms <= 0:
                return self._refuse(rid, StoreError.INVALID)
            lease_id = self._next_lease_id
            self._next_lease_id += 1
            self._leases[lease_id] = _Lease(
                lease_id, command.ttl_ms, self.now_ms + command.ttl_ms, owner=client_id
            )
            return CommandResult(rid, True, self.revision, lease_id=lease_id, ttl_ms=command.ttl_ms)
        if isinstance(command, KeepAlive):
            lease = self._leases.get(command.lease_id)
            if lease is None:
                return self._refuse(rid, StoreError.LEASE_NOT_FOUND)
            lease.deadline_ms = self.now_ms + lease.ttl_ms
            return CommandResult(rid, True, self.revision, lease_id=lease.lease_id, ttl_ms=lease.ttl_ms)
        if isinstance(command, RevokeLease):
            lease = self._leases.get(command.lease_id)
            if lease is None:
                return self._refuse(rid, StoreError.LEASE_NOT_FOUND)
            revision = self._end_lease(lease)
            return CommandResult(rid, True, revision)
        if isinstance(command, CancelWatch):
            if self._watches.pop((client_id, command.watch_id), None) is None:
                return self._refuse(rid, StoreError.WATCH_NOT_FOUND)
            return CommandResult(rid, True, self.revision)
        raise AssertionError(f"unknown store command {command!r}")

    def _refuse(self, request_id: int, error: StoreError, kvs: tuple[KeyValue, ...] = ()) -> CommandResult:
        return CommandResult(request_id, False, self.revision, kvs=kvs, error=error)

    def _holds(self, compare: Compare) -> bool:
        kv = self._kvs.get(compare.key)
        if kv is None:
            return compare.revision == 0
        actual = kv.mod_revision if compare.target is CompareTarget.MOD else kv.create_revision
        return actual == compare.revision

    def _compare_and_set(self, cas: CompareAndSet) -> CommandResult:
        if not cas.key or cas.expected_mod_revision < 0 or len(cas.guards) >= MAX_GUARDS:
            return self._refuse(cas.request_id, StoreError.INVALID)
        compares = (Compare(cas.key, cas.expected_mod_revision), *cas.guards)
        if not all(self._holds(c) for c in compares):
            keys = sorted({c.key for c in compares})
            current = tuple(self._kvs[k] for k in keys if k in self._kvs)
            return self._refuse(cas.request_id, StoreError.COMPARE_FAILED, current)
        if cas.lease_id is not None and cas.lease_id not in self._leases:
            return self._refuse(cas.request_id, StoreError.LEASE_NOT_FOUND)
        revision = self._write([(cas.key, cas.value, cas.lease_id)])
        return CommandResult(cas.request_id, True, revision)

    def _delete(self, delete: Delete) -> CommandResult:
        kv = self._kvs.get(delete.key)
        expected = delete.expected_mod_revision
        if expected is not None and (kv.mod_revision if kv is not None else 0) != expected:
            current = (kv,) if kv is not None else ()
            return self._refuse(delete.request_id, StoreError.COMPARE_FAILED, current)
        if kv is None:
            return CommandResult(delete.request_id, True, self.revision)
        revision = self._write([(delete.key, None, None)])
        return CommandResult(delete.request_id, True, revision)

    def _watch(self, client_id: ClientId, watch: Watch) -> None:
        start = watch.start_revision if watch.start_revision > 0 else self.revision + 1
        if start <= self.compact_revision:
            self._queue(client_id, CommandResult(
                watch.request_id, False, self.revision, error=StoreError.COMPACTED,
                compact_revision=self.compact_revision,
            ))
            return
        self._watches[(client_id, watch.request_id)] = (watch.prefix, start)
        self._queue(client_id, CommandResult(watch.request_id, True, self.revision))
        for change in self._history:
            if change.revision >= start and change.key.startswith(watch.prefix):
                self._queue_event(client_id, watch.request_id, self._event(watch.request_id, change))

    # --- writes, leases, events ------------------------------------------------------------------

    def _write(self, writes: list[tuple[str, bytes | None, int | None]]) -> int:
        """Apply puts (value) and deletes (None) at one new revision; return it."""
        self.revision += 1
        revision = self.revision
        for key, value, lease_id in sorted(writes, key=lambda w: w[0]):
            old = self._kvs.get(key)
            if old is not None and old.lease_id is not None and old.lease_id in self._leases:
                self._leases[old.lease_id].keys.discard(key)
            if value is None:
                if old is None:
                    continue
                del self._kvs[key]
                self._record(_Change(revision, key, None))
                continue
            kv = KeyValue(
                key=key, value=value,
                create_revision=old.create_revision if old is not None else revision,
                mod_revision=revision,
                version=old.version + 1 if old is not None else 1,
                lease_id=lease_id,
            )
            self._kvs[key] = kv
            if lease_id is not None:
                self._leases[lease_id].keys.add(key)
            self._record(_Change(revision, key, kv))
        return revision

    def _end_lease(self, lease: _Lease) -> int:
        del self._leases[lease.lease_id]
        if not lease.keys:
            return self.revision
        return self._write([(key, None, None) for key in lease.keys])

    def _record(self, change: _Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self.compact_revision = self._history.popleft().revision
        for (client_id, watch_id), (prefix, start) in list(self._watches.items()):
            if change.revision >= start and change.key.startswith(prefix):
                self._queue_event(client_id, watch_id, self._event(watch_id, change))

    @staticmethod
    def _event(watch_id: int, change: _Change) -> WatchEvent:
        if change.kv is None:
            return WatchEvent(watch_id, change.key, None, change.revision)
        kv = change.kv
        return WatchEvent(watch_id, kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease_id)

    def _queue_event(self, client_id: ClientId, watch_id: int, event: WatchEvent) -> None:
        if (client_id, watch_id) not in self._watches:
            return
        box = self._outboxes.setdefault(client_id, deque())
        if len(box) >= self._outbox_limit:
            # The client is not keeping up: end the watch rather than grow without bound.
            del self._watches[(client_id, watch_id)]
            box.append(WatchCanceled(watch_id, StoreError.COMPACTED))
            return
        box.append(event)

    def _queue(self, client_id: ClientId, item: StoreInput) -> None:
        # Command results are never dropped: their number is bounded by the client's requests.
        self._outboxes.setdefault(client_id, deque()).append(item)
