"""What every worker shares: the recorder, the settings, the stop signal and the value counters.

Values: one counter per key (topic/partition), taken under a lock, so a value is unique per key
over the whole run and increases in send order for every producer process (history format).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ackly.verify.history import Recorder
from ackly.verify.settings import RunSettings


def now_s() -> float:
    """The workers' clock (seconds, monotonic)."""
    return time.monotonic()  # noqa: TID251  (real clients, real time: not the core)


@dataclass
class WorkloadContext:
    recorder: Recorder
    settings: RunSettings
    client: str
    bootstrap: str
    topic: str
    partitions: int
    seed: int
    run_id: str
    op_timeout_s: float = 5.0
    ops_per_s: float = 50.0  # per producer worker: bounds the history's size
    in_flight: int = 4  # logical processes per producer worker, one send outstanding each
    # Every client's security settings (security.protocol, sasl.*, ssl.*: verify/security.py).
    security: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    stats: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _values: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, partition: int) -> str:
        return f"{self.topic}/{partition}"

    def next_value(self, key: str) -> int:
        with self._lock:
            value = self._values.get(key, 0)
            self._values[key] = value + 1
            return value

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] += n

    def rng(self, worker: str) -> random.Random:
        """A worker's own generator, derived from the run's seed and the worker's name."""
        return random.Random(f"{self.seed}/{worker}")

    def note_error(self, message: str) -> None:
        with self._lock:
            if len(self.errors) < 50:
                self.errors.append(message)


def run_worker(name: str, body: Callable[[], None], ctx: WorkloadContext) -> threading.Thread:
    """Start `body` on a daemon thread; an exception ends that worker and is noted."""

    def guarded() -> None:
        try:
            body()
        except Exception as exc:
            ctx.note_error(f"worker {name} stopped: {exc!r}")

    thread = threading.Thread(target=guarded, name=f"verify-{name}", daemon=True)
    thread.start()
    return thread
