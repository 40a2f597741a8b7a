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

Invariants: before `drain` returns anything, every unleased key is durable with the value the
store holds; the file is never half written. `writes` counts the files written (tests check it
stays independent of the partition count).
"""

from __future__ import annotations

import base64
import json
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
