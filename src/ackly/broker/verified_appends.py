"""The order in which one producer's transactional produce requests reach the log while some
wait for their KIP-890 verification.

Owns: per producer id, the produce requests of that producer that have been read but not yet
appended because one of them (or one before them) waits for its transaction coordinator to
confirm its partitions (broker/transactions.py `verify_partitions`), in arrival order, each
with the coordinator's answer once it came.

Why: a connection's requests are handled as they arrive (server/connection.py pipelines them),
and a verification is answered at once when the coordinator is on this broker, or later by a
peer. With linger.ms=0 a transactional producer sends one request per record, so a partition
often sees R1 (sequence n) and R2 (n+1) both waiting to start the producer's transaction there.
Were R2's answer to come first (the coordinator moved to this broker between the two, or its
peer answered on a newer connection), R2 would be appended before R1 and refused
OUT_OF_ORDER_SEQUENCE_NUMBER, then R1 taken: the client, which reads the answers in request
order, sees its head-of-line request refused for a gap and fails for good ("sequence
desynchronization"). Kafka cannot do this: it reads one request of a connection at a time (the
channel is muted until the answer is sent), so R2 is not even looked at before R1 is appended.

Invariants: a producer's requests are appended in the order they were read, whatever order
their verifications are answered in; a request that needs no verification waits only while an
earlier one of its producer does; a queue is dropped once empty. Every verification is answered
(locally at once, or by the peer's answer, failure or deadline), so nothing waits for ever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ackly.errors import ErrorCode
from ackly.types import TopicPartition

Codes = dict[TopicPartition, ErrorCode]
Append = Callable[[Codes], None]


@dataclass(slots=True)
class Waiting:
    """One read produce request: what appends it, and the coordinator's codes once known."""

    append: Append
    codes: Codes | None = None


class VerifiedAppends:
    def __init__(self) -> None:
        self._waiting: dict[int, deque[Waiting]] = {}

    def waiting(self, producer_id: int) -> int:
        """How many requests of this producer are read and not yet appended."""
        queue = self._waiting.get(producer_id)
        return len(queue) if queue else 0

    def enqueue(self, producer_id: int, append: Append) -> Waiting:
        """A request whose verification is being asked for: it appends, with the codes given
        to `answered`, once every earlier request of the producer has."""
        waiting = Waiting(append)
        self._waiting.setdefault(producer_id, deque()).append(waiting)
        return waiting

    def answered(self, producer_id: int, waiting: Waiting, codes: Codes) -> None:
        waiting.codes = codes
        self._release(producer_id)

    def after_earlier(self, producer_id: int, append: Append) -> None:
        """A request that needs no verification: appended now, or behind the producer's
        requests still waiting."""
        if not self.waiting(producer_id):
            append({})
            return
        self._waiting[producer_id].append(Waiting(append, {}))

    def _release(self, producer_id: int) -> None:
        queue = self._waiting.get(producer_id)
        while queue and queue[0].codes is not None:
            head = queue.popleft()
            if not queue:
                del self._waiting[producer_id]
            assert head.codes is not None
            head.append(head.codes)
