"""Transaction markers from this broker's transaction coordinator to every partition of a
decided transaction (Kafka's TransactionMarkerChannelManager and its completion handler).

Owns: the decisions whose markers are not all written yet, per transactional id, and the
WriteTxnMarkers requests in flight for them.

For each decision (a committed PrepareCommit / PrepareAbort, coordinator/transaction_state.py)
every partition gets its marker: partitions this broker leads through `append_markers`
(broker/txn_markers.py), the others by a WriteTxnMarkers v1 request to their leader on the
"txn" peer channel (so a marker never queues behind a long-polling replica fetch), carrying
the coordinator epoch, the leader epoch of the `__transaction_state` partition (v2, with the
transaction version, for a transaction of version 2). A partition's
answer:
- NONE: its marker is written and committed; done;
- INVALID_PRODUCER_EPOCH: the partition already has a newer epoch of this producer, which only
  a later transaction of the same id can have written after this one ended: done (logged);
- TRANSACTION_COORDINATOR_FENCED: a newer coordinator owns the id; stop (it resends);
- anything else (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS,
  REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, a lost connection): retried after a backoff
  (100 ms doubling to 2 s), sent again to whoever leads the partition then.
A partition whose topic is gone from the metadata needs no marker. Once no partition is left,
the coordinator writes the Complete record; the decision stays here until that record is
committed. If the write fails (refused while `__transaction_state` is below min ISR, or not
committed in time), the Complete record alone is retried after the same backoff: the markers
are not written again (Kafka's TransactionMarkerChannelManager retries the log append). A
decision handed over again while it is here (the coordinator resends its Prepare states after
a failed decision write) is the same decision and changes nothing: the partitions already
written stay written.

EndTxn answers held for offsets (`hold_for_offsets`): an EndTxn whose transaction carries
consumer group offsets (a `__consumer_offsets` partition among its partitions) is answered only
once that partition's marker is written, so an OffsetFetch sent after the answer shows the
transaction's offsets (a client that does not ask for stable offsets, KIP-447, would otherwise
see the old ones until the marker lands). The hold is bounded: it ends when the decision leaves
the channel (completed, dropped, fenced) or after `OFFSETS_HOLD_MAX_MS`, when EndTxn is answered
all the same (the decision is committed: its outcome stands, only its visibility lags).

Invariants: a decision is dropped as soon as its shard is no longer loaded in the epoch that
decided it (its new coordinator resends the markers after loading) or once its Complete record
is committed; a partition is in flight at most once per decision, and its marker is written
at most once per decision unless its answer was lost; at most one Complete write per decision
is in flight, and a failed one is retried only after a backoff; every loop is bounded by the
partitions of the pending decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ackly.broker.io import PeerRequest
from ackly.broker.txn_markers import MarkersDone, TxnMarker, append_markers
from ackly.cluster.metadata import NO_LEADER
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC
from ackly.coordinator.transaction_state import Decision
from ackly.errors import ErrorCode
from ackly.protocol.messages import build_request
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode
    from ackly.coordinator.transaction_coordinator import TransactionCoordinator

log = logging.getLogger("ackly.transactions")

WRITE_TXN_MARKERS_KEY = 27
WRITE_TXN_MARKERS_VERSION = 1
WRITE_TXN_MARKERS_TV2_VERSION = 2  # carries the transaction version
TXN_CHANNEL = "txn"
RETRY_BACKOFF_INITIAL_MS = 100
RETRY_BACKOFF_MAX_MS = 2_000
# The longest an EndTxn answer waits for the marker on a __consumer_offsets partition.
OFFSETS_HOLD_MAX_MS = 5_000


@dataclass
class _Hold:
    """An EndTxn answer waiting for the markers on the offsets partitions of its decision."""

    transactional_id: str
    release: Callable[[], None]
    deadline_ms: int | None = None  # set by the first `poll` that sees it


@dataclass
class _Pending:
    decision: Decision
    remaining: set[TopicPartition]
    in_flight: set[TopicPartition] = field(default_factory=set)
    retry_at_ms: dict[TopicPartition, int] = field(default_factory=dict)
    failures: dict[TopicPartition, int] = field(default_factory=dict)
    fenced: bool = False
    # The Complete record: being written (waiting for its outcome), and when a failed write
    # may be retried.
    completing: bool = False
    complete_at_ms: int = 0
    complete_failures: int = 0


class MarkerChannel:
    def __init__(self, node: BrokerNode, coordinator: TransactionCoordinator) -> None:
        self.node = node
        self.coordinator = coordinator
        self._pending: dict[str, _Pending] = {}
        self._requests: dict[int, tuple[_Pending, tuple[TopicPartition, ...]]] = {}
        self._now_ms = 0
        self._holds: list[_Hold] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, decision: Decision) -> None:
        current = self._pending.get(decision.transactional_id)
        if current is not None and current.decision == decision:
            return  # already here (handed over again after a failed decision write)
        self._pending[decision.transactional_id] = _Pending(decision, set(decision.partitions))

    def owns(self, request_id: int) -> bool:
        return request_id in self._requests

    # --- EndTxn answers held for offsets ---------------------------------------------------

    def hold_for_offsets(self, transactional_id: str, release: Callable[[], None]) -> None:
        """Call `release` once the decision of `transactional_id` has no marker left to write
        on a `__consumer_offsets` partition (at once if it has none), or at the latest after
        OFFSETS_HOLD_MAX_MS. Called when the decision is committed: it is in the channel or
        about to be handed to it (`poll` takes the coordinator's decisions first)."""
        self._holds.append(_Hold(transactional_id, release))

    def _offsets_outstanding(self, transactional_id: str) -> bool:
        pending = self._pending.get(transactional_id)
        if pending is None or pending.fenced or not self.coordinator.is_current(pending.decision):
            return False
        return any(tp.topic == OFFSETS_TOPIC for tp in pending.remaining | pending.in_flight)

    def _release_holds(self, now_ms: int) -> None:
        if not self._holds:
            return
        still: list[_Hold] = []
        due: list[_Hold] = []
        for hold in self._holds:
            if hold.deadline_ms is None:
                hold.deadline_ms = now_ms + OFFSETS_HOLD_MAX_MS
            if hold.deadline_ms > now_ms and self._offsets_outstanding(hold.transactional_id):
                still.append(hold)
            else:
                due.append(hold)
        self._holds = still
        for hold in due:
            if hold.deadline_ms is not None and hold.deadline_ms <= now_ms:
                log.warning("EndTxn of %r answered before the marker on its offsets partition was "
                            "written (%d ms)", hold.transactional_id, OFFSETS_HOLD_MAX_MS)
            hold.release()

    # --- sending ---------------------------------------------------------------------------

    def poll(self, now_ms: int, out: list[PeerRequest]) -> None:
        """Send what is due; write the Complete record of every finished decision."""
        self._now_ms = now_ms
        for txn_id, pending in list(self._pending.items()):
            if pending.fenced or not self.coordinator.is_current(pending.decision):
                del self._pending[txn_id]
                continue
            if pending.completing:
                continue
            self._send_due(pending, now_ms, out)
            if not pending.remaining and not pending.in_flight and pending.complete_at_ms <= now_ms:
                pending.completing = True
                self.coordinator.complete(pending.decision, now_ms, _Completion(self, pending))
        self._release_holds(now_ms)

    def _send_due(self, pending: _Pending, now_ms: int, out: list[PeerRequest]) -> None:
        by_leader: dict[int, list[TopicPartition]] = {}
        metadata = self.node.metadata
        for tp in sorted(pending.remaining - pending.in_flight):
            if pending.retry_at_ms.get(tp, 0) > now_ms:
                continue
            state = metadata.partition(tp)
            if state is None:
                log.info("marker for %s not needed: the partition is gone", tp)
                pending.remaining.discard(tp)
                continue
            if state.leader == NO_LEADER:
                self._backoff(pending, tp)
                continue
            by_leader.setdefault(state.leader, []).append(tp)
        d = pending.decision
        for leader, tps in by_leader.items():
            batch = tuple(tps)
            pending.in_flight.update(batch)
            if leader == self.node.broker_id:
                marker = TxnMarker(d.producer_id, d.producer_epoch, d.committed, d.coordinator_epoch, batch,
                                   d.transaction_version)
                append_markers(self.node, [marker], now_ms, self._local_done(pending, batch))
                continue
            request_id = self.node.new_request_id()
            self._requests[request_id] = (pending, batch)
            out.append(PeerRequest(request_id, leader, self._request(d, batch), channel=TXN_CHANNEL))

    def _local_done(self, pending: _Pending, batch: tuple[TopicPartition, ...]) -> MarkersDone:
        def done(codes: dict[TopicPartition, ErrorCode]) -> None:
            self._on_results(pending, batch, codes)

        return done

    @staticmethod
    def _request(d: Decision, partitions: Iterable[TopicPartition]) -> Any:
        topics: dict[str, list[int]] = {}
        for tp in partitions:
            topics.setdefault(tp.topic, []).append(tp.partition)
        marker: dict[str, Any] = {
            "producer_id": d.producer_id, "producer_epoch": d.producer_epoch,
            "transaction_result": d.committed, "coordinator_epoch": d.coordinator_epoch,
            "topics": [{"name": t, "partition_indexes": ids} for t, ids in topics.items()],
        }
        version = WRITE_TXN_MARKERS_VERSION
        if d.transaction_version >= 2:
            version = WRITE_TXN_MARKERS_TV2_VERSION
            marker["transaction_version"] = d.transaction_version
        return build_request(WRITE_TXN_MARKERS_KEY, version, {"markers": [marker]})

    # --- outcomes --------------------------------------------------------------------------

    def on_response(self, request_id: int, response: Any, now_ms: int) -> None:
        pending, batch = self._requests.pop(request_id)
        self._now_ms = now_ms
        codes: dict[TopicPartition, ErrorCode] = {}
        for marker in getattr(response, "markers", ()):
            for topic in marker.topics:
                for part in topic.partitions:
                    codes[TopicPartition(topic.name, int(part.partition_index))] = ErrorCode(part.error_code)
        self._on_results(pending, batch, codes)

    def on_failure(self, request_id: int, reason: str, now_ms: int) -> None:
        pending, batch = self._requests.pop(request_id)
        self._now_ms = now_ms
        log.info("WriteTxnMarkers for %r failed (%s); retrying", pending.decision.transactional_id, reason)
        self._on_results(pending, batch, {})

    def _on_results(self, pending: _Pending, batch: tuple[TopicPartition, ...],
                    codes: dict[TopicPartition, ErrorCode]) -> None:
        txn_id = pending.decision.transactional_id
        for tp in batch:
            pending.in_flight.discard(tp)
            code = codes.get(tp, ErrorCode.request_timed_out)
            if code == ErrorCode.none:
                pending.remaining.discard(tp)
            elif code == ErrorCode.invalid_producer_epoch:
                log.warning("marker for %r on %s refused: the partition has a newer producer epoch",
                            txn_id, tp)
                pending.remaining.discard(tp)
            elif code == ErrorCode.transaction_coordinator_fenced:
                log.warning("marker for %r on %s: this coordinator is fenced; stopping", txn_id, tp)
                pending.fenced = True
            else:
                log.info("marker for %r on %s: %s; retrying", txn_id, tp, code.name)
                self._backoff(pending, tp)

    def _backoff(self, pending: _Pending, tp: TopicPartition) -> None:
        failures = pending.failures.get(tp, 0)
        pending.failures[tp] = failures + 1
        pending.retry_at_ms[tp] = self._now_ms + _backoff_ms(failures)

    def _on_completed(self, pending: _Pending) -> None:
        txn_id = pending.decision.transactional_id
        if self._pending.get(txn_id) is pending:
            del self._pending[txn_id]

    def _on_complete_failed(self, pending: _Pending, code: ErrorCode) -> None:
        pending.completing = False
        pending.complete_at_ms = self._now_ms + _backoff_ms(pending.complete_failures)
        pending.complete_failures += 1
        log.info("Complete record of %r not written (%s); retrying at %d",
                 pending.decision.transactional_id, code.name, pending.complete_at_ms)

    def next_deadline_ms(self) -> int | None:
        due = [at for p in self._pending.values() for tp, at in p.retry_at_ms.items()
               if tp in p.remaining and tp not in p.in_flight]
        due.extend(p.complete_at_ms for p in self._pending.values()
                   if not p.completing and not p.remaining and not p.in_flight and p.complete_at_ms)
        due.extend(h.deadline_ms for h in self._holds if h.deadline_ms is not None)
        return min(due) if due else None


def _backoff_ms(failures: int) -> int:
    return min(RETRY_BACKOFF_INITIAL_MS << min(failures, 8), RETRY_BACKOFF_MAX_MS)


class _Completion:
    """Hears the outcome of one decision's Complete record (a coordinator `Waiter`)."""

    def __init__(self, channel: MarkerChannel, pending: _Pending) -> None:
        self.channel = channel
        self.pending = pending

    def complete(self, result: Decision) -> None:
        self.channel._on_completed(self.pending)

    def fail(self, code: ErrorCode) -> None:
        self.channel._on_complete_failed(self.pending, code)
