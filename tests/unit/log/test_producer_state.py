"""Idempotent producer state (KIP-98) in a PartitionLog on SimDisk, against a simple model.

The model is the list of batches the log holds; a producer's state is *derived* from it every
time (its last epoch in the log and the last 5 batches of that epoch), and the answer to a
produce request is worked out from that. The implementation keeps the same state
incrementally, in snapshots and by replay; after every step, including crashes, clean
reopens, rolls and truncations, it must equal the derivation, and the log must hold exactly
the model's bytes (a refused or duplicate request writes nothing). Independently of the model,
the log read back must never hold a gap or a repeat in any producer's sequences.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ackly.cluster.metadata import LeaderRecoveryState, PartitionState
from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import SimDisk
from ackly.log.partition_log import AppendResult, PartitionLog
from ackly.log.producer_state import (
    NUM_BATCHES_TO_RETAIN,
    SEQUENCE_LIMIT,
    AppendOrigin,
    BatchMetadata,
    CorruptSnapshotError,
    ProducerStateEntry,
    ProducerStateManager,
    decode_snapshot,
    encode_snapshot,
    next_sequence,
    snapshot_file_name,
)
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import iter_batches, validate_batches
from ackly.replication.partition import Partition
from ackly.types import TopicPartition

from .helpers import DIR, batch, config, read_all

PIDS = (7, 8, 9)
NOW_MS = 1_000


def pbatch(pid: int, epoch: int, seq: int, count: int = 1, timestamp_ms: int = NOW_MS) -> bytes:
    """One idempotent batch of `count` records, as a producer sends it."""
    records = [Record(key=None, value=b"v%d-%d" % (seq, i), timestamp_ms=timestamp_ms)
               for i in range(count)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def send(log: PartitionLog, *batches: bytes, now_ms: int = NOW_MS,
         origin: AppendOrigin = AppendOrigin.CLIENT) -> AppendResult:
    records = bytearray(b"".join(batches))
    return log.append(records, validate_batches(records, 1 << 30), 0, now_ms, origin)


def refused(log: PartitionLog, *batches: bytes, now_ms: int = NOW_MS) -> ErrorCode:
    before, leo = read_all(log), log.log_end_offset
    with pytest.raises(KafkaError) as caught:
        send(log, *batches, now_ms=now_ms)
    assert (read_all(log), log.log_end_offset) == (before, leo), "a refusal wrote something"
    return caught.value.code


def open_log(disk: SimDisk, now_ms: int = NOW_MS, **overrides: object) -> PartitionLog:
    return PartitionLog.open(disk, DIR, config(**overrides), now_ms)


def state_of(log: PartitionLog) -> dict[int, tuple[int, tuple[tuple[int, int, int, int], ...]]]:
    """producer id -> (epoch, batches as (first_seq, last_seq, first_offset, last_offset))."""
    return {
        e.producer_id: (e.epoch, tuple((b.first_seq, b.last_seq, b.first_offset, b.last_offset)
                                       for b in e.batches))
        for e in log.producer_state.active_producers()
    }


def assert_gapless(log: PartitionLog) -> None:
    """Rules 15/17 on the log itself: per producer, epochs never go back, a new epoch starts
    at sequence 0, and within an epoch each batch's first sequence follows the last one's. A
    producer's first batch in the log may carry any sequence (KIP-360: no state to check)."""
    last: dict[int, tuple[int, int]] = {}
    for _, h in iter_batches(read_all(log)):
        if h.producer_id < 0:
            continue
        previous = last.get(h.producer_id)
        if previous is None:
            pass
        elif h.producer_epoch != previous[0]:
            assert h.producer_epoch > previous[0], "epoch went back"
            assert h.base_sequence == 0, f"epoch {h.producer_epoch} starts at {h.base_sequence}"
        else:
            assert h.base_sequence == next_sequence(previous[1]), "gap or repeat in sequences"
        last[h.producer_id] = (h.producer_epoch, h.last_sequence)


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A batch as the log holds it."""

    pid: int  # -1: not idempotent
    epoch: int
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    data: bytes


@dataclass(frozen=True)
class Spec:
    """A batch as a producer sends it."""

    pid: int
    epoch: int
    first_seq: int
    count: int

    @property
    def last_seq(self) -> int:
        return (self.first_seq + self.count - 1) % SEQUENCE_LIMIT

    def encode(self) -> bytes:
        return pbatch(self.pid, self.epoch, self.first_seq, self.count)


def derive(model: list[Stored]) -> dict[int, tuple[int, list[Stored]]]:
    """Each producer's epoch and last 5 batches of that epoch, from the log alone."""
    state: dict[int, tuple[int, list[Stored]]] = {}
    for s in model:
        if s.pid < 0:
            continue
        if s.pid not in state or state[s.pid][0] != s.epoch:
            state[s.pid] = (s.epoch, [])
        state[s.pid][1].append(s)
        del state[s.pid][1][:-NUM_BATCHES_TO_RETAIN]
    return state


