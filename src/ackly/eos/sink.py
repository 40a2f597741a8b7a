"""The idempotent consumer: apply each consumed record's effect exactly once in a SQL database.

Owns, for one consumer: the partitions it is assigned (as its client's rebalance callbacks
report them), split into positioned ones (the client fetches them from their stored
positions; their records are applied) and pending ones (not sought yet: their records are
never applied), and the Kafka offset commits waiting to be sent. The client adapters
(`confluent`, `kafka_python`, `aiokafka`) subclass `ExactlyOnce` and wire the client's
callbacks to it.

Invariants
- A record's effect and its partition's new position are written in one database
  transaction (`transaction`): both commit or neither does.
- Inside that transaction a record is applied only if its partition is assigned to this
  consumer now and its offset is at least the stored position, read under the position's
  lock. A record below it was applied before (by this process before a rewind, an earlier
  incarnation, or another consumer that owned the partition meanwhile), so it is skipped; this
  check, not the client's behaviour, is what excludes duplicates.
- At every assignment the client is sought to the stored positions; a partition without one
  starts at `auto_offset_reset` ("earliest" or "latest"), never at the group's committed
  offset (those are written, when `commit_to_kafka` is on, only so that lag can be watched).
- After a rolled-back transaction the client is sought back to the first offset the batch
  held for each partition it still owns: otherwise its next poll would continue after the
  lost records and the gap would be taken for a legitimate one (compaction, transaction
  markers), losing them.

The guarantee rests on the database's transactions and on Kafka offsets being stable: the
records at an offset never change (true for every Kafka log; a compacted or truncated log
may skip offsets, which is allowed, but never rewrites one).

Not thread-safe: one sink drives one consumer from one thread (or one asyncio task).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from ackly.eos.positions import Positions, TopicPartition

logger = logging.getLogger(__name__)

M = TypeVar("M")
C = TypeVar("C")

OffsetReset = Literal["earliest", "latest"]


@dataclass
class Transaction(Generic[M, C]):
    """What the body of `ExactlyOnce.transaction` works with.

    `cursor` writes inside the transaction that will also store the positions; `records` are
    the records to apply, in the order given, of partitions still assigned and not applied
    before. `skipped` counts the records of the batch left out. At commit each partition's
    position moves past its last record in `records`, whatever the body wrote for it.
    """

    cursor: C
    records: list[M]
    skipped: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # to store at commit


class ExactlyOnce(Generic[M, C]):
    """Client-independent part of the sink; M is the client's record type, C the cursor's."""

    def __init__(self, positions: Positions[C], *, group: str,
                 auto_offset_reset: OffsetReset = "earliest", commit_to_kafka: bool = False) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', not {auto_offset_reset!r}")
        if not group:
            raise ValueError("group names the positions in the database and may not be empty")
        self.positions = positions
        self.group = group
        self.auto_offset_reset: OffsetReset = auto_offset_reset
        self.commit_to_kafka = commit_to_kafka
        self._assigned: set[TopicPartition] = set()  # positioned: their records are applied
        self._unpositioned: set[TopicPartition] = set()  # assigned, start not handed over yet
        self._to_commit: dict[TopicPartition, int] = {}

    # --- what a client adapter provides -----------------------------------------------------

    def _coordinates(self, record: M) -> tuple[str, int, int]:
        """(topic, partition, offset) of a client record."""
        raise NotImplementedError

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the client's next fetch of `partition` start at `offset`."""
        raise NotImplementedError

    # --- called by the adapters from the client's rebalance callbacks -----------------------

    def _partitions_assigned(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Record an assignment (incremental: added to what is held) and return where each
        partition starts: its stored position, or None for `auto_offset_reset`.

        The partitions stay pending, their records not applied, until the adapter has
        positioned the client and called `_positioned`. If reading the positions fails here
        (the exception propagates), they stay pending and `_pending_starts` is retried at the
        next poll: some clients assign the partitions anyway (at the group's committed
        offsets) when a rebalance callback fails, and aiokafka only logs the failure.
        """
        self._unpositioned.update(partitions)
        stored = self.positions.read(self.group, partitions)
        starts = {tp: stored.get(tp) for tp in partitions}
        logger.info("assigned %s", {f"{t}-{p}": o for (t, p), o in sorted(starts.items())})
        return starts

    def _positioned(self, partitions: Iterable[TopicPartition]) -> None:
        """The client now fetches these partitions from their starts: apply their records."""
        for tp in partitions:
            if tp in self._unpositioned:  # not revoked meanwhile
                self._unpositioned.discard(tp)
                self._assigned.add(tp)

    def _pending_starts(self) -> dict[TopicPartition, int | None]:
        """Starts of the partitions still pending (see `_partitions_assigned`); {} if none."""
        if not self._unpositioned:
            return {}
        pending = sorted(self._unpositioned)
        stored = self.positions.read(self.group, pending)
        return {tp: stored.get(tp) for tp in pending}

    def _partitions_revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """From now on, records of these partitions are not applied."""
        for tp in partitions:
            self._assigned.discard(tp)
            self._unpositioned.discard(tp)
            self._to_commit.pop(tp, None)

    def _replace_assignment(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int | None]:
        """A manual assignment: exactly these partitions, each positioned again."""
        self._partitions_revoked(sorted(self._assigned | self._unpositioned))
        return self._partitions_assigned(partitions)

    def _take_commits(self) -> dict[TopicPartition, int]:
        """The positions to commit to Kafka for monitoring (emptied)."""
        commits, self._to_commit = self._to_commit, {}
        return commits

    # --- the user's API ---------------------------------------------------------------------

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions whose records this consumer applies now."""
        return frozenset(self._assigned)

    def stored_positions(self) -> Mapping[TopicPartition, int]:
        """The positions stored for the partitions assigned now."""
        return self.positions.read(self.group, self._assigned)

    @contextmanager
    def transaction(self, records: Iterable[M]) -> Iterator[Transaction[M, C]]:
        """Apply `records` (one record or a polled batch, in poll order) exactly once.

        Yields a `Transaction`: write the effect of each record in `tx.records` with
        `tx.cursor`. On normal exit the new positions are stored and the database transaction
        commits; if the block raises, everything is rolled back, the consumer is sought back
        so that the same records come again, and the exception propagates. That includes a
        deadlock or serialization failure between your writes and another consumer's: catch
        it and poll again.
        """
        batch = list(records)
        coordinates = [self._coordinates(record) for record in batch]
        first_offsets: dict[TopicPartition, int] = {}
        for topic, partition, offset in coordinates:
            first_offsets.setdefault((topic, partition), offset)
        try:
            with self.positions.transaction() as cursor:
                tx = self._select(cursor, batch, coordinates, first_offsets)
                yield tx
                for (topic, partition), next_offset in sorted(tx.next_offsets.items()):
                    self.positions.save(cursor, self.group, topic, partition, next_offset)
        except BaseException:
            self._rewind(first_offsets)
            raise
        if self.commit_to_kafka:
            self._to_commit.update((tp, o) for tp, o in tx.next_offsets.items() if tp in self._assigned)

    def _select(self, cursor: C, batch: list[M], coordinates: list[tuple[str, int, int]],
                first_offsets: Mapping[TopicPartition, int]) -> Transaction[M, C]:
        # Lock positions in a fixed order, so that two consumers holding overlapping
        # partitions (a zombie and its successor) cannot deadlock each other.
        stored: dict[TopicPartition, int | None] = {}
        for tp in sorted(first_offsets):
            if tp in self._assigned:
                stored[tp] = self.positions.lock(cursor, self.group, *tp)
        applied: list[M] = []
        advanced: dict[TopicPartition, int] = {}
        for record, (topic, partition, offset) in zip(batch, coordinates, strict=True):
            tp = (topic, partition)
            if tp not in stored:
                continue  # revoked (or never assigned): its new owner applies it
            next_offset = advanced.get(tp, stored[tp])
            if next_offset is not None and offset < next_offset:
                continue  # applied before, or repeated in this batch
            applied.append(record)
            advanced[tp] = offset + 1
        return Transaction(cursor=cursor, records=applied, skipped=len(batch) - len(applied),
                           next_offsets=advanced)

    def _rewind(self, first_offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in sorted(first_offsets.items()):
            if tp in self._assigned:
                self._seek(tp, offset)
