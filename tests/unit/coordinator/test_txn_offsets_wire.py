"""TxnOffsetCommit on the wire against an in-process BrokerNode (encoded kio frames through
dispatch and the handlers), across a restart (docs/guarantees.md rules 21 and 23).

Most tests play the transaction coordinator's part by hand, with KIP-890 verification off: the
TxnOffsetCommit a producer sends after AddOffsetsToTxn, then the WriteTxnMarkers a coordinator
sends after EndTxn, to the group's `__consumer_offsets` partition. The last one runs the whole
producer side through the broker's own transaction coordinator, verification on.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ackly.broker.dispatch import TABLE
from ackly.coordinator.group_coordinator import OFFSETS_TOPIC, partition_for
from ackly.errors import ErrorCode
from ackly.log.disk import RealDisk
from ackly.types import TopicPartition

from . import test_coordinator_restart
from .test_coordinator_restart import Broker

E = ErrorCode
GROUP = "g"
PID = 7000
EPOCH = 2


@pytest.fixture
def no_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """Markers written by hand: no transaction coordinator knows these producers."""
    monkeypatch.setitem(test_coordinator_restart.PROPS, "transaction.partition.verification.enable",
                        "false")


def txn_offset_commit_fields(b: Broker, offsets: dict[int, int], *, producer_id: int = PID,
                             epoch: int = EPOCH, version: int = 3, generation: int = -1,
                             member_id: str = "", transactional_id: str = "tx") -> dict[str, Any]:
    epoch_field = {"committed_leader_epoch": 0} if version >= 2 else {}
    topic = b.entity(28, version, "TxnOffsetCommitRequestTopic", name="t", partitions=tuple(
        b.entity(28, version, "TxnOffsetCommitRequestPartition", partition_index=p,
                 committed_offset=o, committed_metadata="txn", **epoch_field)
        for p, o in offsets.items()))
    fields: dict[str, Any] = {"transactional_id": transactional_id, "group_id": GROUP,
                              "producer_id": producer_id, "producer_epoch": epoch, "topics": (topic,)}
    if version >= 3:
        fields.update(generation_id=generation, member_id=member_id, group_instance_id=None)
    return fields


def txn_offset_commit(b: Broker, offsets: dict[int, int], *, version: int = 3, **kwargs: Any) -> list[int]:
    response = b.call(28, version, **txn_offset_commit_fields(b, offsets, version=version, **kwargs))
    return [p.error_code for t in response.topics for p in t.partitions]


def write_marker(b: Broker, committed: bool, *, producer_id: int = PID, epoch: int = EPOCH) -> list[int]:
    partition = partition_for(GROUP, 3)
    topic = b.entity(27, 1, "WritableTxnMarkerTopic", name=OFFSETS_TOPIC, partition_indexes=(partition,))
    marker = b.entity(27, 1, "WritableTxnMarker", producer_id=producer_id, producer_epoch=epoch,
                      transaction_result=committed, topics=(topic,), coordinator_epoch=0)
    answer = b.send(27, 1, markers=(marker,))
    for _ in range(10):  # the answer leaves once the marker is below HW (after the flush)
        if answer.done:
            break
        b.tick()
    return [p.error_code for m in answer.value().markers for t in m.topics for p in t.partitions]


def fetch(b: Broker, *, require_stable: bool, version: int = 8) -> tuple[int, dict[int, Any]]:
    """(top-level or group error, partition -> offset or error code name)."""
    if version >= 8:
        group = b.entity(9, version, "OffsetFetchRequestGroup", group_id=GROUP, topics=(
            b.entity(9, version, "OffsetFetchRequestTopics", name="t", partition_indexes=(0, 1)),))
        response = b.call(9, version, groups=(group,), require_stable=require_stable)
        (g,) = response.groups
        error, topics = g.error_code, g.topics
    else:
        response = b.call(9, version, group_id=GROUP, require_stable=require_stable, topics=(
            b.entity(9, version, "OffsetFetchRequestTopic", name="t", partition_indexes=(0, 1)),))
        error, topics = response.error_code, response.topics
    return error, {p.partition_index: (E(p.error_code).name if p.error_code else p.committed_offset)
                   for t in topics for p in t.partitions}


@pytest.mark.usefixtures("no_verification")
def test_transactional_offsets_become_visible_with_the_commit_marker(tmp_path: Path) -> None:
    b = Broker(RealDisk(), str(tmp_path / "data"))
    assert b.call(10, 3, key=GROUP, key_type=0).error_code == E.none
    b.node.create_topic("t", 2, {}, b.now_ms)
    offsets_partition = b.node.partition(OFFSETS_TOPIC, partition_for(GROUP, 3))
    start = offsets_partition.log_end_offset
    assert txn_offset_commit(b, {0: 10, 1: 20}) == [E.none, E.none]
    # The pending records hold the partition's LSO back, as any open transaction does.
    assert offsets_partition.last_stable_offset == start < offsets_partition.high_watermark
    assert fetch(b, require_stable=False) == (E.none, {0: -1, 1: -1})
    unstable = {0: "unstable_offset_commit", 1: "unstable_offset_commit"}
    assert fetch(b, require_stable=True) == (E.none, unstable)
    assert fetch(b, require_stable=True, version=7) == (E.none, unstable)
    assert write_marker(b, committed=True) == [E.none]
    assert fetch(b, require_stable=True) == (E.none, {0: 10, 1: 20})
    assert offsets_partition.last_stable_offset == offsets_partition.high_watermark

    # A second transaction left open across a restart: still pending after the reload.
    assert txn_offset_commit(b, {0: 30}, version=0) == [E.none]
    b.node.close()
    again = Broker(RealDisk(), str(tmp_path / "data"), now_ms=b.now_ms + 1_000)
    assert fetch(again, require_stable=False) == (E.none, {0: 10, 1: 20})
    assert fetch(again, require_stable=True) == (E.none, {0: "unstable_offset_commit", 1: 20})
    assert write_marker(again, committed=False) == [E.none]
    assert fetch(again, require_stable=True) == (E.none, {0: 10, 1: 20})
    again.node.close()


@pytest.mark.usefixtures("no_verification")
def test_transactional_offset_commit_refusals(tmp_path: Path) -> None:
    b = Broker(RealDisk(), str(tmp_path / "data"))
    b.call(10, 3, key=GROUP, key_type=0)
    b.node.create_topic("t", 2, {}, b.now_ms)
    assert txn_offset_commit(b, {5: 1}) == [E.unknown_topic_or_partition]
    assert txn_offset_commit(b, {0: 1}, generation=4, member_id="m") == [E.illegal_generation]
    # The producer's newer epoch reached the partition: the older one is fenced by the log.
    assert txn_offset_commit(b, {0: 1}, epoch=EPOCH + 1) == [E.none]
    assert write_marker(b, committed=True, epoch=EPOCH + 1) == [E.none]
    assert txn_offset_commit(b, {0: 99}, epoch=EPOCH) == [E.invalid_producer_epoch]
    assert fetch(b, require_stable=True) == (E.none, {0: 1, 1: -1})
    assert (TABLE[28].min_version, TABLE[28].max_version) == (0, 5)  # advertised range
    b.node.close()


def test_a_full_transaction_through_the_coordinators_and_a_late_commit_is_refused(
        tmp_path: Path) -> None:
    b = Broker(RealDisk(), str(tmp_path / "data"))
    b.call(10, 3, key=GROUP, key_type=0)
    b.node.create_topic("t", 2, {}, b.now_ms)
    assert b.call(10, 3, key="tx", key_type=1).error_code == E.none
    init = b.call(22, 4, transactional_id="tx", transaction_timeout=datetime.timedelta(seconds=60),
                  producer_id=-1, producer_epoch=-1)
    assert init.error_code == E.none
    pid, epoch = init.producer_id, init.producer_epoch
    # Without AddOffsetsToTxn the group's partition is not in the transaction: refused.
    assert txn_offset_commit(b, {0: 1}, producer_id=pid, epoch=epoch, transactional_id="tx") == [
        E.invalid_txn_state]
    added = b.call(25, 3, transactional_id="tx", producer_id=pid, producer_epoch=epoch, group_id=GROUP)
    assert added.error_code == E.none
    assert txn_offset_commit(b, {0: 10, 1: 20}, producer_id=pid, epoch=epoch,
                             transactional_id="tx") == [E.none, E.none]
    assert fetch(b, require_stable=True) == (
        E.none, {0: "unstable_offset_commit", 1: "unstable_offset_commit"})
    ended = b.send(26, 3, transactional_id="tx", producer_id=pid, producer_epoch=epoch, committed=True)
    for _ in range(20):  # the markers are written, then the offsets become committed
        if ended.done and fetch(b, require_stable=True)[1] == {0: 10, 1: 20}:
            break
        b.tick(10)
    assert ended.value().error_code == E.none
    assert fetch(b, require_stable=True) == (E.none, {0: 10, 1: 20})
    # The same request delayed past the end of its transaction: it opens nothing (KIP-890).
    late = txn_offset_commit(b, {0: 666}, producer_id=pid, epoch=epoch, transactional_id="tx")
    assert late == [E.invalid_txn_state]
    assert fetch(b, require_stable=True) == (E.none, {0: 10, 1: 20})
    b.node.close()


class DeferredVerification:
    """The broker's transactions side, except that verification answers only when the test
    says (as when the transaction coordinator is on another broker)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.waiting: list[tuple[list[TopicPartition], Callable[[dict[TopicPartition, ErrorCode]], None]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def verify_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          partitions: Sequence[TopicPartition], now_ms: int,
                          done: Callable[[dict[TopicPartition, ErrorCode]], None], *,
                          add: bool = False) -> None:
        self.waiting.append((list(partitions), done))

    def answer_all(self, code: ErrorCode) -> None:
        waiting, self.waiting = self.waiting, []
        for partitions, done in waiting:
            done(dict.fromkeys(partitions, code))


def test_a_marker_between_verification_and_append_voids_the_verification(tmp_path: Path) -> None:
    b = Broker(RealDisk(), str(tmp_path / "data"))
    b.call(10, 3, key=GROUP, key_type=0)
    b.node.create_topic("t", 2, {}, b.now_ms)
    deferred = DeferredVerification(b.node.transactions)
    b.node.transactions = deferred  # type: ignore[assignment]
    # Verified, nothing in between: appended, pending.
    first = b.send(28, 3, **txn_offset_commit_fields(b, {0: 10}))
    assert not first.done and len(deferred.waiting) == 1
    deferred.answer_all(E.none)
    b.pump()
    assert [p.error_code for t in first.value().topics for p in t.partitions] == [E.none]
    assert write_marker(b, committed=True) == [E.none]
    assert fetch(b, require_stable=True) == (E.none, {0: 10, 1: -1})
    # The transaction ends (its marker lands) while the next request waits for its answer.
    late = b.send(28, 3, **txn_offset_commit_fields(b, {0: 666}))
    assert write_marker(b, committed=False) == [E.none]
    deferred.answer_all(E.none)
    b.pump()
    assert [p.error_code for t in late.value().topics for p in t.partitions] == [E.invalid_txn_state]
    assert fetch(b, require_stable=True) == (E.none, {0: 10, 1: -1})
    # A network failure on the way to the transaction coordinator: retriable for old clients.
    lost = b.send(28, 3, **txn_offset_commit_fields(b, {0: 7}))
    deferred.answer_all(E.network_exception)
    assert [p.error_code for t in lost.value().topics for p in t.partitions] == [
        E.coordinator_load_in_progress]
    b.node.close()
