"""Delayed operations: requests that wait for a state change or a deadline (Kafka's purgatory).

A delayed operation watches keys (here, partitions). Whoever changes a partition's state
(an append that moves HW, a flush that moves the recovery point) calls `check(key)`, which
retries `try_complete` on every operation watching that key; `expire(now_ms)` completes those
whose deadline has passed. Nothing polls: the shell arms one timer for `next_deadline_ms()`.
Mirrors kafka.server.DelayedOperationPurgatory: an operation completes exactly once.

Invariants: a completed operation is in no watcher list after the next `check` of its keys
(or the next purge) and never completes again; the number of waiting operations is bounded by
the number of requests in flight, which the connections bound.

Cost: an operation completed by a check of one key, or by its deadline, stays in the lists of
its other keys (a follower's fetch watches every partition it fetches) until those keys are
checked or the lists are purged. A purge walks every watched key, so it runs only once as many
operations have completed since the last one as there are watched keys (Kafka's
purgeInterval), not on every expiry: each timer then costs what expired, not a walk over every
watched partition. `visits` counts the watcher entries walked, for tests of that cost.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable


class DelayedOperation:
    """Subclasses implement try_complete (return True when done, after responding) and
    on_expire (respond with what is there when the deadline passes)."""

    def __init__(self, deadline_ms: int) -> None:
        self.deadline_ms = deadline_ms
        self.completed = False

    def try_complete(self, now_ms: int) -> bool:
        raise NotImplementedError

    def on_expire(self, now_ms: int) -> None:
        raise NotImplementedError


class Purgatory:
    def __init__(self) -> None:
        self._watchers: dict[Hashable, list[DelayedOperation]] = {}
        self._deadlines: list[tuple[int, int, DelayedOperation]] = []
        self._seq = itertools.count()
        self._completed_since_purge = 0
        self.visits = 0

    def try_or_watch(self, op: DelayedOperation, keys: Iterable[Hashable], now_ms: int) -> None:
        """Complete `op` now if it can, else park it on `keys` until a check or its deadline."""
        if op.try_complete(now_ms):
            op.completed = True
            return
        for key in keys:
            self._watchers.setdefault(key, []).append(op)
        heapq.heappush(self._deadlines, (op.deadline_ms, next(self._seq), op))

    def check(self, key: Hashable, now_ms: int) -> None:
        """Retry the operations watching `key` after its state changed."""
        ops = self._watchers.get(key)
        if not ops:
            return
        remaining = []
        self.visits += len(ops)
        for op in ops:
            if op.completed:
                continue
            if op.try_complete(now_ms):
                op.completed = True
                self._completed_since_purge += 1
            else:
                remaining.append(op)
        if remaining:
            self._watchers[key] = remaining
        else:
            del self._watchers[key]

    def expire(self, now_ms: int) -> None:
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, _, op = heapq.heappop(self._deadlines)
            if not op.completed:
                op.completed = True
                self._completed_since_purge += 1
                op.on_expire(now_ms)
        if self._completed_since_purge > len(self._watchers):
            self._purge_completed()

    def _purge_completed(self) -> None:
        self._completed_since_purge = 0
        for key in list(self._watchers):
            self.visits += len(self._watchers[key])
            live = [op for op in self._watchers[key] if not op.completed]
            if live:
                self._watchers[key] = live
            else:
                del self._watchers[key]

    def next_deadline_ms(self) -> int | None:
        while self._deadlines and self._deadlines[0][2].completed:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def __len__(self) -> int:
        return sum(1 for _, _, op in self._deadlines if not op.completed)

    def waiting_by_kind(self) -> dict[str, int]:
        """Operations waiting, by class name (Kafka's PurgatorySize per delayedOperation)."""
        counts: dict[str, int] = {}
        for _, _, op in self._deadlines:
            if not op.completed:
                kind = type(op).__name__
                counts[kind] = counts.get(kind, 0) + 1
        return counts
