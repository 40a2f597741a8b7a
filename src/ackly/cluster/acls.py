"""Access control lists in Kafka's model: bindings, filters, and the rules that match them.

Owns: what an ACL binding is (a resource pattern: type, name, pattern type; and an entry:
principal, host, operation, permission), how it is checked when created, how a filter
(DescribeAcls, DeleteAcls) selects bindings, how a binding is stored in the cluster metadata
(one key per binding under `<root>/acls/`, named by a digest of the binding, so creating the
same binding twice writes the same key: Kafka keeps a set of bindings too), and the decision
itself (`decide`), which mirrors Kafka's StandardAuthorizer (KIP-801):

- a super user is allowed everything;
- the ACLs that apply to a resource are its LITERAL bindings with the same name, LITERAL
  bindings with the wildcard name `*`, and PREFIXED bindings whose name the resource's name
  starts with;
- an entry applies to a request when its principal is the request's or the wildcard `User:*`,
  and its host is the request's address or `*`;
- DENY wins: one applying DENY of the operation (or of ALL) refuses; otherwise one applying
  ALLOW of the operation (or of ALL, or of an operation that implies it: READ, WRITE, DELETE and
  ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows;
- a resource with no ACL at all (for any principal) is allowed only with
  `allow.everyone.if.no.acl.found` (Kafka's default: refused).

Numbers are Kafka's (org.apache.kafka.common.resource.ResourceType, PatternType;
org.apache.kafka.common.acl.AclOperation, AclPermissionType), as they travel on the wire.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

WILDCARD_RESOURCE = "*"
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"
CLUSTER_NAME = "kafka-cluster"  # the one CLUSTER resource's name, as Kafka's


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class AclPermission(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# Kafka's AclEntry.supportedOperations: what an ACL on each resource type may name.
SUPPORTED_OPERATIONS: dict[ResourceType, frozenset[AclOperation]] = {
    ResourceType.TOPIC: frozenset({
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
        AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.ALL,
    }),
    ResourceType.GROUP: frozenset({
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE, AclOperation.ALL,
    }),
    ResourceType.CLUSTER: frozenset({
        AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
        AclOperation.DESCRIBE, AclOperation.ALL,
    }),
    ResourceType.TRANSACTIONAL_ID: frozenset({
        AclOperation.DESCRIBE, AclOperation.WRITE, AclOperation.ALL,
    }),
    ResourceType.DELEGATION_TOKEN: frozenset({AclOperation.DESCRIBE, AclOperation.ALL}),
}

# An ALLOW of the key also allows these (Kafka's StandardAuthorizerData: "allowing READ,
# WRITE, DELETE or ALTER implies DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS"). A DENY
# implies nothing beyond its own operation.
_IMPLIED_BY: dict[AclOperation, frozenset[AclOperation]] = {
    AclOperation.DESCRIBE: frozenset({
        AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER,
    }),
    AclOperation.DESCRIBE_CONFIGS: frozenset({AclOperation.ALTER_CONFIGS}),
}


class AclError(ValueError):
    """A binding or filter Kafka would refuse (answered INVALID_REQUEST with this message)."""


@dataclass(frozen=True, order=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: AclPermission

    def check(self) -> None:
        """Refuse what Kafka's AclControlManager.validateNewAcl refuses."""
        if self.resource_type not in SUPPORTED_OPERATIONS:
            raise AclError(f"invalid resource type {self.resource_type.name}")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise AclError(f"invalid pattern type {self.pattern_type.name}: an ACL is LITERAL or PREFIXED")
        if not self.resource_name:
            raise AclError("the resource name is empty")
        if self.resource_type is ResourceType.CLUSTER and (
            self.resource_name != CLUSTER_NAME or self.pattern_type is not PatternType.LITERAL
        ):
            raise AclError(f"the cluster resource is the LITERAL name {CLUSTER_NAME!r}")
        if self.operation not in SUPPORTED_OPERATIONS[self.resource_type]:
            raise AclError(f"operation {self.operation.name} does not apply to {self.resource_type.name}")
        if self.permission not in (AclPermission.ALLOW, AclPermission.DENY):
            raise AclError(f"invalid permission {self.permission.name}")
        parse_principal(self.principal)
        if not self.host:
            raise AclError("the host is empty (use * for every host)")

    def encode(self) -> bytes:
        return json.dumps({
            "v": 1, "resource_type": int(self.resource_type), "resource_name": self.resource_name,
            "pattern_type": int(self.pattern_type), "principal": self.principal, "host": self.host,
            "operation": int(self.operation), "permission": int(self.permission),
        }, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> AclBinding:
        """Raises ValueError (or KeyError, TypeError) on a value this version cannot read."""
        doc: Any = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError(f"unknown ACL value {doc!r}")
        return cls(
            ResourceType(int(doc["resource_type"])), str(doc["resource_name"]),
            PatternType(int(doc["pattern_type"])), str(doc["principal"]), str(doc["host"]),
            AclOperation(int(doc["operation"])), AclPermission(int(doc["permission"])),
        )

    @property
    def key_name(self) -> str:
        """The store key's last part: a digest of the binding (one key per distinct binding)."""
        return hashlib.sha256(self.encode()).hexdigest()[:40]

    def applies_to(self, resource_type: ResourceType, name: str) -> bool:
        """Whether this binding's pattern covers the resource (type, name)."""
        if resource_type is not self.resource_type:
            return False
        if self.pattern_type is PatternType.LITERAL:
            return self.resource_name == name or self.resource_name == WILDCARD_RESOURCE
        return self.pattern_type is PatternType.PREFIXED and name.startswith(self.resource_name)

    def entry_matches(self, principal: str, host: str) -> bool:
        return self.principal in (principal, WILDCARD_PRINCIPAL) and self.host in (host, WILDCARD_HOST)


def parse_principal(principal: str) -> tuple[str, str]:
    """`Type:name` (Kafka's KafkaPrincipal string form), or AclError."""
    kind, sep, name = principal.partition(":")
    if not sep or not kind or not name:
        raise AclError(f"invalid principal {principal!r}: expected Type:name, e.g. User:alice")
    return kind, name


@dataclass(frozen=True)
class AclFilter:
    """What DescribeAcls and DeleteAcls select. None: any value (Kafka's null)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission: AclPermission = AclPermission.ANY

    def check(self) -> None:
        for value, enum in ((self.resource_type, ResourceType), (self.pattern_type, PatternType),
                            (self.operation, AclOperation), (self.permission, AclPermission)):
            if value == 0:
                raise AclError(f"the filter's {enum.__name__} is UNKNOWN")

    def matches(self, binding: AclBinding) -> bool:
        """Kafka's AclBindingFilter.matches, pattern types included: ANY selects every pattern
        type (with exactly the name, if one is given); MATCH selects the bindings that would
        apply to the named resource (LITERAL equal or `*`, PREFIXED a prefix of it)."""
        if self.resource_type is not ResourceType.ANY and binding.resource_type is not self.resource_type:
            return False
        if not self._pattern_matches(binding):
            return False
        if self.principal is not None and binding.principal != self.principal:
            return False
        if self.host is not None and binding.host != self.host:
            return False
        if self.operation is not AclOperation.ANY and binding.operation is not self.operation:
            return False
        return self.permission is AclPermission.ANY or binding.permission is self.permission

    def _pattern_matches(self, binding: AclBinding) -> bool:
        name = self.resource_name
        if self.pattern_type is PatternType.MATCH:
            if name is None:
                return True
            if binding.pattern_type is PatternType.LITERAL:
                return binding.resource_name in (name, WILDCARD_RESOURCE)
            return name.startswith(binding.resource_name)
        if self.pattern_type is not PatternType.ANY and binding.pattern_type is not self.pattern_type:
            return False
        return name is None or binding.resource_name == name


class AclIndex:
    """The bindings of one view, by resource type and pattern, so that a decision looks only
    at the bindings that can apply: the literal name, the wildcard, and each prefix of the
    name (Kafka's StandardAuthorizerData keeps a sorted set for the same reason)."""

    def __init__(self, acls: Iterable[AclBinding]) -> None:
        self.all = tuple(acls)
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._prefixed: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        self._by_type: dict[ResourceType, list[AclBinding]] = {}
        self._longest_prefix: dict[ResourceType, int] = {}
        for acl in self.all:
            key = (acl.resource_type, acl.resource_name)
            self._by_type.setdefault(acl.resource_type, []).append(acl)
            if acl.pattern_type is PatternType.PREFIXED:
                self._prefixed.setdefault(key, []).append(acl)
                longest = self._longest_prefix.get(acl.resource_type, 0)
                self._longest_prefix[acl.resource_type] = max(longest, len(acl.resource_name))
            else:
                self._literal.setdefault(key, []).append(acl)

    def applying(self, resource_type: ResourceType, name: str) -> list[AclBinding]:
        """Every binding whose pattern covers the resource (AclBinding.applies_to)."""
        found = list(self._literal.get((resource_type, name), ()))
        if name != WILDCARD_RESOURCE:
            found += self._literal.get((resource_type, WILDCARD_RESOURCE), ())
        for end in range(1, min(len(name), self._longest_prefix.get(resource_type, 0)) + 1):
            found += self._prefixed.get((resource_type, name[:end]), ())
        return found

    def of_type(self, resource_type: ResourceType) -> list[AclBinding]:
        return self._by_type.get(resource_type, [])


def decide(
    acls: Iterable[AclBinding], principal: str, host: str, operation: AclOperation,
    resource_type: ResourceType, name: str, *, allow_if_no_acl: bool,
) -> bool:
    """Kafka's StandardAuthorizer decision for one action (super users are the caller's)."""
    applying = [acl for acl in acls if acl.applies_to(resource_type, name)]
    return decide_among(applying, principal, host, operation, allow_if_no_acl=allow_if_no_acl)


def decide_among(applying: Iterable[AclBinding], principal: str, host: str, operation: AclOperation,
                 *, allow_if_no_acl: bool) -> bool:
    """`decide` over the bindings already known to cover the resource (AclIndex.applying)."""
    any_acl = False
    allowed = False
    implied = _IMPLIED_BY.get(operation, frozenset())
    for acl in applying:
        any_acl = True
        if not acl.entry_matches(principal, host):
            continue
        if acl.permission is AclPermission.DENY:
            if acl.operation in (operation, AclOperation.ALL):
                return False
        elif acl.operation in (operation, AclOperation.ALL) or acl.operation in implied:
            allowed = True
    return allowed or (not any_acl and allow_if_no_acl)


def decide_any_of_type(
    acls: Iterable[AclBinding], principal: str, host: str, operation: AclOperation,
    resource_type: ResourceType, *, allow_if_no_acl: bool,
) -> bool:
    """Whether the principal may do `operation` on at least one resource of the type (Kafka's
    Authorizer.authorizeByResourceType, KIP-679: WRITE on any topic allows an idempotent
    producer): an ALLOW binding (of the operation or ALL) that no DENY binding covers: the
    wildcard, the same literal name, or a prefix of its name."""
    of_type = [a for a in acls if a.resource_type is resource_type]
    # First a resource that only the wildcard names (Kafka's default asks about one made-up
    # name): a wildcard ALLOW, or no wildcard ACL and allow.everyone.if.no.acl.found.
    if decide(of_type, principal, host, operation, resource_type, "", allow_if_no_acl=allow_if_no_acl):
        return True
    acls = [a for a in of_type if a.entry_matches(principal, host)]
    ops = (operation, AclOperation.ALL)
    denies = [a for a in acls if a.permission is AclPermission.DENY and a.operation in ops]
    if any(d.pattern_type is PatternType.LITERAL and d.resource_name == WILDCARD_RESOURCE for d in denies):
        return False
    for allow in acls:
        if allow.permission is not AclPermission.ALLOW or allow.operation not in ops:
            continue
        covered = any(
            (d.pattern_type is PatternType.PREFIXED and allow.resource_name.startswith(d.resource_name))
            or (d.pattern_type is PatternType.LITERAL and allow.pattern_type is PatternType.LITERAL
                and d.resource_name == allow.resource_name)
            for d in denies
        )
        if not covered:
            return True
    return False
