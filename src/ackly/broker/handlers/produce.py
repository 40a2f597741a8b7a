"""Produce (key 0): validate batches, append them, answer when acks and flush.policy allow.

Per partition (docs/architecture.md, "A produce request"): check the topic exists and the batches' framing, magic and
CRC, then what Kafka's LogValidator checks (protocol/batch_validation.py: offsets, counts,
producer fields, KIP-937 timestamps, compressed batches record by record; uncompressed
records are not decoded); with a topic compression.type other than `producer`, rebuild the
batches in another codec (protocol/recompression.py); patch base offsets and append. Batches
of idempotent producers are checked against the partition's producer state first (epoch,
sequence: log/producer_state.py), all before any is written; a retry of batches already in
the log writes nothing and is answered with their original base offset, once they are as
durable and committed as a new append would have to be. The answer waits in purgatory
(DelayedProduce) until every appended partition is durable per its flush.policy and, for
acks=all, below HW; on timeout the unfinished partitions get
REQUEST_TIMED_OUT, which is indeterminate for the client: the write may still surface.
acks=0 gets no answer at all.

In a cluster (docs/guarantees.md rules 7-10, 14): only the leader appends (NOT_LEADER_OR_FOLLOWER
elsewhere); acks=all is refused before the append with NOT_ENOUGH_REPLICAS while the ISR is
below min.insync.replicas, and answered NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank
below it by the time HW passed the batch; a leader that loses its leadership (or its epoch)
while a produce waits answers NOT_LEADER_OR_FOLLOWER (Partition.produce_status). The last two
are indeterminate: an idempotent producer's retry is recognised as a duplicate if the write
did survive.

Transactions (KIP-98, KIP-890 part 1): transactional batches are appended like idempotent
ones, with the producer state's transaction checks (log/producer_state.py: INVALID_TXN_STATE
for a non-transactional batch inside a transaction, INVALID_PRODUCER_EPOCH for a fenced
epoch; PRODUCER_FENCED is not a Produce error). Control batches never come from clients
(INVALID_RECORD). With `transaction.partition.verification.enable`, a transactional batch
that would start the producer's transaction on a partition waits for the transaction
coordinator (`node.transactions.verify_partitions`) to confirm the partition is in the
transaction; a partition it refuses gets its code (PRODUCER_FENCED answered as
INVALID_PRODUCER_EPOCH, a coordinator move as the retriable NOT_ENOUGH_REPLICAS) and nothing is
written there. Answers may come in any order (here at once, from a peer later): one producer's
requests are appended in the order they were read all the same (broker/verified_appends.py),
or a pipelined request could pass the one before it and be refused for a sequence gap.

v12 is transaction version 2 (KIP-890 part 2; v12 carries the same fields as v11, its number
says what the client speaks): its client sends no AddPartitionsToTxn, so a transactional
batch that would start the producer's transaction on a partition (none open there in the
batch's epoch) has the coordinator *add* the partition, whatever
`transaction.partition.verification.enable` says, and is appended once that is committed,
through the same guard as a verification. A batch of an epoch the coordinator has moved past
(a produce delayed from the transaction before) is refused there (PRODUCER_FENCED, answered as
INVALID_PRODUCER_EPOCH) and never lands in the next transaction. v13 names topics by id and is
not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.faults import ACK_BEFORE_REPLICATION
from ackly.errors import ErrorCode, KafkaError
from ackly.log.batch_filter import require_keys
from ackly.protocol.batch_validation import TimestampRule, validate_client_batches
from ackly.protocol.compression import DEFAULT_MAX_BYTES, GZIP, LZ4, ZSTD
from ackly.protocol.produce_codec import PartitionProduceResult, encode_produce_response
from ackly.protocol.recompression import TOPIC_CODECS, recompress_batches
from ackly.protocol.records import BatchHeader, validate_batches
from ackly.replication.partition import Partition
from ackly.replication.purgatory import DelayedOperation
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 0
MIN_VERSION = 3  # record batch v2 only; librdkafka needs v3 to use it
MAX_VERSION = 12
TV2_FROM_VERSION = 12


def _recompresses(p: Partition, headers: list[BatchHeader]) -> bool:
    """Some batch is not in the topic's codec (compression.type other than `producer`)."""
    codec = TOPIC_CODECS[p.config.compression_type]
    return codec is not None and any(h.compression != codec for h in headers)


