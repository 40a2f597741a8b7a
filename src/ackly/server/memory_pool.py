"""The memory pool for request bytes: `queued.max.request.bytes`, as Kafka's MemoryPool.

What it owns: the count of bytes that requests in flight hold on every client connection of
this broker (frames being received, and frames received and not yet answered), whether the
pool is exhausted, and which connection may go on reading while it is.

Invariants:
- `used_bytes` is the sum of every holder's charges (a holder charges what it allocated or is
  about to allocate, and releases it when the bytes are answered or the connection ends).
- `exhausted` turns on when `used_bytes` reaches the capacity and off only when it falls to
  `capacity - resume_margin_bytes` (hysteresis: a broker at the limit does not pause and
  resume every connection for each small release).
- While exhausted, exactly one holder may still read: the one whose large frame started
  first (`exempt`). Without it, frames that each hold part of the pool could wait for each
  other forever; with it, the pool exceeds its capacity by at most that one frame, as
  Kafka's non-strict pool may.

Charging never fails, as in Kafka's non-strict SimpleMemoryPool: the shell stops reading
(pause_reading) when the pool is exhausted, so nothing more is received, and a frame's
buffer grows only as its bytes arrive, so a declared length alone charges nothing.
The pool is plain arithmetic (no I/O, no clock): the shell applies its edges to sockets.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)


class MemoryPool(Generic[H]):
    def __init__(self, capacity_bytes: int | None, *, resume_margin_bytes: int | None = None) -> None:
        """`capacity_bytes` None: no limit (Kafka's -1). The margin defaults to an eighth of
        the capacity."""
        assert capacity_bytes is None or capacity_bytes > 0
        self.capacity_bytes = capacity_bytes
        if resume_margin_bytes is None:
            resume_margin_bytes = (capacity_bytes or 0) // 8
        self.resume_margin_bytes = resume_margin_bytes
        self.used_bytes = 0
        self.exhausted = False
        # Holders with a large frame being received, oldest first (a dict keeps insertion order).
        self._receiving: dict[H, None] = {}
        # Counters for the admin view: how often the pool ran out, the most ever used.
        self.exhaustions = 0
        self.peak_used_bytes = 0

    def adjust(self, delta_bytes: int) -> bool:
        """Charge (positive) or release (negative) bytes; True when `exhausted` changed."""
        self.used_bytes += delta_bytes
        assert self.used_bytes >= 0, "released more than was charged"
        if self.used_bytes > self.peak_used_bytes:
            self.peak_used_bytes = self.used_bytes
        capacity = self.capacity_bytes
        if capacity is None:
            return False
        if not self.exhausted and self.used_bytes >= capacity:
            self.exhausted = True
            self.exhaustions += 1
            return True
        if self.exhausted and self.used_bytes <= capacity - self.resume_margin_bytes:
            self.exhausted = False
            return True
        return False

    def set_receiving(self, holder: H, receiving: bool) -> None:
        """Whether `holder` is receiving a large frame (its place in the exemption queue)."""
        if receiving:
            self._receiving.setdefault(holder, None)
        else:
            self._receiving.pop(holder, None)

    @property
    def exempt(self) -> H | None:
        """The holder that may read while the pool is exhausted: the oldest large frame."""
        return next(iter(self._receiving), None)

    def may_read(self, holder: H) -> bool:
        return not self.exhausted or holder == self.exempt

    @property
    def available_bytes(self) -> int | None:
        """Room left (negative when over the capacity); None: no limit."""
        if self.capacity_bytes is None:
            return None
        return self.capacity_bytes - self.used_bytes
