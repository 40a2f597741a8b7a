"""The simulator's clock and event queue: the only source of time and order in a simulation.

Owns: the virtual clock (`now_ms`), the queue of pending events ordered by (time, sequence), the
seeded PRNG every other sim component draws from (directly or through `fork`), and the trace
hash: a running SHA-256 of (time, label) of every event run, so that two runs of one seed can
be compared with one string.

Invariants:
- Time never goes backwards: an event is never scheduled before `now_ms`, and events run in
  (time, sequence) order; two events at one time run in the order they were scheduled, so a
  FIFO link stays FIFO when its messages land in the same millisecond.
- One event runs at a time, to completion, and nothing runs between events but the run loop's
  own checks (invariants after every event, as TigerBeetle and FoundationDB check them).
- Everything is a function of the seed: no wall clock, no threads, no unordered iteration.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

Action = Callable[[], None]


@dataclass(order=True)
class Event:
    time_ms: int
    seq: int
    label: str = field(compare=False)
    action: Action = field(compare=False, repr=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, seed: int, start_ms: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = start_ms
        self.events_run = 0
        self._queue: list[Event] = []
        self._seq = 0
        self._trace = hashlib.sha256()
        self.trace_tail: list[str] = []  # the last events, for failure reports
        self._tail_limit = 40

    def fork(self) -> random.Random:
        """An independent PRNG for one component, seeded from the master one at construction:
        how many numbers one component draws then never shifts what another one draws."""
        return random.Random(self.rng.getrandbits(64))

    def at(self, time_ms: int, label: str, action: Action) -> Event:
        assert time_ms >= self.now_ms, f"event {label!r} at {time_ms} is before now ({self.now_ms})"
        self._seq += 1
        event = Event(time_ms, self._seq, label, action)
        heapq.heappush(self._queue, event)
        return event

    def after(self, delay_ms: int, label: str, action: Action) -> Event:
        return self.at(self.now_ms + max(delay_ms, 0), label, action)

    def next_time_ms(self) -> int | None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].time_ms if self._queue else None

    def pending(self) -> int:
        return sum(1 for e in self._queue if not e.cancelled)

    def step(self) -> bool:
        """Run the next event; False when the queue is empty."""
        while self._queue:
            event = heapq.heappop(self._queue)
            if event.cancelled:
                continue
            self.now_ms = event.time_ms
            self.events_run += 1
            line = f"{event.time_ms} {event.label}"
            self._trace.update(line.encode())
            self._trace.update(b"\n")
            self.trace_tail.append(line)
            if len(self.trace_tail) > self._tail_limit:
                del self.trace_tail[0]
            event.action()
            return True
        return False

    @property
    def trace_hash(self) -> str:
        return self._trace.hexdigest()


class Timer:
    """One re-armable deadline (a node's tick, the store's lease clock): setting it again
    replaces the pending event, so at most one is queued."""

    def __init__(self, scheduler: Scheduler, label: str, action: Action) -> None:
        self._scheduler = scheduler
        self._label = label
        self._action = action
        self._event: Event | None = None

    @property
    def due_ms(self) -> int | None:
        return None if self._event is None or self._event.cancelled else self._event.time_ms

    def set(self, due_ms: int | None) -> None:
        if due_ms is not None:
            due_ms = max(due_ms, self._scheduler.now_ms)
        if self.due_ms == due_ms:
            return
        self.cancel()
        if due_ms is not None:
            self._event = self._scheduler.at(due_ms, self._label, self._fire)

    def cancel(self) -> None:
        if self._event is not None:
            self._event.cancel()
            self._event = None

    def _fire(self) -> None:
        self._event = None
        self._action()
