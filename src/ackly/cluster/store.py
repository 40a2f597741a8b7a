"""The MetadataStore protocol, written as messages: commands out, results and events in.

The broker core never awaits the store. It emits `Command`s and receives `StoreInput`s
(`CommandResult`, `WatchEvent`, `WatchCanceled`, `LeaseExpired`) as inputs, like network
messages, so a simulator can delay them, reorder them across keys, or fail them. Two
implementations carry these messages: `MemoryStore` (memory_store.py; in-process and in the
simulator) and the etcd adapter (server/, over aetcd), so every command here is one etcd
request: KV Range, Put, DeleteRange, Txn (compares + one write); Lease Grant, KeepAlive,
Revoke; Watch create/cancel.

Semantics assumed of every implementation (etcd's, stated so MemoryStore can keep them):
- One linearizable history. Every successful write gets the next global `revision`; a key
  remembers its `create_revision` (revision of the write that created it; 0 when absent) and its
  `mod_revision` (revision of its last write). Revisions are > 0 and only grow.
- A compare against revision 0 means "the key does not exist" (create-if-absent).
- A lease has a TTL measured by the store's own clock. When it expires or is revoked, every
  key attached to it is deleted in one revision (one event per key, all with that revision).
  A put attaches the key to the lease it names; a put without a lease detaches it.
- A watch delivers, in revision order and with no gaps, every change to keys under its prefix
  from `start_revision` (inclusive) on. Events at or below the store's compaction point are gone:
  such a watch is refused with COMPACTED, and the client must read again (Get) and re-watch.
- Nothing is ordered *between* streams: the result of a write may arrive before or after the
  watch event of that same write, and results of two requests may arrive in either order. A
  client therefore takes state only from its watch (the one ordered stream), and treats
  results as "ok / refused / unknown" signals.
- A result with error UNAVAILABLE is indeterminate: the command may or may not have taken
  effect (a timeout, a lost connection). Writes are compare-and-set, so a client retries by
  re-reading its watch, never by blind replay.
- LeaseExpired is sent to the client that granted the lease. etcd has no such event; the
  adapter synthesizes it when a KeepAlive answers with TTL <= 0.

Key layout (root "/ackly" by default; see metadata.KeySpace, the only code that builds keys):
    /ackly/cluster_id                  cluster id, created once (create-if-absent)
    /ackly/controller                  the active controller; leased; create-if-absent election.
                                       Its create_revision is the controller epoch.
    /ackly/brokers/<id>                one live broker; leased. Its create_revision is the broker
                                       epoch (one per incarnation, KIP-380/KIP-903's broker epoch).
    /ackly/topics/<name>               topic id, config overrides, replica assignment
    /ackly/partitions/<name>/<index>   leader, leader epoch, ISR, replicas, partition epoch
    /ackly/producer_ids                the first producer id no broker has claimed (a broker
                                       claims a block with compare-and-set; cluster/member.py)
    /ackly/acls/<digest>               one ACL binding (cluster/acls.py); the digest of the binding
    /ackly/scram/<mechanism>/<user>    a SCRAM credential (salt, stored and server keys, iterations;
                                       the user percent-quoted; cluster/scram.py)
    /ackly/quotas/<entity>             one client-quota entity's values, the entity as
                                       user=<u>,client-id=<c> (percent-quoted, * for <default>;
                                       cluster/quotas.py)
Values are JSON (see metadata.py). Topic names cannot contain "/", so keys parse unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One key as the store holds it (etcd's mvccpb.KeyValue)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int  # number of writes since creation; 1 after the first
    lease_id: int | None = None


class CompareTarget(Enum):
    MOD = "mod"  # the key's mod_revision
    CREATE = "create"  # the key's create_revision (fixed for one incarnation of a leased key)


@dataclass(frozen=True)
class Compare:
    """`target_revision(key) == revision`; revision 0 means "the key does not exist"."""

    key: str
    revision: int
    target: CompareTarget = CompareTarget.MOD


# --- commands --------------------------------------------------------------------------------
# Every command carries a request id chosen by the client, unique per client; the result
# carries it back. A watch is named by the request id of the Watch that created it.


@dataclass(frozen=True)
class Get:
    """Every key starting with `prefix`, sorted by key, and the store's current revision."""

    request_id: int
    prefix: str


