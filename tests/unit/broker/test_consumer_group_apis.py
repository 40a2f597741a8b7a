"""ConsumerGroupHeartbeat, ConsumerGroupDescribe and the APIs around them, through a broker
node's dispatcher: the request checks Kafka makes, topic ids on the wire, the member epoch in
OffsetCommit v9, and ListGroups' group type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.broker.acl_harness import ADMIN, ask, make_node

from ackly.broker.node import BrokerNode
from ackly.errors import ErrorCode

E = ErrorCode
T = "orders"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BrokerNode]:
    n = make_node(tmp_path / "data", **{"authorizer.class.name": ""})
    n.create_topic(T, 3, {}, 1_700_000_000_000)
    yield n
    n.close()


def beat(node: BrokerNode, **fields: Any) -> Any:
    data = {"group_id": "g", "member_id": "m1", "member_epoch": 0, "rebalance_timeout": 30_000,
            "subscribed_topic_names": [T], "topic_partitions": [], **fields}
    return ask(node, 68, 1, ADMIN, data)


def test_api_versions_lists_the_consumer_group_apis(node: BrokerNode) -> None:
    keys = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in ask(node, 18, 2, ADMIN, {}).api_keys}
    assert keys[68] == (0, 1) and keys[69] == (0, 1)


@pytest.mark.parametrize("fields,message", [
    ({"group_id": ""}, "GroupId can't be empty."),
    ({"member_id": ""}, "MemberId can't be empty."),
    ({"rebalance_timeout": -1}, "RebalanceTimeoutMs must be provided in first request."),
    ({"subscribed_topic_names": None}, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."),
    ({"member_epoch": -2}, "InstanceId can't be null when MemberEpoch is -2."),
])
def test_invalid_heartbeats_are_refused_with_kafkas_message(node: BrokerNode, fields: dict[str, Any],
                                                            message: str) -> None:
    response = beat(node, **fields)
    assert response.error_code == E.invalid_request
    assert response.error_message == message


def test_join_describe_commit_and_list(node: BrokerNode) -> None:
    joined = beat(node)
    assert joined.error_code == E.none and joined.member_epoch == 1
    topic_id = node.topics[T].topic_id
    assert [(tp.topic_id, sorted(tp.partitions)) for tp in joined.assignment.topic_partitions] == [
        (topic_id, [0, 1, 2])]
    assert int(joined.heartbeat_interval.total_seconds() * 1000) == 5_000

    (group,) = ask(node, 69, 1, ADMIN, {"group_ids": ["g"], "include_authorized_operations": False}).groups
    assert (group.error_code, group.group_state, group.group_epoch, group.assignor_name) == (
        E.none, "Stable", 1, "uniform")
    (member,) = group.members
    assert [(tp.topic_name, list(tp.partitions)) for tp in member.assignment.topic_partitions] == [(T, [0, 1, 2])]
    (missing,) = ask(node, 69, 1, ADMIN, {"group_ids": ["nope"], "include_authorized_operations": False}).groups
    assert missing.error_code == E.group_id_not_found

    def commit(epoch: int) -> int:
        response = ask(node, 8, 9, ADMIN, {
            "group_id": "g", "generation_id_or_member_epoch": epoch, "member_id": "m1",
            "topics": [{"name": T, "partitions": [{"partition_index": 0, "committed_offset": 5,
                                                   "committed_leader_epoch": -1}]}]})
        return int(response.topics[0].partitions[0].error_code)

    assert commit(7) == E.stale_member_epoch
    assert commit(1) == E.none

    listed = ask(node, 16, 5, ADMIN, {"states_filter": [], "types_filter": ["consumer"]}).groups
    assert [(g.group_id, g.group_state, g.group_type) for g in listed] == [("g", "Stable", "consumer")]
    assert ask(node, 16, 5, ADMIN, {"states_filter": [], "types_filter": ["classic"]}).groups == ()

    left = beat(node, member_epoch=-1, rebalance_timeout=-1, subscribed_topic_names=None, topic_partitions=None)
    assert (left.error_code, left.member_epoch) == (E.none, -1)
