"""Consumer groups of the KIP-848 protocol with confluent-kafka (`group.protocol=consumer`).

One in-process broker for the module, with a short heartbeat interval and session timeout
(`group.consumer.*`), so membership changes settle in about a second. Each consumer polls in
a thread of its own and records every assignment change its rebalance callbacks report and
every record it reads. Checked:

- two consumers split the partitions; a third joins and the first two keep consuming: each
  gives up only the partitions that move to the newcomer and is never left without partitions
  (no stop-the-world, unlike the classic eager protocol);
- a member that leaves hands its partitions to the others (its epoch -1 heartbeat);
- ConsumerGroupDescribe (the admin client) shows the group as a consumer group with its
  members and their assignments;
- committed offsets (OffsetCommit v9 with the member epoch) survive the members and a broker
  restart: the group, reloaded from `__consumer_offsets`, resumes where it committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupType, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ackly.testing.inprocess import InProcessBroker
from tests.clients.clientkit import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(90)]

PARTITIONS = 6
PROPS = {
    "offsets.topic.num.partitions": "3",
    "group.consumer.heartbeat.interval.ms": "250",
    "group.consumer.session.timeout.ms": "6000",
}


class Box:
    def __init__(self, broker: InProcessBroker) -> None:
        self.broker = broker


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    data_dir = str(tmp_path_factory.mktemp("kip848") / "data")
    b = Box(InProcessBroker(data_dir, PROPS).start())
    try:
        yield b
    finally:
        b.broker.stop()


class Polled:
    """A confluent-kafka consumer on the consumer protocol, polled in its own thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str, **extra: Any) -> None:
        self.name = name
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
            "client.id": name, "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "fetch.wait.max.ms": 100, **extra})
        self.lock = threading.Lock()
        self.owned: set[int] = set()
        self.history: list[tuple[str, frozenset[int]]] = []  # ("assign" | "revoke" | "lost", partitions)
        self.records: list[tuple[int, int]] = []
        self.topics_read: set[str] = set()
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.commit_asked = threading.Event()
        self.committed = threading.Event()
        self.consumer.subscribe([topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _assign(self, c: Any, partitions: Any) -> None:
        with self.lock:
            added = frozenset(p.partition for p in partitions)
            self.owned |= added
            self.history.append(("assign", added))

    def _revoke(self, c: Any, partitions: Any, kind: str = "revoke") -> None:
        with self.lock:
            gone = frozenset(p.partition for p in partitions)
            self.owned -= gone
            self.history.append((kind, gone))

    def _lost(self, c: Any, partitions: Any) -> None:
        self._revoke(c, partitions, "lost")

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.commit_asked.is_set():
                try:
                    self.consumer.commit(asynchronous=False)
                except Exception as exc:  # reported to the test thread
                    self.errors.append(f"commit: {exc}")
                self.commit_asked.clear()
                self.committed.set()
            for m in self.consumer.consume(num_messages=100, timeout=0.1):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(m.error()))
                    continue
                with self.lock:
                    self.records.append((m.partition(), m.offset()))
                    self.topics_read.add(m.topic())

    def partitions(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self.owned)

    def commit(self) -> None:
        """Commit the positions of what was read, from the poll thread (between polls)."""
        self.committed.clear()
        self.commit_asked.set()
        assert self.committed.wait(15), f"{self.name}: the commit did not finish"
        assert not self.errors, self.errors

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.consumer.close()


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)


