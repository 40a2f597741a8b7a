"""CreateAcls, DescribeAcls and DeleteAcls against an in-process broker (single-broker store),
and the ACLs reaching every broker of a core cluster through the metadata watch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.node import BrokerNode
from ackly.cluster.acls import AclOperation, AclPermission, PatternType, ResourceType
from ackly.errors import ErrorCode
from ackly.protocol.messages import request_type

from .acl_harness import (
    ADMIN,
    CREATE_ACLS,
    DELETE_ACLS,
    DESCRIBE_ACLS,
    call,
    creation,
    make_node,
)

TOPIC = ResourceType.TOPIC


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    yield n
    n.close()


def describe_filter(version: int = 3, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "resource_type_filter": int(ResourceType.ANY), "resource_name_filter": None,
        "pattern_type_filter": int(PatternType.ANY), "principal_filter": None, "host_filter": None,
        "operation": int(AclOperation.ANY), "permission_type": int(AclPermission.ANY),
    }
    fields.update(overrides)
    return fields


def delete_filter(version: int = 3, **overrides: Any) -> Any:
    module = sys.modules[request_type(DELETE_ACLS, version).__module__]
    return module.DeleteAclsFilter(**describe_filter(version, **overrides))


def listed(node: BrokerNode, principal: str = ADMIN, version: int = 3, **overrides: Any) -> list[tuple[Any, ...]]:
    response = call(node, DESCRIBE_ACLS, version, principal, **describe_filter(version, **overrides))
    assert response.error_code == ErrorCode.none, response
    return sorted((int(r.resource_type), r.resource_name, int(r.pattern_type), a.principal, a.host,
                   int(a.operation), int(a.permission_type)) for r in response.resources for a in r.acls)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_create_describe_delete_round_trip(node: BrokerNode, version: int) -> None:
    created = call(node, CREATE_ACLS, version, ADMIN, creations=(
        creation(TOPIC, "orders", "User:alice", AclOperation.READ, version=version),
        creation(TOPIC, "ord", "User:alice", AclOperation.WRITE, pattern=PatternType.PREFIXED,
                 version=version),
        creation(TOPIC, "orders", "User:alice", AclOperation.READ, version=version),  # again
        creation(TOPIC, "", "User:alice", AclOperation.READ, version=version),
        creation(TOPIC, "x", "alice", AclOperation.READ, version=version),
    ))
    assert [int(r.error_code) for r in created.results] == [0, 0, 0, ErrorCode.invalid_request,
                                                            ErrorCode.invalid_request]
    assert len(listed(node, version=version)) == 2
    match = listed(node, version=version, resource_type_filter=int(TOPIC), resource_name_filter="orders",
                   pattern_type_filter=int(PatternType.MATCH))
    assert [m[1] for m in match] == ["ord", "orders"]
    literal = listed(node, version=version, pattern_type_filter=int(PatternType.LITERAL))
    assert [m[1] for m in literal] == ["orders"]
    deleted = call(node, DELETE_ACLS, version, ADMIN, filters=(
        delete_filter(version, pattern_type_filter=int(PatternType.PREFIXED)),
        delete_filter(version, resource_name_filter="nothing"),
    ))
    assert [[a.resource_name for a in r.matching_acls] for r in deleted.filter_results] == [["ord"], []]
    assert [m[1] for m in listed(node, version=version)] == ["orders"]


def test_acls_survive_a_restart(tmp_path: Path) -> None:
    n = make_node(tmp_path / "data")
    call(n, CREATE_ACLS, 3, ADMIN, creations=(creation(TOPIC, "t", "User:a", AclOperation.READ),))
    n.close()
    again = make_node(tmp_path / "data")
    try:
        assert len(listed(again)) == 1
    finally:
        again.close()


def test_acl_apis_need_the_cluster_permissions(node: BrokerNode) -> None:
    response = call(node, CREATE_ACLS, 3, "User:alice", creations=(
        creation(TOPIC, "t", "User:alice", AclOperation.ALL),))
    assert [int(r.error_code) for r in response.results] == [ErrorCode.cluster_authorization_failed]
    described = call(node, DESCRIBE_ACLS, 3, "User:alice", **describe_filter())
    assert described.error_code == ErrorCode.cluster_authorization_failed
    deleted = call(node, DELETE_ACLS, 3, "User:alice", filters=(delete_filter(),))
    assert [int(r.error_code) for r in deleted.filter_results] == [ErrorCode.cluster_authorization_failed]
    # ALTER on the cluster lets alice manage ACLs; it implies DESCRIBE for DescribeAcls.
    call(node, CREATE_ACLS, 3, ADMIN, creations=(
        creation(ResourceType.CLUSTER, "kafka-cluster", "User:alice", AclOperation.ALTER),))
    response = call(node, CREATE_ACLS, 3, "User:alice", creations=(
        creation(TOPIC, "t", "User:bob", AclOperation.READ),))
    assert [int(r.error_code) for r in response.results] == [0]
    assert len(listed(node, "User:alice")) == 2


def test_without_an_authorizer_the_acl_apis_answer_security_disabled(tmp_path: Path) -> None:
    n = make_node(tmp_path / "data", **{"authorizer.class.name": ""})
    try:
        response = call(n, CREATE_ACLS, 3, ADMIN, creations=(creation(TOPIC, "t", "User:a", AclOperation.READ),))
        assert [int(r.error_code) for r in response.results] == [ErrorCode.security_disabled]
        assert call(n, DESCRIBE_ACLS, 3, ADMIN, **describe_filter()).error_code == ErrorCode.security_disabled
    finally:
        n.close()


@pytest.mark.parametrize(("key", "value"), [
    ("authorizer.class.name", "com.example.MyAuthorizer"),
    ("super.users", "User:admin;alice"),
])
def test_a_bad_authorizer_config_is_refused_naming_the_key(key: str, value: str) -> None:
    from ackly.config import BrokerConfig
    from ackly.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        BrokerConfig.from_properties({key: value})
