"""A MemoryStore whose unleased keys survive restarts: the metadata store of a single broker.

A single broker (`ackly serve` without --metadata) is a cluster of one. Its topics, partition
states and cluster id live in the same keys as a real cluster's, in a MemoryStore that this
module keeps durable in the data directory, so that the one code path (ClusterMember, the
controller, the broker's reaction to metadata changes) serves both modes.

On-disk layout: `<data dir>/metadata.json`, written atomically (Disk.write_atomic: temp file,
fsync, rename, fsync dir) once per batch of commands that changed an unleased key, before any
of their results or watch events is drained:
    {"version": 1, "revision": <int>, "kvs": [{"key", "value" (base64), "create_revision",
     "mod_revision", "version"}, ...]}
Leased keys (broker registrations, the controller key) are never written: leases do not
survive a restart, exactly as if the process had been away longer than its session timeout.
The revision is kept so that revisions keep growing across restarts (a registration after a
restart is newer than every partition state, which the controller reads as "restarted").

Why once per batch: the file holds every partition's state, so writing it after each command
made a CreateTopics of N partitions (one command per partition state) or a start-up electing N
leaders cost N writes of an N-sized file, with an fsync each: quadratic. Nobody can act on a
command before `drain` hands out its result or its watch events, so writing the file then
keeps the same promise with one write per batch (etcd's own commit is likewise a batch).

Written off the event loop (a running broker): `take_write` hands out the file's next content
while no write of it is out, the caller writes it elsewhere (broker/file_writes.py) and
reports `written`; meanwhile `drain_durable` holds back what each client's outbox received
until the write covering the revision it was queued at is durable. Commands submitted while a
write is out are coalesced into the next one (one writer, files in revision order).

Invariants: before `drain` or `drain_durable` returns anything, every unleased key is durable
with the value the store held when it was queued; the file is never half written. `writes`
counts the files written (tests check it stays independent of the partition count).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any

from ackly.cluster.memory_store import ClientId, MemoryStore
from ackly.cluster.store import Command, KeyValue, StoreInput
from ackly.log.disk import Disk

METADATA_FILE = "metadata.json"
_VERSION = 1


class DurableMemoryStore:
    """Wraps a MemoryStore; same client API (submit, drain, tick, next_deadline_ms)."""

    def __init__(self, disk: Disk, data_dir: str, now_ms: int) -> None:
        self._disk = disk
        self.path = f"{data_dir}/{METADATA_FILE}"
        self.store = MemoryStore(now_ms=now_ms)
        self._persisted: tuple[tuple[str, int], ...] = ()
        self._dirty = False  # a command changed the store since the last write of the file
        self.writes = 0
        # Off-loop writing: the write out (its revision and marks), the revision up to which
        # every unleased change is durable, and what each client's outbox held, by revision.
        self._out: tuple[int, tuple[tuple[str, int], ...]] | None = None
        self._durable_revision = 0
        self._held: dict[ClientId, deque[tuple[int, list[StoreInput]]]] = {}
        raw = disk.read_file(self.path)
        self.existed = raw is not None
        if raw is not None:
            revision, kvs = _decode(raw, self.path)
            self.store.restore(kvs, revision)
            self._persisted = tuple((kv.key, kv.mod_revision) for kv in kvs)

    def submit(self, client_id: ClientId, command: Command) -> None:
        """Apply one command; durable before its result is drained (see `drain`)."""
        before = self.store.revision
        self.store.submit(client_id, command)
        if self.store.revision != before:
            self._dirty = True

    def drain(self, client_id: ClientId) -> list[StoreInput]:
        """Make every change submitted so far durable (one write for the whole batch), then
        hand the client what is queued for it."""
        self.sync()
        return self.store.drain(client_id)

    def sync(self) -> None:
        """Write the file if a command changed an unleased key since the last write."""
        if self._dirty:
            self._persist_if_changed()  # raises on a failed write: the batch stays dirty
            self._dirty = False

    def take_write(self) -> tuple[int, bytes] | None:
        """The file's next content (for revision, data) if a change since the last write
        needs it and no write is out; the caller writes it durably and calls `written`."""
        if self._out is not None or not self._dirty:
            return None
        self._dirty = False
        kvs = [kv for kv in self.store.range("") if kv.lease_id is None]
        marks = tuple((kv.key, kv.mod_revision) for kv in kvs)
        revision = self.store.revision
        if marks == self._persisted:  # only leased keys changed: nothing to write
            self._durable_revision = revision
            return None
        self._out = (revision, marks)
        return revision, _encode(revision, kvs)

    def written(self, revision: int) -> None:
        """The write `take_write` handed out for `revision` is durable."""
        assert self._out is not None and self._out[0] == revision, "not the write that is out"
        self._persisted = self._out[1]
        self._durable_revision = revision
        self._out = None
        self.writes += 1

    def drain_durable(self, client_id: ClientId) -> list[StoreInput]:
        """What is queued for the client and durable (see the module docstring); the rest
        waits for `written`. Call `take_write` first, so a change to leased keys only is not
        held back."""
        held = self._held.setdefault(client_id, deque())
        items = self.store.drain(client_id)
        if items:
            held.append((self.store.revision, items))
        durable = self._durable_revision
        if self._out is None and not self._dirty:
            durable = self.store.revision
        out: list[StoreInput] = []
        while held and held[0][0] <= durable:
            out.extend(held.popleft()[1])
        return out

    def write_file(self, data: bytes) -> None:
        """Write content from `take_write` durably (in a writer thread: touches nothing else
        of the store)."""
        self._disk.write_atomic(self.path, data)

    def disconnect(self, client_id: ClientId) -> None:
        """A client goes away: its watches end, nothing held for it is handed out."""
        self.store.disconnect(client_id)
        self._held.pop(client_id, None)

    def tick(self, now_ms: int) -> None:
        self.store.tick(now_ms)  # expiries delete only leased keys: nothing to persist

    def next_deadline_ms(self) -> int | None:
        return self.store.next_deadline_ms()

    def _persist_if_changed(self) -> None:
        kvs = [kv for kv in self.store.range("") if kv.lease_id is None]
        marks = tuple((kv.key, kv.mod_revision) for kv in kvs)
        if marks == self._persisted:
            return
        self._disk.write_atomic(self.path, _encode(self.store.revision, kvs))
        self._persisted = marks
        self.writes += 1


def _encode(revision: int, kvs: list[KeyValue]) -> bytes:
    doc = {
        "version": _VERSION,
        "revision": revision,
        "kvs": [
            {
                "key": kv.key, "value": base64.b64encode(kv.value).decode("ascii"),
                "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                "version": kv.version,
            }
            for kv in kvs
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _decode(raw: bytes, path: str) -> tuple[int, list[KeyValue]]:
    try:
        doc: Any = json.loads(raw)
        if doc.get("version") != _VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        kvs = [
            KeyValue(
                key=str(e["key"]), value=base64.b64decode(e["value"]),
                create_revision=int(e["create_revision"]), mod_revision=int(e["mod_revision"]),
                version=int(e["version"]),
            )
            for e in doc["kvs"]
        ]
        return int(doc["revision"]), kvs
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Refuse to start rather than start with no topics and let the logs be taken for strays.
        raise ValueError(f"{path}: cannot read the broker's metadata: {exc}") from None
