"""The transaction coordinator with a virtual clock and in-memory logs: InitProducerId,
AddPartitionsToTxn, EndTxn, fencing, concurrent transactions, timeouts, expiry, failover."""

from __future__ import annotations

import pytest
from tests.unit.coordinator.helpers import Box, MemoryLog
from tests.unit.coordinator.txn_helpers import FailingLog, TxnHarness

from ackly.coordinator.transaction_metadata import EPOCH_EXHAUSTED, TxnState
from ackly.coordinator.transaction_state import InitResult
from ackly.coordinator.txn_records import TransactionLogValue, encode_key, encode_value
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import Record, encode_batch
from ackly.types import TopicPartition

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
TX = "tx"


def test_first_init_gets_a_fresh_id_at_epoch_0_and_the_next_bumps_the_epoch() -> None:
    h = TxnHarness()
    first = h.init(TX)
    assert first == InitResult(ErrorCode.none, 1000, 0)
    assert h.init(TX) == InitResult(ErrorCode.none, 1000, 1)
    other = h.init("other")
    assert other.producer_id == 1001 and other.producer_epoch == 0


def test_a_reply_waits_for_its_record_to_be_committed() -> None:
    h = TxnHarness()
    log = h.logs[h.coordinator.partition_for(TX)]
    log.auto_commit = False
    box = Box()
    h.coordinator.init_producer_id(TX, 60_000, None, box, h.now_ms)
    h.settle()
    assert not box.done
    h.commit_logs()
    assert box.value.error == ErrorCode.none


def test_commit_cycle_decision_only_after_the_prepare_record_is_committed() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0, B0)
    assert h.meta(TX).state == TxnState.ONGOING and h.meta(TX).partitions == {A0, B0}
    log = h.logs[h.coordinator.partition_for(TX)]
    log.auto_commit = False
    box = Box()
    h.coordinator.end_transaction(TX, r.producer_id, r.producer_epoch, True, box, h.now_ms)
    h.settle()
    assert h.meta(TX).state == TxnState.PREPARE_COMMIT
    assert not box.done and not h.decisions, "nothing leaves before the decision is committed"
    h.commit_logs()
    assert box.value == ErrorCode.none
    [decision] = h.decisions
    assert decision.committed and decision.partitions == {A0, B0}
    assert (decision.producer_id, decision.producer_epoch) == (r.producer_id, r.producer_epoch)
    h.finish_markers()
    h.commit_logs()
    assert h.meta(TX).state == TxnState.COMPLETE_COMMIT and not h.meta(TX).partitions


def test_requests_while_a_decision_is_in_flight_get_concurrent_transactions() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none
    assert h.add(TX, r.producer_id, r.producer_epoch, A1) == ErrorCode.concurrent_transactions
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.concurrent_transactions
    assert h.end(TX, r.producer_id, r.producer_epoch, False) == ErrorCode.invalid_txn_state
    assert h.init(TX).error == ErrorCode.concurrent_transactions
    assert h.coordinator.verify_partitions(TX, r.producer_id, r.producer_epoch, [A0]) == {
        A0: ErrorCode.concurrent_transactions}
    h.finish_markers()
    # Retried EndTxn after completion: the same outcome is success, the other is refused.
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none
    assert h.end(TX, r.producer_id, r.producer_epoch, False) == ErrorCode.invalid_txn_state


def test_end_without_a_transaction_is_invalid_txn_state() -> None:
    h = TxnHarness()
    r = h.init(TX)
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.invalid_txn_state


def test_older_epochs_and_other_ids_are_fenced_everywhere() -> None:
    h = TxnHarness()
    old = h.init(TX)
    new = h.init(TX)
    assert new.producer_epoch == old.producer_epoch + 1
    assert h.add(TX, old.producer_id, old.producer_epoch, A0) == ErrorCode.producer_fenced
    assert h.end(TX, old.producer_id, old.producer_epoch, True) == ErrorCode.producer_fenced
    assert h.add(TX, old.producer_id + 7, 0, A0) == ErrorCode.invalid_producer_id_mapping
    assert h.add("unknown", 1, 0, A0) == ErrorCode.invalid_producer_id_mapping
    assert h.coordinator.verify_partitions(TX, old.producer_id, old.producer_epoch, [A0]) == {
        A0: ErrorCode.producer_fenced}


