"""Produce (key 0): validate batches, append them, answer when acks and flush.policy allow.

Per partition (DESIGN.md s.3): check the topic exists and the batches' framing, magic and
CRC (records are not decoded); patch base offsets and append the bytes as they came. Batches
of idempotent producers are checked against the partition's producer state first (epoch,
sequence: log/producer_state.py), all before any is written; a retry of batches already in
the log writes nothing and is answered with their original base offset, once they are as
durable and committed as a new append would have to be. The answer waits in purgatory
(DelayedProduce) until every appended partition is durable per its flush.policy and, for
acks=all, below HW; on timeout the unfinished partitions get
REQUEST_TIMED_OUT, which is indeterminate for the client: the write may still surface.
acks=0 gets no answer at all.

In a cluster (GUARANTEES.md rules 7-10, 14): only the leader appends (NOT_LEADER_OR_FOLLOWER
elsewhere); acks=all is refused before the append with NOT_ENOUGH_REPLICAS while the ISR is
below min.insync.replicas, and answered NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank
below it by the time HW passed the batch; a leader that loses its leadership (or its epoch)
while a produce waits answers NOT_LEADER_OR_FOLLOWER (Partition.produce_status). The last two
are indeterminate: an idempotent producer's retry is recognised as a duplicate if the write
did survive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.faults import ACK_BEFORE_REPLICATION
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.produce_codec import PartitionProduceResult, encode_produce_response
from ackly.protocol.records import validate_batches
from ackly.replication.partition import Partition
from ackly.replication.purgatory import DelayedOperation

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 0
MIN_VERSION = 3  # record batch v2 only; librdkafka needs v3 to use it
MAX_VERSION = 11


@dataclass
class _Pending:
    """One appended partition whose answer is not yet allowed."""

    partition: Partition
    last_offset: int
    slot: int  # index into the results list
    leader_epoch: int  # the epoch it was appended in: HW means nothing for it in another

    def status(self, acks: int) -> ErrorCode | None:
        """None while it must wait; else the code to answer (NONE: success)."""
        p = self.partition
        if p.leader_epoch != self.leader_epoch or not p.is_leader:
            return ErrorCode.not_leader_or_follower
        return p.produce_status(self.last_offset, acks)


class DelayedProduce(DelayedOperation):
    def __init__(
        self,
        ctx: RequestContext,
        acks: int,
        deadline_ms: int,
        topics: list[tuple[str, list[PartitionProduceResult]]],
        pending: list[_Pending],
    ) -> None:
        super().__init__(deadline_ms)
        self.ctx = ctx
        self.acks = acks
        self.topics = topics
        self.pending = pending

    def try_complete(self, now_ms: int) -> bool:
        waiting = []
        for w in self.pending:
            code = w.status(self.acks)
            if code is None:
                waiting.append(w)
            elif code != ErrorCode.none:
                self._set_error(w.slot, code)
        self.pending = waiting
        if self.pending:
            return False
        self._answer()
        return True

    def on_expire(self, now_ms: int) -> None:
        for w in self.pending:
            code = w.status(self.acks)
            if code != ErrorCode.none:
                self._set_error(w.slot, code if code is not None else ErrorCode.request_timed_out)
        self._answer()

    def _set_error(self, slot: int, code: ErrorCode) -> None:
        flat = [r for _, results in self.topics for r in results]
        target = flat[slot]
        for _, results in self.topics:
            for i, r in enumerate(results):
                if r is target:
                    results[i] = PartitionProduceResult(index=r.index, error_code=code)

    def _answer(self) -> None:
        self.ctx.send([
            encode_produce_response(
                self.ctx.api_version, self.ctx.header.correlation_id, self.topics
            )
        ])


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    acks = int(request.acks)
    if acks not in (-1, 0, 1):
        raise_code = ErrorCode.invalid_required_acks
    else:
        raise_code = None
    now_ms = ctx.now_ms
    topics: list[tuple[str, list[PartitionProduceResult]]] = []
    pending: list[_Pending] = []
    slot = 0
    for topic in request.topic_data:
        results: list[PartitionProduceResult] = []
        for pd in topic.partition_data:
            index = int(pd.index)
            try:
                if raise_code is not None:
                    raise KafkaError(raise_code)
                p = node.leader_partition(topic.name, index)
                if pd.records is None:
                    raise KafkaError(ErrorCode.corrupt_message, "null record set")
                headers = validate_batches(pd.records, p.config.max_message_bytes)
                if any(h.is_transactional or h.is_control for h in headers):
                    raise KafkaError(
                        ErrorCode.invalid_record, "transactional and control batches are refused"
                    )
                result = p.append_as_leader(bytearray(pd.records), headers, acks, now_ms)
                node.after_append(p, now_ms)
                results.append(PartitionProduceResult(
                    index=index, base_offset=result.first_offset,
                    log_append_time_ms=result.log_append_time_ms,
                    log_start_offset=result.log_start_offset,
                ))
                pending.append(_Pending(p, result.last_offset, slot, p.leader_epoch))
            except KafkaError as exc:
                results.append(PartitionProduceResult(
                    index=index, error_code=exc.code, error_message=exc.message or None,
                ))
            slot += 1
        topics.append((topic.name, results))
    if acks == 0:
        # The client reads no answer; the appends are flushed all the same.
        ctx.no_response()
        return
    timeout_ms = int(request.timeout.total_seconds() * 1000)
    if acks == -1 and node.faults.enabled(ACK_BEFORE_REPLICATION):
        acks = 1  # fault point: answer at the leader's append, as acks=1 would
    op = DelayedProduce(ctx, acks, now_ms + max(timeout_ms, 0), topics, pending)
    node.purgatory.try_or_watch(op, {w.partition.tp for w in pending}, now_ms)
