"""A PartitionLog on SimDisk against a model (a list of batches), through appends, rolls, reads,
flushes, truncations, DeleteRecords, retention, crashes and clean reopens.

After every step every readable batch equals the model byte for byte. After a crash every
batch below the recovery point of the moment survives, and the log is a prefix of the model.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ackly.config import TopicConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import SimDisk
from ackly.log.partition_log import FlushJob, PartitionLog
from ackly.protocol.records import iter_batches

from .helpers import DIR, append, batch, config, read_all


@dataclass(frozen=True)
class StoredBatch:
    base_offset: int
    last_offset: int
    data: bytes


BATCH_SHAPES = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 60)), min_size=1, max_size=3)


class PartitionLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.model: list[StoredBatch] = []
        self.leo = 0
        self.hw = 0
        self.log_start = 0
        # The log start as of the last flush job that ran: a move of it (DeleteRecords,
        # retention) is durable only with the next job.
        self.durable_log_start = 0
        self.now_ms = 1_000

    @initialize(
        rng=st.randoms(use_true_random=False),
        segment_bytes=st.sampled_from([200, 450, 2_000]),
        index_interval_bytes=st.sampled_from([0, 100, 4096]),
    )
    def setup(self, rng: random.Random, segment_bytes: int, index_interval_bytes: int) -> None:
        self.config: TopicConfig = config(
            segment_bytes=segment_bytes,
            index_interval_bytes=index_interval_bytes,
            file_delete_delay_ms=0,
            retention_ms=-1,
        )
        self.disk = SimDisk(rng)
        self.log = PartitionLog.open(self.disk, DIR, self.config, self.now_ms)
        self.ready = True

    # ------------------------------------------------------------------ model helpers

    def _append(self, shapes: list[tuple[int, int]]) -> None:
        batches = [batch(count, timestamp_ms=self.now_ms, value_bytes=v) for count, v in shapes]
        result, data = append(self.log, *batches, now_ms=self.now_ms)
        assert result.first_offset == self.leo
        for position, header in iter_batches(data):
            raw = bytes(data[position : position + header.size])
            self.model.append(StoredBatch(header.base_offset, header.last_offset, raw))
        self.leo = result.last_offset + 1

    def _expected(self, fetch: int, max_bytes: int, upper: int, min_one: bool) -> bytes:
        out = b""
        for stored in self.model:
            if stored.last_offset < fetch:
                continue
            if stored.last_offset >= upper:
                break
            if len(out) + len(stored.data) > max_bytes and not (min_one and not out):
                break
            out += stored.data
        return out

    def _cut_model(self, leo: int) -> None:
        self.model = [b for b in self.model if b.last_offset < leo]
        self.leo = leo

    # ------------------------------------------------------------------ rules

    @rule(requests=st.lists(BATCH_SHAPES, min_size=1, max_size=4), elapsed_ms=st.integers(0, 50))
    def append(self, requests: list[list[tuple[int, int]]], elapsed_ms: int) -> None:
        for shapes in requests:  # several produce requests per step, so logs grow and roll
            self.now_ms += elapsed_ms
            self._append(shapes)

    @rule()
    def roll(self) -> None:
        self.log.roll(self.now_ms)

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        fetch = data.draw(st.integers(self.log_start, self.leo), label="fetch")
        upper = data.draw(st.integers(self.log_start, self.leo + 1), label="upper")
        max_bytes = data.draw(st.integers(0, 1_500), label="max_bytes")
        min_one = data.draw(st.booleans(), label="min_one")
        result = self.log.read(fetch, max_bytes, upper, min_one_batch=min_one)
        got = b"".join(self.log.read_bytes(r) for r in result.ranges)
        assert got == self._expected(fetch, max_bytes, upper, min_one)
        assert result.size == len(got)

    @rule(below=st.booleans())
    def read_out_of_range(self, below: bool) -> None:
        if below and self.log_start == 0:
            return
        fetch = self.log_start - 1 if below else self.leo + 1
        with pytest.raises(KafkaError) as caught:
            self.log.read(fetch, 1_000, self.leo)
        assert caught.value.code == ErrorCode.offset_out_of_range

    @rule(data=st.data())
    def set_high_watermark(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.leo + 2), label="hw")
        self.log.set_high_watermark(offset)
        self.hw = max(self.hw, min(max(offset, self.log_start), self.leo))

    def _run(self, job: FlushJob | None, log_start: int) -> None:
        if job is not None:
            job.run()
            self.durable_log_start = log_start

    @rule()
    def flush(self) -> None:
        log_start = self.log.log_start_offset
        self.log.flush_now()
        self.durable_log_start = log_start
        assert self.log.recovery_point == self.leo
        assert self.log.changes_durable

    @rule(shapes=BATCH_SHAPES)
    def flush_racing_an_append(self, shapes: list[tuple[int, int]]) -> None:
        log_start = self.log.log_start_offset
        job = self.log.begin_flush()
        self._append(shapes)  # lands while the job runs in its worker thread
        self._run(job, log_start)
        if job is not None:
            self.log.complete_flush(job)
            assert self.log.recovery_point == job.upto_offset

    @rule()
    def flush_not_yet_completed(self) -> None:
        log_start = self.log.log_start_offset
        # Durable, but the log has not been told: a crash may come first.
        self._run(self.log.begin_flush(), log_start)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.log_start, self.leo), label="truncate_to")
        self.log.truncate_to(offset)
        if offset < self.leo:
            holder = next(b for b in self.model if b.last_offset >= offset)
            self._cut_model(holder.base_offset)
        self.hw = min(self.hw, self.leo)
        self.log_start = min(self.log_start, self.leo)
        # A follower appends nothing after a cut before its flush job made it durable (the
        # broker's rule, PartitionLog "Changes without an fsync"): the job runs here.
        self.flush()
        assert self.log.cut_durable

    @rule(data=st.data())
    def delete_records(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.hw), label="delete_before")
        assert self.log.delete_records_before(offset) == max(self.log_start, offset)
        self.log_start = max(self.log_start, offset)

    @rule(retention_bytes=st.integers(0, 1_500))
    def retention_by_size(self, retention_bytes: int) -> None:
        self.log.update_config(config_with(self.config, retention_bytes=retention_bytes))
        self.log.enforce_retention(self.now_ms)
        self.log.update_config(self.config)
        new_start = self.log.log_start_offset
        assert self.log_start <= new_start <= self.hw
        self.log_start = new_start

    @rule(elapsed_ms=st.integers(0, 100))
    def tick(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        self.log.tick(self.now_ms)

    @rule()
    def crash(self) -> None:
        recovery_point = self.log.recovery_point
        self.disk.crash()
        self.log = PartitionLog.open(self.disk, DIR, self.config, self.now_ms)
        leo = self.log.log_end_offset
        assert leo >= recovery_point, "a flushed batch was lost"
        assert leo <= self.leo, "recovery invented data"
        # Durable with the flush job after it moved; a crash before may keep the old one,
        # or the first remaining segment's base (the renames reached the disk first).
        assert self.durable_log_start <= self.log.log_start_offset <= self.log_start
        self.log_start = self.log.log_start_offset
        self.durable_log_start = self.log_start
        if leo > self.log_start:
            assert any(b.last_offset == leo - 1 for b in self.model), "not a batch boundary"
        self._cut_model(leo)
        # The checkpointed recovery point (at most the flushed one); what recovery accepted
        # above it waits for the next flush, as an append does. It never lies below the log
        # start offset: DeleteRecords may move the start past an unflushed recovery point, and
        # what lies below the start is not served, so there is nothing there to recover.
        floor = max(min(recovery_point, leo), self.log_start)
        assert self.log.recovery_point <= floor or self.log.recovery_point == leo
        assert self.log.high_watermark <= min(self.hw, leo)
        self.hw = self.log.high_watermark

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.durable_log_start = self.log_start
        self.log = PartitionLog.open(self.disk, DIR, self.config, self.now_ms)
        assert self.log.log_end_offset == self.leo
        assert self.log.high_watermark == self.hw
        assert self.log.recovery_point == self.leo

    @rule(timestamp_ms=st.integers(900, 3_000))
    def offset_for_timestamp(self, timestamp_ms: int) -> None:
        found = self.log.offset_for_timestamp(timestamp_ms)
        # Every record of a batch shares its timestamp here (batch() stamps now_ms).
        candidates = [
            b for b in self.model if b.last_offset >= self.log_start and _ts(b) >= timestamp_ms
        ]
        if not candidates:
            assert found is None
        else:
            first = candidates[0]
            assert found == (max(first.base_offset, self.log_start), _ts(first))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def matches_model(self) -> None:
        if not self.ready:
            return
        log = self.log
        assert (log.log_start_offset, log.high_watermark, log.log_end_offset) == (
            self.log_start,
            self.hw,
            self.leo,
        )
        assert log.log_start_offset <= log.high_watermark <= log.log_end_offset
        assert log.recovery_point <= log.log_end_offset
        segments = log.segments
        for before, after in itertools.pairwise(segments):
            assert before.next_offset == after.base_offset
        assert read_all(log) == self._expected(self.log_start, 1 << 40, self.leo, True)


def _ts(stored: StoredBatch) -> int:
    return int.from_bytes(stored.data[35:43], "big", signed=True)  # maxTimestamp


def config_with(base: TopicConfig, **overrides: object) -> TopicConfig:
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


PartitionLogMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPartitionLogMachine = PartitionLogMachine.TestCase
