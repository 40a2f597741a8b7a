"""Offsets sent in a transaction (TxnOffsetCommit, KIP-98/KIP-447) on the group coordinator,
driven by hand with a virtual clock (docs/guarantees.md rule 21).

A transaction marker is played the way the broker plays it: a control batch appended to the
group's shard log, then `complete_transaction`. Every test ends by rebuilding the coordinator
from the log, markers included, and comparing everything the records say (committed offsets,
pending offsets, groups) with the live state.
"""

from __future__ import annotations

from typing import Any

from ackly.coordinator.group_coordinator import partition_for
from ackly.coordinator.group_manager import CommitPartition, GroupShard, OffsetsConfig
from ackly.errors import ErrorCode, KafkaError
from ackly.protocol.record_codec import ControlType, decode_batch, encode_control_batch
from ackly.protocol.records import read_header

from .helpers import GROUP, Box, Harness, MemoryLog, durable_view, stable_group

E = ErrorCode
PID = 4000
EPOCH = 3


class FencingLog(MemoryLog):
    """A MemoryLog that, like the partition log, refuses a producer's transactional batch
    whose epoch is older than the newest it has seen from that producer."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.epochs: dict[int, int] = {}

    def append(self, batch: bytes, now_ms: int) -> None:
        header = read_header(batch)
        if header.is_transactional:
            known = self.epochs.get(header.producer_id, -1)
            if header.producer_epoch < known:
                raise KafkaError(E.invalid_producer_epoch, "old epoch")
            self.epochs[header.producer_id] = header.producer_epoch
        super().append(batch, now_ms)


def harness(**kwargs: Any) -> Harness:
    return Harness(logs=[FencingLog(i) for i in range(3)], **kwargs)


def txn_commit(h: Harness, offsets: dict[tuple[str, int], int], *, producer_id: int = PID,
               epoch: int = EPOCH, member_id: str = "", generation: int = -1,
               instance_id: str | None = None, group_id: str = GROUP) -> Box:
    box = Box()
    h.coordinator.commit_transactional_offsets(
        group_id, producer_id, epoch, member_id, instance_id, generation,
        [CommitPartition(t, p, o, 7, "txn") for (t, p), o in offsets.items()], box, h.now_ms)
    return box


def marker(h: Harness, committed: bool, *, producer_id: int = PID, epoch: int = EPOCH,
           group_id: str = GROUP) -> None:
    """The transaction's marker on the group's partition: appended, then applied."""
    index = partition_for(group_id, len(h.logs))
    kind = ControlType.COMMIT if committed else ControlType.ABORT
    h.logs[index].append(encode_control_batch(kind, producer_id=producer_id, producer_epoch=epoch,
                                              now_ms=h.now_ms), h.now_ms)
    h.coordinator.complete_transaction(index, producer_id, committed, h.now_ms)


def fetch(h: Harness, wanted: list[tuple[str, list[int]]] | None, *, require_stable: bool,
          group_id: str = GROUP) -> dict[tuple[str, int], Any]:
    """(topic, partition) -> committed offset, None, or the partition's error code."""
    box = Box()
    h.coordinator.fetch_offsets([(group_id, wanted)], box, h.now_ms, require_stable)
    (result,) = box.value
    assert result.error is E.none
    return {(t, p): (v if v is None or isinstance(v, ErrorCode) else v.offset)
            for t, parts in result.topics for p, v in parts}


def full_view(h: Harness) -> dict[str, Any]:
    view = durable_view(h)
    shards: list[GroupShard] = h.coordinator.shards()
    view["pending"] = {(s.index, pid, g, tp): (p.value, p.record_offset)
                       for s in shards for pid, by_group in s.pending.items()
                       for g, by_tp in by_group.items() for tp, p in by_tp.items()}
    view["committed_at"] = {(s.index, g, tp): o for s in shards
                            for g, by_tp in s.committed_at.items() for tp, o in by_tp.items()}
    return view


def assert_replays_equal(h: Harness) -> None:
    h.check()
    again = h.reopened()
    again.check()
    assert full_view(again) == full_view(h)


def test_pending_offsets_are_invisible_until_the_commit_marker() -> None:
    h = harness()
    assert h.commit("", -1, {("t", 0): 5}).value == [E.none]
    box = txn_commit(h, {("t", 0): 10, ("t", 1): 20})
    assert box.value == [E.none, E.none]
    assert h.committed() == {("t", 0): 5}, "a pending offset is not a committed offset"
    wanted = [("t", [0, 1, 2])]
    assert fetch(h, wanted, require_stable=False) == {("t", 0): 5, ("t", 1): None, ("t", 2): None}
    assert fetch(h, wanted, require_stable=True) == {
        ("t", 0): E.unstable_offset_commit, ("t", 1): E.unstable_offset_commit, ("t", 2): None}
    assert fetch(h, None, require_stable=True) == {("t", 0): E.unstable_offset_commit}
    assert_replays_equal(h)  # still pending after a reload
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 10, ("t", 1): 20}
    assert fetch(h, wanted, require_stable=True) == {("t", 0): 10, ("t", 1): 20, ("t", 2): None}
    assert_replays_equal(h)


