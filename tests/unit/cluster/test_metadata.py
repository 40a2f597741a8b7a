"""Metadata values round-trip through bytes; keys parse back; views follow watch events."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ackly.cluster.metadata import (
    NO_LEADER,
    BrokerInfo,
    ClusterMetadata,
    ControllerInfo,
    KeyKind,
    KeySpace,
    LeaderRecoveryState,
    MetadataDecodeError,
    PartitionState,
    TopicInfo,
    encode_cluster_id,
)
from ackly.cluster.store import KeyValue, WatchEvent
from ackly.types import TopicPartition

TOPIC_ID = uuid.UUID(int=7)
topic_names = st.text("abcXYZ019._-", min_size=1, max_size=20).filter(lambda n: n not in (".", ".."))
broker_ids = st.integers(0, 2**31 - 1)


@st.composite
def partition_states(draw: st.DrawFn) -> PartitionState:
    replicas = draw(st.lists(st.integers(0, 50), min_size=1, max_size=6, unique=True))
    isr = draw(st.lists(st.sampled_from(replicas), min_size=1, unique=True))
    leader = draw(st.sampled_from([NO_LEADER, *isr]))
    recovery = LeaderRecoveryState.RECOVERED
    if len(isr) == 1 and draw(st.booleans()):
        recovery = LeaderRecoveryState.RECOVERING
    return PartitionState(
        uuid.UUID(int=draw(st.integers(0, 2**128 - 1))), tuple(replicas), tuple(isr), leader,
        draw(st.integers(0, 2**31)), draw(st.integers(0, 2**31)), recovery,
    )


@given(partition_states())
def test_partition_state_round_trips(state: PartitionState) -> None:
    assert PartitionState.decode(state.encode()) == state


@given(
    broker_ids, st.text(max_size=30), st.integers(0, 65535), st.none() | st.text(max_size=10), st.booleans()
)
def test_broker_info_round_trips(broker_id: int, host: str, port: int, rack: str | None, down: bool) -> None:
    info = BrokerInfo(broker_id, host, port, rack, down)
    assert BrokerInfo.decode(info.encode()) == info
    # lease and epoch come from the key, never from the value
    assert BrokerInfo.decode(info.encode(), lease_id=9, epoch=12) == BrokerInfo(
        broker_id, host, port, rack, down, lease_id=9, epoch=12
    )


@given(
    topic_names,
    st.lists(
        st.lists(st.integers(0, 20), min_size=1, max_size=4, unique=True).map(tuple), min_size=1, max_size=8
    ),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)
def test_topic_info_round_trips(
    name: str, assignment: list[tuple[int, ...]], configs: dict[str, str]
) -> None:
    topic = TopicInfo(name, TOPIC_ID, tuple(assignment), configs)
    decoded = TopicInfo.decode(topic.encode())
    assert decoded == topic and decoded.partitions == len(assignment)


def test_controller_info_round_trips() -> None:
    assert ControllerInfo.decode(ControllerInfo(3).encode(), lease_id=1, epoch=5) == ControllerInfo(3, 1, 5)


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2}', "unknown value version"),
        (json.dumps({"v": 1, "topic_id": str(TOPIC_ID), "replicas": [1, 2], "isr": [3], "leader": 3,
                     "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "not a subset"),
        (json.dumps({"v": 1, "topic_id": str(TOPIC_ID), "replicas": [1, 2], "isr": [], "leader": -1,
                     "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "all empty"),
        (json.dumps({"v": 1, "topic_id": str(TOPIC_ID), "replicas": [1, 2], "isr": [1], "leader": 1,
                     "elr": [1], "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "overlap"),
        (json.dumps({"v": 1, "topic_id": str(TOPIC_ID), "replicas": [1, 2], "isr": [1], "leader": 2,
                     "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "not in the ISR"),
        (json.dumps({"v": 1, "topic_id": str(TOPIC_ID), "replicas": [1], "isr": [1], "leader": True,
                     "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "not a int"),
        (json.dumps({"v": 1, "topic_id": "zz", "replicas": [1], "isr": [1], "leader": 1,
                     "leader_epoch": 0, "partition_epoch": 0, "leader_recovery_state": 0}).encode(),
         "badly formed"),
    ],
)
def test_bad_partition_states_are_decode_errors(doc: bytes, why: str) -> None:
    with pytest.raises(MetadataDecodeError, match=why):
        PartitionState.decode(doc)


def test_invalid_states_cannot_be_built() -> None:
    with pytest.raises(AssertionError):
        PartitionState(TOPIC_ID, (1, 2), (1, 3), 1)
    with pytest.raises(AssertionError):
        PartitionState(TOPIC_ID, (1, 2), (1, 2), 1, leader_recovery_state=LeaderRecoveryState.RECOVERING)
    # ISR is kept sorted, so equal states compare equal
    assert PartitionState(TOPIC_ID, (1, 2), (2, 1), 1) == PartitionState(TOPIC_ID, (1, 2), (1, 2), 1)


@given(topic_names, st.integers(0, 10_000), broker_ids)
def test_keys_parse_back(name: str, index: int, broker_id: int) -> None:
    keys = KeySpace("/test/root")
    assert keys.parse(keys.topic(name)) == keys.parse(keys.topic(name))
    parsed = keys.parse(keys.partition(TopicPartition(name, index)))
    assert parsed is not None and parsed.kind is KeyKind.PARTITION
    assert parsed.tp == TopicPartition(name, index)
    parsed = keys.parse(keys.broker(broker_id))
    assert parsed is not None and parsed.broker_id == broker_id
    assert keys.parse(keys.controller) is not None and keys.parse(keys.cluster_id) is not None


@pytest.mark.parametrize(
    "key", ["/ackly", "/ackly/", "/ackly/brokers/01", "/ackly/brokers/x", "/ackly/partitions/t/-1",
            "/ackly/partitions/t", "/ackly/future/thing", "/other/brokers/1", "/ackly/topics/"],
)
def test_unknown_keys_are_ignored(key: str) -> None:
    assert KeySpace().parse(key) is None
    view = ClusterMetadata().apply([WatchEvent(1, key, b"whatever", 5)])
    assert view.revision == 5 and not view.mod_revisions


def event(
    key: str, value: bytes | None, revision: int, create: int = 0, lease: int | None = None
) -> WatchEvent:
    return WatchEvent(1, key, value, revision, create or (revision if value is not None else 0), lease)


def test_view_follows_events() -> None:
    keys = KeySpace()
    topic = TopicInfo("t", TOPIC_ID, ((1, 2), (2, 1)))
    p0 = PartitionState(TOPIC_ID, (1, 2), (1, 2), 1)
    view = ClusterMetadata.from_kvs(
        [KeyValue(keys.broker(1), BrokerInfo(1, "h", 1).encode(), 2, 2, 1, lease_id=10)], revision=2
    )
    assert view.brokers[1].epoch == 2 and view.brokers[1].lease_id == 10
    view = view.apply([
        event(keys.cluster_id, encode_cluster_id("abc"), 3),
        event(keys.controller, ControllerInfo(1).encode(), 4, lease=10),
        event(keys.topic("t"), topic.encode(), 5),
        event(keys.partition(TopicPartition("t", 0)), p0.encode(), 6),
    ])
    assert view.cluster_id == "abc" and view.controller == ControllerInfo(1, 10, 4)
    assert view.partition(TopicPartition("t", 0)) == p0
    assert view.partition(TopicPartition("t", 1)) is None  # not created yet
    assert view.mod_revision(keys.partition(TopicPartition("t", 0))) == 6 and view.revision == 6
    assert view.led_by(1) == [TopicPartition("t", 0)]
    # the broker restarts: a new incarnation, a new epoch
    registration = BrokerInfo(1, "h", 1).encode()
    view = view.apply([event(keys.broker(1), None, 7), event(keys.broker(1), registration, 8)])
    assert view.brokers[1].epoch == 8
    # the topic is deleted: its partition state is a leftover until the controller removes it
    view = view.apply([event(keys.topic("t"), None, 9)])
    assert view.partition(TopicPartition("t", 0)) is None and view.is_leftover(TopicPartition("t", 0))
    # re-created with a new id: the old state does not belong to it
    view = view.apply([event(keys.topic("t"), TopicInfo("t", uuid.UUID(int=8), ((1,),)).encode(), 10)])
    assert view.partition(TopicPartition("t", 0)) is None and view.is_leftover(TopicPartition("t", 0))


def test_apply_returns_a_new_view_and_leaves_the_old_one_alone() -> None:
    keys = KeySpace()
    before = ClusterMetadata()
    after = before.apply([event(keys.broker(1), BrokerInfo(1, "h", 1).encode(), 2)])
    assert not before.brokers and 1 in after.brokers
    with pytest.raises(TypeError):
        after.brokers[2] = BrokerInfo(2, "h", 2)  # type: ignore[index]


def test_a_value_that_names_another_key_is_refused() -> None:
    keys = KeySpace()
    with pytest.raises(MetadataDecodeError):
        ClusterMetadata().apply([event(keys.broker(1), BrokerInfo(2, "h", 1).encode(), 2)])
    with pytest.raises(MetadataDecodeError):
        ClusterMetadata().apply([event(keys.topic("a"), TopicInfo("b", TOPIC_ID, ((1,),)).encode(), 2)])


def test_partition_changes_lists_what_a_broker_must_act_on() -> None:
    keys = KeySpace()
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    topic = TopicInfo("t", TOPIC_ID, ((1, 2), (2, 1)))
    a = PartitionState(TOPIC_ID, (1, 2), (1, 2), 1)
    before = ClusterMetadata().with_topic(topic, 2).with_partition(t0, a, 3)
    moved = PartitionState(TOPIC_ID, (1, 2), (2,), 2, leader_epoch=1, partition_epoch=1)
    b = PartitionState(TOPIC_ID, (2, 1), (1, 2), 2)
    after = before.apply([
        event(keys.partition(t0), moved.encode(), 4),
        event(keys.partition(t1), b.encode(), 5),
    ])
    assert before.partition_changes(after) == [(t0, a, moved), (t1, None, b)]
    gone = after.apply([event(keys.topic("t"), None, 6)])
    assert after.partition_changes(gone) == [(t0, moved, None), (t1, b, None)]
    assert gone.partition_changes(gone) == []
