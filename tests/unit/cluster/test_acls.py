"""The ACL matching rules (cluster/acls.py), as properties over random sets of bindings.

Names, principals and hosts are drawn from small alphabets so that literal names, prefixes,
wildcards and equal principals meet often.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ackly.cluster.acls import (
    CLUSTER_NAME,
    AclBinding,
    AclError,
    AclFilter,
    AclIndex,
    AclOperation,
    AclPermission,
    PatternType,
    ResourceType,
    decide,
    decide_any_of_type,
)
from ackly.cluster.metadata import ClusterMetadata, KeySpace
from ackly.cluster.store import WatchEvent

TOPIC = ResourceType.TOPIC
OPS = [AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.DELETE,
       AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS, AclOperation.ALL]
names = st.text(alphabet="ab", min_size=1, max_size=3)
principals = st.sampled_from(["User:alice", "User:bob", "User:*"])
hosts = st.sampled_from(["*", "10.0.0.1", "10.0.0.2"])


@st.composite
def bindings(draw: st.DrawFn) -> AclBinding:
    pattern = draw(st.sampled_from([PatternType.LITERAL, PatternType.PREFIXED]))
    name = draw(st.one_of(names, st.just("*"))) if pattern is PatternType.LITERAL else draw(names)
    return AclBinding(
        TOPIC, name, pattern, draw(principals), draw(hosts), draw(st.sampled_from(OPS)),
        draw(st.sampled_from([AclPermission.ALLOW, AclPermission.DENY])),
    )


acl_sets = st.lists(bindings(), max_size=8)
request_principals = st.sampled_from(["User:alice", "User:bob"])
request_hosts = st.sampled_from(["10.0.0.1", "10.0.0.2"])
request_ops = st.sampled_from([op for op in OPS if op is not AclOperation.ALL])


def applies(b: AclBinding, principal: str, host: str, name: str) -> bool:
    return b.applies_to(TOPIC, name) and b.entry_matches(principal, host)


@settings(max_examples=300)
@given(acl_sets, request_principals, request_hosts, request_ops, names, st.booleans())
def test_an_applying_deny_always_wins(acls: list[AclBinding], principal: str, host: str,
                                      op: AclOperation, name: str, default: bool) -> None:
    deny = AclBinding(TOPIC, name, PatternType.LITERAL, principal, host, op, AclPermission.DENY)
    allow_all = AclBinding(TOPIC, "*", PatternType.LITERAL, "User:*", "*", AclOperation.ALL,
                           AclPermission.ALLOW)
    assert not decide([*acls, allow_all, deny], principal, host, op, TOPIC, name, allow_if_no_acl=default)


@settings(max_examples=300)
@given(acl_sets, request_principals, request_hosts, request_ops, names, st.booleans())
def test_the_decision_is_the_specification(acls: list[AclBinding], principal: str, host: str,
                                           op: AclOperation, name: str, default: bool) -> None:
    """Written out once more, plainly: DENY (op or ALL) refuses; ALLOW of op, ALL or an
    implying operation allows; a resource no binding covers falls to the default."""
    implies = {AclOperation.DESCRIBE: {AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE,
                                       AclOperation.ALTER},
               AclOperation.DESCRIBE_CONFIGS: {AclOperation.ALTER_CONFIGS}}.get(op, set())
    mine = [b for b in acls if applies(b, principal, host, name)]
    if any(b.permission is AclPermission.DENY and b.operation in (op, AclOperation.ALL) for b in mine):
        expected = False
    elif any(b.permission is AclPermission.ALLOW and (b.operation in (op, AclOperation.ALL)
                                                      or b.operation in implies) for b in mine):
        expected = True
    else:
        expected = default and not any(b.applies_to(TOPIC, name) for b in acls)
    assert decide(acls, principal, host, op, TOPIC, name, allow_if_no_acl=default) is expected
    shuffled = list(acls)
    random.Random(len(acls)).shuffle(shuffled)
    assert decide(shuffled, principal, host, op, TOPIC, name, allow_if_no_acl=default) is expected


@settings(max_examples=300)
@given(acl_sets, st.one_of(names, st.just("*")))
def test_the_index_finds_exactly_the_bindings_that_apply(acls: list[AclBinding], name: str) -> None:
    index = AclIndex(acls)
    assert sorted(index.applying(TOPIC, name)) == sorted(b for b in acls if b.applies_to(TOPIC, name))
    assert index.applying(ResourceType.GROUP, name) == []
    assert sorted(index.of_type(TOPIC)) == sorted(acls)


@given(names, names)
def test_prefixed_applies_exactly_to_names_starting_with_the_prefix(prefix: str, name: str) -> None:
    b = AclBinding(TOPIC, prefix, PatternType.PREFIXED, "User:alice", "*", AclOperation.READ,
                   AclPermission.ALLOW)
    assert b.applies_to(TOPIC, name) is name.startswith(prefix)
    assert not b.applies_to(ResourceType.GROUP, name)
    allowed = decide([b], "User:alice", "10.0.0.1", AclOperation.READ, TOPIC, name, allow_if_no_acl=False)
    assert allowed is name.startswith(prefix)


def test_implied_operations_are_allow_only() -> None:
    read = AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.READ, AclPermission.ALLOW)
    assert decide([read], "User:a", "h", AclOperation.DESCRIBE, TOPIC, "t", allow_if_no_acl=False)
    assert not decide([read], "User:a", "h", AclOperation.WRITE, TOPIC, "t", allow_if_no_acl=False)
    deny_read = AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.READ,
                           AclPermission.DENY)
    describe = AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.DESCRIBE,
                          AclPermission.ALLOW)
    assert decide([deny_read, describe], "User:a", "h", AclOperation.DESCRIBE, TOPIC, "t",
                  allow_if_no_acl=False)
    alter_configs = AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*",
                               AclOperation.ALTER_CONFIGS, AclPermission.ALLOW)
    assert decide([alter_configs], "User:a", "h", AclOperation.DESCRIBE_CONFIGS, TOPIC, "t",
                  allow_if_no_acl=False)


def test_host_and_principal_wildcards() -> None:
    b = AclBinding(TOPIC, "t", PatternType.LITERAL, "User:*", "10.0.0.1", AclOperation.READ,
                   AclPermission.ALLOW)
    assert decide([b], "User:x", "10.0.0.1", AclOperation.READ, TOPIC, "t", allow_if_no_acl=False)
    assert not decide([b], "User:x", "10.0.0.2", AclOperation.READ, TOPIC, "t", allow_if_no_acl=True)


@settings(max_examples=300)
@given(acl_sets, request_principals, request_hosts, st.sampled_from([AclOperation.WRITE, AclOperation.READ]),
       st.lists(names, min_size=1, max_size=4), st.booleans())
def test_any_of_type_holds_when_some_resource_is_allowed(
    acls: list[AclBinding], principal: str, host: str, op: AclOperation, some: list[str], default: bool,
) -> None:
    any_allowed = decide_any_of_type(acls, principal, host, op, TOPIC, allow_if_no_acl=default)
    if any(decide(acls, principal, host, op, TOPIC, n, allow_if_no_acl=default) for n in some):
        assert any_allowed


@settings(max_examples=300)
@given(acl_sets, names)
def test_match_filter_selects_the_bindings_that_apply(acls: list[AclBinding], name: str) -> None:
    match = AclFilter(resource_type=TOPIC, resource_name=name, pattern_type=PatternType.MATCH)
    assert [b for b in acls if match.matches(b)] == [b for b in acls if b.applies_to(TOPIC, name)]
    exact = AclFilter(resource_name=name, pattern_type=PatternType.ANY)
    assert [b for b in acls if exact.matches(b)] == [b for b in acls if b.resource_name == name]
    everything = AclFilter()
    assert all(everything.matches(b) for b in acls)


@given(bindings())
def test_a_binding_round_trips_through_the_metadata(binding: AclBinding) -> None:
    binding.check()
    assert AclBinding.decode(binding.encode()) == binding
    keys = KeySpace()
    view = ClusterMetadata(keys=keys).apply([WatchEvent(1, keys.acl(binding), binding.encode(), 5, 5)])
    assert list(view.acls.values()) == [binding]
    gone = view.apply([WatchEvent(1, keys.acl(binding), None, 6)])
    assert not gone.acls and view.acls


@pytest.mark.parametrize("binding", [
    AclBinding(TOPIC, "", PatternType.LITERAL, "User:a", "*", AclOperation.READ, AclPermission.ALLOW),
    AclBinding(TOPIC, "t", PatternType.MATCH, "User:a", "*", AclOperation.READ, AclPermission.ALLOW),
    AclBinding(TOPIC, "t", PatternType.LITERAL, "alice", "*", AclOperation.READ, AclPermission.ALLOW),
    AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.CLUSTER_ACTION,
               AclPermission.ALLOW),
    AclBinding(ResourceType.CLUSTER, "other", PatternType.LITERAL, "User:a", "*", AclOperation.ALTER,
               AclPermission.ALLOW),
    AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.ANY, AclPermission.ALLOW),
    AclBinding(TOPIC, "t", PatternType.LITERAL, "User:a", "*", AclOperation.READ, AclPermission.ANY),
])
def test_bindings_kafka_refuses_are_refused(binding: AclBinding) -> None:
    with pytest.raises(AclError):
        binding.check()


def test_the_cluster_binding_is_accepted() -> None:
    AclBinding(ResourceType.CLUSTER, CLUSTER_NAME, PatternType.LITERAL, "User:a", "*",
               AclOperation.CLUSTER_ACTION, AclPermission.ALLOW).check()
