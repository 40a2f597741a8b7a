"""The marker channel (broker/txn_marker_channel.py) against a transaction coordinator on
in-memory logs: markers to a partition led by another broker go out as WriteTxnMarkers
requests, answered by the test; then the Complete record.

The case the channel must survive: `__transaction_state` below min.insync.replicas refuses the
Complete record. The markers are written already, so only the Complete record is retried, after
a backoff; the decision handed over again meanwhile changes nothing. (Before, the channel
dropped its entry when it asked for the Complete record, the refusal reloaded the shard, the
reload handed the Prepare state over as a new decision and every marker was written again, at
once, round after round.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tests.unit.coordinator.txn_helpers import FailingLog, TxnHarness

from ackly.broker.io import PeerRequest
from ackly.broker.txn_marker_channel import RETRY_BACKOFF_INITIAL_MS, MarkerChannel
from ackly.coordinator.transaction_metadata import TxnState
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

TX = "tx"
A0 = TopicPartition("a", 0)
LOCAL, REMOTE = 1, 2


class _Metadata:
    def partition(self, tp: TopicPartition) -> Any:
        return SimpleNamespace(leader=REMOTE)


class _Node:
    """What the channel uses of a BrokerNode when every data partition is led elsewhere."""

    def __init__(self) -> None:
        self.broker_id = LOCAL
        self.metadata = _Metadata()
        self._next = 0

    def new_request_id(self) -> int:
        self._next += 1
        return self._next


def _answer(channel: MarkerChannel, request: PeerRequest, code: ErrorCode, now_ms: int) -> None:
    markers = request.request.markers
    response = SimpleNamespace(markers=[SimpleNamespace(topics=[
        SimpleNamespace(name=t.name, partitions=[
            SimpleNamespace(partition_index=p, error_code=code) for p in t.partition_indexes])
        for t in m.topics]) for m in markers])
    channel.on_response(request.request_id, response, now_ms)


def _poll(h: TxnHarness, channel: MarkerChannel) -> list[PeerRequest]:
    """One round of TransactionsBroker.poll: decisions (again) to the channel, then its poll."""
    out: list[PeerRequest] = []
    for _ in range(10):
        h.settle()
        for decision in h.decisions:
            channel.add(decision)
        h.decisions.clear()
        before = len(channel)
        channel.poll(h.now_ms, out)
        h.settle()
        if not h.decisions and len(channel) == before:
            break
    return out


def test_a_refused_complete_record_is_retried_after_a_backoff_without_new_markers() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.end(TX, r.producer_id, r.producer_epoch, True) == ErrorCode.none
    channel = MarkerChannel(cast(Any, _Node()), h.coordinator)
    [request] = _poll(h, channel)
    log = h.logs[h.coordinator.partition_for(TX)]
    assert isinstance(log, FailingLog)
    log.failures, log.code = 1, ErrorCode.not_enough_replicas
    leo = log.log_end_offset
    _answer(channel, request, ErrorCode.none, h.now_ms)
    # The marker is written; the Complete record is refused and the shard is its log's again.
    assert _poll(h, channel) == [], "no marker is written twice"
    assert h.meta(TX).state == TxnState.PREPARE_COMMIT
    assert log.log_end_offset == leo
    assert len(channel) == 1, "the decision waits for its Complete record"
    # Nothing is retried before the backoff: not a marker, not the Complete record.
    for _ in range(3):
        assert _poll(h, channel) == []
    assert log.log_end_offset == leo
    due = channel.next_deadline_ms()
    assert due == h.now_ms + RETRY_BACKOFF_INITIAL_MS
    # A failed decision write on the shard hands the Prepare state over again: the same
    # decision, already here.
    h.coordinator.resend_decisions(h.coordinator.partition_for(TX), h.now_ms)
    assert _poll(h, channel) == []
    h.now_ms = due
    assert _poll(h, channel) == [], "the retry writes the Complete record only"
    assert h.meta(TX).state == TxnState.COMPLETE_COMMIT
    assert log.log_end_offset == leo + 1
    assert len(channel) == 0 and channel.next_deadline_ms() is None


def test_a_complete_record_refused_again_backs_off_further() -> None:
    h = TxnHarness()
    r = h.begin(TX, A0)
    assert h.end(TX, r.producer_id, r.producer_epoch, False) == ErrorCode.none
    channel = MarkerChannel(cast(Any, _Node()), h.coordinator)
    [request] = _poll(h, channel)
    log = h.logs[h.coordinator.partition_for(TX)]
    assert isinstance(log, FailingLog)
    log.failures, log.code = 3, ErrorCode.not_enough_replicas
    _answer(channel, request, ErrorCode.none, h.now_ms)
    attempts = []
    for _ in range(4):
        assert _poll(h, channel) == []
        due = channel.next_deadline_ms()
        if due is None:
            break
        attempts.append(due - h.now_ms)
        h.now_ms = due
    assert attempts == [100, 200, 400], attempts
    assert h.meta(TX).state == TxnState.COMPLETE_ABORT and len(channel) == 0