def _in_topic_codec(p: Partition, records: bytes, headers: list[BatchHeader],
                    sections: dict[int, bytes] | None,
                    ) -> tuple[bytes | bytearray, list[BatchHeader]]:
    """The batches as the topic's compression.type wants them: as they came under `producer`
    (and when every batch has the topic's codec already: zero copy), else recompressed
    (protocol/recompression.py), then held to max.message.bytes again as Kafka does after
    recompression (MESSAGE_TOO_LARGE). `sections`: the records sections validation
    decompressed, reused (a batch is decompressed once on this path)."""
    config = p.config
    codec = TOPIC_CODECS[config.compression_type]
    if codec is None:
        return records, headers
    level = {GZIP: config.compression_gzip_level, LZ4: config.compression_lz4_level,
             ZSTD: config.compression_zstd_level}.get(codec)
    rebuilt = recompress_batches(records, headers, codec, level, DEFAULT_MAX_BYTES, sections)
    if rebuilt is None:
        return records, headers
    new_records, new_headers = rebuilt
    for header in new_headers:
        if header.size > config.max_message_bytes:
            raise KafkaError(
                ErrorCode.message_too_large,
                f"batch of {header.size} bytes after recompression to "
                f"{config.compression_type} exceeds max.message.bytes {config.max_message_bytes}",
            )
    return new_records, new_headers


def _timestamp_rule(p: Partition) -> TimestampRule | None:
    """KIP-937's window for the partition's CreateTime timestamps; None with LogAppendTime (the
    leader writes its own timestamps over the client's)."""
    config = p.config
    if config.message_timestamp_type != "CreateTime":
        return None
    return TimestampRule(config.message_timestamp_before_max_ms, config.message_timestamp_after_max_ms)


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
                self.ctx.api_version, self.ctx.header.correlation_id, self.topics, self.ctx.throttle_time_ms,
            )
        ])


@dataclass
class _Append:
    """A partition of the request whose batches passed validation, to append."""

    slot: int
    index: int
    partition: Partition
    records: bytes | bytearray
    headers: list[BatchHeader]
    verification_guard: object | None = None


def _verifies(node: BrokerNode, request: Any, adds: bool) -> bool:
    """KIP-890 applies to this request: a transactional producer's, with verification on (part
    1) or of transaction version 2 (`adds`, part 2). Decided once per request, so other traffic
    pays nothing per partition for it."""
    return getattr(request, "transactional_id", None) is not None and (adds or bool(
        node.config.get("transaction.partition.verification.enable")
    ))


def _starts_transaction(p: Partition, headers: list[BatchHeader]) -> bool:
    """KIP-890: a transactional batch that would start the producer's transaction on this
    partition (none open here in its epoch) is appended only after its coordinator confirms
    (part 1) or adds (part 2) the partition."""
    first = headers[0]
    if not first.is_transactional or first.producer_id < 0:
        return False
    return not p.log.producer_state.has_ongoing_transaction(first.producer_id, first.producer_epoch)


# Verification answers a producer must see as Produce errors it knows (Kafka's
# AddPartitionsToTxnManager and ReplicaManager): PRODUCER_FENCED is not a Produce error, so it
# is INVALID_PRODUCER_EPOCH; a coordinator that moved or is loading becomes
# NOT_ENOUGH_REPLICAS, which every client retries without a metadata refresh.
_RETRY_VERIFICATION = frozenset({
    ErrorCode.concurrent_transactions, ErrorCode.coordinator_load_in_progress,
    ErrorCode.coordinator_not_available, ErrorCode.not_coordinator, ErrorCode.network_exception,
})