def produce(bootstrap: str, topic: str, count: int, tag: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        p.produce(topic, f"{tag}-{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(15) == 0


def spread(consumers: list[Polled], sizes: list[int]) -> bool:
    parts = [c.partitions() for c in consumers]
    disjoint = sum(len(p) for p in parts) == len(frozenset().union(*parts))
    return disjoint and sorted(len(p) for p in parts) == sorted(sizes)


def test_members_split_partitions_and_a_joiner_does_not_stop_the_others(box: Box) -> None:
    bootstrap = box.broker.bootstrap
    topic, group = "kip848-spread", "kip848-spread-group"
    create_topic(bootstrap, topic)
    a = Polled(bootstrap, group, topic, "a")
    b = Polled(bootstrap, group, topic, "b")
    consumers = [a, b]
    try:
        wait_for(lambda: spread([a, b], [3, 3]), timeout_s=20, what="a and b to hold 3 partitions each")
        before = {c.name: c.partitions() for c in (a, b)}
        marks = {c.name: len(c.history) for c in (a, b)}
        c = Polled(bootstrap, group, topic, "c")
        consumers.append(c)
        wait_for(lambda: spread([a, b, c], [2, 2, 2]), timeout_s=20, what="a, b and c to hold 2 each")
        for old in (a, b):
            # Only the partition that moved was revoked, and nothing was assigned anew: the
            # member kept consuming its other partitions throughout. (librdkafka reports the
            # new epoch with an empty incremental assignment.)
            changes = [(kind, parts) for kind, parts in old.history[marks[old.name]:] if parts]
            assert [kind for kind, _ in changes] == ["revoke"], changes
            (_, revoked), = changes
            assert len(revoked) == 1 and revoked <= before[old.name]
            assert old.partitions() == before[old.name] - revoked
        # The kept partitions never stopped: records produced now reach all three.
        produce(bootstrap, topic, 60, "after-join")
        wait_for(lambda: all(len({p for p, _ in x.records}) == 2 for x in (a, b, c)) or None,
                 timeout_s=20, what="each member to read its two partitions")
        assert not any(x.errors for x in consumers), [x.errors for x in consumers]

        # c leaves (epoch -1): its partitions go back to a and b, which lose none.
        c_parts = c.partitions()
        c.close()
        consumers.remove(c)
        wait_for(lambda: spread([a, b], [3, 3]), timeout_s=20, what="a and b to take c's partitions")
        assert a.partitions() | b.partitions() == frozenset(range(PARTITIONS))
        assert c_parts <= a.partitions() | b.partitions()

        admin = AdminClient({"bootstrap.servers": bootstrap})
        described = admin.describe_consumer_groups([group])[group].result(15)
        assert described.type == ConsumerGroupType.CONSUMER
        assigned = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in described.members}
        assert assigned == {"a": set(a.partitions()), "b": set(b.partitions())}
    finally:
        for x in consumers:
            x.close()


def test_committed_offsets_survive_the_members_and_a_restart(box: Box, tmp_path: Path) -> None:
    bootstrap = box.broker.bootstrap
    topic, group = "kip848-offsets", "kip848-offsets-group"
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, 30, "first")
    a = Polled(bootstrap, group, topic, "a")
    try:
        wait_for(lambda: len(a.records) >= 30 or None, timeout_s=20, what="a to read the first 30")
        a.commit()
    finally:
        a.close()
    produce(bootstrap, topic, 12, "second")
    # The group, and its offsets, are reloaded from __consumer_offsets.
    data_dir = box.broker.data_dir
    box.broker.stop()
    box.broker = InProcessBroker(data_dir, PROPS).start()
    bootstrap = box.broker.bootstrap
    b = Polled(bootstrap, group, topic, "b")
    try:
        wait_for(lambda: len(b.records) >= 12 or None, timeout_s=30, what="b to read the second 12")
        per_partition: dict[int, list[int]] = {}
        for p, o in b.records:
            per_partition.setdefault(p, []).append(o)
        # Each partition had 5 records committed, then 2 more: b reads only those 2.
        assert {p: sorted(os) for p, os in per_partition.items()} == {p: [5, 6] for p in range(PARTITIONS)}
    finally:
        b.close()


def test_static_member_restarts_and_gets_its_partitions_back(box: Box) -> None:
    bootstrap = box.broker.bootstrap
    topic, group = "kip848-static", "kip848-static-group"
    create_topic(bootstrap, topic)
    s = Polled(bootstrap, group, topic, "s", **{"group.instance.id": "instance-s"})
    b = Polled(bootstrap, group, topic, "b")
    consumers = [s, b]
    try:
        wait_for(lambda: spread([s, b], [3, 3]), timeout_s=20, what="s and b to hold 3 partitions each")
        s_parts, b_mark = s.partitions(), len(b.history)
        s.close()  # a static member's close is a temporary leave (epoch -2): it keeps its place
        consumers.remove(s)
        again = Polled(bootstrap, group, topic, "s-again", **{"group.instance.id": "instance-s"})
        consumers.append(again)
        wait_for(lambda: again.partitions() or None, timeout_s=20, what="the restarted member's partitions")
        assert again.partitions() == s_parts
        assert [h for h in b.history[b_mark:] if h[1]] == [], "b saw no rebalance"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        described = admin.describe_consumer_groups([group])[group].result(15)
        assert {(m.client_id, m.group_instance_id) for m in described.members} == {
            ("s-again", "instance-s"), ("b", None)}
    finally:
        for x in consumers:
            x.close()


def test_regex_subscription_picks_up_a_new_topic(box: Box) -> None:
    bootstrap = box.broker.bootstrap
    group = "kip848-regex-group"
    create_topic(bootstrap, "kip848-rx-one")
    create_topic(bootstrap, "kip848-other")
    r = Polled(bootstrap, group, "^kip848-rx-.*", "r")
    try:
        produce(bootstrap, "kip848-rx-one", 6, "one")
        wait_for(lambda: len(r.records) >= 6 or None, timeout_s=20, what="r to read kip848-rx-one")
        create_topic(bootstrap, "kip848-rx-two")
        produce(bootstrap, "kip848-rx-two", 6, "two")
        wait_for(lambda: len(r.records) >= 12 or None, timeout_s=30, what="r to read the new kip848-rx-two")
        assert r.topics_read == {"kip848-rx-one", "kip848-rx-two"}  # not kip848-other

        def regexes() -> list[str | None]:
            coordinator = box.broker.server.node.group_coordinator
            shard = coordinator.runtime.shard(coordinator.partition_for(group))
            return [m.subscribed_topic_regex for m in shard.consumer_groups[group].members.values()]

        # The client sent the pattern; the broker resolved it.
        assert box.broker.call(regexes) == ["(^kip848-rx-.*)"]  # librdkafka wraps each pattern
        admin = AdminClient({"bootstrap.servers": bootstrap})
        (member,) = admin.describe_consumer_groups([group])[group].result(15).members
        assert {tp.topic for tp in member.assignment.topic_partitions} == {"kip848-rx-one", "kip848-rx-two"}
    finally:
        r.close()
