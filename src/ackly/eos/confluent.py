"""The idempotent consumer on confluent-kafka (librdkafka).

Wires a `confluent_kafka.Consumer` to `ExactlyOnce`: `subscribe` installs on_assign /
on_revoke / on_lost callbacks, and on_assign hands librdkafka the start offsets itself (the
stored positions, else OFFSET_BEGINNING or OFFSET_END per `auto_offset_reset`), so the group's
committed offsets are never used. librdkafka runs these callbacks inside `poll`/`consume`,
on the caller's thread, so no rebalance can happen while a transaction's body runs.

Both rebalance protocols work: an eager assignor's on_assign must call `assign`, a
cooperative one's `incremental_assign` (KIP-429); librdkafka answers the wrong one with
_STATE, and the sink then uses the other one from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ackly.eos.positions import Positions, TopicPartition
from ackly.eos.sink import ExactlyOnce, OffsetReset

if TYPE_CHECKING:
    from confluent_kafka import Consumer

logger = logging.getLogger(__name__)

C = TypeVar("C")


class ConfluentExactlyOnce(ExactlyOnce[Any, C]):
    """Exactly-once into `positions`' database from a confluent-kafka consumer.

    The consumer should have `enable.auto.commit=false` (nothing relies on its commits, but
    automatic ones would only be noise in the group's lag).
    """

    def __init__(self, consumer: Consumer, positions: Positions[C], *, group: str,
                 auto_offset_reset: OffsetReset = "earliest", commit_to_kafka: bool = False) -> None:
        super().__init__(positions, group=group, auto_offset_reset=auto_offset_reset,
                         commit_to_kafka=commit_to_kafka)
        self.consumer = consumer
        self._incremental: bool | None = None  # learnt at the first group assignment

    def subscribe(self, topics: Iterable[str]) -> None:
        """Join the consumer's group for `topics`; assignments start at the stored positions."""
        self.consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions (no group), from the stored positions."""
        wanted = list(partitions)
        self.consumer.assign(self._start_list(self._replace_assignment(wanted)))
        self._positioned(wanted)

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Any]:
        """Up to `max_records` records (confluent_kafka.Message); rebalance callbacks run here.

        Partition EOF events are dropped; any other error is raised as KafkaException.
        """
        from confluent_kafka import KafkaError, KafkaException

        self._commit_pending()
        self._position_pending()
        records = []
        for message in self.consumer.consume(num_messages=max_records, timeout=timeout_s):
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        return records

    def close(self) -> None:
        """Commit the last positions for monitoring (waiting for the answer), then close the
        consumer (a dynamic member leaves its group)."""
        self._commit_pending(asynchronous=False)
        self.consumer.close()

    # --- adapter hooks --------------------------------------------------------------------

    def _coordinates(self, record: Any) -> tuple[str, int, int]:
        return record.topic(), record.partition(), record.offset()

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        from confluent_kafka import TopicPartition as ConfluentTopicPartition

        self.consumer.seek(ConfluentTopicPartition(partition[0], partition[1], offset))

    def _start_list(self, starts: dict[TopicPartition, int | None]) -> list[Any]:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END
        from confluent_kafka import TopicPartition as ConfluentTopicPartition

        reset = OFFSET_BEGINNING if self.auto_offset_reset == "earliest" else OFFSET_END
        return [ConfluentTopicPartition(t, p, reset if o is None else o) for (t, p), o in sorted(starts.items())]

    def _position_pending(self) -> None:
        starts = self._pending_starts()
        for tp in self._start_list(starts):
            self.consumer.seek(tp)
        self._positioned(starts)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        # If reading the positions raises, confluent-kafka makes the assign call itself (at
        # the group's committed offsets) and raises the error from poll; the partitions stay
        # pending, their records not applied, until a poll has sought them. (Assigning here
        # and then raising leaves the consumer unable to close.)
        starts = self._partitions_assigned(keys)
        self._hand_over(self._start_list(starts))
        self._positioned(keys)

    def _hand_over(self, tps: list[Any]) -> None:
        from confluent_kafka import KafkaError, KafkaException

        if self._incremental is not None:
            (self.consumer.incremental_assign if self._incremental else self.consumer.assign)(tps)
            return
        try:
            self.consumer.assign(tps)
            self._incremental = False
        except KafkaException as error:
            if error.args[0].code() != KafkaError._STATE:
                raise
            self.consumer.incremental_assign(tps)
            self._incremental = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self._partitions_revoked(revoked)
        logger.info("revoked %s", [f"{t}-{p}" for t, p in revoked])

    def _commit_pending(self, *, asynchronous: bool = True) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as ConfluentTopicPartition

        commits = self._take_commits()
        if not commits:
            return
        offsets = [ConfluentTopicPartition(t, p, o) for (t, p), o in sorted(commits.items())]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:  # monitoring only: the positions are in the database
            logger.debug("offset commit for monitoring failed: %s", error)
