"""AddPartitionsToTxn (key 24): partitions join a producer's transaction (KIP-98).

v0-3 (clients): one transactional id, its producer id and epoch, and partitions. Partitions
the cluster does not know are UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED,
with nothing added (Kafka's KafkaApis); else the coordinator's answer applies to every
partition, once the Ongoing record is committed. PRODUCER_FENCED is INVALID_PRODUCER_EPOCH
before v2 (KIP-588).

v4 (broker to broker, KIP-890 part 1): several transactions at once; one with verify_only asks
only whether each partition is in its ongoing transaction (INVALID_TXN_STATE if not), without
adding anything: the produce path of the partition's leader asks it before a producer's first
transactional batch there (broker/transactions.py). v5 (KIP-890 part 2): the same, and a
transaction without verify_only has its partitions added for a transaction version 2 client,
whose Produce v12 or TxnOffsetCommit v5 is the first to name them (the transaction becomes
version 2 there). v4 without verify_only adds them for a version 0 client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check
from ackly.broker.context import RequestContext
from ackly.broker.transactions import fenced_for_version
from ackly.coordinator.transaction_metadata import TV_0, TV_2
from ackly.errors import ErrorCode
from ackly.protocol.messages import build
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 24
MIN_VERSION = 0
MAX_VERSION = 5
TV2_FROM_VERSION = 5

Codes = dict[TopicPartition, ErrorCode]


def _partitions(topics: Any) -> list[TopicPartition]:
    return [TopicPartition(t.name, int(p)) for t in topics for p in t.partitions]


def _topic_results(codes: Codes) -> list[dict[str, Any]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for tp in sorted(codes):
        by_topic.setdefault(tp.topic, []).append(
            {"partition_index": tp.partition, "partition_error_code": codes[tp]})
    return [{"name": t, "results_by_partition": parts} for t, parts in by_topic.items()]


class _Answer:
    """The coordinator's one code for every partition, as a waiter."""

    def __init__(self, partitions: list[TopicPartition], version: int, done: Callable[[Codes], None]) -> None:
        self.partitions = partitions
        self.version = version
        self.done = done

    def complete(self, result: ErrorCode) -> None:
        self.done(dict.fromkeys(self.partitions, fenced_for_version(result, self.version)))

    def fail(self, code: ErrorCode) -> None:
        self.complete(code)


def add_or_verify(node: BrokerNode, transactional_id: str, producer_id: int, producer_epoch: int,
                  partitions: list[TopicPartition], verify_only: bool, version: int, now_ms: int,
                  done: Callable[[Codes], None]) -> None:
    coordinator = node.transactions.coordinator
    if not coordinator.loaded:
        done(dict.fromkeys(partitions, ErrorCode.not_coordinator))
        return
    if verify_only:
        done(coordinator.verify_partitions(transactional_id, producer_id, producer_epoch, partitions))
        return
    unknown = {tp for tp in partitions if node.metadata.partition(tp) is None}
    if unknown:
        done({tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
              for tp in partitions})
        return
    coordinator.add_partitions(transactional_id, producer_id, producer_epoch, partitions,
                               _Answer(partitions, version, done), now_ms,
                               transaction_version=TV_2 if version >= TV2_FROM_VERSION else TV_0)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    if version < 4:
        def respond(codes: Codes) -> None:
            ctx.respond(build(API_KEY, version, {
                "throttle_time": 0, "results_by_topic_v3_and_below": _topic_results(codes)}))

        partitions = _partitions(request.v3_and_below_topics)
        # authz_rules: WRITE on the transactional id refuses all; WRITE on a topic its
        # partitions, and the others are not attempted (Kafka's handleAddPartitionsToTxn).
        denied = check(node, ctx, API_KEY, "transactional", request.v3_and_below_transactional_id)
        if denied is not None:
            respond(dict.fromkeys(partitions, denied))
            return
        refused = {tp: code for tp in partitions
                   if (code := check(node, ctx, API_KEY, "topic", tp.topic)) is not None}
        if refused:
            respond({tp: refused.get(tp, ErrorCode.operation_not_attempted) for tp in partitions})
            return
        add_or_verify(node, request.v3_and_below_transactional_id, int(request.v3_and_below_producer_id),
                      int(request.v3_and_below_producer_epoch),
                      partitions, False, version, ctx.now_ms, respond)
        return
    # v4+ carries brokers' batches (KIP-890 verification): CLUSTER_ACTION for the request.
    if (denied := check(node, ctx, API_KEY, "verify")) is not None:
        ctx.respond(build(API_KEY, version, {
            "throttle_time": 0, "error_code": denied, "results_by_transaction": []}))
        return
    transactions = list(request.transactions)
    results: list[Codes | None] = [None] * len(transactions)

    def respond_all() -> None:
        ctx.respond(build(API_KEY, version, {
            "throttle_time": 0, "error_code": ErrorCode.none,
            "results_by_transaction": [
                {"transactional_id": txn.transactional_id, "topic_results": _topic_results(codes or {})}
                for txn, codes in zip(transactions, results, strict=True)
            ],
        }))

    def slot(i: int) -> Callable[[Codes], None]:
        def done(codes: Codes) -> None:
            assert results[i] is None, "a transaction answered twice"
            results[i] = codes
            if all(r is not None for r in results):
                respond_all()

        return done

    if not transactions:
        respond_all()
        return
    for i, txn in enumerate(transactions):
        add_or_verify(node, txn.transactional_id, int(txn.producer_id), int(txn.producer_epoch),
                      _partitions(txn.topics), bool(txn.verify_only), version, ctx.now_ms, slot(i))
