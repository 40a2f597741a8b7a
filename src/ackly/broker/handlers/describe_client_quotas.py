"""DescribeClientQuotas (key 48, KIP-546): the client quotas whose entity matches a filter.

The filter is a list of components, one per entity type (user, client-id): EXACT (0) matches
that name, DEFAULT (1) the `<default>` entity, SPECIFIED (2) any name but the default. An
entity matches when it has every filtered type with a matching name; with `strict` it must
have no other type either. As Kafka's handler: an entity type named twice, or a match given
where the match type takes none (or missing where it needs one), is INVALID_REQUEST for the
whole request, with a message. Entity types other than user and client-id (KIP-612's ip)
are never stored, so a filter on them matches nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ackly.broker.authz_rules import check_request
from ackly.broker.context import RequestContext
from ackly.cluster.quotas import QuotaEntity
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.messages import build

if TYPE_CHECKING:
    from ackly.broker.node import BrokerNode

API_KEY = 48
MIN_VERSION = 0
MAX_VERSION = 1

MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


def parse_filter(components: Any) -> dict[str, tuple[int, str | None]]:
    """entity type -> (match type, name); KafkaError(INVALID_REQUEST) for a bad filter."""
    out: dict[str, tuple[int, str | None]] = {}
    for c in components:
        entity_type, match_type, match = str(c.entity_type), int(c.match_type), c.match
        if entity_type in out:
            raise KafkaError(ErrorCode.invalid_request,
                             f"Entity type {entity_type} cannot appear more than once in the filter")
        if match_type == MATCH_EXACT and match is None:
            raise KafkaError(ErrorCode.invalid_request, f"Filter on {entity_type}: an exact match needs a name")
        if match_type in (MATCH_DEFAULT, MATCH_SPECIFIED) and match is not None:
            raise KafkaError(ErrorCode.invalid_request, f"Filter on {entity_type}: match type {match_type} "
                                                        "takes no name")
        if match_type not in (MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED):
            raise KafkaError(ErrorCode.invalid_request, f"Unknown match type {match_type}")
        out[entity_type] = (match_type, None if match is None else str(match))
    return out


def matches(entity: QuotaEntity, wanted: dict[str, tuple[int, str | None]], strict: bool) -> bool:
    names = dict(entity.components())
    for entity_type, (match_type, match) in wanted.items():
        if entity_type not in names:
            return False
        name = names[entity_type]
        if match_type == MATCH_EXACT and name != match:
            return False
        if match_type == MATCH_DEFAULT and name is not None:
            return False
        if match_type == MATCH_SPECIFIED and name is None:
            return False
    return not strict or set(names) <= set(wanted)


def handle(node: BrokerNode, ctx: RequestContext, request: Any) -> None:
    def answer(code: ErrorCode, message: str | None, entries: list[dict[str, Any]] | None) -> None:
        ctx.respond(build(API_KEY, ctx.api_version, {
            "throttle_time": 0, "error_code": code, "error_message": message, "entries": entries,
        }))

    denied = check_request(node, ctx, API_KEY)
    if denied is not None:
        answer(denied, None, None)
        return
    try:
        wanted = parse_filter(request.components)
    except KafkaError as exc:
        answer(exc.code, exc.message, None)
        return
    quotas = node.member.metadata.client_quotas
    entries = [
        {"entity": [{"entity_type": t, "entity_name": n} for t, n in entity.components()],
         "values": [{"key": k, "value": v} for k, v in sorted(quotas[entity].items())]}
        for entity in sorted(quotas, key=str)
        if matches(entity, wanted, bool(request.strict))
    ]
    answer(ErrorCode.none, None, entries)
