"""A group coordinator write the log refuses (NOT_ENOUGH_REPLICAS while `__consumer_offsets`
is below min.insync.replicas, a failing disk): the shard goes back to what its log holds
(coordinator/runtime.py), so nothing the log does not hold is ever shown or acted on."""

from __future__ import annotations

from tests.unit.coordinator.helpers import GROUP, Harness, durable_view, stable_group
from tests.unit.coordinator.txn_helpers import FailingLog

from ackly.coordinator.group import EMPTY, STABLE
from ackly.coordinator.group_coordinator import partition_for
from ackly.errors import ErrorCode


def _harness() -> tuple[Harness, FailingLog]:
    logs = [FailingLog(i) for i in range(3)]
    for log in logs:
        log.code = ErrorCode.not_enough_replicas
    h = Harness(logs=list(logs))
    return h, logs[partition_for(GROUP, 3)]


def test_a_refused_offset_commit_is_never_shown_and_its_retry_writes_it() -> None:
    h, log = _harness()
    (member,), generation, _ = stable_group(h, 1)
    assert h.commit(member, generation, {("t", 0): 5}).value == [ErrorCode.none]
    leo = log.log_end_offset
    log.failures = 1
    assert h.commit(member, generation, {("t", 0): 9}).value == ("failed", ErrorCode.coordinator_not_available)
    assert h.committed() == {("t", 0): 5}, "the refused offset is not the group's"
    assert durable_view(h) == durable_view(h.reopened())
    assert h.group().state is STABLE, "the group is what its log says"
    assert h.commit(member, generation, {("t", 0): 9}).value == [ErrorCode.none]
    assert log.log_end_offset == leo + 1
    assert h.committed() == {("t", 0): 9}
    h.check()


def test_a_refused_generation_is_taken_back_and_every_waiting_member_answered_once() -> None:
    h, log = _harness()
    a_join = h.join_new(client_id="a")
    b_join = h.join_new(client_id="b")
    h.advance(0)
    a, b = a_join.value, b_join.value
    leader = a.leader
    follower = b.member_id if leader == a.member_id else a.member_id
    follower_sync = h.sync(follower, a.generation)
    assert not follower_sync.done
    log.failures = 1
    leader_sync = h.sync(leader, a.generation, {a.member_id: b"x", b.member_id: b"y"})
    h.settle()
    # The leader's record was refused: neither member is told an assignment the log does not
    # hold, and the group is what the log says (it never had a generation written).
    assert leader_sync.value == ("failed", ErrorCode.coordinator_not_available)
    assert follower_sync.value == ("failed", ErrorCode.coordinator_not_available)
    assert durable_view(h) == durable_view(h.reopened())
    assert h.group().state is EMPTY, "the group's only record is the Empty one of its creation"
    h.check()
    # The members rejoin and the group gets to a Stable generation once the log takes it.
    _, generation, _ = stable_group(h, 2)
    assert h.group().state is STABLE and h.group().generation == generation
    h.check()
