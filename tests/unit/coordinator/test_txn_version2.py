"""Transaction version 2 (KIP-890 part 2) in the coordinator, with a virtual clock and in-memory
logs: the epoch bumped at each transaction end and answered, retries recognised by the epoch
before, a delayed EndTxn of the transaction before fenced, the move to the next producer id
when the epoch runs out, the abort with no partition, the v1 record fields across a failover."""

from __future__ import annotations

from tests.unit.coordinator.helpers import Box
from tests.unit.coordinator.txn_helpers import TxnHarness

from ackly.coordinator.transaction_metadata import EPOCH_EXHAUSTED, MAX_EPOCH, TV_2, TxnState
from ackly.coordinator.transaction_state import EndTxnResult
from ackly.coordinator.txn_records import decode_value
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import decode_batch
from ackly.types import TopicPartition

A0, B0 = TopicPartition("a", 0), TopicPartition("b", 0)
TX = "tx"
E = ErrorCode


def end2(h: TxnHarness, pid: int, epoch: int, commit: bool) -> EndTxnResult:
    box = Box()
    h.coordinator.end_transaction_versioned(TX, pid, epoch, commit, TV_2, box, h.now_ms)
    h.settle()
    return box.value  # type: ignore[no-any-return]


def add2(h: TxnHarness, pid: int, epoch: int, *parts: TopicPartition) -> ErrorCode:
    box = Box()
    h.coordinator.add_partitions(TX, pid, epoch, parts, box, h.now_ms, transaction_version=TV_2)
    h.settle()
    return box.value  # type: ignore[no-any-return]


def test_each_transaction_end_bumps_the_epoch_and_the_markers_carry_it() -> None:
    h = TxnHarness()
    r = h.init(TX)
    pid, epoch = r.producer_id, r.producer_epoch
    for commit in (True, False, True):
        assert add2(h, pid, epoch, A0, B0) == E.none
        assert h.meta(TX).client_transaction_version == TV_2
        answer = end2(h, pid, epoch, commit)
        assert answer == EndTxnResult(E.none, pid, epoch + 1)
        [decision] = h.finish_markers()
        assert (decision.producer_id, decision.producer_epoch, decision.committed) == (pid, epoch + 1, commit)
        assert decision.transaction_version == TV_2
        meta = h.meta(TX)
        assert meta.state == (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT)
        assert (meta.producer_epoch, meta.last_producer_epoch) == (epoch + 1, epoch)
        epoch += 1


def test_a_retry_is_answered_again_and_a_delayed_end_of_the_previous_transaction_is_fenced() -> None:
    h = TxnHarness()
    r = h.init(TX)
    pid, e = r.producer_id, r.producer_epoch
    assert add2(h, pid, e, A0) == E.none
    assert end2(h, pid, e, True) == EndTxnResult(E.none, pid, e + 1)
    # While the markers are written: the same request again is a retry (concurrent).
    assert end2(h, pid, e, True).error == E.concurrent_transactions
    assert end2(h, pid, e, False).error == E.invalid_txn_state
    assert end2(h, pid, e + 1, True).error == E.producer_fenced, "no epoch but the one before"
    h.finish_markers()
    # Completed: the retry gets the same answer; the other outcome is refused.
    assert end2(h, pid, e, True) == EndTxnResult(E.none, pid, e + 1)
    assert end2(h, pid, e, False).error == E.invalid_txn_state
    # The next transaction begins with the new epoch; the old EndTxn arrives late: fenced,
    # whichever outcome it asks, and the next transaction is untouched.
    assert add2(h, pid, e + 1, B0) == E.none
    assert end2(h, pid, e, True).error == E.producer_fenced
    assert end2(h, pid, e, False).error == E.producer_fenced
    assert add2(h, pid, e, A0) == E.producer_fenced, "a delayed produce's add is fenced too"
    meta = h.meta(TX)
    assert meta.state == TxnState.ONGOING and meta.partitions == {B0} and meta.producer_epoch == e + 1
    assert not h.decisions
    assert end2(h, pid, e + 1, False) == EndTxnResult(E.none, pid, e + 2)
    [decision] = h.finish_markers()
    assert decision.partitions == {B0} and not decision.committed


def test_an_abort_with_no_partition_bumps_the_epoch_and_a_commit_is_refused() -> None:
    h = TxnHarness()
    r = h.init(TX)
    pid, e = r.producer_id, r.producer_epoch
    assert end2(h, pid, e, True).error == E.invalid_txn_state
    assert end2(h, pid, e, False) == EndTxnResult(E.none, pid, e + 1)
    [decision] = h.finish_markers()
    assert not decision.partitions and not decision.committed
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT
    # After a completed commit, an abort in the new epoch is an empty abort too.
    assert add2(h, pid, e + 1, A0) == E.none
    assert end2(h, pid, e + 1, True) == EndTxnResult(E.none, pid, e + 2)
    h.finish_markers()
    assert end2(h, pid, e + 2, False) == EndTxnResult(E.none, pid, e + 3)


