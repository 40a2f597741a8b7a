"""The idempotent consumer on kafka-python.

Wires a `kafka.KafkaConsumer` to `ExactlyOnce` through a ConsumerRebalanceListener: after
each assignment it seeks every assigned partition to its stored position (or to the beginning
or end per `auto_offset_reset`), so the group's committed offsets are never used.

kafka-python 3 runs the listener on its IO thread, while the caller's thread waits inside
`poll` (the join completes within the poll that drives it), so the listener and a transaction
never overlap; but the listener does read positions from another thread than the one that
made the database connection. `SqlitePositions` opens its own connection with
`check_same_thread=False` for this; a connection handed to it must be made the same way. An
exception in the listener fails that `poll` (kafka-python raises KafkaError from it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ackly.eos.positions import Positions, TopicPartition
from ackly.eos.sink import ExactlyOnce, OffsetReset

if TYPE_CHECKING:
    from kafka import KafkaConsumer

logger = logging.getLogger(__name__)

C = TypeVar("C")


class KafkaPythonExactlyOnce(ExactlyOnce[Any, C]):
    """Exactly-once into `positions`' database from a kafka-python consumer (create it with
    `enable_auto_commit=False`)."""

    def __init__(self, consumer: KafkaConsumer, positions: Positions[C], *, group: str,
                 auto_offset_reset: OffsetReset = "earliest", commit_to_kafka: bool = False) -> None:
        super().__init__(positions, group=group, auto_offset_reset=auto_offset_reset,
                         commit_to_kafka=commit_to_kafka)
        self.consumer = consumer

    def subscribe(self, topics: Iterable[str]) -> None:
        """Join the consumer's group for `topics`; assignments start at the stored positions."""
        from kafka import ConsumerRebalanceListener

        sink = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                sink._partitions_revoked([(tp.topic, tp.partition) for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                sink._start(sink._partitions_assigned([(tp.topic, tp.partition) for tp in assigned]))

        self.consumer.subscribe(topics=list(topics), listener=Listener())

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions (no group), from the stored positions."""
        from kafka import TopicPartition as KafkaTopicPartition

        wanted = list(partitions)
        self.consumer.assign([KafkaTopicPartition(t, p) for t, p in wanted])
        self._start(self._replace_assignment(wanted))

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Any]:
        """Up to `max_records` records (kafka ConsumerRecord); rebalances happen here."""
        self._commit_pending()
        self._start(self._pending_starts())
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [record for records in batches.values() for record in records]

    def close(self) -> None:
        self._commit_pending()
        self.consumer.close(autocommit=False)

    # --- adapter hooks --------------------------------------------------------------------

    def _coordinates(self, record: Any) -> tuple[str, int, int]:
        return record.topic, record.partition, record.offset

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        from kafka import TopicPartition as KafkaTopicPartition

        self.consumer.seek(KafkaTopicPartition(*partition), offset)

    def _start(self, starts: dict[TopicPartition, int | None]) -> None:
        """Seek each partition to its start, then let its records be applied."""
        from kafka import TopicPartition as KafkaTopicPartition

        for (topic, partition), offset in sorted(starts.items()):
            tp = KafkaTopicPartition(topic, partition)
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif self.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
        self._positioned(starts)

    def _commit_pending(self) -> None:
        from kafka import TopicPartition as KafkaTopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        commits = self._take_commits()
        if not commits:
            return
        offsets = {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in commits.items()}
        try:
            self.consumer.commit_async(offsets=offsets)
        except KafkaError as error:  # monitoring only: the positions are in the database
            logger.debug("offset commit for monitoring failed: %s", error)
