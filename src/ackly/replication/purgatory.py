"""Delayed operations: requests that wait for a state change or a deadline (Kafka's purgatory).

A delayed operation watches keys (here, partitions). Whoever changes a partition's state
(an append that moves HW, a flush that moves the recovery point) calls `check(key)`, which
retries `try_complete` on every operation watching that key; `expire(now_ms)` completes those
whose deadline has passed. Nothing polls: the shell arms one timer for `next_deadline_ms()`.
Mirrors kafka.server.DelayedOperationPurgatory: an operation completes exactly once.

Invariants: a completed operation is in no watcher list after the next `check` of its keys
and never completes again; the number of waiting operations is bounded by the number of
requests in flight, which the connections bound.
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
        for op in ops:
            if op.completed:
                continue
            if op.try_complete(now_ms):
                op.completed = True
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
                op.on_expire(now_ms)
        self._purge_completed()

    def _purge_completed(self) -> None:
        if len(self._watchers) == 0:
            return
        for key in list(self._watchers):
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
