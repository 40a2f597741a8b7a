"""A transaction coordinator on in-memory `__transaction_state` logs, with a virtual clock.

The marker side is played by the test: `decisions` collects what the coordinator decided
(delivered once the Prepare record is committed), and `finish_markers` reports every marker
written, as broker/txn_marker_channel.py does, so the Complete record follows.
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.unit.coordinator.helpers import T0, Box, MemoryLog, Scheduler

from ackly.coordinator.transaction_coordinator import TransactionCoordinator
from ackly.coordinator.transaction_metadata import TransactionMetadata
from ackly.coordinator.transaction_state import Decision, InitResult, TransactionShard, TxnConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.types import TopicPartition


class FailingLog(MemoryLog):
    """A MemoryLog whose next appends can be made to fail (a full disk by default; set `code`
    to NOT_ENOUGH_REPLICAS for a partition below min.insync.replicas)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.failures = 0
        self.code = ErrorCode.kafka_storage_error
        self.refused = False  # whether an append was refused (reset by the test)

    def append(self, batch: bytes, now_ms: int) -> None:
        if self.failures:
            self.failures -= 1
            self.refused = True
            raise KafkaError(self.code, "injected")
        super().append(batch, now_ms)


CONFIG = TxnConfig(max_timeout_ms=900_000, id_expiration_ms=3_600_000, abort_check_interval_ms=1_000,
                   remove_expired_interval_ms=60_000)


class TxnHarness:
    def __init__(self, *, partitions: int = 3, config: TxnConfig = CONFIG, logs: list[MemoryLog] | None = None,
                 now_ms: int = T0, first_producer_id: int = 1000) -> None:
        self.now_ms = now_ms
        self.config = config
        self.scheduler = Scheduler()
        self.logs = logs if logs is not None else [FailingLog(i) for i in range(partitions)]
        self._ids = itertools.count(first_producer_id)
        self.coordinator = TransactionCoordinator(
            config=config, scheduler=self.scheduler, write_timeout_ms=5_000,
            new_producer_id=lambda: next(self._ids))
        self.coordinator.set_partition_count(len(self.logs))
        for i, log in enumerate(self.logs):
            self.coordinator.load_shard(i, log, 0, self.now_ms)
        self.decisions: list[Decision] = []
        self.settle()

    # --- plumbing ----------------------------------------------------------------------------

    def settle(self) -> None:
        """Let committed replies out, hand failed decisions over again, collect decisions."""
        for _ in range(10):
            self.scheduler.check(self.now_ms)
            for index in self.coordinator.take_retries():
                self.coordinator.resend_decisions(index, self.now_ms)
            new = self.coordinator.take_decisions()
            if not new:
                break
            self.decisions.extend(new)

    def commit_logs(self) -> None:
        for log in self.logs:
            log.commit()
        self.settle()

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self.coordinator.tick(self.now_ms)
        self.scheduler.expire(self.now_ms)
        self.settle()

    def finish_markers(self) -> list[Decision]:
        """Every decided transaction's markers are written: Complete records follow (one
        whose write fails is the test's to retry, with `complete`)."""
        done, self.decisions = self.decisions, []
        for d in done:
            self.complete(d)
        self.settle()
        return done

    def complete(self, decision: Decision) -> Box:
        """Write `decision`'s Complete record; the Box hears its outcome."""
        box = Box()
        self.coordinator.complete(decision, self.now_ms, box)
        self.settle()
        return box

    def shard_of(self, txn: str) -> TransactionShard:
        return self.coordinator.runtime.shard(self.coordinator.partition_for(txn))

    def meta(self, txn: str) -> TransactionMetadata:
        return self.shard_of(txn).txns[txn]

    # --- requests ------------------------------------------------------------------------------

    def init(self, txn: str, timeout_ms: int = 60_000, expected: tuple[int, int] | None = None) -> Any:
        box = Box()
        self.coordinator.init_producer_id(txn, timeout_ms, expected, box, self.now_ms)
        self.settle()
        return box.value

    def add(self, txn: str, pid: int, epoch: int, *parts: TopicPartition) -> Any:
        box = Box()
        self.coordinator.add_partitions(txn, pid, epoch, parts, box, self.now_ms)
        self.settle()
        return box.value

    def end(self, txn: str, pid: int, epoch: int, commit: bool) -> Any:
        box = Box()
        self.coordinator.end_transaction(txn, pid, epoch, commit, box, self.now_ms)
        self.settle()
        return box.value

    def begin(self, txn: str, *parts: TopicPartition) -> InitResult:
        """InitProducerId, then the partitions added (an Ongoing transaction)."""
        r = self.init(txn)
        assert r.error == ErrorCode.none, r
        assert self.add(txn, r.producer_id, r.producer_epoch, *parts) == ErrorCode.none
        return r
