"""One partition replica as its leader sees it: the log, the leader epoch, the ISR and HW.

Owns: when HW moves. HW is the smallest LEO over the ISR (Kafka's Partition.
maybeIncrementLeaderHW); on a single broker the ISR is {self}, so HW follows this replica's
own LEO. With `flush.policy=always` HW is further bounded by the recovery point (the flushed
offset): a consumer never reads a record that a crash could still take away, and an acks=all
producer is answered only for flushed data. With `interval` or `never`, as in Kafka, records
become visible before they are durable.

Invariants: log_start_offset <= HW <= LEO; HW never goes backwards within one leader epoch;
nothing is appended while ISR < min.insync.replicas for acks=all (rule 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.partition_log import AppendResult, PartitionLog
from ackly.protocol.records import BatchHeader
from ackly.types import TopicPartition


@dataclass
class Partition:
    tp: TopicPartition
    log: PartitionLog
    config: TopicConfig
    broker_id: int
    leader_epoch: int = 0

    def __post_init__(self) -> None:
        self.isr: frozenset[int] = frozenset({self.broker_id})
        self._advance_hw()

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def last_stable_offset(self) -> int:
        # No transactions yet: the LSO is the HW (GUARANTEES.md "Words").
        return self.log.high_watermark

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def flush_always(self) -> bool:
        return self.config.flush_policy == "always"

    def append_as_leader(
        self, records: bytearray, headers: list[BatchHeader], acks: int, now_ms: int
    ) -> AppendResult:
        """Append validated batches. Visible below HW only; durable after the covering flush."""
        if acks == -1 and len(self.isr) < self.config.min_insync_replicas:
            raise KafkaError(
                ErrorCode.not_enough_replicas,
                f"ISR size {len(self.isr)} < min.insync.replicas {self.config.min_insync_replicas}",
            )
        result = self.log.append(records, headers, self.leader_epoch, now_ms)
        self._advance_hw()
        return result

    def on_flushed(self) -> bool:
        """The recovery point moved; returns True if HW moved with it."""
        return self._advance_hw()

    def _advance_hw(self) -> bool:
        target = self.log.log_end_offset
        if self.flush_always:
            target = min(target, self.log.recovery_point)
        if target > self.log.high_watermark:
            self.log.set_high_watermark(target)
            return True
        return False

    def is_durable(self, last_offset: int) -> bool:
        """Whether the record at last_offset is flushed (always counts only under `always`)."""
        return not self.flush_always or self.log.recovery_point > last_offset

    def update_config(self, config: TopicConfig) -> None:
        self.config = config
        self.log.update_config(config)
        self._advance_hw()