def test_abort_marker_drops_the_pending_offsets() -> None:
    h = harness()
    h.commit("", -1, {("t", 0): 5})
    txn_commit(h, {("t", 0): 10, ("u", 0): 1})
    marker(h, committed=False)
    assert h.committed() == {("t", 0): 5}
    assert fetch(h, [("t", [0]), ("u", [0])], require_stable=True) == {("t", 0): 5, ("u", 0): None}
    assert not h.shard().pending and not h.shard().open_txns
    marker(h, committed=True)  # a later marker of the producer finds nothing to apply
    assert h.committed() == {("t", 0): 5}
    assert_replays_equal(h)


def test_each_producer_resolves_only_its_own_pending_offsets() -> None:
    h = harness()
    txn_commit(h, {("t", 0): 10}, producer_id=1)
    txn_commit(h, {("t", 0): 11, ("t", 1): 21}, producer_id=2)
    marker(h, committed=True, producer_id=1)
    assert h.committed() == {("t", 0): 10}
    assert fetch(h, [("t", [0, 1])], require_stable=True) == {
        ("t", 0): E.unstable_offset_commit, ("t", 1): E.unstable_offset_commit}
    assert_replays_equal(h)
    marker(h, committed=True, producer_id=2)
    assert h.committed() == {("t", 0): 11, ("t", 1): 21}
    assert_replays_equal(h)


def test_the_offset_written_last_wins_between_transactional_and_plain_commits() -> None:
    h = harness()
    # Transactional record first, plain offset commit after it: the plain one is newer.
    txn_commit(h, {("t", 0): 10})
    h.commit("", -1, {("t", 0): 15})
    assert h.committed() == {("t", 0): 15}
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 15}, "an older transactional record does not win"
    # Plain commit first, then the transactional one: the transactional one is newer.
    h.commit("", -1, {("t", 1): 30})
    txn_commit(h, {("t", 1): 25})
    assert h.committed() == {("t", 0): 15, ("t", 1): 30}
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 15, ("t", 1): 25}
    assert_replays_equal(h)


def test_replay_of_the_log_with_markers_equals_the_live_state() -> None:
    h = harness()
    stable_group(h, 1, group_id="members")
    for round_ in range(6):
        pid = 100 + round_ % 3
        txn_commit(h, {("t", round_ % 2): round_, ("u", 0): 100 + round_}, producer_id=pid)
        txn_commit(h, {("t", 0): 50 + round_}, producer_id=pid, group_id="other")
        h.commit("", -1, {("t", 2): round_}, group_id="other")
        if round_ % 3 == 1:
            marker(h, committed=True, producer_id=pid)
            marker(h, committed=True, producer_id=pid, group_id="other")
        elif round_ % 3 == 2:
            marker(h, committed=False, producer_id=pid)
            marker(h, committed=False, producer_id=pid, group_id="other")
        h.advance(1_000)
        assert_replays_equal(h)
    assert h.shard().pending, "some transactions are still open at the end"


def test_transactional_commit_is_fenced_like_an_offset_commit() -> None:
    h = harness()
    (a, _other), generation, _ = stable_group(h, 2)
    assert txn_commit(h, {("t", 0): 1}, member_id=a, generation=generation).value == [E.none]
    assert txn_commit(h, {("t", 0): 2}, member_id=a, generation=generation - 1).value == [
        E.illegal_generation]
    assert txn_commit(h, {("t", 0): 3}, member_id="gone", generation=generation).value == [
        E.unknown_member_id]
    # v0-v2 carry no member: accepted even while the group has members (Kafka does too).
    assert txn_commit(h, {("t", 1): 4}).value == [E.none]
    # A group that does not exist: only generation -1.
    assert txn_commit(h, {("t", 0): 5}, group_id="new", member_id="m", generation=1).value == [
        E.illegal_generation]
    assert txn_commit(h, {("t", 0): 6}, group_id="new").value == [E.none]
    marker(h, committed=True)
    marker(h, committed=True, group_id="new")
    assert h.committed() == {("t", 0): 1, ("t", 1): 4}
    assert h.committed("new") == {("t", 0): 6}
    assert_replays_equal(h)


