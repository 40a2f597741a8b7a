"""Named fault points: deliberate bugs that tests and the simulator switch on by name.

In the spirit of FoundationDB's BUGGIFY and Redpanda's failure probes: each
point is a place in the core that can misbehave on purpose, so that a test can prove the
checkers catch the bug it would cause. A point costs one set lookup and does nothing unless
enabled; it can be enabled only through this object (`node.faults.enable(name)`), which only
testing/ and sim/ call. No broker config, command-line flag or request reaches it.

Points:
- "ack-before-replication": an acks=all produce is answered once the leader has appended (and
  flushed, per flush.policy), without waiting for HW: breaks rules 7 and 13.
- "serve-above-hw": consumer fetches read up to LEO instead of HW (or LSO): breaks rule 3, and
  lets a consumer see records a failover takes back.
- "forget-producer-state": a replica that becomes leader (or opens its log) starts with no
  idempotent-producer state: a retry after failover is written twice, breaking rules 16-17.
"""

from __future__ import annotations

ACK_BEFORE_REPLICATION = "ack-before-replication"
SERVE_ABOVE_HW = "serve-above-hw"
FORGET_PRODUCER_STATE = "forget-producer-state"

KNOWN_FAULTS = frozenset({ACK_BEFORE_REPLICATION, SERVE_ABOVE_HW, FORGET_PRODUCER_STATE})


class FaultPoints:
    def __init__(self) -> None:
        self._enabled: frozenset[str] = frozenset()

    def enabled(self, name: str) -> bool:
        return name in self._enabled

    def enable(self, name: str) -> None:
        assert name in KNOWN_FAULTS, f"unknown fault point {name!r}; known: {sorted(KNOWN_FAULTS)}"
        self._enabled = self._enabled | {name}

    def disable(self, name: str) -> None:
        self._enabled = self._enabled - {name}

    def active(self) -> frozenset[str]:
        return self._enabled
