"""InitProducerId (key 22): a producer id and epoch for an idempotent producer (KIP-98, KIP-360).

Without a transactional id any broker answers (there is no coordinator to find): a fresh id
with epoch 0, or, when the request carries the producer's id and epoch (v3+), that id with the
next epoch (see coordinator/producer_ids.py). v0 must stay advertised: librdkafka turns
idempotence on only if it is (CLIENTS.md).

Transactional ids are refused until transactions exist, with TRANSACTIONAL_ID_AUTHORIZATION_
FAILED: a client treats it as fatal and reports it at once. The retriable
COORDINATOR_NOT_AVAILABLE would read better, but a transactional producer would retry it until
its timeout and then report a timeout, hiding why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.context import RequestContext
from ackly.coordinator.producer_ids import InitProducerIdResult
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


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    if request.transactional_id is not None:
        result = InitProducerIdResult(ErrorCode.transactional_id_authorization_failed)
    else:
        try:
            result = node.producer_ids.init_producer_id(
                int(getattr(request, "producer_id", NO_PRODUCER_ID)),
                int(getattr(request, "producer_epoch", NO_PRODUCER_EPOCH)),
            )
        except KafkaError:
            # The id block could not be reserved (a full or failing disk): a retriable code,
            # so the producer asks again rather than giving up.
            result = InitProducerIdResult(ErrorCode.coordinator_not_available)
    error = result.error
    if error == ErrorCode.producer_fenced and ctx.api_version < _FENCED_ERROR_FROM_VERSION:
        error = ErrorCode.invalid_producer_epoch
    ctx.respond(build(API_KEY, ctx.api_version, {
        "throttle_time": 0,
        "error_code": error,
        "producer_id": result.producer_id,
        "producer_epoch": result.producer_epoch,
    }))