def test_init_with_an_open_transaction_aborts_it_first_with_a_bumped_epoch() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0, A1)
    assert h.init(TX).error == ErrorCode.concurrent_transactions
    [decision] = h.decisions
    assert not decision.committed and decision.producer_epoch == r.producer_epoch + 1
    assert decision.partitions == {A0, A1}
    # The fenced instance can no longer end it, nor can the new one before it completes.
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.producer_fenced
    assert h.init(TX).error == ErrorCode.concurrent_transactions
    h.finish_markers()
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT
    again = h.init(TX)
    assert again == InitResult(ErrorCode.none, r.producer_id, r.producer_epoch + 2)


def test_kip360_bump_with_the_current_epoch_retry_and_fencing() -> None:
    h = TxnHarness()
    r = h.init(TX)
    bumped = h.init(TX, expected=(r.producer_id, r.producer_epoch))
    assert bumped == InitResult(ErrorCode.none, r.producer_id, r.producer_epoch + 1)
    # The answer was lost and the producer asks again with the epoch it had: same answer.
    assert h.init(TX, expected=(r.producer_id, r.producer_epoch)) == bumped
    # A new instance (no expected epoch) forgets the previous epoch: the old retry is fenced.
    fresh = h.init(TX)
    assert fresh.producer_epoch == bumped.producer_epoch + 1
    assert h.init(TX, expected=(r.producer_id, bumped.producer_epoch)).error == ErrorCode.producer_fenced
    assert h.init(TX, expected=(r.producer_id + 99, 0)).error == ErrorCode.producer_fenced


def _preloaded(epoch: int, state: TxnState = TxnState.EMPTY) -> TxnHarness:
    """A harness whose log already says TX is in `state` at `epoch` with producer id 77."""
    probe = TxnHarness()
    index = probe.coordinator.partition_for(TX)
    logs = [MemoryLog(i) for i in range(3)]
    parts = () if state == TxnState.EMPTY else (A0,)
    value = TransactionLogValue(77, epoch, 60_000, int(state), parts, probe.now_ms, probe.now_ms)
    record = encode_value(value, empty=state == TxnState.EMPTY)
    logs[index].append(encode_batch([Record(key=encode_key(TX), value=record)]), 0)
    return TxnHarness(logs=logs)


def test_an_open_transaction_at_the_largest_epoch_is_aborted_without_a_fence() -> None:
    h = _preloaded(2**15 - 1, TxnState.ONGOING)
    h.advance(61_000)
    [decision] = h.decisions
    assert not decision.committed and decision.producer_epoch == 2**15 - 1
    h.finish_markers()
    assert h.init(TX).producer_id == 1000, "the exhausted id is rotated"


def test_epoch_exhaustion_rotates_to_a_new_producer_id() -> None:
    h = _preloaded(EPOCH_EXHAUSTED)
    r = h.init(TX)
    assert r == InitResult(ErrorCode.none, 1000, 0)
    assert h.meta(TX).previous_producer_id == 77


def test_epoch_exhaustion_with_kip360_and_its_retry() -> None:
    h = _preloaded(EPOCH_EXHAUSTED)
    r = h.init(TX, expected=(77, EPOCH_EXHAUSTED))
    assert r == InitResult(ErrorCode.none, 1000, 0)
    # The answer was lost: the old id and exhausted epoch get the new id again.
    assert h.init(TX, expected=(77, EPOCH_EXHAUSTED)) == r


def test_transaction_timeout_is_capped() -> None:
    h = TxnHarness()
    assert h.init(TX, timeout_ms=900_001).error == ErrorCode.invalid_transaction_timeout
    assert h.init(TX, timeout_ms=0).error == ErrorCode.invalid_transaction_timeout
    assert h.init(TX, timeout_ms=900_000).error == ErrorCode.none


def test_an_ongoing_transaction_past_its_timeout_is_fenced_and_aborted() -> None:
    h = TxnHarness()
    r = h.init(TX, timeout_ms=5_000)
    assert h.add(TX, r.producer_id, r.producer_epoch, A0) == ErrorCode.none
    h.advance(4_000)
    assert h.meta(TX).state == TxnState.ONGOING and not h.decisions
    h.advance(2_000)  # past start + timeout, at the next abort check
    [decision] = h.decisions
    assert not decision.committed and decision.producer_epoch == r.producer_epoch + 1
    assert h.meta(TX).state == TxnState.PREPARE_ABORT
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.producer_fenced
    h.finish_markers()
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT
    # The producer was fenced: its next InitProducerId (a new instance) goes on from there.
    assert h.init(TX).producer_epoch == r.producer_epoch + 2


