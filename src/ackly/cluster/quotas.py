"""Client quotas as the cluster metadata keeps them, and which one applies to a client.

Owns: `QuotaEntity` (Kafka's ClientQuotaEntity: a user, a client id, or both, each a name or
the `<default>`, written None), its store key component, the JSON encoding of one entity's
quota values (`encode_values` / `decode_values`), and `resolve`, Kafka's precedence of the
eight quota configurations (the "Quotas" section of Kafka's docs; DefaultQuotaCallback):

    1. user=<user>,    client-id=<client-id>
    2. user=<user>,    client-id=<default>
    3. user=<user>
    4. user=<default>, client-id=<client-id>
    5. user=<default>, client-id=<default>
    6. user=<default>
    7. client-id=<client-id>
    8. client-id=<default>

Each quota key is resolved on its own: the first of these entities that sets it wins. The
entity that wins also says who shares the quota (Kafka's quota metric tags): the components it
has are kept, the user's name or the client id filled in for a `<default>`; a component it
lacks is "" and so shared by everyone (a user-level quota is shared by all the user's clients).

Invariants: an entity has a user, a client id, or both, and no other entity type (KIP-612's ip
quotas are not supported); values are finite and positive; the byte rates are whole numbers.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ackly.errors import AcklyError

VALUE_VERSION = 1

USER = "user"
CLIENT_ID = "client-id"
ENTITY_TYPES = (USER, CLIENT_ID)

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
# Kafka's QuotaConfigs: the byte rates are LONGs, request_percentage a DOUBLE.
QUOTA_KEYS: Mapping[str, bool] = {PRODUCER_BYTE_RATE: True, CONSUMER_BYTE_RATE: True, REQUEST_PERCENTAGE: False}

_DEFAULT = "*"  # a default in the key: urllib's quote escapes "*" in a name, so it cannot clash


class QuotaError(AcklyError):
    """An entity or value Kafka would refuse (answered INVALID_REQUEST with this message)."""


@dataclass(frozen=True, order=True)
class QuotaEntity:
    """Kafka's ClientQuotaEntity. `has_user` / `has_client` say which components it has; a
    component it has with a None name is that type's `<default>`."""

    has_user: bool
    user: str | None
    has_client: bool
    client_id: str | None

    def __post_init__(self) -> None:
        if not (self.has_user or self.has_client):
            raise QuotaError("a quota entity names a user, a client id, or both")
        if (not self.has_user and self.user is not None) or (not self.has_client and self.client_id is not None):
            raise QuotaError("a name for a component the entity does not have")

    @classmethod
    def of(cls, components: Mapping[str, str | None]) -> QuotaEntity:
        """From (entity type -> name or None for the default), as a request names it."""
        unknown = set(components) - set(ENTITY_TYPES)
        if unknown:
            raise QuotaError(f"Unsupported quota entity type {sorted(unknown)[0]!r}")
        return cls(USER in components, components.get(USER), CLIENT_ID in components, components.get(CLIENT_ID))

    def components(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        if self.has_user:
            out.append((USER, self.user))
        if self.has_client:
            out.append((CLIENT_ID, self.client_id))
        return out

    @property
    def key_name(self) -> str:
        """One path component of the store key: `user=<q>,client-id=<q>`, `*` for a default."""
        return ",".join(f"{t}={_DEFAULT if n is None else urllib.parse.quote(n, safe='')}"
                        for t, n in self.components())

    @classmethod
    def from_key_name(cls, text: str) -> QuotaEntity:
        components: dict[str, str | None] = {}
        for part in text.split(","):
            entity_type, sep, name = part.partition("=")
            if not sep or entity_type in components:
                raise QuotaError(f"bad quota entity key {text!r}")
            components[entity_type] = None if name == _DEFAULT else urllib.parse.unquote(name)
        return cls.of(components)

    def __str__(self) -> str:
        return ",".join(f"{t}={'<default>' if n is None else n}" for t, n in self.components())


def check_value(key: str, value: float) -> None:
    """Kafka's checks of a quota value (ClientQuotaControlManager): a known key, a whole
    number for the LONG byte rates; and, stricter than Kafka, a positive finite value (a
    zero or negative rate can only throttle every request for the longest time)."""
    is_long = QUOTA_KEYS.get(key)
    if is_long is None:
        raise QuotaError(f"Unknown quota key {key!r} (known: {', '.join(QUOTA_KEYS)})")
    if not math.isfinite(value) or value <= 0:
        raise QuotaError(f"Quota {key} must be a positive number, not {value!r}")
    if is_long and value != math.floor(value):
        raise QuotaError(f"Configuration {key} must be a Long value")


def encode_values(entity: QuotaEntity, values: Mapping[str, float]) -> bytes:
    return json.dumps({
        "v": VALUE_VERSION, "entity": entity.key_name, "values": {k: float(v) for k, v in values.items()},
    }, sort_keys=True, separators=(",", ":")).encode()


def decode_values(data: bytes) -> tuple[QuotaEntity, dict[str, float]]:
    try:
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != VALUE_VERSION:
            raise QuotaError(f"unknown value version {doc.get('v') if isinstance(doc, dict) else doc!r}")
        entity = QuotaEntity.from_key_name(str(doc["entity"]))
        values = doc["values"]
        if not isinstance(values, dict):
            raise QuotaError(f"values are not an object: {values!r}")
        out: dict[str, float] = {}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise QuotaError(f"value of {key!r} is not a number: {value!r}")
            check_value(key, float(value))
            out[key] = float(value)
        return entity, out
    except QuotaError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise QuotaError(f"cannot decode client quotas: {exc}") from None


@dataclass(frozen=True)
class ResolvedQuota:
    """The quota that applies to one client for one key, and who shares it (Kafka's metric
    tags: "" for a component everyone shares)."""

    bound: float
    entity: QuotaEntity
    user_tag: str
    client_tag: str


def precedence(user: str, client_id: str) -> tuple[QuotaEntity, ...]:
    """The eight entities that may apply to (user, client id), most specific first."""
    return (
        QuotaEntity(True, user, True, client_id),
        QuotaEntity(True, user, True, None),
        QuotaEntity(True, user, False, None),
        QuotaEntity(True, None, True, client_id),
        QuotaEntity(True, None, True, None),
        QuotaEntity(True, None, False, None),
        QuotaEntity(False, None, True, client_id),
        QuotaEntity(False, None, True, None),
    )


def resolve(
    quotas: Mapping[QuotaEntity, Mapping[str, float]], user: str, client_id: str, key: str,
) -> ResolvedQuota | None:
    """The quota on `key` for this user and client id, or None: unlimited."""
    if not quotas:
        return None
    for entity in precedence(user, client_id):
        values = quotas.get(entity)
        if values is not None and key in values:
            return ResolvedQuota(
                values[key], entity, user if entity.has_user else "", client_id if entity.has_client else "",
            )
    return None


def user_of(principal: str) -> str:
    """The user a quota names for a principal (`User:alice` -> `alice`); Kafka's quota entity
    is the principal's name, whatever its type."""
    _type, sep, name = principal.partition(":")
    return name if sep else principal