def test_static_member_replaced_by_a_new_instance_is_fenced() -> None:
    h = harness()
    join = h.join(instance_id="i-1")
    h.advance(0)
    old = join.value.member_id
    generation = join.value.generation
    h.sync(old, generation, {old: b""}, instance_id="i-1")
    rejoin = h.join(instance_id="i-1")  # a new process with the same instance id
    h.advance(0)
    new = rejoin.value.member_id
    assert new != old
    box = txn_commit(h, {("t", 0): 1}, member_id=old, instance_id="i-1", generation=generation)
    assert box.value == [E.fenced_instance_id]
    assert not h.shard().pending


def test_a_fenced_producer_writes_nothing_that_a_later_marker_could_commit() -> None:
    h = harness()
    assert txn_commit(h, {("t", 0): 10}, epoch=EPOCH + 1).value == [E.none]
    marker(h, committed=False, epoch=EPOCH + 1)
    zombie = txn_commit(h, {("t", 0): 666}, epoch=EPOCH)
    assert zombie.value == ("failed", E.invalid_producer_epoch)
    assert not h.shard().pending, "a refused batch must not become pending"
    txn_commit(h, {("t", 1): 11}, epoch=EPOCH + 1)
    marker(h, committed=True, epoch=EPOCH + 1)
    assert h.committed() == {("t", 1): 11}
    assert_replays_equal(h)


def test_answer_waits_until_the_transactional_records_are_committed() -> None:
    h = harness()
    log = h.logs[h.shard().index]
    log.auto_commit = False
    box = txn_commit(h, {("t", 0): 10})
    assert not box.done
    log.commit()
    h.settle()
    assert box.value == [E.none]
    (batch,) = log.batches
    header, records = decode_batch(batch)
    assert header.is_transactional and not header.is_control
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (PID, EPOCH, -1)
    assert len(records) == 1


def test_offset_metadata_too_large_is_refused_per_partition() -> None:
    h = harness(offsets_config=OffsetsConfig(metadata_max_bytes=4))
    box = Box()
    h.coordinator.commit_transactional_offsets(
        GROUP, PID, EPOCH, "", None, -1,
        [CommitPartition("t", 0, 1, -1, "ok"), CommitPartition("t", 1, 1, -1, "too long")],
        box, h.now_ms)
    assert box.value == [E.none, E.offset_metadata_too_large]
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 1}


def test_expiry_keeps_pending_offsets_and_their_group() -> None:
    retention = 60_000
    h = harness(offsets_config=OffsetsConfig(retention_ms=retention, retention_check_interval_ms=1_000))
    h.commit("", -1, {("t", 0): 1, ("t", 1): 2})
    txn_commit(h, {("t", 0): 10, ("u", 0): 3})
    h.advance(retention * 2)
    assert h.committed() == {("t", 0): 1}, "the partition with a pending offset keeps its offset"
    assert GROUP in h.shard().groups
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 10, ("u", 0): 3}
    assert_replays_equal(h)
    h.advance(retention * 2)
    assert h.committed() == {}
    assert GROUP not in h.shard().groups
    assert_replays_equal(h)


def test_a_group_known_only_by_an_aborted_transaction_expires() -> None:
    retention = 60_000
    h = harness(offsets_config=OffsetsConfig(retention_ms=retention, retention_check_interval_ms=1_000))
    txn_commit(h, {("t", 0): 10})
    h.advance(retention * 2)
    assert GROUP in h.shard().groups, "kept while its transaction is open"
    marker(h, committed=False)
    h.advance(2_000)
    assert GROUP not in h.shard().groups
    assert_replays_equal(h)


def test_deleting_a_group_keeps_its_pending_offsets_for_the_marker() -> None:
    h = harness()
    h.commit("", -1, {("t", 0): 5})
    txn_commit(h, {("t", 0): 10})
    box = Box()
    h.coordinator.delete_groups([GROUP], box, h.now_ms)
    assert box.value == [(GROUP, E.none)]
    assert h.committed() == {}
    assert fetch(h, [("t", [0])], require_stable=True) == {("t", 0): E.unstable_offset_commit}
    assert_replays_equal(h)
    marker(h, committed=True)
    assert h.committed() == {("t", 0): 10}
    assert_replays_equal(h)


def test_marker_for_a_shard_not_held_here_is_ignored() -> None:
    h = harness()
    txn_commit(h, {("t", 0): 10})
    index = h.shard().index
    h.coordinator.unload_shard(index)
    h.coordinator.complete_transaction(index, PID, True, h.now_ms)  # no shard: nothing to do
    h.logs[index].append(encode_control_batch(ControlType.COMMIT, producer_id=PID,
                                              producer_epoch=EPOCH), h.now_ms)
    h.coordinator.load_shard(index, h.logs[index], h.now_ms)
    assert h.committed() == {("t", 0): 10}, "the marker in the log is replayed on load"