def _produce_code_of_verification(code: ErrorCode) -> ErrorCode:
    if code == ErrorCode.producer_fenced:
        return ErrorCode.invalid_producer_epoch
    if code in _RETRY_VERIFICATION:
        return ErrorCode.not_enough_replicas
    if code == ErrorCode.cluster_authorization_failed:
        return ErrorCode.invalid_txn_state
    return code


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    acks = int(request.acks)
    if acks not in (-1, 0, 1):
        raise_code = ErrorCode.invalid_required_acks
    else:
        raise_code = None
    if raise_code is None and request.transactional_id is not None:
        raise_code = check(node, ctx, API_KEY, "transactional", request.transactional_id)
    now_ms = ctx.now_ms
    # producer_byte_rate (KIP-219): Kafka records the request's size and answers with the
    # throttle time, whatever became of the batches.
    ctx.throttle_time_ms = max(ctx.throttle_time_ms, node.quotas.record_produce(
        ctx.principal, ctx.header.client_id or "", ctx.request_bytes, now_ms))
    adds = ctx.api_version >= TV2_FROM_VERSION
    verifies = _verifies(node, request, adds)
    layout: list[tuple[str, list[int]]] = []  # topic name, slots of its partitions
    results: list[PartitionProduceResult | None] = []
    appends: list[_Append] = []
    to_verify: list[_Append] = []
    for topic in request.topic_data:
        slots: list[int] = []
        denied = check(node, ctx, API_KEY, "topic", topic.name)
        for pd in topic.partition_data:
            index = int(pd.index)
            slot = len(results)
            slots.append(slot)
            results.append(None)
            try:
                if raise_code is not None:
                    raise KafkaError(raise_code)
                if denied is not None:
                    raise KafkaError(denied)
                p = node.leader_partition(topic.name, index)
                if pd.records is None:
                    raise KafkaError(ErrorCode.corrupt_message, "null record set")
                headers = validate_batches(pd.records, p.config.max_message_bytes)
                if any(h.is_control for h in headers):
                    # Kafka's LogValidator: only a transaction coordinator writes markers.
                    raise KafkaError(
                        ErrorCode.invalid_record, "control batches are not accepted from clients"
                    )
                # KIP-937 bounds are around the broker's wall-clock time.
                sections: dict[int, bytes] | None = {} if _recompresses(p, headers) else None
                validate_client_batches(pd.records, headers, node.wall_clock(now_ms),
                                        _timestamp_rule(p), DEFAULT_MAX_BYTES, sections)
                if "compact" in p.config.cleanup_policy:
                    # Kafka's LogValidator: a compacted topic takes keyed records only.
                    require_keys(pd.records, headers)
                records, headers = _in_topic_codec(p, pd.records, headers, sections)
                item = _Append(slot, index, p, records, headers)
                appends.append(item)
                if verifies and _starts_transaction(p, headers):
                    first = headers[0]
                    item.verification_guard = p.log.producer_state.verification_guard(
                        first.producer_id, first.producer_epoch, now_ms
                    )
                    to_verify.append(item)
            except KafkaError as exc:
                results[slot] = PartitionProduceResult(
                    index=index, error_code=exc.code, error_message=exc.message or None,
                )
        layout.append((topic.name, slots))

    def finish(refused: dict[TopicPartition, ErrorCode]) -> None:
        pending: list[_Pending] = []
        for item in appends:
            p = item.partition
            try:
                refusal = refused.get(p.tp, ErrorCode.none)
                if refusal != ErrorCode.none:
                    raise KafkaError(
                        _produce_code_of_verification(refusal),
                        "the transaction coordinator refused the partition",
                    )
                result = p.append_as_leader(
                    bytearray(item.records), item.headers, acks, now_ms,
                    verification_guard=item.verification_guard,
                )
                node.after_append(p, now_ms)
                traffic = node.stats.topic(p.tp.topic)
                traffic.bytes_in += len(item.records)
                traffic.records_in += sum(h.records_count for h in item.headers)
                results[item.slot] = PartitionProduceResult(
                    index=item.index, base_offset=result.first_offset,
                    log_append_time_ms=result.log_append_time_ms,
                    log_start_offset=result.log_start_offset,
                )
                pending.append(_Pending(p, result.last_offset, item.slot, p.leader_epoch))
            except KafkaError as exc:
                node.stats.topic(p.tp.topic).produce_requests_failed += 1
                results[item.slot] = PartitionProduceResult(
                    index=item.index, error_code=exc.code, error_message=exc.message or None,
                )
        _respond(node, ctx, request, acks, layout, results, pending)

    # One producer's requests are appended in the order they were read, whatever order their
    # verifications are answered in (broker/verified_appends.py).
    order = node.transactions.verified_appends
    if not to_verify:
        producer_id = appends[0].headers[0].producer_id if verifies and appends else -1
        if producer_id >= 0:
            order.after_earlier(producer_id, finish)
        else:
            finish({})
        return
    first = to_verify[0].headers[0]
    waiting = order.enqueue(first.producer_id, finish)
    # The answer may come at once (the coordinator is here) or after a peer request; the
    # guards taken above make the append refuse if a marker lands in between.
    node.transactions.verify_partitions(
        str(request.transactional_id), first.producer_id, first.producer_epoch,
        [item.partition.tp for item in to_verify], now_ms,
        lambda codes: order.answered(first.producer_id, waiting, codes), add=adds,
    )


def _respond(
    node: BrokerNode, ctx: RequestContext, request: Any, acks: int,
    layout: list[tuple[str, list[int]]], results: list[PartitionProduceResult | None],
    pending: list[_Pending],
) -> None:
    topics: list[tuple[str, list[PartitionProduceResult]]] = []
    for name, slots in layout:
        answered = []
        for slot in slots:
            result = results[slot]
            assert result is not None, slot
            answered.append(result)
        topics.append((name, answered))
    if acks == 0:
        # The client reads no answer; the appends are flushed all the same.
        ctx.no_response()
        return
    now_ms = ctx.now_ms
    timeout_ms = int(request.timeout.total_seconds() * 1000)
    if acks == -1 and node.faults.enabled(ACK_BEFORE_REPLICATION):
        acks = 1  # fault point: answer at the leader's append, as acks=1 would
    op = DelayedProduce(ctx, acks, now_ms + max(timeout_ms, 0), topics, pending)
    node.purgatory.try_or_watch(op, {w.partition.tp for w in pending}, now_ms)
