"""The idempotent consumer on aiokafka.

Wires an `aiokafka.AIOKafkaConsumer` to `ExactlyOnce` through a ConsumerRebalanceListener,
which aiokafka awaits before the new assignment is used: it seeks every assigned partition to
its stored position (or to the beginning or end per `auto_offset_reset`).

aiokafka rebalances in a background task, so a partition can be revoked between `poll` and
`transaction`: the transaction then leaves that partition's records out. The transaction
itself is synchronous (its database calls block the event loop for their duration), so no
rebalance callback runs while its body runs. The listener's position reads block the loop
too, once per assignment. aiokafka only logs an exception from the listener; the partitions
it could not position then stay pending (their records are not applied) and the next `poll`
positions them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ackly.eos.positions import Positions, TopicPartition
from ackly.eos.sink import ExactlyOnce, OffsetReset

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

logger = logging.getLogger(__name__)

C = TypeVar("C")


class AiokafkaExactlyOnce(ExactlyOnce[Any, C]):
    """Exactly-once into `positions`' database from an aiokafka consumer (create it with
    `enable_auto_commit=False`; start it before `poll`)."""

    def __init__(self, consumer: AIOKafkaConsumer, positions: Positions[C], *, group: str,
                 auto_offset_reset: OffsetReset = "earliest", commit_to_kafka: bool = False) -> None:
        super().__init__(positions, group=group, auto_offset_reset=auto_offset_reset,
                         commit_to_kafka=commit_to_kafka)
        self.consumer = consumer

    def subscribe(self, topics: Iterable[str]) -> None:
        """Join the consumer's group for `topics`; assignments start at the stored positions."""
        from aiokafka.abc import ConsumerRebalanceListener

        sink = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                sink._partitions_revoked([(tp.topic, tp.partition) for tp in revoked])

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await sink._start(sink._partitions_assigned([(tp.topic, tp.partition) for tp in assigned]))

        self.consumer.subscribe(topics=list(topics), listener=Listener())

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions (no group), from the stored positions."""
        from aiokafka import TopicPartition as AioTopicPartition

        wanted = list(partitions)
        self.consumer.assign([AioTopicPartition(t, p) for t, p in wanted])
        await self._start(self._replace_assignment(wanted))

    async def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Any]:
        """Up to `max_records` records (aiokafka ConsumerRecord)."""
        await self._commit_pending()
        await self._start(self._pending_starts())
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [record for records in batches.values() for record in records]

    async def close(self) -> None:
        await self._commit_pending()
        await self.consumer.stop()

    # --- adapter hooks --------------------------------------------------------------------

    def _coordinates(self, record: Any) -> tuple[str, int, int]:
        return record.topic, record.partition, record.offset

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        from aiokafka import TopicPartition as AioTopicPartition

        self.consumer.seek(AioTopicPartition(*partition), offset)

    async def _start(self, starts: dict[TopicPartition, int | None]) -> None:
        """Seek each partition to its start, then let its records be applied."""
        from aiokafka import TopicPartition as AioTopicPartition

        resets = []
        for (topic, partition), offset in sorted(starts.items()):
            tp = AioTopicPartition(topic, partition)
            if offset is None:
                resets.append(tp)
            else:
                self.consumer.seek(tp, offset)
        if resets and self.auto_offset_reset == "earliest":
            await self.consumer.seek_to_beginning(*resets)
        elif resets:
            await self.consumer.seek_to_end(*resets)
        self._positioned(starts)

    async def _commit_pending(self) -> None:
        from aiokafka import TopicPartition as AioTopicPartition
        from aiokafka.errors import KafkaError

        commits = self._take_commits()
        if not commits:
            return
        try:
            await self.consumer.commit({AioTopicPartition(t, p): o for (t, p), o in commits.items()})
        except KafkaError as error:  # monitoring only: the positions are in the database
            logger.debug("offset commit for monitoring failed: %s", error)
