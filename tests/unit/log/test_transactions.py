"""Transactions at the partition level (KIP-98): producer state, the aborted-transaction index
(.txnindex), the LSO, and their recovery, on SimDisk.

A stateful test drives a PartitionLog with transactional and plain batches, markers from the
coordinator, HW moves, rolls, truncations, crashes and reopens, and after every step derives
from the log's own bytes what the transaction state must be (ongoing transactions, the
aborted-transaction entries, the LSO) and compares.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ackly.errors import ErrorCode, KafkaError
from ackly.log.disk import SimDisk
from ackly.log.partition_log import AppendResult, PartitionLog
from ackly.log.producer_state import (
    NO_OFFSET,
    AppendOrigin,
    ProducerStateEntry,
    decode_snapshot,
    encode_snapshot,
    next_sequence,
)
from ackly.log.txn_index import (
    ENTRY_SIZE,
    AbortedTxn,
    CorruptTxnIndexError,
    TransactionIndex,
    decode_entries,
    encode_entry,
)
from ackly.protocol.record_codec import (
    ControlType,
    Record,
    encode_batch,
    encode_control_batch,
)
from ackly.protocol.records import validate_batches

from .helpers import DIR, batch, config, read_all

NOW_MS = 1_000
PIDS = (7, 8, 9)


def tbatch(pid: int, epoch: int, seq: int, count: int = 1, transactional: bool = True) -> bytes:
    records = [Record(key=None, value=b"t%d" % i, timestamp_ms=NOW_MS) for i in range(count)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                        transactional=transactional)


def marker(pid: int, epoch: int, commit: bool, coordinator_epoch: int = 0) -> bytes:
    kind = ControlType.COMMIT if commit else ControlType.ABORT
    return encode_control_batch(kind, producer_id=pid, producer_epoch=epoch,
                                coordinator_epoch=coordinator_epoch, now_ms=NOW_MS)


def send(log: PartitionLog, data: bytes, origin: AppendOrigin = AppendOrigin.CLIENT,
         guard: object | None = None) -> AppendResult:
    records = bytearray(data)
    return log.append(records, validate_batches(records, 1 << 30), 0, NOW_MS, origin, guard)


def refused(log: PartitionLog, data: bytes, origin: AppendOrigin = AppendOrigin.CLIENT,
            guard: object | None = None) -> ErrorCode:
    before, leo = read_all(log), log.log_end_offset
    with pytest.raises(KafkaError) as caught:
        send(log, data, origin, guard)
    assert (read_all(log), log.log_end_offset) == (before, leo), "a refusal wrote something"
    return caught.value.code


def open_log(disk: SimDisk, **overrides: object) -> PartitionLog:
    return PartitionLog.open(disk, DIR, config(**overrides), NOW_MS)


def index_entries(log: PartitionLog) -> list[AbortedTxn]:
    return [e for s in log.segments for e in s.txn_index.entries]


def commit_all(log: PartitionLog) -> None:
    log.set_high_watermark(log.log_end_offset)


# --- the txn index file ------------------------------------------------------------------


def test_txn_index_entry_is_kafkas_34_byte_layout() -> None:
    entry = AbortedTxn(producer_id=5, first_offset=10, last_offset=20, last_stable_offset=21)
    data = encode_entry(entry)
    assert len(data) == ENTRY_SIZE == 34
    assert data == (b"\x00\x00" + (5).to_bytes(8, "big") + (10).to_bytes(8, "big")
                    + (20).to_bytes(8, "big") + (21).to_bytes(8, "big"))
    assert decode_entries(data * 1) == [entry]


def test_txn_index_write_read_truncate() -> None:
    disk = SimDisk(random.Random(1))
    disk.makedirs(DIR)
    index = TransactionIndex(disk, DIR, 100)
    assert index.load() and len(index) == 0
    entries = [AbortedTxn(1, 100, 105, 106), AbortedTxn(2, 101, 110, 111), AbortedTxn(1, 112, 120, 121)]
    for e in entries:
        index.append(e)
    index.flush()
    again = TransactionIndex(disk, DIR, 100)
    assert again.load() and list(again.entries) == entries
    assert list(again.overlapping(106, 112)) == entries[1:2]
    assert list(again.overlapping(0, 101)) == entries[:1]
    again.truncate_to(110)
    again.flush()
    third = TransactionIndex(disk, DIR, 100)
    assert third.load() and list(third.entries) == entries[:1]
    assert not third.add_if_absent(entries[0])
    assert third.add_if_absent(entries[2])
    assert list(third.entries) == [entries[0], entries[2]]


@given(st.binary(min_size=1, max_size=100))
def test_garbage_is_never_taken_for_an_index(data: bytes) -> None:
    try:
        entries = decode_entries(data)
    except CorruptTxnIndexError:
        return
    assert len(data) == ENTRY_SIZE * len(entries)
    assert all(a.last_offset < b.last_offset for a, b in itertools.pairwise(entries))


def test_a_torn_index_file_is_rebuilt_from_the_log() -> None:
    disk = SimDisk(random.Random(2))
    log = open_log(disk)
    send(log, tbatch(7, 0, 0))
    send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)
    commit_all(log)
    log.roll(NOW_MS)
    send(log, batch())
    expected = index_entries(log)
    assert expected == [AbortedTxn(7, 0, 1, 2)]
    log.close()
    path = f"{DIR}/{0:020d}.txnindex"
    data = disk.read_file(path)
    assert data is not None and len(data) == ENTRY_SIZE
    disk.write_atomic(path, data[:-3])  # torn
    log = open_log(disk)
    assert index_entries(log) == expected


# --- producer-state transitions ----------------------------------------------------------


def test_a_transaction_starts_at_its_first_batch_and_a_marker_ends_it() -> None:
    log = open_log(SimDisk(random.Random(3)))
    send(log, batch(2))  # offsets 0-1, not transactional
    send(log, tbatch(7, 0, 0, count=2))  # 2-3
    send(log, tbatch(7, 0, 2))  # 4: the same transaction
    entry = log.producer_state.get(7)
    assert entry is not None and entry.current_txn_first_offset == 2
    assert log.producer_state.ongoing_transactions() == {7: 2}
    commit_all(log)
    assert log.last_stable_offset == 2  # held at the open transaction, below HW
    send(log, marker(7, 0, commit=True, coordinator_epoch=3), AppendOrigin.COORDINATOR)  # 5
    assert entry.current_txn_first_offset == NO_OFFSET and entry.coordinator_epoch == 3
    assert log.producer_state.ongoing_transactions() == {}
    # The marker is not below HW yet: the transaction is unreplicated and still holds the LSO.
    assert log.last_stable_offset == 2
    commit_all(log)
    assert log.last_stable_offset == log.high_watermark == 6
    assert index_entries(log) == []  # a commit is not indexed


def test_markers_check_the_producer_epoch_and_fence_with_a_newer_one() -> None:
    log = open_log(SimDisk(random.Random(4)))
    send(log, tbatch(7, 3, 0))
    assert refused(log, marker(7, 2, commit=True), AppendOrigin.COORDINATOR) == \
        ErrorCode.invalid_producer_epoch
    # A newer epoch in a marker fences the producer: it becomes its epoch.
    send(log, marker(7, 4, commit=False), AppendOrigin.COORDINATOR)
    entry = log.producer_state.get(7)
    assert entry is not None and entry.epoch == 4
    assert refused(log, tbatch(7, 3, 1)) == ErrorCode.invalid_producer_epoch
    assert index_entries(log) == [AbortedTxn(7, 0, 1, 2)]


def test_a_marker_from_an_older_coordinator_epoch_is_refused() -> None:
    log = open_log(SimDisk(random.Random(5)))
    send(log, tbatch(7, 0, 0))
    send(log, marker(7, 0, commit=True, coordinator_epoch=5), AppendOrigin.COORDINATOR)
    send(log, tbatch(7, 0, 1))
    assert refused(log, marker(7, 0, commit=True, coordinator_epoch=4), AppendOrigin.COORDINATOR) \
        == ErrorCode.transaction_coordinator_fenced


def test_client_rules_inside_a_transaction() -> None:
    log = open_log(SimDisk(random.Random(6)))
    send(log, tbatch(7, 0, 0))
    # A plain idempotent batch of a producer inside a transaction.
    assert refused(log, tbatch(7, 0, 1, transactional=False)) == ErrorCode.invalid_txn_state
    # Clients never write markers, even well-formed ones.
    assert refused(log, marker(7, 0, commit=True)) == ErrorCode.invalid_record
    # A transactional batch without a producer id.
    plain_txn = encode_batch([Record(None, b"x", timestamp_ms=NOW_MS)], transactional=True)
    assert refused(log, plain_txn) == ErrorCode.invalid_record
    # A retry of the transactional batch is still a duplicate.
    assert send(log, tbatch(7, 0, 0)).duplicate


def test_coordinator_batches_skip_sequences_but_not_epochs() -> None:
    log = open_log(SimDisk(random.Random(7)))
    coordinator_batch = encode_batch([Record(b"k", b"v", timestamp_ms=NOW_MS)], producer_id=7,
                                     producer_epoch=1, base_sequence=-1, transactional=True)
    send(log, coordinator_batch, AppendOrigin.COORDINATOR)
    send(log, coordinator_batch, AppendOrigin.COORDINATOR)  # no sequence: no duplicate check
    assert log.producer_state.ongoing_transactions() == {7: 0}
    entry = log.producer_state.get(7)
    assert entry is not None and entry.batches == ()  # nothing a client could retry
    older = encode_batch([Record(b"k", b"v", timestamp_ms=NOW_MS)], producer_id=7,
                         producer_epoch=0, base_sequence=-1, transactional=True)
    assert refused(log, older, AppendOrigin.COORDINATOR) == ErrorCode.invalid_producer_epoch


def test_verification_guard_is_voided_by_a_marker_and_by_an_epoch_bump() -> None:
    log = open_log(SimDisk(random.Random(8)))
    state = log.producer_state
    guard = state.verification_guard(7, 0, NOW_MS)
    assert state.verification_guard(7, 0, NOW_MS) is guard  # one per epoch while it stands
    send(log, tbatch(7, 0, 0), guard=guard)  # starts the transaction
    send(log, tbatch(7, 0, 1), guard=object())  # inside it the guard is not looked at
    stale = state.verification_guard(7, 0, NOW_MS)
    send(log, marker(7, 0, commit=True), AppendOrigin.COORDINATOR)
    # The batch verified before the marker would start a transaction nobody knows of.
    assert refused(log, tbatch(7, 0, 2), guard=stale) == ErrorCode.invalid_txn_state
    bumped = state.verification_guard(7, 0, NOW_MS)
    send(log, marker(7, 1, commit=False), AppendOrigin.COORDINATOR)  # fenced: epoch 1
    assert refused(log, tbatch(7, 1, 0), guard=bumped) == ErrorCode.invalid_txn_state
    fresh = state.verification_guard(7, 1, NOW_MS)
    send(log, tbatch(7, 1, 0), guard=fresh)
    assert state.has_ongoing_transaction(7)


def test_a_fenced_epochs_verification_does_not_void_the_newer_one() -> None:
    """Two instances of one transactional id (the older one fenced) produce to one partition
    while the newer one's verification is in flight: the older epoch gets a guard of its own,
    and the newer epoch's append still holds (Kafka keeps the highest epoch's entry)."""
    log = open_log(SimDisk(random.Random(10)))
    state = log.producer_state
    newer = state.verification_guard(7, 3, NOW_MS)
    older = state.verification_guard(7, 2, NOW_MS)
    assert older is not newer
    assert state.verification_guard(7, 3, NOW_MS) is newer
    send(log, tbatch(7, 3, 0), guard=newer)
    assert state.has_ongoing_transaction(7, 3) and not state.has_ongoing_transaction(7, 2)


def test_a_newer_epochs_batch_does_not_join_an_older_epochs_open_transaction() -> None:
    """Transaction version 2: the next transaction's epoch is newer; while the older one's
    marker has not landed, its batch needs a verification of its own (and the guard taken
    before the marker is void after it)."""
    log = open_log(SimDisk(random.Random(11)))
    state = log.producer_state
    send(log, tbatch(7, 0, 0), guard=state.verification_guard(7, 0, NOW_MS))
    early = state.verification_guard(7, 1, NOW_MS)
    assert not state.has_ongoing_transaction(7, 1)
    send(log, marker(7, 1, commit=True), AppendOrigin.COORDINATOR)
    assert refused(log, tbatch(7, 1, 0), guard=early) == ErrorCode.invalid_txn_state
    send(log, tbatch(7, 1, 0), guard=state.verification_guard(7, 1, NOW_MS))
    assert state.has_ongoing_transaction(7, 1)


def test_producers_in_a_transaction_do_not_expire() -> None:
    log = PartitionLog.open(SimDisk(random.Random(9)), DIR, config(), NOW_MS,
                            producer_id_expiration_ms=100)
    send(log, tbatch(7, 0, 0))
    send(log, tbatch(8, 0, 0, transactional=False))
    assert log.producer_state.remove_expired(NOW_MS + 1_000) == 1
    assert log.producer_state.get(7) is not None and log.producer_state.get(8) is None


@given(st.lists(st.builds(
    ProducerStateEntry, producer_id=st.integers(0, 2**40), epoch=st.integers(0, 100),
    coordinator_epoch=st.integers(-1, 100), current_txn_first_offset=st.integers(-1, 2**40),
), max_size=5, unique_by=lambda e: e.producer_id))
def test_snapshot_keeps_the_transaction_fields(entries: list[ProducerStateEntry]) -> None:
    decoded = {e.producer_id: e for e in decode_snapshot(encode_snapshot(entries))}
    for e in entries:
        d = decoded[e.producer_id]
        assert (d.coordinator_epoch, d.current_txn_first_offset) == \
            (e.coordinator_epoch, e.current_txn_first_offset)


# --- LSO and the aborted-transaction index -------------------------------------------------


def test_lso_with_ongoing_committed_aborted_and_unreplicated_transactions() -> None:
    log = open_log(SimDisk(random.Random(10)))
    send(log, tbatch(7, 0, 0))  # 0: txn of 7
    send(log, tbatch(8, 0, 0))  # 1: txn of 8
    send(log, batch())  # 2
    log.set_high_watermark(3)
    assert log.last_stable_offset == 0
    send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)  # 3: abort 7
    # 8 is still open, so the aborted entry records LSO 1.
    assert index_entries(log) == [AbortedTxn(7, 0, 3, 1)]
    assert log.last_stable_offset == 0  # the abort marker is not below HW yet
    log.set_high_watermark(4)
    assert log.last_stable_offset == 1  # now only 8 holds it
    send(log, marker(8, 0, commit=True), AppendOrigin.COORDINATOR)  # 4
    log.set_high_watermark(5)
    assert log.last_stable_offset == 5
    assert log.collect_aborted_transactions(0, 5) == [AbortedTxn(7, 0, 3, 1)]
    assert log.collect_aborted_transactions(4, 5) == []
    assert log.collect_aborted_transactions(3, 5) == [AbortedTxn(7, 0, 3, 1)]


def test_lso_never_below_the_log_start() -> None:
    log = open_log(SimDisk(random.Random(11)), segment_bytes=200, file_delete_delay_ms=0)
    send(log, tbatch(7, 0, 0))
    for _ in range(6):
        send(log, batch())
    commit_all(log)
    assert log.last_stable_offset == 0
    log.delete_records_before(4)
    assert log.last_stable_offset == 4


def test_aborted_transactions_are_found_across_segments() -> None:
    log = open_log(SimDisk(random.Random(12)), segment_bytes=250)
    send(log, tbatch(7, 0, 0))  # 0
    for _ in range(4):
        send(log, batch())  # 1-4, rolling segments
    send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)  # 5
    commit_all(log)
    assert len(log.segments) > 1
    entry = AbortedTxn(7, 0, 5, 6)
    assert log.collect_aborted_transactions(0, 6) == [entry]
    assert log.collect_aborted_transactions(2, 4) == [entry]
    assert log.collect_aborted_transactions(6, 7) == []
    marker_segment = [s for s in log.segments if s.txn_index.entries]
    assert len(marker_segment) == 1 and marker_segment[0].base_offset <= 5


def test_replicated_markers_build_the_same_state_as_the_leader() -> None:
    leader = open_log(SimDisk(random.Random(13)))
    send(leader, tbatch(7, 0, 0))
    send(leader, tbatch(8, 0, 0))
    send(leader, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)
    send(leader, batch())
    send(leader, tbatch(7, 0, 1))
    follower = PartitionLog.open(SimDisk(random.Random(14)), DIR, config(), NOW_MS)
    data = bytearray(read_all(leader))
    follower.append_replicated(data, validate_batches(data, 1 << 30), NOW_MS)
    assert index_entries(follower) == index_entries(leader) == [AbortedTxn(7, 0, 2, 1)]
    assert follower.producer_state.ongoing_transactions() == \
        leader.producer_state.ongoing_transactions() == {8: 1, 7: 4}
    for log in (leader, follower):
        commit_all(log)
    assert follower.last_stable_offset == leader.last_stable_offset == 1


# --- truncation and recovery ---------------------------------------------------------------


def test_truncation_reopens_the_transaction_and_drops_its_index_entry() -> None:
    log = open_log(SimDisk(random.Random(15)))
    send(log, tbatch(7, 0, 0))
    send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)
    assert index_entries(log) == [AbortedTxn(7, 0, 1, 2)]
    log.truncate_to(1)
    assert index_entries(log) == []
    assert log.producer_state.ongoing_transactions() == {7: 0}
    commit_all(log)
    assert log.last_stable_offset == 0


def test_recovery_after_a_crash_rebuilds_ongoing_transactions_and_the_index() -> None:
    for seed in range(8):
        disk = SimDisk(random.Random(seed))
        log = open_log(disk, segment_bytes=300)
        send(log, tbatch(7, 0, 0))  # 0
        send(log, tbatch(8, 0, 0))  # 1
        send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)  # 2
        send(log, batch())  # 3
        send(log, tbatch(9, 0, 0))  # 4
        send(log, marker(9, 0, commit=False), AppendOrigin.COORDINATOR)  # 5
        log.flush_now()
        commit_all(log)
        log.write_checkpoints()
        expected_index = index_entries(log)
        expected_ongoing = log.producer_state.ongoing_transactions()
        send(log, tbatch(9, 0, 1))  # 6: unflushed, may or may not survive
        disk.crash()
        log = open_log(disk, segment_bytes=300)
        if log.log_end_offset == 7:
            expected_ongoing = {**expected_ongoing, 9: 6}
        else:
            assert log.log_end_offset == 6
        assert index_entries(log) == expected_index == [AbortedTxn(7, 0, 2, 1), AbortedTxn(9, 4, 5, 1)]
        assert log.producer_state.ongoing_transactions() == expected_ongoing
        assert {8: 1}.items() <= expected_ongoing.items()
        commit_all(log)
        assert log.last_stable_offset == 1
        entry = log.producer_state.get(8)
        assert entry is not None and entry.current_txn_first_offset == 1


def test_clean_reopen_keeps_transactions_from_the_snapshot() -> None:
    disk = SimDisk(random.Random(16))
    log = open_log(disk)
    send(log, tbatch(7, 0, 0))
    send(log, tbatch(8, 0, 0))
    send(log, marker(8, 0, commit=False), AppendOrigin.COORDINATOR)
    commit_all(log)
    log.close()
    log = open_log(disk)
    assert log.producer_state.ongoing_transactions() == {7: 0}
    assert index_entries(log) == [AbortedTxn(8, 1, 2, 0)]
    assert log.last_stable_offset == 0


def test_unreplicated_transactions_survive_a_restart() -> None:
    """A marker above HW keeps holding the LSO after a reopen, though the snapshot at the log
    end does not record completed transactions."""
    disk = SimDisk(random.Random(17))
    log = open_log(disk)
    send(log, tbatch(7, 0, 0))
    send(log, batch())
    log.set_high_watermark(2)
    send(log, marker(7, 0, commit=True), AppendOrigin.COORDINATOR)  # 2, above HW
    assert log.last_stable_offset == 0
    log.close()
    log = open_log(disk)
    assert log.high_watermark == 2
    assert log.last_stable_offset == 0
    log.set_high_watermark(3)
    assert log.last_stable_offset == 3


def test_deleted_segments_take_their_index_with_them() -> None:
    disk = SimDisk(random.Random(18))
    log = open_log(disk, segment_bytes=200, file_delete_delay_ms=0, retention_bytes=1)
    send(log, tbatch(7, 0, 0))
    send(log, marker(7, 0, commit=False), AppendOrigin.COORDINATOR)
    for _ in range(4):
        send(log, batch())
    commit_all(log)
    path = f"{DIR}/{0:020d}.txnindex"
    assert disk.exists(path)
    assert log.enforce_retention(NOW_MS) > 0
    log.tick(NOW_MS + 1)
    assert not disk.exists(path) and not disk.exists(path + ".deleted")


# --- the stateful model ------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One batch the log holds, as the model sees it."""

    pid: int
    epoch: int
    transactional: bool
    marker: ControlType | None
    base_offset: int
    last_offset: int
    data: bytes


