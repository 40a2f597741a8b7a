"""Per-topic traffic rates for the console's topic pages, from the node's counters.

The node counts produced bytes and records and consumed bytes per topic as plain totals
(broker/stats.py: Kafka's BytesInPerSec, MessagesInPerSec and BytesOutPerSec before the
rate). A sample of those totals is taken every SAMPLE_INTERVAL_S on the event loop (a copy
of a few integers per topic); a rate is the difference between the newest sample and the
oldest one kept (at most WINDOW_S old), divided by the time between them. Totals that went
down (a topic deleted and created again) give no rate until the window has passed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

SAMPLE_INTERVAL_S = 5.0
WINDOW_S = 60.0

Totals = Mapping[str, tuple[int, int, int]]  # topic -> (bytes in, records in, bytes out)


@dataclass(frozen=True)
class Rate:
    bytes_in_per_s: float
    records_in_per_s: float
    bytes_out_per_s: float
    window_s: float


class TrafficRates:
    def __init__(self) -> None:
        self._samples: deque[tuple[float, dict[str, tuple[int, int, int]]]] = deque()

    def sample(self, now_s: float, totals: Totals) -> None:
        self._samples.append((now_s, dict(totals)))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()

    def rates(self) -> dict[str, Rate]:
        if len(self._samples) < 2:
            return {}
        (t0, old), (t1, new) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return {}
        out = {}
        for topic, now in new.items():
            before = old.get(topic, (0, 0, 0))
            deltas = [a - b for a, b in zip(now, before, strict=True)]
            if any(d < 0 for d in deltas):
                continue
            out[topic] = Rate(deltas[0] / span, deltas[1] / span, deltas[2] / span, span)
        return out
