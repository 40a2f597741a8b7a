"""Names for the numbers Kafka passes around, so signatures say which number they mean."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, NewType

Offset = NewType("Offset", int)
LeaderEpoch = NewType("LeaderEpoch", int)
ProducerId = NewType("ProducerId", int)
ProducerEpoch = NewType("ProducerEpoch", int)
BrokerId = NewType("BrokerId", int)

NO_PRODUCER_ID = ProducerId(-1)
NO_PRODUCER_EPOCH = ProducerEpoch(-1)
NO_LEADER_EPOCH = LeaderEpoch(-1)
NO_TIMESTAMP = -1

# Two clocks (docs/architecture.md, "Time"). `now_ms` everywhere in the core is monotonic: every
# deadline, timeout, backoff and expiry runs on it, so a wall-clock step (NTP) expires nothing.
# Wall-clock time is used only where Kafka stores or shows it (record timestamps and
# LogAppendTime, retention and compaction lags by timestamp, the KIP-937 timestamp bounds, the
# times in __consumer_offsets / __transaction_state records and Describe* answers), and is
# read as `wall_clock(now_ms)`: the wall time at that monotonic instant.
WallClock = Callable[[int], int]


def same_clock(now_ms: int) -> int:
    """The WallClock of a virtual clock that serves as both (unit tests, a simulator run
    without wall steps)."""
    return now_ms


class TopicPartition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"