def derive(model: list[Stored]) -> tuple[dict[int, int], list[AbortedTxn], list[tuple[int, int]]]:
    """(ongoing transactions, aborted-index entries, (first, marker) of every completed one)."""
    ongoing: dict[int, int] = {}
    aborted: list[AbortedTxn] = []
    completed: list[tuple[int, int]] = []
    for s in model:
        if s.marker is not None:
            first = ongoing.pop(s.pid, s.base_offset)
            if s.marker is ControlType.ABORT:
                others = list(ongoing.values())
                lso = min(others) if others else s.base_offset + 1
                aborted.append(AbortedTxn(s.pid, first, s.base_offset, lso))
            completed.append((first, s.base_offset))
        elif s.transactional and s.pid not in ongoing:
            ongoing[s.pid] = s.base_offset
    return ongoing, aborted, completed


class TransactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.model: list[Stored] = []

    @initialize(rng=st.randoms(use_true_random=False), segment_bytes=st.sampled_from([250, 600, 1 << 20]))
    def setup(self, rng: random.Random, segment_bytes: int) -> None:
        self.overrides = {"segment_bytes": segment_bytes, "file_delete_delay_ms": 0}
        self.disk = SimDisk(rng)
        self.log = open_log(self.disk, **self.overrides)
        self.ready = True

    @property
    def leo(self) -> int:
        return self.model[-1].last_offset + 1 if self.model else 0

    def _append(self, data: bytes, origin: AppendOrigin, pid: int, epoch: int,
                transactional: bool, kind: ControlType | None) -> None:
        result = send(self.log, data, origin)
        assert result.first_offset == self.leo
        self.model.append(Stored(pid, epoch, transactional, kind, result.first_offset,
                                 result.last_offset, read_all(self.log, result.first_offset)))

    def _epoch(self, pid: int) -> int:
        """The producer's epoch as the log says: that of its last batch (0 if none)."""
        epochs = [s.epoch for s in self.model if s.pid == pid]
        return epochs[-1] if epochs else 0

    @rule(pid=st.sampled_from(PIDS), count=st.integers(1, 3), transactional=st.booleans())
    def produce(self, pid: int, count: int, transactional: bool) -> None:
        ongoing = derive(self.model)[0]
        # The next sequence is whatever the log's state expects (truncations and crashes
        # take batches away; this test is about transactions, not retries).
        entry = self.log.producer_state.get(pid)
        epoch = self._epoch(pid)
        data = tbatch(pid, epoch, 0 if entry is None else next_sequence(entry.last_seq), count,
                      transactional)
        if not transactional and pid in ongoing:
            assert refused(self.log, data) == ErrorCode.invalid_txn_state
            return
        self._append(data, AppendOrigin.CLIENT, pid, epoch, transactional, None)

    @rule(count=st.integers(1, 2))
    def produce_plain(self, count: int) -> None:
        self._append(batch(count), AppendOrigin.CLIENT, -1, -1, False, None)

    @rule(pid=st.sampled_from(PIDS), commit=st.booleans(), fence=st.booleans())
    def end_transaction(self, pid: int, commit: bool, fence: bool) -> None:
        """A marker; with `fence`, at a bumped epoch (the coordinator fencing the producer)."""
        kind = ControlType.COMMIT if commit else ControlType.ABORT
        epoch = self._epoch(pid) + (1 if fence else 0)
        self._append(marker(pid, epoch, commit), AppendOrigin.COORDINATOR, pid, epoch, True, kind)

    @precondition(lambda self: any(s.epoch > 0 for s in self.model))
    @rule(data=st.data())
    def stale_epoch(self, data: st.DataObject) -> None:
        """A marker or a transactional batch at an epoch older than the producer's."""
        pid = data.draw(st.sampled_from(sorted({s.pid for s in self.model if s.epoch > 0})))
        old = self._epoch(pid) - 1
        if data.draw(st.booleans(), label="marker"):
            assert refused(self.log, marker(pid, old, True), AppendOrigin.COORDINATOR) == \
                ErrorCode.invalid_producer_epoch
        else:
            assert refused(self.log, tbatch(pid, old, 0)) == ErrorCode.invalid_producer_epoch

    @rule(data=st.data())
    def move_hw(self, data: st.DataObject) -> None:
        self.log.set_high_watermark(data.draw(st.integers(self.log.high_watermark, self.leo)))

    @rule()
    def roll(self) -> None:
        self.log.roll(NOW_MS)

    @rule(flush_first=st.booleans())
    def crash(self, flush_first: bool) -> None:
        if flush_first:
            self.log.flush_now()
        self.log.write_checkpoints()
        self.disk.crash()
        self.log = open_log(self.disk, **self.overrides)
        leo = self.log.log_end_offset
        self.model = [s for s in self.model if s.last_offset < leo]

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = open_log(self.disk, **self.overrides)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.leo), label="truncate_to")
        self.log.truncate_to(offset)
        # A follower appends nothing after a cut before its flush job made it durable (the
        # broker's rule, PartitionLog "Changes without an fsync"): the job runs here.
        self.log.flush_now()
        assert self.log.cut_durable
        self.model = [s for s in self.model if s.last_offset < self.log.log_end_offset]

    @invariant()
    def state_is_the_logs(self) -> None:
        if not self.ready:
            return
        log = self.log
        assert log.log_end_offset == self.leo
        assert read_all(log) == b"".join(s.data for s in self.model)
        ongoing, aborted, completed = derive(self.model)
        assert log.producer_state.ongoing_transactions() == ongoing
        for pid, first in ongoing.items():
            entry = log.producer_state.get(pid)
            assert entry is not None and entry.current_txn_first_offset == first
        assert index_entries(log) == aborted
        hw = log.high_watermark
        unstable = [*ongoing.values(), *(first for first, end in completed if end >= hw)]
        expected_lso = min(max(min(unstable), log.log_start_offset), hw) if unstable else hw
        assert log.last_stable_offset == expected_lso
        assert log.log_start_offset <= log.last_stable_offset <= hw <= log.log_end_offset


TransactionMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTransactionMachine = TransactionMachine.TestCase
