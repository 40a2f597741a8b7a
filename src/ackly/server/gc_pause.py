"""Python's cyclic garbage collector paused while the broker process starts or stops.

Opening thousands of partitions allocates millions of objects that live as long as the
process (logs, segments, indexes, partition states). With the collector on, every full
collection walks all of them again while they are being created, so the start-up's cost
grows faster than the partition count (about a quarter of the CPU to the port with 10,000
partitions). Paused during the start, then frozen (`gc.freeze`: moved to the permanent
generation, never walked again), the objects that stay cost no later collection either.
Only the `ackly serve` process does this: the collector is process-wide, and an in-process
broker shares its process with its user's code.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused_then_frozen() -> Iterator[None]:
    """No cyclic collection inside; on a normal exit what was allocated is frozen. The
    collector runs again afterwards whatever happens (a start that fails or is cancelled)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def pause_collector_for_exit() -> None:
    """The process is about to close every log and exit: collecting cycles now only costs
    time (the memory goes back with the process)."""
    gc.disable()
