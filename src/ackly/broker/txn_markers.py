"""Transaction markers on the partitions this broker leads (KIP-98's WriteTxnMarkers append).

Owns: `append_markers`, the one way a COMMIT or ABORT marker enters a partition this broker
leads, for the WriteTxnMarkers handler and for the transaction coordinator of this broker
alike; and `DelayedMarkers`, the wait until every marker is committed.

Per partition of each marker (Kafka's ReplicaManager.appendRecords with requiredAcks=-1 and
AppendOrigin.COORDINATOR, as KafkaApis.handleWriteTxnMarkersRequest calls it):
- one control batch, Kafka's EndTransactionMarker (producer id and epoch, control and
  transactional flags, the coordinator epoch in its value), appended as the leader;
- the producer state ends the producer's transaction there; a marker whose producer epoch is
  older than the producer's is refused (INVALID_PRODUCER_EPOCH), a newer one fences (becomes
  the producer's epoch); a marker of transaction version 2 must be strictly newer than the
  producer's epoch there (its Prepare record bumped the epoch past the transaction's data), so
  a marker retried after the next transaction wrote here cannot end that one (Kafka's
  ProducerAppendInfo.checkProducerEpoch with TV2); an ABORT goes to the aborted-transaction index; the LSO moves once HW
  passes the marker;
- the answer for that partition is NONE once HW passes the marker (and the flush policy
  allows), else the append's error (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
  NOT_ENOUGH_REPLICAS, KAFKA_STORAGE_ERROR, ...), NOT_ENOUGH_REPLICAS_AFTER_APPEND or
  NOT_LEADER_OR_FOLLOWER if things changed while waiting, REQUEST_TIMED_OUT at the deadline;
- once a marker on a `__consumer_offsets` partition is committed, the group coordinator turns
  that producer's pending transactional offsets into committed offsets or drops them
  (Kafka's GroupCoordinator.onTransactionCompleted, called after the marker write completes).

`done` runs exactly once per call, with a code for every partition of every marker, possibly
before `append_markers` returns. Deterministic: time comes in as `now_ms`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.coordinator.group_coordinator import OFFSETS_TOPIC
from ackly.errors import ErrorCode, KafkaError
from ackly.log.producer_state import AppendOrigin
from ackly.protocol.record_codec import ControlType, encode_control_batch
from ackly.protocol.records import validate_batches
from ackly.replication.purgatory import DelayedOperation
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode
    from ackly.replication.partition import Partition

MarkersDone = Callable[[dict[TopicPartition, ErrorCode]], None]


@dataclass(frozen=True)
class TxnMarker:
    """One transaction's outcome to write on some partitions (WriteTxnMarkers' marker)."""

    producer_id: int
    producer_epoch: int
    committed: bool
    coordinator_epoch: int
    partitions: tuple[TopicPartition, ...]
    transaction_version: int = 0  # 2: the epoch was bumped for the marker (KIP-890 part 2)


@dataclass
class _Waiting:
    partition: Partition
    marker: TxnMarker
    last_offset: int
    leader_epoch: int


class DelayedMarkers(DelayedOperation):
    """Markers appended and waiting for HW (Kafka's DelayedProduce for the marker append)."""

    def __init__(
        self, node: BrokerNode, deadline_ms: int, results: dict[TopicPartition, ErrorCode],
        waiting: list[_Waiting], done: MarkersDone,
    ) -> None:
        super().__init__(deadline_ms)
        self.node = node
        self.results = results
        self.waiting = waiting
        self.done = done
        # `done` runs once even if a callback it triggers re-checks this partition's waiters
        # before the purgatory has marked this operation completed.
        self._finished = False

    def _status(self, w: _Waiting) -> ErrorCode | None:
        p = w.partition
        if p.leader_epoch != w.leader_epoch or not p.is_leader:
            return ErrorCode.not_leader_or_follower
        return p.produce_status(w.last_offset, -1)

    def try_complete(self, now_ms: int) -> bool:
        if self._finished:
            return True
        still: list[_Waiting] = []
        for w in self.waiting:
            code = self._status(w)
            if code is None:
                still.append(w)
            else:
                self._settle(w, code, now_ms)
        self.waiting = still
        if still:
            return False
        self._finish()
        return True

    def on_expire(self, now_ms: int) -> None:
        if self._finished:
            return
        for w in self.waiting:
            code = self._status(w)
            self._settle(w, ErrorCode.request_timed_out if code is None else code, now_ms)
        self.waiting = []
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        self.done(self.results)

    def _settle(self, w: _Waiting, code: ErrorCode, now_ms: int) -> None:
        tp = w.partition.tp
        self.results[tp] = code
        if code == ErrorCode.none and tp.topic == OFFSETS_TOPIC:
            self.node.group_coordinator.complete_transaction(
                tp.partition, w.marker.producer_id, w.marker.committed, now_ms
            )


def _check_bumped_epoch(p: Partition, marker: TxnMarker) -> None:
    """Transaction version 2: the marker's epoch is newer than any this producer wrote here."""
    if marker.transaction_version < 2:
        return
    entry = p.log.producer_state.get(marker.producer_id)
    if entry is not None and marker.producer_epoch <= entry.epoch:
        raise KafkaError(
            ErrorCode.invalid_producer_epoch,
            f"marker of producer {marker.producer_id} epoch {marker.producer_epoch} is not newer "
            f"than its epoch {entry.epoch} on {p.tp}",
        )


def append_markers(
    node: BrokerNode, markers: Sequence[TxnMarker], now_ms: int, done: MarkersDone
) -> None:
    """Append each marker to each of its partitions (led here) and call `done` once they are
    all committed or failed (see the module docstring)."""
    results: dict[TopicPartition, ErrorCode] = {}
    waiting: list[_Waiting] = []
    for marker in markers:
        kind = ControlType.COMMIT if marker.committed else ControlType.ABORT
        for tp in marker.partitions:
            try:
                p = node.leader_partition(tp.topic, tp.partition)
                _check_bumped_epoch(p, marker)
                batch = bytearray(encode_control_batch(
                    kind, producer_id=marker.producer_id, producer_epoch=marker.producer_epoch,
                    coordinator_epoch=marker.coordinator_epoch, now_ms=node.wall_clock(now_ms),
                ))
                headers = validate_batches(batch, len(batch))
                result = p.append_as_leader(
                    batch, headers, -1, now_ms, origin=AppendOrigin.COORDINATOR
                )
                node.after_append(p, now_ms)
                waiting.append(_Waiting(p, marker, result.last_offset, p.leader_epoch))
            except KafkaError as exc:
                results[tp] = exc.code
    # The marker append waits request.timeout.ms, as in KafkaApis.handleWriteTxnMarkersRequest.
    deadline_ms = now_ms + int(node.config.get("request.timeout.ms"))
    op = DelayedMarkers(node, deadline_ms, results, waiting, done)
    node.purgatory.try_or_watch(op, {w.partition.tp for w in waiting}, now_ms)
