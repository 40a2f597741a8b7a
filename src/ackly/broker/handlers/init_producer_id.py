"""InitProducerId (key 22): a producer id and epoch for an idempotent producer (KIP-98, KIP-360).

Without a transactional id any broker answers (there is no coordinator to find): a fresh id
with epoch 0, or, when the request carries the producer's id and epoch (v3+), that id with the
next epoch (see coordinator/producer_ids.py). v0 must stay advertised: librdkafka turns
idempotence on only if it is (docs/clients.md).

With a transactional id the request goes to the transaction coordinator of that id
(coordinator/transaction_state.py, Kafka's TransactionCoordinator.handleInitProducerId): a
fresh producer id at epoch 0 the first time, else the next epoch, after aborting whatever the
previous instance left open (answered CONCURRENT_TRANSACTIONS meanwhile, so the client
retries); the answer is sent once the record is committed in `__transaction_state`.
transaction.timeout.ms above transaction.max.timeout.ms is INVALID_TRANSACTION_TIMEOUT; an id
coordinated elsewhere is NOT_COORDINATOR (the client looks it up again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check, check_any_topic
from ackly.broker.context import RequestContext
from ackly.broker.groups import Respond, ms
from ackly.coordinator.producer_ids import InitProducerIdResult
from ackly.coordinator.transaction_state import InitResult
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build
from ackly.types import NO_PRODUCER_EPOCH, NO_PRODUCER_ID

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 22
MIN_VERSION = 0
MAX_VERSION = 6  # everything kio knows; v6 adds 2PC fields, which only matter with a transactional id

# PRODUCER_FENCED exists from InitProducerId v4 (KIP-588); older clients know it as
# INVALID_PRODUCER_EPOCH, which Kafka's KafkaApis answers them instead.
_FENCED_ERROR_FROM_VERSION = 4


def _fields(ctx: RequestContext, error: ErrorCode, producer_id: int, producer_epoch: int) -> dict[str, Any]:
    if error == ErrorCode.producer_fenced and ctx.api_version < _FENCED_ERROR_FROM_VERSION:
        error = ErrorCode.invalid_producer_epoch
    return {"error_code": error, "producer_id": producer_id, "producer_epoch": producer_epoch}


def _transactional(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    producer_id = int(getattr(request, "producer_id", NO_PRODUCER_ID))
    producer_epoch = int(getattr(request, "producer_epoch", NO_PRODUCER_EPOCH))
    waiter: Respond[InitResult] = Respond(
        ctx, lambda r: _fields(ctx, r.error, r.producer_id, r.producer_epoch),
        lambda code: _fields(ctx, code, NO_PRODUCER_ID, NO_PRODUCER_EPOCH))
    if (producer_id == NO_PRODUCER_ID) != (producer_epoch == NO_PRODUCER_EPOCH):
        waiter.fail(ErrorCode.invalid_request)  # KafkaApis: both or neither
        return
    expected = None if producer_id == NO_PRODUCER_ID else (producer_id, producer_epoch)
    coordinator = node.transactions.coordinator
    if not coordinator.loaded:
        waiter.fail(ErrorCode.not_coordinator)
        return
    coordinator.init_producer_id(request.transactional_id, ms(request.transaction_timeout), expected,
                                 waiter, ctx.now_ms)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    if request.transactional_id is not None:
        denied = check(node, ctx, API_KEY, "transactional", request.transactional_id)
        if denied is not None:
            ctx.respond(build(API_KEY, ctx.api_version, {
                "throttle_time": 0, **_fields(ctx, denied, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)}))
            return
        _transactional(node, ctx, request)
        return
    # authz_rules: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic (KIP-679).
    denied = check(node, ctx, API_KEY, "idempotent")
    if denied is not None and check_any_topic(node, ctx, API_KEY, "idempotent-any-topic") is not None:
        ctx.respond(build(API_KEY, ctx.api_version, {
            "throttle_time": 0, **_fields(ctx, denied, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)}))
        return
    try:
        result = node.producer_ids.init_producer_id(
            int(getattr(request, "producer_id", NO_PRODUCER_ID)),
            int(getattr(request, "producer_epoch", NO_PRODUCER_EPOCH)),
        )
    except KafkaError:
        # The id block could not be reserved (a full or failing disk): a retriable code,
        # so the producer asks again rather than giving up.
        result = InitProducerIdResult(ErrorCode.coordinator_not_available)
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0, **_fields(ctx, result.error, result.producer_id, result.producer_epoch),
    }))
