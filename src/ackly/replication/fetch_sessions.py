"""Fetch sessions (KIP-227): the leader's cache of what each fetcher last asked for, so that
a fetcher may name only the partitions whose request changed and get back only the partitions
with something new.

Owns (Kafka's FetchSession, FetchSessionCache and FetchManager.newContext): the bounded
cache of sessions, each keyed by a random non-zero id and holding, per partition, the fetch
parameters last sent (fetch offset, leader epoch, last fetched epoch, max bytes) and the HW,
LSO and log start offset last answered. A request's (session id, session epoch) chooses:

- epoch -1 (FINAL): a full, sessionless fetch, exactly as before sessions; a non-zero id
  closes that session first.
- epoch 0 (INITIAL): a full fetch that opens a new session (closing the named one, if any);
  the answer carries the new id, or 0 when the cache has no room.
- epoch > 0: an incremental fetch of that session. Unknown id (or one opened by another
  fetcher): FETCH_SESSION_ID_NOT_FOUND. Epoch other than the one expected:
  INVALID_FETCH_SESSION_EPOCH. Otherwise the named partitions update the session, the
  forgotten ones leave it, the expected epoch moves on (wrapping past 2^31-1 to 1), and the
  fetch covers every partition in the session.

Invariants: at most `max.incremental.fetch.session.cache.slots` sessions; ids are unique and
never 0; an incremental answer names a partition only if it has an error, records, a
diverging epoch, an HW, LSO or log start offset different from what this session last
answered (Kafka's CachedPartition.maybeUpdateResponseData), or the request named it.

Eviction (Kafka's FetchSessionCache.tryEvict), when a new session finds the cache full: a
session unused for `eviction_ms` (Kafka: 120 s) goes first; otherwise the least valuable
session that has existed for `eviction_ms` (a consumer's before a follower's, then fewer
partitions, then lower id) is evicted only if the new session is worth more than it. A
consumer's session can never evict a follower's. Otherwise no session is opened.

Deterministic: time is `now_ms`, ids are drawn from the injected `random.Random`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from ackly.errors import ErrorCode

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
_MAX_EPOCH = 2**31 - 1
DEFAULT_EVICTION_MS = 120_000

PartitionKey = tuple["str | uuid.UUID", int]  # (topic name or topic id, partition)


def next_epoch(epoch: int) -> int:
    """The session epoch after `epoch`: 0 and -1 are reserved, so it wraps to 1."""
    return 1 if epoch >= _MAX_EPOCH or epoch < INITIAL_EPOCH else epoch + 1


@dataclass
class CachedPartition:
    """What the fetcher last asked for, and what it was last told."""

    fetch_offset: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    partition_max_bytes: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1

    def update_request(self, other: CachedPartition) -> None:
        self.fetch_offset = other.fetch_offset
        self.current_leader_epoch = other.current_leader_epoch
        self.last_fetched_epoch = other.last_fetched_epoch
        self.partition_max_bytes = other.partition_max_bytes
        # A partition the fetcher names again is in the next answer even with nothing new
        # (unlike Kafka): a fetcher that dropped an answer for it (stale after a truncation)
        # learns its HW again without waiting for HW to move.
        self.high_watermark = -1

    def answer_changes(self, high_watermark: int, last_stable_offset: int, log_start_offset: int) -> bool:
        """Record the offsets of an answer; whether any differs from the last one."""
        changed = (high_watermark, last_stable_offset, log_start_offset) != (
            self.high_watermark, self.last_stable_offset, self.log_start_offset)
        self.high_watermark = high_watermark
        self.last_stable_offset = last_stable_offset
        self.log_start_offset = log_start_offset
        return changed


@dataclass
class FetchSession:
    session_id: int
    privileged: bool  # a follower's: may evict consumers' sessions
    owner: int  # the replica id that opened it (-1: a consumer)
    created_ms: int
    last_used_ms: int
    epoch: int = 1  # the epoch the next incremental request must carry
    partitions: dict[PartitionKey, CachedPartition] = field(default_factory=dict)

    def value(self) -> tuple[bool, int, int]:
        """Kafka's EvictableKey order: followers above consumers, then size, then id."""
        return (self.privileged, len(self.partitions), self.session_id)