@dataclass(frozen=True)
class Put:
    """Unconditional write. Fails (LEASE_NOT_FOUND) only if the named lease is gone."""

    request_id: int
    key: str
    value: bytes
    lease_id: int | None = None


@dataclass(frozen=True)
class CompareAndSet:
    """Write `value` iff mod_revision(key) == expected_mod_revision (0: key must not exist) and
    every guard holds; one etcd Txn. On refusal the result carries the current values of `key`
    and of every guarded key that exists, so the caller sees why without another read."""

    request_id: int
    key: str
    expected_mod_revision: int
    value: bytes
    lease_id: int | None = None
    guards: tuple[Compare, ...] = ()


@dataclass(frozen=True)
class Delete:
    """Delete `key`, iff its mod_revision equals expected_mod_revision when one is given.
    Deleting an absent key without an expectation succeeds and writes nothing."""

    request_id: int
    key: str
    expected_mod_revision: int | None = None


@dataclass(frozen=True)
class GrantLease:
    request_id: int
    ttl_ms: int


@dataclass(frozen=True)
class KeepAlive:
    """Restart the lease's TTL from now (the store's now)."""

    request_id: int
    lease_id: int


@dataclass(frozen=True)
class RevokeLease:
    """End the lease now; its keys are deleted as on expiry (no LeaseExpired is sent)."""

    request_id: int
    lease_id: int


@dataclass(frozen=True)
class Watch:
    """Watch every key under `prefix` from `start_revision` (inclusive; 0 = from the next write).
    Its events carry watch_id = this request id."""

    request_id: int
    prefix: str
    start_revision: int = 0


@dataclass(frozen=True)
class CancelWatch:
    request_id: int
    watch_id: int


Command = Get | Put | CompareAndSet | Delete | GrantLease | KeepAlive | RevokeLease | Watch | CancelWatch

WRITE_COMMANDS = (Put, CompareAndSet, Delete)

# --- results and events ----------------------------------------------------------------------


class StoreError(Enum):
    COMPARE_FAILED = "compare_failed"  # a compare-and-set or guarded write was refused
    LEASE_NOT_FOUND = "lease_not_found"  # expired, revoked or never granted
    COMPACTED = "compacted"  # a watch asked for history the store no longer keeps
    WATCH_NOT_FOUND = "watch_not_found"
    INVALID = "invalid"  # a malformed command (a bug in the client)
    UNAVAILABLE = "unavailable"  # indeterminate: the command may or may not have taken effect


@dataclass(frozen=True)
class CommandResult:
    """The answer to one command.

    revision: for a write, the revision it created (the store's revision if it wrote nothing);
    otherwise the store's revision when it answered. kvs: Get's keys, or on COMPARE_FAILED
    the current values of the compared keys that exist. lease_id/ttl_ms: GrantLease and
    KeepAlive. compact_revision: with COMPACTED, the oldest revision a watch may start after.
    """

    request_id: int
    ok: bool
    revision: int = 0
    kvs: tuple[KeyValue, ...] = ()
    error: StoreError | None = None
    lease_id: int | None = None
    ttl_ms: int = 0
    compact_revision: int = 0


@dataclass(frozen=True)
class WatchEvent:
    """One change of one key, in revision order within a watch. value None: deleted (then
    create_revision is 0 and lease_id None, as in etcd's delete events)."""

    watch_id: int
    key: str
    value: bytes | None
    mod_revision: int
    create_revision: int = 0
    lease_id: int | None = None


@dataclass(frozen=True)
class WatchCanceled:
    """The store ended a watch (it fell too far behind, or its history was compacted). The
    client must read again and re-watch."""

    watch_id: int
    reason: StoreError


@dataclass(frozen=True)
class LeaseExpired:
    """The lease ran out of TTL; its keys are already deleted."""

    lease_id: int


StoreInput = CommandResult | WatchEvent | WatchCanceled | LeaseExpired