def test_idle_transactional_ids_expire() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    h.advance(3_000_000)  # ongoing ids never expire (the timeout aborts them first)
    h.finish_markers()
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT
    h.advance(3_700_000)
    assert TX not in h.shard_of(TX).txns
    assert h.coordinator.describe(TX) == ErrorCode.transactional_id_not_found
    # The tombstone is in the log: a reload does not bring it back.
    again = TxnHarness(logs=h.logs)
    assert TX not in again.shard_of(TX).txns
    assert h.init(TX).producer_id != r.producer_id


def test_not_coordinator_for_a_shard_not_loaded_here() -> None:
    h = TxnHarness()
    h.coordinator.unload_shard(h.coordinator.partition_for(TX))
    box = Box()
    h.coordinator.init_producer_id(TX, 60_000, None, box, h.now_ms)
    assert box.value == ("failed", ErrorCode.not_coordinator)
    assert h.coordinator.verify_partitions(TX, 1, 0, [A0]) == {A0: ErrorCode.not_coordinator}


def test_verify_partitions_answers_per_partition() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.coordinator.verify_partitions(TX, r.producer_id, r.producer_epoch, [A0, A1]) == {
        A0: ErrorCode.none, A1: ErrorCode.invalid_txn_state}


def test_a_new_coordinator_loads_the_same_state_and_finishes_the_decision() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0, B0)
    h.begin("done", A1)
    h.end("done", *_ids(h, "done"), True)
    h.finish_markers()
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none
    assert len(h.decisions) == 1  # the old coordinator dies before writing the markers
    new = TxnHarness(logs=h.logs)
    for txn in (TX, "done"):
        old_meta, new_meta = h.meta(txn), new.meta(txn)
        assert old_meta.transit().to_value() == new_meta.transit().to_value()
    [decision] = new.decisions
    assert decision.committed and decision.partitions == {A0, B0}
    new.finish_markers()
    assert new.meta(TX).state == TxnState.COMPLETE_COMMIT


def _ids(h: TxnHarness, txn: str) -> tuple[int, int]:
    m = h.meta(txn)
    return m.producer_id, m.producer_epoch


def test_decisions_of_a_shard_that_moved_are_dropped() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    log = h.logs[h.coordinator.partition_for(TX)]
    log.auto_commit = False
    box = Box()
    h.coordinator.end_transaction(TX, r.producer_id, r.producer_epoch, False, box, h.now_ms)
    index = h.coordinator.partition_for(TX)
    h.coordinator.unload_shard(index)
    h.coordinator.load_shard(index, log, 1, h.now_ms)  # a new leader epoch
    h.commit_logs()
    assert [d.coordinator_epoch for d in h.decisions] == [1], "only the current epoch's decision"


def test_a_decision_whose_write_expired_is_handed_over_once_committed() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    log = h.logs[h.coordinator.partition_for(TX)]
    log.auto_commit = False
    box = Box()
    h.coordinator.end_transaction(TX, r.producer_id, r.producer_epoch, True, box, h.now_ms)
    h.advance(6_000)  # the write timeout passes: the client is told to retry
    assert box.value == ("failed", ErrorCode.coordinator_not_available)
    assert not h.decisions
    h.commit_logs()  # the record did make it: the shard hands its Prepare state over again
    [decision] = h.decisions
    assert decision.committed


@pytest.mark.parametrize("commit", [True, False])
def test_list_and_describe(commit: bool) -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    h.begin("other", B0)
    h.end("other", *_ids(h, "other"), commit)
    h.finish_markers()
    listed = h.coordinator.list_transactions(None, None, -1, h.now_ms)
    assert [(t.transactional_id, t.state) for t in listed] == [
        ("other", TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT), (TX, TxnState.ONGOING)]
    only = h.coordinator.list_transactions(frozenset({TxnState.ONGOING}), None, -1, h.now_ms)
    assert [t.transactional_id for t in only] == [TX]
    assert h.coordinator.list_transactions(None, frozenset({r.producer_id}), -1, h.now_ms)[0].transactional_id == TX
    h.now_ms += 10_000
    assert [t.transactional_id for t in h.coordinator.list_transactions(
        frozenset({TxnState.ONGOING}), None, 9_000, h.now_ms)] == [TX]
    assert not h.coordinator.list_transactions(frozenset({TxnState.ONGOING}), None, 10_000, h.now_ms)
    d = h.coordinator.describe(TX)
    assert not isinstance(d, ErrorCode)
    assert d.state == TxnState.ONGOING and d.partitions == {A0} and d.timeout_ms == 60_000