class FetchSessionCache:
    def __init__(self, max_slots: int, rng: random.Random, eviction_ms: int = DEFAULT_EVICTION_MS) -> None:
        self.max_slots = max_slots
        self.eviction_ms = eviction_ms
        self._rng = rng
        self._sessions: dict[int, FetchSession] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def session_ids(self) -> list[int]:
        return list(self._sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: int) -> FetchSession | None:
        return self._sessions.pop(session_id, None)

    def create(self, privileged: bool, owner: int, partitions: dict[PartitionKey, CachedPartition],
               now_ms: int) -> FetchSession | None:
        """A new session holding `partitions`, or None when the cache has no room for it."""
        if self.max_slots <= 0:
            return None
        if len(self._sessions) >= self.max_slots and not self._try_evict(privileged, len(partitions), now_ms):
            return None
        session_id = self._new_id()
        session = FetchSession(session_id, privileged, owner, now_ms, now_ms, partitions=partitions)
        self._sessions[session_id] = session
        return session

    def _new_id(self) -> int:
        while True:
            session_id = self._rng.randint(1, _MAX_EPOCH)
            if session_id not in self._sessions:
                return session_id

    def _try_evict(self, privileged: bool, size: int, now_ms: int) -> bool:
        stalest = min(self._sessions.values(), key=lambda s: (s.last_used_ms, s.session_id))
        if now_ms - stalest.last_used_ms >= self.eviction_ms:
            self._evict(stalest)
            return True
        candidates = [
            s for s in self._sessions.values()
            if now_ms - s.created_ms >= self.eviction_ms and (privileged or not s.privileged)
        ]
        if not candidates:
            return False
        cheapest = min(candidates, key=FetchSession.value)
        # The new session's id is not drawn yet: it ties above any id, as a larger session.
        if (privileged, size) > cheapest.value()[:2]:
            self._evict(cheapest)
            return True
        return False

    def _evict(self, session: FetchSession) -> None:
        del self._sessions[session.session_id]
        self.evictions += 1


@dataclass
class FetchContext:
    """How one Fetch request is served: which session (None: sessionless), full or
    incremental, or a session error to answer at once."""

    session: FetchSession | None = None
    incremental: bool = False
    error: ErrorCode = ErrorCode.none

    @property
    def session_id(self) -> int:
        return self.session.session_id if self.session is not None else INVALID_SESSION_ID

    def include(self, key: PartitionKey, error: bool, has_records: bool, high_watermark: int,
                last_stable_offset: int, log_start_offset: int) -> bool:
        """Whether the answer names this partition; records the offsets answered."""
        if self.session is None:
            return True
        cached = self.session.partitions.get(key)
        if cached is None:
            return True
        changed = cached.answer_changes(high_watermark, last_stable_offset, log_start_offset)
        return not self.incremental or error or has_records or changed


def new_context(cache: FetchSessionCache, session_id: int, epoch: int, replica_id: int,
                requested: dict[PartitionKey, CachedPartition], forgotten: list[PartitionKey],
                now_ms: int) -> FetchContext:
    """Resolve a request's session fields (Kafka's FetchManager.newContext); see the module
    docstring for the rules."""
    if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
        if session_id != INVALID_SESSION_ID:
            old = cache.get(session_id)
            if old is not None and old.owner == replica_id:
                cache.remove(session_id)
        if epoch == FINAL_EPOCH:
            return FetchContext()
        return FetchContext(cache.create(replica_id >= 0, replica_id, dict(requested), now_ms))
    session = cache.get(session_id) if epoch > 0 else None
    if epoch < FINAL_EPOCH:
        return FetchContext(error=ErrorCode.invalid_fetch_session_epoch)
    if session is None or session.owner != replica_id:
        return FetchContext(error=ErrorCode.fetch_session_id_not_found)
    if epoch != session.epoch:
        return FetchContext(error=ErrorCode.invalid_fetch_session_epoch)
    for key in forgotten:
        session.partitions.pop(key, None)
    for key, wanted in requested.items():
        cached = session.partitions.get(key)
        if cached is None:
            session.partitions[key] = wanted
        else:
            cached.update_request(wanted)
    session.epoch = next_epoch(epoch)
    session.last_used_ms = now_ms
    return FetchContext(session, incremental=True)
