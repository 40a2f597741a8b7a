"""TxnOffsetCommit (key 28): a transactional producer sends a consumer group's offsets into its
transaction (KIP-98; the consume-transform-produce loop's "sendOffsetsToTransaction").

Sent to the group's coordinator after AddOffsetsToTxn put the group's `__consumer_offsets`
partition into the transaction. Per partition, checked here as Kafka's KafkaApis does: the
group id is not empty (INVALID_GROUP_ID) and the topic partition exists
(UNKNOWN_TOPIC_OR_PARTITION). Then the group decides (coordinator/group_manager.py): v3 carries
the consumer's generation, member id and group instance id and is fenced like OffsetCommit
(KIP-447: ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID); v0-v2, or a group that does
not exist, come with generation -1 and are accepted.

The offsets are written to `__consumer_offsets` in a transactional batch of the producer (id
and epoch; an older epoch is refused by the log: INVALID_PRODUCER_EPOCH). They stay *pending*,
invisible to OffsetFetch, until the transaction's marker reaches that partition: COMMIT makes
them the group's committed offsets, ABORT drops them (docs/guarantees.md rule 21). The answer waits
until the records are committed to the log, like an offset commit's.

KIP-890 part 1 (Kafka's GroupCoordinator.handleTxnCommitOffsets since 3.6): with
`transaction.partition.verification.enable`, when the producer has no ongoing transaction on
the group's `__consumer_offsets` partition, the transaction coordinator is asked first whether
that partition is in the producer's ongoing transaction; a refusal is every partition's answer
(NETWORK_EXCEPTION becomes COORDINATOR_LOAD_IN_PROGRESS, which old clients retry), so a
TxnOffsetCommit delayed past the end of its transaction cannot open a new one on the
partition (docs/guarantees.md rule 23). The partition's verification guard is checked again right
before the append: a marker that landed meanwhile voids it (INVALID_TXN_STATE).

v4 is v3 (its client may be answered TRANSACTION_ABORTABLE, which ackly never answers). v5
is transaction version 2 (KIP-890 part 2): its client sends no AddOffsetsToTxn, so the group's
`__consumer_offsets` partition is *added* to the transaction by the coordinator (whatever
`transaction.partition.verification.enable` says) when the producer has no transaction open
there in this epoch, through the same guard; a TxnOffsetCommit delayed from the transaction
before carries an epoch the coordinator has moved past and is refused (PRODUCER_FENCED).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.broker.groups import start_offset_commit
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, GroupCoordinator
from ackly.errors import ErrorCode
from ackly.types import TopicPartition

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 28
MIN_VERSION = 0
MAX_VERSION = 5
TV2_FROM_VERSION = 5

_NO_GENERATION = -1


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    version = ctx.api_version
    started = start_offset_commit(node, ctx, request)
    if started is None:
        return
    waiter, to_commit, coordinator = started
    if version >= 3:
        generation = int(request.generation_id)
        member_id = str(request.member_id or "")
        instance_id = request.group_instance_id
    else:
        generation, member_id, instance_id = _NO_GENERATION, "", None
    producer_id, producer_epoch = int(request.producer_id), int(request.producer_epoch)

    def commit(code: ErrorCode) -> None:
        if code is not ErrorCode.none:
            waiter.complete([code] * len(to_commit))
            return
        coordinator.commit_transactional_offsets(
            request.group_id, producer_id, producer_epoch, member_id, instance_id, generation,
            to_commit, waiter, ctx.now_ms,
        )

    _verify(node, coordinator, str(request.transactional_id), request.group_id, producer_id,
            producer_epoch, ctx.now_ms, commit, add=version >= TV2_FROM_VERSION)


def _verify(node: BrokerNode, coordinator: GroupCoordinator, transactional_id: str, group_id: str,
            producer_id: int, producer_epoch: int, now_ms: int,
            then: Callable[[ErrorCode], None], *, add: bool = False) -> None:
    """Run `then(NONE)` once the group's partition is known to be in the producer's ongoing
    transaction (`add`: has been added to it), or needs no verification, else `then(error)`;
    possibly before returning."""
    if not add and not bool(node.config.get("transaction.partition.verification.enable")):
        then(ErrorCode.none)
        return
    if not coordinator.here(group_id):
        then(ErrorCode.none)  # the coordinator answers NOT_COORDINATOR
        return
    tp = TopicPartition(OFFSETS_TOPIC, coordinator.partition_for(group_id))
    state = node.partition(tp.topic, tp.partition).log.producer_state
    if state.has_ongoing_transaction(producer_id, producer_epoch):
        then(ErrorCode.none)
        return
    guard = state.verification_guard(producer_id, producer_epoch, now_ms)

    def verified(codes: dict[TopicPartition, ErrorCode]) -> None:
        code = ErrorCode(codes.get(tp, ErrorCode.none))
        if code is ErrorCode.network_exception:
            code = ErrorCode.coordinator_load_in_progress  # Kafka's maybeConvertOffsetCommitError
        elif code is ErrorCode.none and not (
            state.has_ongoing_transaction(producer_id, producer_epoch)
            or state.verification_guard(producer_id, producer_epoch, now_ms) is guard
        ):
            # A marker (or an epoch bump) came between the answer and now: the transaction
            # that was verified is over (Kafka's VerificationGuard check at append).
            code = ErrorCode.invalid_txn_state
        then(code)

    node.transactions.verify_partitions(transactional_id, producer_id, producer_epoch, [tp], now_ms,
                                        verified, add=add)