def test_the_last_epoch_moves_the_transactional_id_to_the_next_producer_id() -> None:
    h = TxnHarness()
    r = h.init(TX)
    pid = r.producer_id
    meta = h.meta(TX)
    meta.producer_epoch = EPOCH_EXHAUSTED  # as if many transactions had run
    assert add2(h, pid, EPOCH_EXHAUSTED, A0) == E.none
    answer = end2(h, pid, EPOCH_EXHAUSTED, True)
    assert answer.error == E.none and answer.producer_id != pid and answer.producer_epoch == 0
    new_pid = answer.producer_id
    assert h.meta(TX).next_producer_id == new_pid
    [decision] = h.finish_markers()
    # The markers close the old id's transaction with its bumped (last) epoch.
    assert (decision.producer_id, decision.producer_epoch) == (pid, MAX_EPOCH)
    meta = h.meta(TX)
    assert (meta.producer_id, meta.producer_epoch, meta.previous_producer_id) == (new_pid, 0, pid)
    assert meta.next_producer_id == -1
    # A retry with the old id and its last epoch is recognised and answered with the new id.
    assert end2(h, pid, EPOCH_EXHAUSTED, True) == EndTxnResult(E.none, new_pid, 0)
    assert end2(h, pid, 3, True).error == E.invalid_producer_id_mapping
    assert add2(h, new_pid, 0, A0) == E.none


def test_the_version_2_fields_survive_a_failover() -> None:
    h = TxnHarness()
    r = h.init(TX)
    pid = r.producer_id
    h.meta(TX).producer_epoch = EPOCH_EXHAUSTED
    assert add2(h, pid, EPOCH_EXHAUSTED, A0) == E.none
    new_pid = end2(h, pid, EPOCH_EXHAUSTED, True).producer_id
    # The Prepare record is value v1 with the next producer id and the client's version.
    log = h.logs[h.coordinator.partition_for(TX)]
    batches = list(log.read_batches(0))
    _, records = decode_batch(batches[-1])
    assert records[-1].value is not None and records[-1].value[:2] == b"\x00\x01"
    value = decode_value(records[-1].value)
    assert (value.next_producer_id, value.client_transaction_version) == (new_pid, TV_2)
    # A new coordinator loads the Prepare state and finishes it: the next id comes with it.
    again = TxnHarness(logs=h.logs)
    [decision] = again.decisions
    assert (decision.producer_id, decision.producer_epoch, decision.transaction_version) == (pid, MAX_EPOCH, TV_2)
    meta = again.meta(TX)
    assert (meta.next_producer_id, meta.client_transaction_version) == (new_pid, TV_2)
    assert meta.last_producer_epoch == EPOCH_EXHAUSTED
    again.finish_markers()
    meta = again.meta(TX)
    assert (meta.producer_id, meta.producer_epoch, meta.previous_producer_id) == (new_pid, 0, pid)
    # And once more after the Complete record: the retry of the old EndTxn still works.
    third = TxnHarness(logs=again.logs)
    meta = third.meta(TX)
    assert (meta.producer_id, meta.previous_producer_id, meta.client_transaction_version) == (new_pid, pid, TV_2)
    assert meta.last_producer_epoch == EPOCH_EXHAUSTED
    assert end2(third, pid, EPOCH_EXHAUSTED, True) == EndTxnResult(E.none, new_pid, 0)


def test_a_timed_out_version_2_transaction_is_fenced_past_its_epoch() -> None:
    h = TxnHarness()
    r = h.init(TX, timeout_ms=5_000)
    pid, e = r.producer_id, r.producer_epoch
    assert add2(h, pid, e, A0) == E.none
    h.advance(7_000)
    [decision] = h.finish_markers()
    assert not decision.committed and decision.producer_epoch > e + 1, "fence, then the version 2 bump"
    assert end2(h, pid, e, False).error == E.producer_fenced, "the timed-out producer is fenced"


def test_a_client_before_version_2_keeps_its_epoch() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == E.none
    [decision] = h.finish_markers()
    assert decision.producer_epoch == r.producer_epoch and decision.transaction_version == 0
    assert h.meta(TX).producer_epoch == r.producer_epoch


def test_value_v1_bytes_are_kafkas_schema() -> None:
    """TransactionLogValue v1 (flexible) laid out field by field from Kafka's schema: compact
    array and strings, empty tagged-field sections, then the tagged fields set (sorted)."""
    from ackly.coordinator.txn_records import TransactionLogValue, encode_value

    value = TransactionLogValue(producer_id=77, producer_epoch=9, timeout_ms=60_000, status=2,
                                partitions=(TopicPartition("t", 0), TopicPartition("t", 1)),
                                last_update_ms=1_000, start_ms=900, previous_producer_id=5,
                                client_transaction_version=2)
    golden = bytes.fromhex(
        "0001"                                  # version 1
        "000000000000004d" "0009" "0000ea60"    # producer id, epoch, timeout
        "02"                                    # status PrepareCommit
        "02" "0274" "03" "00000000" "00000001" "00"  # [t: [0, 1]], no partition tags
        "00000000000003e8" "0000000000000384"   # last update, start
        "02" "00" "08" "0000000000000005" "02" "02" "0002"  # tags 0 and 2
    )
    assert encode_value(value, empty=False) == golden
    assert decode_value(golden) == value
    # v0 fields only: still value v0, as every client before version 2 writes it.
    plain = TransactionLogValue(77, 9, 60_000, 0, (), 1_000, -1)
    assert encode_value(plain, empty=True)[:2] == b"\x00\x00"
    empty_v1 = TransactionLogValue(77, 9, 60_000, 0, (), 1_000, -1, client_transaction_version=2)
    data = encode_value(empty_v1, empty=True)
    assert data[:2] == b"\x00\x01" and data[17] == 0, "Empty's partitions are a null compact array"
    assert decode_value(data) == empty_v1