def expect(model: list[Stored], specs: list[Spec]) -> tuple[str, object]:
    """("append", None), ("duplicate", (first_offset, last_offset)) or ("error", code)."""
    state = derive(model)
    duplicates: list[Stored] = []
    seen: dict[int, tuple[int, int]] = {}  # pid -> (epoch, last seq) within the request
    for spec in specs:
        if spec.pid in seen:
            epoch, last_seq = seen[spec.pid]
        elif spec.pid not in state:
            seen[spec.pid] = (spec.epoch, spec.last_seq)  # no state: any sequence (KIP-360)
            continue
        else:
            epoch, kept = state[spec.pid]
            match = [s for s in kept if spec.epoch == epoch
                     and (s.first_seq, s.last_seq) == (spec.first_seq, spec.last_seq)]
            if match:
                duplicates.append(match[0])
                continue
            last_seq = kept[-1].last_seq
        if spec.epoch < epoch:
            return "error", ErrorCode.invalid_producer_epoch
        expected_seq = 0 if spec.epoch > epoch else (last_seq + 1) % SEQUENCE_LIMIT
        if spec.first_seq != expected_seq:
            return "error", ErrorCode.out_of_order_sequence_number
        seen[spec.pid] = (spec.epoch, spec.last_seq)
    if duplicates:
        if len(duplicates) != len(specs):
            return "error", ErrorCode.invalid_record
        return "duplicate", (duplicates[0].base_offset, max(d.last_offset for d in duplicates))
    return "append", None


class ProducerStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.model: list[Stored] = []
        # What each producer would send next: (epoch, next sequence). Kept across crashes and
        # truncations, as a client knows nothing of them; its history is what it may retry.
        self.client: dict[int, tuple[int, int]] = {pid: (0, 0) for pid in PIDS}
        self.history: dict[int, list[Spec]] = {pid: [] for pid in PIDS}
        self.now_ms = NOW_MS

    @initialize(rng=st.randoms(use_true_random=False), segment_bytes=st.sampled_from([300, 900, 1 << 20]))
    def setup(self, rng: random.Random, segment_bytes: int) -> None:
        self.overrides = {"segment_bytes": segment_bytes, "file_delete_delay_ms": 0, "retention_ms": -1}
        self.disk = SimDisk(rng)
        self.log = open_log(self.disk, **self.overrides)
        self.ready = True

    @property
    def leo(self) -> int:
        return self.model[-1].last_offset + 1 if self.model else 0

    def _submit(self, specs: list[Spec], plain_count: int = 0) -> None:
        """Send one produce request and check its answer against the model."""
        self.now_ms += 1
        data = [s.encode() for s in specs]
        if plain_count:
            data.append(batch(plain_count, timestamp_ms=self.now_ms))
        outcome, detail = expect(self.model, specs)
        if outcome == "error":
            assert refused(self.log, *data, now_ms=self.now_ms) == detail
            return
        if outcome == "duplicate" and plain_count:
            assert refused(self.log, *data, now_ms=self.now_ms) == ErrorCode.invalid_record
            return
        before = read_all(self.log)
        records = bytearray(b"".join(data))
        result = self.log.append(records, validate_batches(records, 1 << 30), 0, self.now_ms)
        if outcome == "duplicate":
            assert result.duplicate
            assert (result.first_offset, result.last_offset) == detail
            assert read_all(self.log) == before, "a duplicate wrote something"
            return
        assert not result.duplicate and result.first_offset == self.leo
        headers = iter(specs)
        for position, h in iter_batches(records):
            raw = bytes(records[position : position + h.size])
            if h.producer_id < 0:
                self.model.append(Stored(-1, -1, -1, -1, h.base_offset, h.last_offset, raw))
                continue
            spec = next(headers)
            self.model.append(Stored(spec.pid, spec.epoch, spec.first_seq, spec.last_seq,
                                     h.base_offset, h.last_offset, raw))
            self.client[spec.pid] = (spec.epoch, (spec.last_seq + 1) % SEQUENCE_LIMIT)
            self.history[spec.pid].append(spec)

    # ------------------------------------------------------------------ producers

    @rule(pid=st.sampled_from(PIDS), count=st.integers(1, 4), plain=st.sampled_from([0, 0, 0, 2]))
    def send_next(self, pid: int, count: int, plain: int) -> None:
        epoch, seq = self.client[pid]
        self._submit([Spec(pid, epoch, seq, count)], plain)

    @precondition(lambda self: any(self.history.values()))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A retry of any batch sent before: the last 5 are duplicates, older ones refused."""
        pid = data.draw(st.sampled_from([p for p in PIDS if self.history[p]]), label="pid")
        back = data.draw(st.integers(1, min(len(self.history[pid]), 8)), label="batches back")
        self._submit([self.history[pid][-back]])

    @precondition(lambda self: any(len(h) >= 2 for h in self.history.values()))
    @rule(data=st.data())
    def retry_several(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from([p for p in PIDS if len(self.history[p]) >= 2]), label="pid")
        self._submit(self.history[pid][-2:])

    @rule(pid=st.sampled_from(PIDS), skip=st.integers(1, 3), count=st.integers(1, 3))
    def send_with_gap(self, pid: int, skip: int, count: int) -> None:
        epoch, seq = self.client[pid]
        self._submit([Spec(pid, epoch, (seq + skip) % SEQUENCE_LIMIT, count)])

    @rule(pid=st.sampled_from(PIDS), start_at_zero=st.booleans())
    def bump_epoch(self, pid: int, start_at_zero: bool) -> None:
        """KIP-360: a new epoch must start at sequence 0."""
        epoch, seq = self.client[pid]
        self._submit([Spec(pid, epoch + 1, 0 if start_at_zero else max(seq, 1), 1)])

    @rule(pid=st.sampled_from(PIDS))
    def send_with_old_epoch(self, pid: int) -> None:
        epoch, seq = self.client[pid]
        if epoch > 0:
            self._submit([Spec(pid, epoch - 1, seq, 1)])

    @rule(pid=st.sampled_from(PIDS), counts=st.lists(st.integers(1, 3), min_size=2, max_size=3),
          gap_at=st.integers(0, 3))
    def send_several_in_one_request(self, pid: int, counts: list[int], gap_at: int) -> None:
        """All or nothing: a gap in any batch of the request refuses every batch."""
        epoch, seq = self.client[pid]
        specs = []
        for i, count in enumerate(counts):
            if i == gap_at:
                seq += 1
            specs.append(Spec(pid, epoch, seq % SEQUENCE_LIMIT, count))
            seq += count
        self._submit(specs)

    @rule(count=st.integers(1, 3))
    def send_plain(self, count: int) -> None:
        self._submit([], plain_count=count)

    # ------------------------------------------------------------------ the log

    @rule()
    def roll(self) -> None:
        self.log.roll(self.now_ms)

    @rule()
    def flush(self) -> None:
        self.log.flush_now()

    @rule(flush_first=st.booleans())
    def crash(self, flush_first: bool) -> None:
        if flush_first:
            self.log.flush_now()
        recovery_point = self.log.recovery_point
        self.disk.crash()
        self.log = open_log(self.disk, self.now_ms, **self.overrides)
        leo = self.log.log_end_offset
        assert recovery_point <= leo <= self.leo
        self.model = [s for s in self.model if s.last_offset < leo]

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = open_log(self.disk, self.now_ms, **self.overrides)
        assert self.log.log_end_offset == self.leo

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.leo), label="truncate_to")
        self.log.truncate_to(offset)
        # A follower appends nothing after a cut before its flush job made it durable (the
        # broker's rule, PartitionLog "Changes without an fsync"): the job runs here.
        self.log.flush_now()
        assert self.log.cut_durable
        self.model = [s for s in self.model if s.last_offset < offset]

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_is_the_logs(self) -> None:
        if not self.ready:
            return
        assert self.log.log_end_offset == self.leo
        assert read_all(self.log) == b"".join(s.data for s in self.model)
        expected = {
            pid: (epoch, tuple((s.first_seq, s.last_seq, s.base_offset, s.last_offset) for s in kept))
            for pid, (epoch, kept) in derive(self.model).items()
        }
        assert state_of(self.log) == expected
        assert all(offset <= self.leo for offset in self.log.producer_state.snapshot_offsets())
        assert_gapless(self.log)


ProducerStateMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestProducerStateMachine = ProducerStateMachine.TestCase


# --- examples -----------------------------------------------------------------------------


def test_duplicate_of_each_of_the_last_five_batches_returns_its_original_offsets() -> None:
    log = open_log(SimDisk(random.Random(1)))
    originals = [send(log, pbatch(7, 0, seq * 2, count=2)) for seq in range(6)]
    send(log, batch(3))  # another writer in between: the retry's offsets are not LEO
    for seq, original in list(enumerate(originals))[1:]:
        again = send(log, pbatch(7, 0, seq * 2, count=2))
        assert again.duplicate
        assert (again.first_offset, again.last_offset) == (original.first_offset, original.last_offset)
    # The oldest fell out of the window: a retry of it is out of order, not a silent success.
    assert refused(log, pbatch(7, 0, 0, count=2)) == ErrorCode.out_of_order_sequence_number
    assert log.log_end_offset == 15


def test_refusals_write_nothing_and_name_the_reason() -> None:
    log = open_log(SimDisk(random.Random(2)))
    send(log, pbatch(7, 3, 0))
    send(log, pbatch(7, 3, 1))
    assert refused(log, pbatch(7, 3, 3)) == ErrorCode.out_of_order_sequence_number  # gap
    assert refused(log, pbatch(7, 2, 2)) == ErrorCode.invalid_producer_epoch  # fenced epoch
    assert refused(log, pbatch(7, 4, 2)) == ErrorCode.out_of_order_sequence_number  # new epoch, seq != 0
    assert refused(log, pbatch(7, -1, 2)) == ErrorCode.invalid_record  # producer id, no epoch
    # One bad batch refuses the whole request, the good one before it included.
    assert refused(log, pbatch(7, 3, 2), pbatch(7, 3, 4)) == ErrorCode.out_of_order_sequence_number
    # A retry and a new batch in one request: refused rather than half answered.
    assert refused(log, pbatch(7, 3, 1), pbatch(7, 3, 2)) == ErrorCode.invalid_record
    send(log, pbatch(7, 4, 0))  # KIP-360 bump: the new epoch starts at 0
    assert refused(log, pbatch(7, 3, 2)) == ErrorCode.invalid_producer_epoch


def test_sequences_wrap_from_int32_max_to_zero() -> None:
    log = open_log(SimDisk(random.Random(3)))
    top = SEQUENCE_LIMIT - 1
    # Seed a producer near the end of the range as a follower would (no checks on replication).
    send(log, pbatch(7, 0, top - 2, count=3), origin=AppendOrigin.REPLICATION)
    assert log.producer_state.get(7) is not None
    assert log.producer_state.get(7).last_seq == top  # type: ignore[union-attr]
    assert refused(log, pbatch(7, 0, 1)) == ErrorCode.out_of_order_sequence_number  # not 0
    send(log, pbatch(7, 0, 0, count=2))
    # A batch that crosses the wrap: its last sequence is counted modulo 2^31.
    send(log, pbatch(8, 0, top - 1, count=4), origin=AppendOrigin.REPLICATION)
    assert log.producer_state.get(8).last_seq == 1  # type: ignore[union-attr]  # ..., 2^31-1, 0, 1
    assert send(log, pbatch(8, 0, top - 1, count=4)).duplicate
    send(log, pbatch(8, 0, 2))


def test_replication_appends_are_recorded_unchecked() -> None:
    log = open_log(SimDisk(random.Random(4)))
    send(log, pbatch(7, 5, 40), origin=AppendOrigin.REPLICATION)  # unknown producer, seq 40
    send(log, pbatch(7, 2, 90), origin=AppendOrigin.REPLICATION)  # older epoch: the leader's word
    assert state_of(log)[7] == (2, ((90, 90, 1, 1),))


def test_recovery_after_a_crash_still_recognises_retries_of_flushed_batches() -> None:
    for seed in range(20):
        disk = SimDisk(random.Random(seed))
        log = open_log(disk, segment_bytes=400)
        originals = [send(log, pbatch(7, 0, seq)) for seq in range(12)]  # rolls on the way
        log.flush_now()
        unflushed = send(log, pbatch(7, 0, 12))  # may or may not survive the crash
        disk.crash()
        log = open_log(disk, segment_bytes=400)
        survived = log.log_end_offset > unflushed.first_offset
        for seq in range(12 - NUM_BATCHES_TO_RETAIN + (1 if survived else 0), 12):
            again = send(log, pbatch(7, 0, seq))
            assert again.duplicate and again.first_offset == originals[seq].first_offset
        if survived:
            assert send(log, pbatch(7, 0, 12)).first_offset == unflushed.first_offset
        else:
            # The retry of the lost batch is new data again, in order.
            assert not send(log, pbatch(7, 0, 12)).duplicate
        assert send(log, pbatch(7, 0, 13)).first_offset == 13
        assert_gapless(log)


def test_clean_reopen_loads_the_snapshot_at_the_log_end_and_replays_nothing() -> None:
    disk = SimDisk(random.Random(5))
    log = open_log(disk)
    for seq in range(3):
        send(log, pbatch(7, 0, seq))
    before = state_of(log)
    log.close()
    assert disk.exists(f"{DIR}/{snapshot_file_name(3)}")
    log = open_log(disk)
    assert state_of(log) == before
    assert log.producer_state.snapshot_offsets() == [3]


def test_a_corrupt_snapshot_is_deleted_and_the_state_rebuilt_from_the_log() -> None:
    disk = SimDisk(random.Random(6))
    log = open_log(disk, segment_bytes=300)
    for seq in range(8):
        send(log, pbatch(7, 0, seq))
    expected = state_of(log)
    log.close()
    latest = max(log.producer_state.snapshot_offsets())
    disk.corrupt(f"{DIR}/{snapshot_file_name(latest)}", 8, b"\xff\xff")
    log = open_log(disk, segment_bytes=300)
    assert state_of(log) == expected
    assert send(log, pbatch(7, 0, 7)).duplicate


def test_snapshots_above_the_recovered_end_are_discarded() -> None:
    lost_a_snapshot = 0
    for seed in range(20):
        disk = SimDisk(random.Random(seed))
        log = open_log(disk, segment_bytes=300)
        send(log, pbatch(7, 0, 0))
        log.flush_now()
        for seq in range(1, 8):  # rolls write snapshots above the flushed end
            send(log, pbatch(7, 0, seq))
        highest = max(log.producer_state.snapshot_offsets())
        disk.crash()
        log = open_log(disk, segment_bytes=300)
        leo = log.log_end_offset  # each batch holds one record: sequence == offset
        lost_a_snapshot += leo < highest
        assert all(s <= leo for s in log.producer_state.snapshot_offsets())
        assert state_of(log)[7][1][-1] == (leo - 1, leo - 1, leo - 1, leo - 1)
        assert refused(log, pbatch(7, 0, leo + 1)) == ErrorCode.out_of_order_sequence_number
        assert send(log, pbatch(7, 0, leo)).first_offset == leo
    assert lost_a_snapshot, "no seed lost the tail a snapshot described"


def test_a_batch_that_overtook_the_producers_first_one_is_accepted_without_state() -> None:
    """A new leader with an ISR below min.insync.replicas refuses a producer's first request
    (NOT_ENOUGH_REPLICAS, nothing written); the ISR grows before the request the producer had
    pipelined behind it arrives. That one reaches a log with no state for the producer: Kafka
    (KIP-360) accepts it, whatever its sequence, where UNKNOWN_PRODUCER_ID would be fatal for
    librdkafka's retried batch (a batch after a gap librdkafka's own message timeouts left
    meets the same empty state). The refused batch can never be written after it."""
    tp = TopicPartition("t", 0)
    cfg = dataclasses.replace(config(), min_insync_replicas=2)
    p = Partition(tp=tp, log=PartitionLog.open(SimDisk(random.Random(31)), DIR, cfg, NOW_MS),
                  config=cfg, broker_id=1)

    def leader_state(isr: tuple[int, ...], partition_epoch: int) -> PartitionState:
        return PartitionState(uuid.UUID(int=7), (1, 2, 3), isr, 1, 1, partition_epoch,
                              LeaderRecoveryState.RECOVERED)

    def produce(data: bytes) -> AppendResult:
        records = bytearray(data)
        return p.append_as_leader(records, validate_batches(records, 1 << 30), -1, NOW_MS)

    assert p.make_leader(leader_state((1,), 1), NOW_MS)
    first, overtaking = pbatch(7, 0, 0, count=3), pbatch(7, 0, 3, count=2)
    with pytest.raises(KafkaError) as caught:
        produce(first)
    assert caught.value.code == ErrorCode.not_enough_replicas
    p.update_isr(leader_state((1, 2), 2))
    assert p.log.producer_state.get(7) is None
    assert produce(overtaking).first_offset == 0
    assert state_of(p.log)[7] == (0, ((3, 4, 0, 1),))
    # The first batch's retry: refused, never written behind the batch that overtook it.
    assert refused(p.log, first) == ErrorCode.out_of_order_sequence_number
    again = produce(overtaking)  # a retry of the accepted one is its duplicate
    assert again.duplicate and (again.first_offset, again.last_offset) == (0, 1)
    assert produce(pbatch(7, 0, 5)).first_offset == 2  # and the producer goes on in sequence
    assert p.log_end_offset == 3


def test_truncation_forgets_the_batches_it_removed() -> None:
    log = open_log(SimDisk(random.Random(8)), segment_bytes=300)
    for seq in range(8):
        send(log, pbatch(7, 0, seq))
    log.truncate_to(5)
    assert state_of(log)[7][1][-1][:2] == (4, 4)
    assert not send(log, pbatch(7, 0, 5)).duplicate  # written again, at offset 5
    log.truncate_to(0)
    assert state_of(log) == {}
    # No state left: the next batch starts the producer afresh, whatever its sequence (KIP-360).
    assert send(log, pbatch(7, 0, 6)).first_offset == 0
    assert refused(log, pbatch(7, 0, 8)) == ErrorCode.out_of_order_sequence_number


def test_retention_keeps_producers_and_deletes_snapshots_below_the_log_start() -> None:
    log = open_log(SimDisk(random.Random(9)), segment_bytes=300, file_delete_delay_ms=0)
    for seq in range(10):
        send(log, pbatch(7, 0, seq))
    send(log, pbatch(8, 0, 0))
    log.set_high_watermark(log.log_end_offset)
    snapshots = log.producer_state.snapshot_offsets()
    assert len(snapshots) >= 2
    log.delete_records_before(snapshots[-1])
    assert log.producer_state.snapshot_offsets() == [snapshots[-1]]
    assert set(state_of(log)) == {7, 8}
    assert send(log, pbatch(7, 0, 10)).first_offset == 11  # still in sequence


def test_producers_expire_after_silence() -> None:
    log = PartitionLog.open(SimDisk(random.Random(10)), DIR, config(), NOW_MS,
                            producer_id_expiration_ms=1_000)
    send(log, pbatch(7, 0, 0), now_ms=NOW_MS)
    send(log, pbatch(8, 0, 0), now_ms=NOW_MS + 600)
    log.tick(NOW_MS + 999)
    assert set(state_of(log)) == {7, 8}
    log.tick(NOW_MS + 1_000)
    assert set(state_of(log)) == {8}
    # Expired: the producer's next batch is accepted as it comes (KIP-360), in sequence after it.
    send(log, pbatch(7, 0, 1), now_ms=NOW_MS + 1_000)
    send(log, pbatch(7, 0, 2), now_ms=NOW_MS + 1_000)
    log.tick(NOW_MS + 1_600)
    assert set(state_of(log)) == {7}


def test_log_append_time_is_the_duplicates_answer() -> None:
    log = open_log(SimDisk(random.Random(11)), message_timestamp_type="LogAppendTime")
    first = send(log, pbatch(7, 0, 0), now_ms=5_000)
    again = send(log, pbatch(7, 0, 0), now_ms=9_000)
    assert again.duplicate and again.log_append_time_ms == first.log_append_time_ms == 5_000


# --- snapshot files -----------------------------------------------------------------------

_I32 = st.integers(-(2**31), 2**31 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)
_BATCH_META = st.builds(BatchMetadata, _I32, _I32, _I64, _I64, _I64)
_ENTRIES = st.lists(
    st.builds(ProducerStateEntry, st.integers(0, 2**63 - 1), st.integers(-1, 2**15 - 1),
              st.lists(_BATCH_META, max_size=NUM_BATCHES_TO_RETAIN).map(tuple), _I64, _I64, _I32, _I64),
    max_size=20, unique_by=lambda e: e.producer_id,
)


@given(_ENTRIES)
def test_snapshot_codec_round_trips(entries: list[ProducerStateEntry]) -> None:
    decoded = decode_snapshot(encode_snapshot(entries))
    assert decoded == sorted(entries, key=lambda e: e.producer_id)


@given(_ENTRIES, st.data())
def test_a_damaged_snapshot_never_decodes(entries: list[ProducerStateEntry], data: st.DataObject) -> None:
    raw = bytearray(encode_snapshot(entries))
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(CorruptSnapshotError):
        decode_snapshot(bytes(raw[:cut]))
    position = data.draw(st.integers(0, len(raw) - 1), label="flip")
    raw[position] ^= 0x01
    with pytest.raises(CorruptSnapshotError):
        decode_snapshot(bytes(raw))


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(PIDS), st.integers(1, 3), st.booleans()), max_size=30))
def test_snapshot_plus_replay_equals_live_state(sends: list[tuple[int, int, bool]]) -> None:
    """Snapshot anywhere, keep appending, then rebuild in a fresh manager from that snapshot and
    the headers after it: the result equals the live state."""
    disk = SimDisk(random.Random(12))
    log = open_log(disk)
    snapshot_at = len(sends) // 2
    for i, (pid, count, bump) in enumerate(sends):
        if i == snapshot_at:
            log.producer_state.take_snapshot(log.log_end_offset)
        entry = log.producer_state.get(pid)
        if entry is None:
            epoch, seq = 0, 0
        elif bump:
            epoch, seq = entry.epoch + 1, 0
        else:
            epoch, seq = entry.epoch, next_sequence(entry.last_seq)
        send(log, pbatch(pid, epoch, seq, count))
    rebuilt = ProducerStateManager(disk, DIR)
    rebuilt.scan_snapshots()
    start = rebuilt.load_latest_snapshot(log.log_end_offset) or 0
    for _, h in iter_batches(read_all(log, start)):
        rebuilt.replay(h, NOW_MS)
    assert [(e.producer_id, e.epoch, e.batches) for e in rebuilt.active_producers()] == [
        (e.producer_id, e.epoch, e.batches) for e in log.producer_state.active_producers()
    ]
