"""ACL bindings and filters as CreateAcls, DescribeAcls and DeleteAcls carry them.

Shared by the three handlers: the wire's small integers become the enums of cluster/acls.py
(a number Kafka does not define reads as UNKNOWN, which the checks then refuse), and the
answer to a request when no authorizer is configured (SECURITY_DISABLED, as Kafka's
"No Authorizer is configured").
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, TypeVar

from ackly.cluster.acls import (
    AclBinding,
    AclFilter,
    AclOperation,
    AclPermission,
    PatternType,
    ResourceType,
)

NO_AUTHORIZER = "no authorizer is configured (authorizer.class.name is empty)"

_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], value: Any) -> _E:
    try:
        return kind(int(value))
    except ValueError:
        return kind(0)


def binding_of(creation: Any) -> AclBinding:
    """An AclCreation (CreateAcls v1+) as a binding (not yet checked)."""
    return AclBinding(
        _enum(ResourceType, creation.resource_type), str(creation.resource_name),
        _enum(PatternType, creation.resource_pattern_type), str(creation.principal),
        str(creation.host), _enum(AclOperation, creation.operation),
        _enum(AclPermission, creation.permission_type),
    )


def filter_of(request: Any) -> AclFilter:
    """A DescribeAcls request or a DeleteAclsFilter as a filter (not yet checked)."""
    return AclFilter(
        _enum(ResourceType, request.resource_type_filter), request.resource_name_filter,
        _enum(PatternType, request.pattern_type_filter), request.principal_filter,
        request.host_filter, _enum(AclOperation, request.operation),
        _enum(AclPermission, request.permission_type),
    )


def entry_fields(binding: AclBinding) -> dict[str, Any]:
    return {
        "principal": binding.principal, "host": binding.host,
        "operation": int(binding.operation), "permission_type": int(binding.permission),
    }
