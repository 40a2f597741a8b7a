"""AlterClientQuotas (key 49, KIP-546): set or remove client quotas, one entity per entry.

An entry names an entity (user, client-id, or both; a null name is the `<default>`) and its
operations: set a key to a value, or remove it. Checks as Kafka's ClientQuotaControlManager,
each failing only its entry, with INVALID_REQUEST and a message: an entity with no type, an
unknown or repeated type (KIP-612's ip quotas are not supported), a key named twice, an
unknown key, a byte rate that is not a whole number; ackly also refuses values that are not
positive. An entry's new values are the ones the view holds with its operations applied,
written as one key (cluster/quotas.py); an entity left with none is deleted. validate_only
checks and writes nothing. Each entry is answered once this broker's view holds its write (or
REQUEST_TIMED_OUT when the store did not confirm it); the write reaches every other broker
with its next watch event. Two brokers altering one entity at once: the last write wins.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ackly.broker.admin import DEFAULT_TIMEOUT_MS, Countdown
from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.quotas import ENTITY_TYPES, QuotaEntity, QuotaError, check_value
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 49
MIN_VERSION = 0
MAX_VERSION = 1


@dataclass
class _Entry:
    components: list[tuple[str, str | None]]
    error: KafkaError | None = None
    entity: QuotaEntity | None = None
    values: dict[str, float] = field(default_factory=dict)


def _plan(node: BrokerNode, entry: Any) -> _Entry:
    components = [(str(e.entity_type), e.entity_name) for e in entry.entity]
    planned = _Entry(components)
    try:
        if not components:
            raise QuotaError("Invalid empty client quota entity")
        types = [t for t, _ in components]
        for t in types:
            if t not in ENTITY_TYPES:
                raise QuotaError(f"Unsupported client quota entity type {t!r} (supported: user, client-id)")
            if types.count(t) > 1:
                raise QuotaError(f"Entity type {t} appears more than once")
        entity = QuotaEntity.of(dict(components))
        values = dict(node.member.metadata.client_quotas.get(entity, {}))
        keys = [str(op.key) for op in entry.ops]
        for op in entry.ops:
            key = str(op.key)
            if keys.count(key) > 1:
                raise QuotaError(f"Duplicate quota key {key!r} in one entry")
            if op.remove:
                values.pop(key, None)
            else:
                check_value(key, float(op.value))
                values[key] = float(op.value)
        planned.entity, planned.values = entity, values
    except QuotaError as exc:
        planned.error = KafkaError(ErrorCode.invalid_request, str(exc))
    return planned


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    denied = check_request(node, ctx, API_KEY)
    planned = [_plan(node, entry) for entry in request.entries]
    if denied is not None:
        for p in planned:
            p.error = KafkaError(denied)

    def respond() -> None:
        ctx.respond(build(API_KEY, ctx.api_version, {"throttle_time": 0, "entries": [
            {"error_code": p.error.code if p.error else ErrorCode.none,
             "error_message": (p.error.message or None) if p.error else None,
             "entity": [{"entity_type": t, "entity_name": n} for t, n in p.components]}
            for p in planned
        ]}))

    writes = [] if request.validate_only else [p for p in planned if p.error is None]
    countdown = Countdown(len(writes), respond)
    member = node.member
    for p in writes:
        assert p.entity is not None

        def done(code: ErrorCode, message: str | None, p: _Entry = p) -> None:
            if code is not ErrorCode.none:
                p.error = KafkaError(code, message or "")
            countdown.one_done()

        send = (functools.partial(member.put_client_quotas, p.entity, p.values, ctx.now_ms) if p.values
                else functools.partial(member.delete_client_quotas, p.entity, ctx.now_ms))
        node.admin.write_quota(send, ctx.now_ms, DEFAULT_TIMEOUT_MS, done)
