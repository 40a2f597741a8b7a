"""The group APIs on the wire, against a real `ackly serve`, with hand-made requests.

What no well-behaved client does on purpose: commit with a stale generation or as an unknown
member (refused: docs/guarantees.md rule 24), restart a static member and check the generation
did not move, run two processes with one group.instance.id (the older is fenced: rule 25).
Also the versions real clients use for the batch forms: FindCoordinator v4 (several keys),
OffsetFetch v8 (several groups), LeaveGroup v3 (several members, by instance id), and
ListGroups, DescribeGroups, OffsetDelete and DeleteGroups.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

import pytest

from ackly.errors import ErrorCode
from ackly.protocol.messages import request_type
from ackly.testing.wire import WireClient
from tests.clients.groupkit import BROKER_CONFIGS

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(60)]

E = ErrorCode
SESSION = datetime.timedelta(seconds=30)
REBALANCE = datetime.timedelta(seconds=30)


def make(api_key: int, version: int, class_name: str | None = None, /, **fields: Any) -> Any:
    cls = request_type(api_key, version)
    if class_name is not None:
        cls = getattr(sys.modules[cls.__module__], class_name)
    return cls(**fields)


def send_join(conn: WireClient, group: str, member_id: str = "", instance_id: str | None = None) -> Any:
    protocol = make(11, 5, "JoinGroupRequestProtocol", name="range", metadata=b"m")
    request = make(11, 5, group_id=group, session_timeout=SESSION, rebalance_timeout=REBALANCE,
                   member_id=member_id, group_instance_id=instance_id, protocol_type="consumer",
                   protocols=(protocol,))
    conn.send_raw(conn.frame(request))
    return request


def read(conn: WireClient, request: Any) -> Any:
    _, response = conn.decode(int(request.__api_key__), int(request.__version__), conn.read_frame())
    return response


def join(conn: WireClient, group: str, member_id: str = "", instance_id: str | None = None) -> Any:
    return read(conn, send_join(conn, group, member_id, instance_id))


def join_dynamic(conn: WireClient, group: str) -> Any:
    """KIP-394: the first JoinGroup v4+ only hands out a member id."""
    first = join(conn, group)
    assert first.error_code == E.member_id_required
    return send_join(conn, group, first.member_id)


def sync(conn: WireClient, group: str, generation: int, member_id: str,
         assignments: dict[str, bytes] | None = None, instance_id: str | None = None) -> Any:
    return conn.request(make(14, 3, group_id=group, generation_id=generation, member_id=member_id,
                             group_instance_id=instance_id, assignments=tuple(
                                 make(14, 3, "SyncGroupRequestAssignment", member_id=m, assignment=a)
                                 for m, a in (assignments or {}).items())))


def heartbeat(conn: WireClient, group: str, generation: int, member_id: str,
              instance_id: str | None = None) -> ErrorCode:
    response = conn.request(make(12, 3, group_id=group, generation_id=generation,
                                 member_id=member_id, group_instance_id=instance_id))
    return ErrorCode(response.error_code)


def commit(conn: WireClient, group: str, generation: int, member_id: str, offset: int) -> ErrorCode:
    topic = make(8, 8, "OffsetCommitRequestTopic", name="t", partitions=(
        make(8, 8, "OffsetCommitRequestPartition", partition_index=0, committed_offset=offset,
             committed_leader_epoch=-1, committed_metadata="from the wire test"),))
    response = conn.request(make(8, 8, group_id=group, generation_id_or_member_epoch=generation,
                                 member_id=member_id, group_instance_id=None, topics=(topic,)))
    return ErrorCode(response.topics[0].partitions[0].error_code)


def test_group_apis_on_the_wire(broker_factory) -> None:
    broker = broker_factory(configs=BROKER_CONFIGS)
    with WireClient(broker.bootstrap) as a, WireClient(broker.bootstrap) as b:
        # The first FindCoordinator creates __consumer_offsets; as in Kafka, it may answer
        # COORDINATOR_NOT_AVAILABLE until the topic exists (a client retries).
        deadline = time.monotonic() + 10
        while True:
            found = a.request(make(10, 4, key_type=0, coordinator_keys=("g1", "g2")))
            if all(c.error_code != E.coordinator_not_available for c in found.coordinators):
                break
            assert time.monotonic() < deadline, "__consumer_offsets was never created"
            time.sleep(0.02)
        assert [(c.key, c.error_code, c.node_id, c.port) for c in found.coordinators] == [
            ("g1", E.none, 0, broker.port), ("g2", E.none, 0, broker.port)]
        created = a.request(make(19, 4, topics=(make(19, 4, "CreatableTopic", name="t", num_partitions=1,
                                                       replication_factor=1, assignments=(), configs=()),),
                                 timeout=datetime.timedelta(seconds=10), validate_only=False))
        assert created.topics[0].error_code == E.none

        # --- rule 24: a stale member's commit is refused -------------------------------------
        a_join = read(a, join_dynamic(a, "g1"))
        a_id, gen1 = a_join.member_id, a_join.generation_id
        assert sync(a, "g1", gen1, a_id, {a_id: b"all"}).assignment == b"all"
        assert commit(a, "g1", gen1, a_id, 10) is E.none
        b_pending = join_dynamic(b, "g1")  # a second member: rebalance
        assert heartbeat(a, "g1", gen1, a_id) is E.rebalance_in_progress
        a_join = join(a, "g1", a_id)
        b_join = read(b, b_pending)
        gen2 = a_join.generation_id
        assert gen2 == b_join.generation_id == gen1 + 1
        assert commit(a, "g1", gen1, a_id, 11) is E.illegal_generation, "stale generation"
        assert commit(b, "g1", gen2, "not-a-member", 12) is E.unknown_member_id
        assert commit(b, "g1", -1, "", 13) is E.unknown_member_id, "group-less, group has members"
        leader, follower = (a, a_id), (b, b_join.member_id)
        sync(leader[0], "g1", gen2, leader[1], {a_id: b"half-a", b_join.member_id: b"half-b"})
        assert sync(follower[0], "g1", gen2, follower[1]).assignment == b"half-b"
        assert commit(b, "g1", gen2, b_join.member_id, 14) is E.none

        # --- rule 25: static membership ------------------------------------------------------
        s_join = join(a, "g2", instance_id="static")
        s_id, s_gen = s_join.member_id, s_join.generation_id
        assert s_join.error_code == E.none and s_join.leader == s_id
        sync(a, "g2", s_gen, s_id, {s_id: b"mine"}, instance_id="static")
        restarted = join(b, "g2", instance_id="static")  # same instance, new process
        assert restarted.error_code == E.none and restarted.generation_id == s_gen, "no rebalance"
        assert restarted.member_id != s_id
        assert restarted.leader == s_id, "v5: the old leader id, so it does not reassign"
        assert sync(b, "g2", s_gen, restarted.member_id, instance_id="static").assignment == b"mine"
        assert heartbeat(a, "g2", s_gen, s_id, "static") is E.fenced_instance_id
        duplicate = join(a, "g2", instance_id="static")  # a duplicate: the previous one is fenced
        assert duplicate.generation_id == s_gen
        assert heartbeat(b, "g2", s_gen, restarted.member_id, "static") is E.fenced_instance_id
        assert heartbeat(a, "g2", s_gen, duplicate.member_id, "static") is E.none

        # --- reading, leaving, deleting ------------------------------------------------------
        fetched = a.request(make(9, 8, groups=(
            make(9, 8, "OffsetFetchRequestGroup", group_id="g1", topics=None),
            make(9, 8, "OffsetFetchRequestGroup", group_id="g2", topics=(
                make(9, 8, "OffsetFetchRequestTopics", name="t", partition_indexes=(0,)),)),
        ), require_stable=True))
        offsets = {g.group_id: [(t.name, p.committed_offset, p.metadata) for t in g.topics
                                for p in t.partitions] for g in fetched.groups}
        assert offsets == {"g1": [("t", 14, "from the wire test")], "g2": [("t", -1, "")]}
        left = a.request(make(13, 3, group_id="g2", members=(
            make(13, 3, "MemberIdentity", member_id="", group_instance_id="static"),
            make(13, 3, "MemberIdentity", member_id="", group_instance_id="nobody"))))
        assert [m.error_code for m in left.members] == [E.none, E.unknown_member_id]
        listed = a.request(make(16, 4, states_filter=()))
        assert {(g.group_id, g.group_state) for g in listed.groups} == {("g1", "Stable"), ("g2", "Empty")}
        assert {g.group_id for g in a.request(make(16, 4, states_filter=("empty",))).groups} == {"g2"}
        (described,) = a.request(make(15, 5, groups=("g1",), include_authorized_operations=False)).groups
        assert described.group_state == "Stable" and described.protocol_data == "range"
        assert sorted(m.member_assignment for m in described.members) == [b"half-a", b"half-b"]
        deleted = a.request(make(42, 2, groups_names=("g2", "g1", "nope")))
        assert [(r.group_id, r.error_code) for r in deleted.results] == [
            ("g2", E.none), ("g1", E.non_empty_group), ("nope", E.group_id_not_found)]
        assert a.request(make(47, 0, group_id="g2", topics=())).error_code == E.group_id_not_found
