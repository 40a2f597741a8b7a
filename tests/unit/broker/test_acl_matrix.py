"""The ACL matrix: for every API that checks something (broker/authz_rules.py), a principal
holding the ACL it needs and one without it, against an in-process broker with Kafka's
StandardAuthorizer semantics. The first must not see the authorization error; the second
must see exactly Kafka's error, everywhere the answer carries one. Then DENY beating ALLOW,
PREFIXED patterns, super users, allow.everyone.if.no.acl.found, and what Metadata and
ListGroups leave out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.authz_rules import RULES, UNCHECKED
from ackly.broker.dispatch import TABLE
from ackly.cluster.acls import CLUSTER_NAME, AclOperation, AclPermission, PatternType, ResourceType
from ackly.errors import ErrorCode
from ackly.protocol.record_codec import Record, encode_batch

from .acl_harness import ADMIN, NOW_MS, ask, error_codes, grant, make_node

TOPIC, GROUP, CLUSTER, TXN = (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER,
                              ResourceType.TRANSACTIONAL_ID)
Op = AclOperation
ALICE, MALLORY = "User:alice", "User:mallory"
T, G, TX = "orders", "grp", "tx-1"
TOPIC_DENIED = ErrorCode.topic_authorization_failed
GROUP_DENIED = ErrorCode.group_authorization_failed
CLUSTER_DENIED = ErrorCode.cluster_authorization_failed
TXN_DENIED = ErrorCode.transactional_id_authorization_failed


def _batch() -> bytes:
    return encode_batch([Record(key=None, value=b"v")], now_ms=NOW_MS)


def _fetch_partition() -> dict[str, Any]:
    return {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
            "current_leader_epoch": -1, "log_start_offset": -1, "last_fetched_epoch": -1}


@dataclass(frozen=True)
class Case:
    name: str
    api_key: int
    version: int
    data: dict[str, Any]
    grants: tuple[tuple[ResourceType, str, AclOperation], ...]
    denied: ErrorCode
    top_level_ok: bool = False  # Fetch: the request-level code stays NONE, partitions carry it


CASES = [
    Case("produce", 0, 8, {"acks": 1, "timeout": 1000, "topic_data": [
        {"name": T, "partition_data": [{"index": 0, "records": _batch()}]}]},
        ((TOPIC, T, Op.WRITE),), TOPIC_DENIED),
    Case("fetch", 1, 12, {"replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20,
                          "session_epoch": -1, "topics": [{"topic": T, "partitions": [_fetch_partition()]}]},
         ((TOPIC, T, Op.READ),), TOPIC_DENIED, top_level_ok=True),
    Case("list-offsets", 2, 5, {"replica_id": -1, "topics": [
        {"name": T, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]},
        ((TOPIC, T, Op.DESCRIBE),), TOPIC_DENIED),
    Case("metadata", 3, 9, {"topics": [{"name": T}], "allow_auto_topic_creation": False},
         ((TOPIC, T, Op.DESCRIBE),), TOPIC_DENIED),
    Case("describe-topic-partitions", 75, 0, {"topics": [{"name": T}], "response_partition_limit": 10},
         ((TOPIC, T, Op.DESCRIBE),), TOPIC_DENIED),
    Case("offset-commit", 8, 8, {"group_id": G, "generation_id_or_member_epoch": -1, "member_id": "",
                                 "topics": [{"name": T, "partitions": [
                                     {"partition_index": 0, "committed_offset": 0,
                                      "committed_leader_epoch": -1}]}]},
         ((GROUP, G, Op.READ), (TOPIC, T, Op.READ)), GROUP_DENIED),
    Case("offset-fetch", 9, 7, {"group_id": G, "topics": [{"name": T, "partition_indexes": [0]}]},
         ((GROUP, G, Op.DESCRIBE), (TOPIC, T, Op.DESCRIBE)), GROUP_DENIED),
    Case("find-coordinator-group", 10, 3, {"key": G, "key_type": 0},
         ((GROUP, G, Op.DESCRIBE),), GROUP_DENIED),
    Case("find-coordinator-txn", 10, 3, {"key": TX, "key_type": 1},
         ((TXN, TX, Op.DESCRIBE),), TXN_DENIED),
    Case("join-group", 11, 5, {"group_id": G, "session_timeout": 10_000, "rebalance_timeout": 10_000,
                               "member_id": "", "protocol_type": "consumer",
                               "protocols": [{"name": "range", "metadata": b""}]},
         ((GROUP, G, Op.READ),), GROUP_DENIED),
    Case("heartbeat", 12, 3, {"group_id": G, "generation_id": 1, "member_id": "m"},
         ((GROUP, G, Op.READ),), GROUP_DENIED),
    Case("leave-group", 13, 3, {"group_id": G, "members": [{"member_id": "m"}]},
         ((GROUP, G, Op.READ),), GROUP_DENIED),
    Case("sync-group", 14, 3, {"group_id": G, "generation_id": 1, "member_id": "m"},
         ((GROUP, G, Op.READ),), GROUP_DENIED),
    Case("describe-groups", 15, 3, {"groups": [G]}, ((GROUP, G, Op.DESCRIBE),), GROUP_DENIED),
    Case("consumer-group-heartbeat", 68, 0, {"group_id": G, "member_id": "m", "member_epoch": 0,
                                             "rebalance_timeout": 60_000, "subscribed_topic_names": [T],
                                             "topic_partitions": []},
         ((GROUP, G, Op.READ),), GROUP_DENIED),
    Case("consumer-group-describe", 69, 0, {"group_ids": [G], "include_authorized_operations": False},
         ((GROUP, G, Op.DESCRIBE),), GROUP_DENIED),
    Case("create-topics", 19, 5, {"timeout": 1000, "topics": [
        {"name": "fresh", "num_partitions": 1, "replication_factor": 1}]},
        ((TOPIC, "fresh", Op.CREATE),), TOPIC_DENIED),
    Case("delete-topics", 20, 4, {"timeout": 1000, "topic_names": [T]},
         ((TOPIC, T, Op.DELETE),), TOPIC_DENIED),
    Case("delete-records", 21, 1, {"timeout": 1000, "topics": [
        {"name": T, "partitions": [{"partition_index": 0, "offset": 0}]}]},
        ((TOPIC, T, Op.DELETE),), TOPIC_DENIED),
    Case("init-producer-id-idempotent", 22, 3, {"transactional_id": None, "transaction_timeout": 60_000,
                                                "producer_id": -1, "producer_epoch": -1},
         ((CLUSTER, CLUSTER_NAME, Op.IDEMPOTENT_WRITE),), CLUSTER_DENIED),
    Case("init-producer-id-kip679", 22, 3, {"transactional_id": None, "transaction_timeout": 60_000,
                                            "producer_id": -1, "producer_epoch": -1},
         ((TOPIC, T, Op.WRITE),), CLUSTER_DENIED),
    Case("init-producer-id-transactional", 22, 3, {"transactional_id": TX, "transaction_timeout": 60_000,
                                                   "producer_id": -1, "producer_epoch": -1},
         ((TXN, TX, Op.WRITE),), TXN_DENIED),
    Case("offset-for-leader-epoch", 23, 3, {"replica_id": -1, "topics": [
        {"topic": T, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
        ((TOPIC, T, Op.DESCRIBE),), TOPIC_DENIED),
    Case("offset-for-leader-epoch-replica", 23, 3, {"replica_id": 1, "topics": [
        {"topic": T, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
        ((CLUSTER, CLUSTER_NAME, Op.CLUSTER_ACTION),), CLUSTER_DENIED),
    Case("add-partitions-to-txn", 24, 3, {"v3_and_below_transactional_id": TX,
                                          "v3_and_below_producer_id": 1, "v3_and_below_producer_epoch": 0,
                                          "v3_and_below_topics": [{"name": T, "partitions": [0]}]},
         ((TXN, TX, Op.WRITE), (TOPIC, T, Op.WRITE)), TXN_DENIED),
    Case("add-partitions-to-txn-verify", 24, 4, {"transactions": [
        {"transactional_id": TX, "producer_id": 1, "producer_epoch": 0, "verify_only": True,
         "topics": [{"name": T, "partitions": [0]}]}]},
        ((CLUSTER, CLUSTER_NAME, Op.CLUSTER_ACTION),), CLUSTER_DENIED),
    Case("add-offsets-to-txn", 25, 3, {"transactional_id": TX, "producer_id": 1, "producer_epoch": 0,
                                       "group_id": G},
         ((TXN, TX, Op.WRITE), (GROUP, G, Op.READ)), TXN_DENIED),
    Case("end-txn", 26, 3, {"transactional_id": TX, "producer_id": 1, "producer_epoch": 0,
                            "committed": True},
         ((TXN, TX, Op.WRITE),), TXN_DENIED),
    Case("write-txn-markers", 27, 1, {"markers": [
        {"producer_id": 1, "producer_epoch": 0, "transaction_result": True, "coordinator_epoch": 0,
         "topics": [{"name": T, "partition_indexes": [0]}]}]},
        ((CLUSTER, CLUSTER_NAME, Op.CLUSTER_ACTION),), CLUSTER_DENIED),
    Case("txn-offset-commit", 28, 3, {"transactional_id": TX, "group_id": G, "producer_id": 1,
                                      "producer_epoch": 0, "generation_id": -1, "member_id": "",
                                      "topics": [{"name": T, "partitions": [
                                          {"partition_index": 0, "committed_offset": 0,
                                           "committed_leader_epoch": -1}]}]},
         ((TXN, TX, Op.WRITE), (GROUP, G, Op.READ), (TOPIC, T, Op.READ)), TXN_DENIED),
    Case("describe-configs-topic", 32, 4, {"resources": [
        {"resource_type": 2, "resource_name": T, "configuration_keys": None}]},
        ((TOPIC, T, Op.DESCRIBE_CONFIGS),), TOPIC_DENIED),
    Case("describe-configs-broker", 32, 4, {"resources": [
        {"resource_type": 4, "resource_name": "0", "configuration_keys": None}]},
        ((CLUSTER, CLUSTER_NAME, Op.DESCRIBE_CONFIGS),), CLUSTER_DENIED),
    Case("alter-configs", 33, 1, {"resources": [
        {"resource_type": 2, "resource_name": T, "configs": [{"name": "retention.ms", "value": "1000"}]}]},
        ((TOPIC, T, Op.ALTER_CONFIGS),), TOPIC_DENIED),
    Case("create-partitions", 37, 2, {"timeout": 1000, "topics": [{"name": T, "count": 2}]},
         ((TOPIC, T, Op.ALTER),), TOPIC_DENIED),
    Case("delete-groups", 42, 2, {"groups_names": [G]}, ((GROUP, G, Op.DELETE),), GROUP_DENIED),
    Case("incremental-alter-configs", 44, 1, {"resources": [
        {"resource_type": 2, "resource_name": T,
         "configs": [{"name": "retention.ms", "config_operation": 0, "value": "1000"}]}]},
        ((TOPIC, T, Op.ALTER_CONFIGS),), TOPIC_DENIED),
    Case("offset-delete", 47, 0, {"group_id": G, "topics": [{"name": T, "partitions": [
        {"partition_index": 0}]}]}, ((GROUP, G, Op.DELETE), (TOPIC, T, Op.READ)), GROUP_DENIED),
    Case("describe-user-scram-credentials", 50, 0, {"users": None},
         ((CLUSTER, CLUSTER_NAME, Op.DESCRIBE),), CLUSTER_DENIED),
    Case("alter-user-scram-credentials", 51, 0, {"deletions": [{"name": "bob", "mechanism": 2}],
         "upsertions": []}, ((CLUSTER, CLUSTER_NAME, Op.ALTER),), CLUSTER_DENIED),
    Case("describe-client-quotas", 48, 1, {"components": [], "strict": False},
         ((CLUSTER, CLUSTER_NAME, Op.DESCRIBE_CONFIGS),), CLUSTER_DENIED),
    Case("alter-client-quotas", 49, 1, {"entries": [
        {"entity": [{"entity_type": "user", "entity_name": "bob"}],
         "ops": [{"key": "producer_byte_rate", "value": 1000.0, "remove": False}]}], "validate_only": False},
         ((CLUSTER, CLUSTER_NAME, Op.ALTER_CONFIGS),), CLUSTER_DENIED),
    Case("describe-producers", 61, 0, {"topics": [{"name": T, "partition_indexes": [0]}]},
         ((TOPIC, T, Op.READ),), TOPIC_DENIED),
    Case("describe-transactions", 65, 0, {"transactional_ids": [TX]},
         ((TXN, TX, Op.DESCRIBE),), TXN_DENIED),
]


@pytest.fixture
def node(tmp_path: Path) -> Any:
    n = make_node(tmp_path / "data")
    n.create_topic(T, 1, {}, NOW_MS)
    yield n
    n.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_with_and_without_the_acl(node: Any, case: Case) -> None:
    for resource_type, name, op in case.grants:
        grant(node, resource_type, name, ALICE, op)
    # Someone else's ACL on each resource, so that "no ACL found" does not apply either way.
    for resource_type, name, op in case.grants:
        grant(node, resource_type, name, "User:carol", op)
    response = ask(node, case.api_key, case.version, MALLORY, case.data)
    if case.top_level_ok:
        assert response.error_code == ErrorCode.none
        response = response.responses
    refused = error_codes(response)
    assert refused and set(refused) == {case.denied}, refused
    allowed = error_codes(ask(node, case.api_key, case.version, ALICE, case.data))
    assert case.denied not in allowed, allowed


def test_every_api_in_the_dispatch_table_has_rules_or_is_known_unchecked() -> None:
    assert set(TABLE) <= set(RULES) | UNCHECKED, sorted(set(TABLE) - set(RULES) - UNCHECKED)
    covered = {c.api_key for c in CASES} | {16, 66, 29, 30, 31}  # filters and ACL APIs: below and test_acl_apis
    assert set(RULES) <= covered, sorted(set(RULES) - covered)


def test_produce_to_a_second_topic_is_refused_per_topic(node: Any) -> None:
    node.create_topic("other", 1, {}, NOW_MS)
    grant(node, TOPIC, T, ALICE, Op.WRITE)
    response = ask(node, 0, 8, ALICE, {"acks": 1, "timeout": 1000, "topic_data": [
        {"name": T, "partition_data": [{"index": 0, "records": _batch()}]},
        {"name": "other", "partition_data": [{"index": 0, "records": _batch()}]}]})
    codes = {r.name: [int(p.error_code) for p in r.partition_responses] for r in response.responses}
    assert codes == {T: [0], "other": [TOPIC_DENIED]}


def test_deny_beats_allow_and_prefixed_patterns_apply(node: Any) -> None:
    grant(node, TOPIC, "ord", ALICE, Op.READ, pattern=PatternType.PREFIXED)
    fetch = {"replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "session_epoch": -1,
             "topics": [{"topic": T, "partitions": [_fetch_partition()]}]}
    assert error_codes(ask(node, 1, 12, ALICE, fetch)) == [0, 0]
    grant(node, TOPIC, "*", ALICE, Op.ALL, permission=AclPermission.DENY)
    assert TOPIC_DENIED in error_codes(ask(node, 1, 12, ALICE, fetch))
    # A super user is allowed whatever the ACLs say.
    assert error_codes(ask(node, 1, 12, ADMIN, fetch)) == [0, 0]


def test_a_host_bound_acl_applies_from_that_host_only(node: Any) -> None:
    from .acl_harness import CREATE_ACLS, call, creation

    call(node, CREATE_ACLS, 3, ADMIN, creations=(
        creation(TOPIC, T, ALICE, Op.DESCRIBE, host="10.0.0.7"),))
    data = {"topics": [{"name": T}], "allow_auto_topic_creation": False}
    assert error_codes(ask(node, 3, 9, ALICE, data, host="10.0.0.7"))[0] == 0
    assert error_codes(ask(node, 3, 9, ALICE, data, host="10.0.0.8")) == [TOPIC_DENIED]


def test_allow_everyone_if_no_acl_found(tmp_path: Path) -> None:
    n = make_node(tmp_path / "data", **{"allow.everyone.if.no.acl.found": "true"})
    try:
        n.create_topic(T, 1, {}, NOW_MS)
        data = {"topics": [{"name": T}], "allow_auto_topic_creation": False}
        assert error_codes(ask(n, 3, 9, MALLORY, data))[0] == 0
        grant(n, TOPIC, T, ALICE, Op.DESCRIBE)  # now the topic has an ACL: others are refused
        assert error_codes(ask(n, 3, 9, MALLORY, data)) == [TOPIC_DENIED]
    finally:
        n.close()


def test_metadata_and_list_groups_leave_out_what_may_not_be_described(node: Any) -> None:
    node.create_topic("secret", 1, {}, NOW_MS)
    grant(node, TOPIC, T, ALICE, Op.READ)  # READ implies DESCRIBE
    listing = ask(node, 3, 9, ALICE, {"topics": None})
    assert [t.name for t in listing.topics] == [T]
    assert {t.name for t in ask(node, 3, 9, ADMIN, {"topics": None}).topics} == set(node.topics)
    # Two groups, made by joining; alice may describe one of them.
    for group in ("visible", "hidden"):
        ask(node, 11, 5, ADMIN, {"group_id": group, "session_timeout": 10_000, "rebalance_timeout": 10_000,
                                 "member_id": "", "protocol_type": "consumer",
                                 "protocols": [{"name": "range", "metadata": b""}]})
    assert {g.group_id for g in ask(node, 16, 3, ADMIN, {}).groups} >= {"visible", "hidden"}
    grant(node, GROUP, "visible", ALICE, Op.DESCRIBE)
    assert [g.group_id for g in ask(node, 16, 3, ALICE, {}).groups] == ["visible"]
    grant(node, CLUSTER, CLUSTER_NAME, ALICE, Op.DESCRIBE)
    assert {g.group_id for g in ask(node, 16, 3, ALICE, {}).groups} >= {"visible", "hidden"}


def test_list_transactions_leaves_out_what_may_not_be_described(node: Any) -> None:
    init = {"transactional_id": TX, "transaction_timeout": 60_000, "producer_id": -1, "producer_epoch": -1}
    ask(node, 10, 3, ADMIN, {"key": TX, "key_type": 1})
    assert error_codes(ask(node, 22, 3, ADMIN, init)) == [0]
    assert [t.transactional_id for t in ask(node, 66, 0, ADMIN, {}).transaction_states] == [TX]
    assert [t.transactional_id for t in ask(node, 66, 0, ALICE, {}).transaction_states] == []
    grant(node, TXN, "tx-", ALICE, Op.DESCRIBE, pattern=PatternType.PREFIXED)
    assert [t.transactional_id for t in ask(node, 66, 0, ALICE, {}).transaction_states] == [TX]


def test_metadata_auto_creation_needs_create(node: Any) -> None:
    data = {"topics": [{"name": "auto"}], "allow_auto_topic_creation": True}
    grant(node, TOPIC, "auto", ALICE, Op.DESCRIBE)
    assert error_codes(ask(node, 3, 9, ALICE, data)) == [TOPIC_DENIED]
    assert "auto" not in node.topics
    grant(node, TOPIC, "auto", ALICE, Op.CREATE)
    assert error_codes(ask(node, 3, 9, ALICE, data))[0] == 0
    assert "auto" in node.topics


def test_authorized_operations_are_the_principals(node: Any) -> None:
    """Metadata, DescribeGroups and DescribeCluster report what this principal may do when
    asked (Kafka's authorizedOperations), not every operation."""
    grant(node, TOPIC, T, ALICE, Op.READ)
    grant(node, CLUSTER, CLUSTER_NAME, ALICE, Op.DESCRIBE)
    grant(node, GROUP, G, ALICE, Op.DELETE)

    def bits(value: int) -> set[Op]:
        return {Op(b) for b in range(32) if value & (1 << b)}

    metadata = ask(node, 3, 10, ALICE, {"topics": [{"name": T}], "allow_auto_topic_creation": False,
                                        "include_topic_authorized_operations": True})
    assert bits(metadata.topics[0].topic_authorized_operations) == {Op.READ, Op.DESCRIBE}
    plain = ask(node, 3, 10, ALICE, {"topics": [{"name": T}], "allow_auto_topic_creation": False})
    assert plain.topics[0].topic_authorized_operations == -(2**31)
    cluster = ask(node, 60, 0, ALICE, {"include_cluster_authorized_operations": True})
    assert bits(cluster.cluster_authorized_operations) == {Op.DESCRIBE}
    groups = ask(node, 15, 5, ALICE, {"groups": [G], "include_authorized_operations": True})
    assert bits(groups.groups[0].authorized_operations) == {Op.DELETE, Op.DESCRIBE}


def test_offset_delete_refuses_only_the_topics_it_may_not_read(node: Any) -> None:
    node.create_topic("other", 1, {}, NOW_MS)
    grant(node, GROUP, G, ALICE, Op.DELETE)
    grant(node, TOPIC, T, ALICE, Op.READ)
    response = ask(node, 47, 0, ALICE, {"group_id": G, "topics": [
        {"name": T, "partitions": [{"partition_index": 0}]},
        {"name": "other", "partitions": [{"partition_index": 0}]}]})
    codes = {t.name: [int(p.error_code) for p in t.partitions] for t in response.topics}
    assert codes.get("other") == [TOPIC_DENIED]
    assert codes.get(T, [0]) != [TOPIC_DENIED]
