"""What each API checks before it acts: one table, to be read against Kafka's documentation
("Operations and Resources on Protocols" in Kafka's security docs) and KafkaApis.

Each API key lists its checks by a short label; a handler asks `check(node, ctx, API_KEY,
label, name)` at the point where Kafka's handler asks, and answers the rule's error where
Kafka does (`scope`: the whole request, each topic or partition, each group, ...). Without an
authorizer every check passes. Alternatives are written as two labels the handler tries in
turn (CreateTopics: CREATE on the CLUSTER, else CREATE on the topic; InitProducerId:
IDEMPOTENT_WRITE on the CLUSTER, else WRITE on any topic, KIP-679).

Requests only brokers send each other (a follower's Fetch and OffsetForLeaderEpoch,
WriteTxnMarkers, AddPartitionsToTxn v4+ verify-only batches) need CLUSTER_ACTION on the
CLUSTER: a client that forges one is refused before it can move a high watermark or end a
transaction. ApiVersions and DescribeCluster check nothing, as in Kafka, and neither do
SaslHandshake and SaslAuthenticate: authentication comes before any authorization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ackly.cluster.acls import CLUSTER_NAME, AclOperation, ResourceType
from ackly.errors import ErrorCode

if TYPE_CHECKING:
    from ackly.broker.context import RequestContext
    from ackly.broker.node import BrokerNode

TOPIC, GROUP, CLUSTER, TXN_ID = (
    ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER, ResourceType.TRANSACTIONAL_ID,
)
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = (
    AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
    AclOperation.ALTER, AclOperation.DESCRIBE,
)
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = (
    AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
    AclOperation.IDEMPOTENT_WRITE,
)
TOPIC_DENIED = ErrorCode.topic_authorization_failed
GROUP_DENIED = ErrorCode.group_authorization_failed
CLUSTER_DENIED = ErrorCode.cluster_authorization_failed
TXN_DENIED = ErrorCode.transactional_id_authorization_failed


@dataclass(frozen=True)
class Rule:
    resource_type: ResourceType
    operation: AclOperation
    error: ErrorCode
    scope: str  # where the error is answered


R = Rule
RULES: dict[int, tuple[str, dict[str, Rule]]] = {
    0: ("Produce", {
        "transactional": R(TXN_ID, WRITE, TXN_DENIED, "request (a transactional producer)"),
        "topic": R(TOPIC, WRITE, TOPIC_DENIED, "partition"),
    }),
    1: ("Fetch", {
        "follower": R(CLUSTER, CLUSTER_ACTION, TOPIC_DENIED, "partition (replica id >= 0)"),
        "consumer": R(TOPIC, READ, TOPIC_DENIED, "partition"),
    }),
    2: ("ListOffsets", {"topic": R(TOPIC, DESCRIBE, TOPIC_DENIED, "partition")}),
    3: ("Metadata", {
        "topic": R(TOPIC, DESCRIBE, TOPIC_DENIED, "topic asked by name; left out of a listing"),
        "auto-create-cluster": R(CLUSTER, CREATE, TOPIC_DENIED, "topic to auto-create"),
        "auto-create-topic": R(TOPIC, CREATE, TOPIC_DENIED, "topic to auto-create"),
    }),
    8: ("OffsetCommit", {
        "group": R(GROUP, READ, GROUP_DENIED, "request"),
        "topic": R(TOPIC, READ, TOPIC_DENIED, "partition"),
    }),
    9: ("OffsetFetch", {
        "group": R(GROUP, DESCRIBE, GROUP_DENIED, "group"),
        "topic": R(TOPIC, DESCRIBE, TOPIC_DENIED, "partition; left out of all-offsets"),
    }),
    10: ("FindCoordinator", {
        "group": R(GROUP, DESCRIBE, GROUP_DENIED, "key (key type 0)"),
        "transactional": R(TXN_ID, DESCRIBE, TXN_DENIED, "key (key type 1)"),
    }),
    11: ("JoinGroup", {"group": R(GROUP, READ, GROUP_DENIED, "request")}),
    12: ("Heartbeat", {"group": R(GROUP, READ, GROUP_DENIED, "request")}),
    13: ("LeaveGroup", {"group": R(GROUP, READ, GROUP_DENIED, "request")}),
    14: ("SyncGroup", {"group": R(GROUP, READ, GROUP_DENIED, "request")}),
    15: ("DescribeGroups", {"group": R(GROUP, DESCRIBE, GROUP_DENIED, "group")}),
    16: ("ListGroups", {
        "cluster": R(CLUSTER, DESCRIBE, CLUSTER_DENIED, "lists every group"),
        "group": R(GROUP, DESCRIBE, GROUP_DENIED, "else a group is left out"),
    }),
    19: ("CreateTopics", {
        "cluster": R(CLUSTER, CREATE, TOPIC_DENIED, "topic"),
        "topic": R(TOPIC, CREATE, TOPIC_DENIED, "topic (when CREATE on the cluster is missing)"),
    }),
    20: ("DeleteTopics", {"topic": R(TOPIC, DELETE, TOPIC_DENIED, "topic")}),
    21: ("DeleteRecords", {"topic": R(TOPIC, DELETE, TOPIC_DENIED, "partition")}),
    22: ("InitProducerId", {
        "transactional": R(TXN_ID, WRITE, TXN_DENIED, "request (transactional id given)"),
        "idempotent": R(CLUSTER, IDEMPOTENT_WRITE, CLUSTER_DENIED, "request (no transactional id)"),
        "idempotent-any-topic": R(TOPIC, WRITE, CLUSTER_DENIED,
                                  "request, when IDEMPOTENT_WRITE is missing (KIP-679)"),
    }),
    23: ("OffsetForLeaderEpoch", {
        "follower": R(CLUSTER, CLUSTER_ACTION, CLUSTER_DENIED, "partition (replica id >= 0)"),
        "topic": R(TOPIC, DESCRIBE, TOPIC_DENIED, "partition"),
    }),
    24: ("AddPartitionsToTxn", {
        "verify": R(CLUSTER, CLUSTER_ACTION, CLUSTER_DENIED, "request (v4+, broker batches)"),
        "transactional": R(TXN_ID, WRITE, TXN_DENIED, "request (v0-3)"),
        "topic": R(TOPIC, WRITE, TOPIC_DENIED, "partition (v0-3)"),
    }),
    25: ("AddOffsetsToTxn", {
        "transactional": R(TXN_ID, WRITE, TXN_DENIED, "request"),
        "group": R(GROUP, READ, GROUP_DENIED, "request"),
    }),
    26: ("EndTxn", {"transactional": R(TXN_ID, WRITE, TXN_DENIED, "request")}),
    27: ("WriteTxnMarkers", {"request": R(CLUSTER, CLUSTER_ACTION, CLUSTER_DENIED, "partition")}),
    28: ("TxnOffsetCommit", {
        "transactional": R(TXN_ID, WRITE, TXN_DENIED, "request"),
        "group": R(GROUP, READ, GROUP_DENIED, "request"),
        "topic": R(TOPIC, READ, TOPIC_DENIED, "partition"),
    }),
    29: ("DescribeAcls", {"request": R(CLUSTER, DESCRIBE, CLUSTER_DENIED, "request")}),
    30: ("CreateAcls", {"request": R(CLUSTER, ALTER, CLUSTER_DENIED, "creation")}),
    31: ("DeleteAcls", {"request": R(CLUSTER, ALTER, CLUSTER_DENIED, "filter")}),
    32: ("DescribeConfigs", {
        "topic": R(TOPIC, DESCRIBE_CONFIGS, TOPIC_DENIED, "resource"),
        "broker": R(CLUSTER, DESCRIBE_CONFIGS, CLUSTER_DENIED, "resource"),
    }),
    33: ("AlterConfigs", {
        "topic": R(TOPIC, ALTER_CONFIGS, TOPIC_DENIED, "resource"),
        "broker": R(CLUSTER, ALTER_CONFIGS, CLUSTER_DENIED, "resource"),
    }),
    37: ("CreatePartitions", {"topic": R(TOPIC, ALTER, TOPIC_DENIED, "topic")}),
    42: ("DeleteGroups", {"group": R(GROUP, DELETE, GROUP_DENIED, "group")}),
    44: ("IncrementalAlterConfigs", {
        "topic": R(TOPIC, ALTER_CONFIGS, TOPIC_DENIED, "resource"),
        "broker": R(CLUSTER, ALTER_CONFIGS, CLUSTER_DENIED, "resource"),
    }),
    47: ("OffsetDelete", {
        "group": R(GROUP, DELETE, GROUP_DENIED, "request"),
        "topic": R(TOPIC, READ, TOPIC_DENIED, "partition"),
    }),
    # KIP-554: Kafka's handlers check DESCRIBE / ALTER on the CLUSTER (ControllerApis).
    50: ("DescribeUserScramCredentials", {"request": R(CLUSTER, DESCRIBE, CLUSTER_DENIED, "request")}),
    51: ("AlterUserScramCredentials", {"request": R(CLUSTER, ALTER, CLUSTER_DENIED, "each user")}),
    # KIP-546: Kafka's handlers ask DESCRIBE_CONFIGS / ALTER_CONFIGS on the CLUSTER.
    48: ("DescribeClientQuotas", {"request": R(CLUSTER, DESCRIBE_CONFIGS, CLUSTER_DENIED, "request")}),
    49: ("AlterClientQuotas", {"request": R(CLUSTER, ALTER_CONFIGS, CLUSTER_DENIED, "entry")}),
    75: ("DescribeTopicPartitions", {
        "topic": R(TOPIC, DESCRIBE, TOPIC_DENIED, "topic asked by name; left out of a listing"),
    }),
    61: ("DescribeProducers", {"topic": R(TOPIC, READ, TOPIC_DENIED, "partition")}),
    65: ("DescribeTransactions", {"transactional": R(TXN_ID, DESCRIBE, TXN_DENIED, "transactional id")}),
    66: ("ListTransactions", {"transactional": R(TXN_ID, DESCRIBE, TXN_DENIED,
                                                 "a transactional id is left out")}),
    68: ("ConsumerGroupHeartbeat", {"group": R(GROUP, READ, GROUP_DENIED, "request")}),
    69: ("ConsumerGroupDescribe", {"group": R(GROUP, DESCRIBE, GROUP_DENIED, "group")}),
}
# Checked by nobody, as in Kafka: ApiVersions (18), DescribeCluster (60), and the SASL
# exchange, SaslHandshake (17) and SaslAuthenticate (36), which comes before any authorization.
UNCHECKED = frozenset({17, 18, 36, 60})


def rule(api_key: int, label: str) -> Rule:
    return RULES[api_key][1][label]


def check(node: BrokerNode, ctx: RequestContext, api_key: int, label: str,
          name: str = CLUSTER_NAME) -> ErrorCode | None:
    """None if allowed, else the rule's error."""
    if not node.authorizer.enabled:
        return None
    r = rule(api_key, label)
    if r.resource_type is ResourceType.CLUSTER:
        name = CLUSTER_NAME
    if node.authorizer.allowed(ctx, r.operation, r.resource_type, name):
        return None
    return r.error


def check_request(node: BrokerNode, ctx: RequestContext, api_key: int) -> ErrorCode | None:
    """The check of an API whose one rule is on the CLUSTER (label "request")."""
    return check(node, ctx, api_key, "request")


def check_any_topic(node: BrokerNode, ctx: RequestContext, api_key: int, label: str) -> ErrorCode | None:
    """A rule on topics satisfied by any one topic (KIP-679's WRITE for idempotence)."""
    r = rule(api_key, label)
    if node.authorizer.allowed_any(ctx, r.operation, r.resource_type):
        return None
    return r.error