def test_records_that_are_not_the_coordinators_are_skipped_at_load() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    index = h.coordinator.partition_for(TX)
    h.logs[index].append(encode_batch([Record(key=b"\x00\x00\x00\x02zz", value=b"garbage"),
                                       Record(key=b"\x00\x07", value=b"x")]), h.now_ms)
    again = TxnHarness(logs=h.logs)
    assert again.meta(TX).state == TxnState.ONGOING
    assert "zz" not in again.shard_of(TX).txns
    assert again.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none


def test_a_failed_complete_write_leaves_the_prepare_state_and_is_retried_alone() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.end(TX, r.producer_id, r.producer_epoch, False) == ErrorCode.none
    [decision] = h.decisions
    log = h.logs[h.coordinator.partition_for(TX)]
    assert isinstance(log, FailingLog)
    log.failures, log.code = 1, ErrorCode.not_enough_replicas
    # The Complete record is refused: the caller hears it, the shard is the log's again.
    assert h.complete(decision).value == ("failed", ErrorCode.coordinator_not_available)
    assert h.meta(TX).state == TxnState.PREPARE_ABORT
    assert h.coordinator.take_decisions() == [], "a refused Complete is no new decision"
    # Retried (the markers are written already): done once the record is committed.
    assert h.complete(decision).value == decision
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT
    # A retry whose first write did make it has nothing to write.
    leo = log.log_end_offset
    assert h.complete(decision).value == decision
    assert log.log_end_offset == leo


def test_a_failed_decision_write_is_not_acted_on() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    log = h.logs[h.coordinator.partition_for(TX)]
    assert isinstance(log, FailingLog)
    log.failures = 1
    box = Box()
    h.coordinator.end_transaction(TX, r.producer_id, r.producer_epoch, True, box, h.now_ms)
    h.settle()
    assert box.value == ("failed", ErrorCode.not_coordinator)
    assert not h.decisions, "no marker for a decision the log does not hold"
    assert h.meta(TX).state == TxnState.ONGOING, "the shard is back at what its log holds"
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none
    assert len(h.decisions) == 1


@pytest.mark.parametrize("refused", ["add", "end"])
def test_a_refused_write_leaves_nothing_in_memory_and_its_retry_writes_again(refused: str) -> None:
    """`__transaction_state` below min ISR refuses a write: the shard must not keep what the
    log does not hold. Before the fix a refused Ongoing record stayed in memory, the retried
    AddPartitionsToTxn was answered NONE with nothing written, KIP-890 verification accepted
    the partition, and a reload (or failover) forgot the transaction."""
    h = TxnHarness()
    r = h.init(TX)
    pid, epoch = r.producer_id, r.producer_epoch
    index = h.coordinator.partition_for(TX)
    log = h.logs[index]
    assert isinstance(log, FailingLog)
    log.code = ErrorCode.not_enough_replicas
    if refused == "end":
        assert h.add(TX, pid, epoch, A0) == ErrorCode.none
    leo = log.log_end_offset
    log.failures = 1
    if refused == "add":
        assert h.add(TX, pid, epoch, A0) == ("failed", ErrorCode.coordinator_not_available)
        assert h.meta(TX).state == TxnState.EMPTY
        assert h.coordinator.verify_partitions(TX, pid, epoch, [A0]) == {A0: ErrorCode.invalid_txn_state}
        assert h.add(TX, pid, epoch, A0) == ErrorCode.none
        assert h.coordinator.verify_partitions(TX, pid, epoch, [A0]) == {A0: ErrorCode.none}
    else:
        assert h.end(TX, pid, epoch, True) == ("failed", ErrorCode.coordinator_not_available)
        assert h.meta(TX).state == TxnState.ONGOING
        assert not h.decisions
        assert h.end(TX, pid, epoch, True) == ErrorCode.none
        [decision] = h.decisions
        assert decision.committed and decision.partitions == {A0}
    assert log.log_end_offset == leo + 1, "the retry wrote its record"
    # What the shard holds is what its log holds: a fresh load agrees.
    h.coordinator.load_shard(index, log, 1, h.now_ms)
    assert h.meta(TX).state == (TxnState.ONGOING if refused == "add" else TxnState.PREPARE_COMMIT)
    assert h.meta(TX).partitions == {A0}
