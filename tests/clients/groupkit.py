"""Consumer-group scenarios with real clients (docs/guarantees.md rules 24 and 25).

Each member is its own process (group_member.py for the Python clients, js/group_member.js for
kafkajs) so a test can stop it cleanly, kill it with SIGKILL, or start another in its place.
Members report what they were assigned and every record they processed (see group_member.py).

What a scenario checks, whatever the client:
- every record produced is processed by some member (at least once);
- after all members stop, the group's committed offsets are the partitions' ends, and members
  started afterwards resume there: they process exactly the records produced since;
- within one generation no partition belongs to two members. The broker's own log of the
  group is read for this: `__consumer_offsets` holds, per generation, the assignment every
  member was given (GroupMetadataValue). It is decoded here from Kafka's record formats,
  independently of ackly's code; and every assignment a member reported must be one of them.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from tests.clients.clientkit import (
    Rec,
    ck_admin,
    ck_create_topic,
    ck_produce,
    unique_topic,
    wait_for,
)

HERE = Path(__file__).parent
MEMBER_PY = HERE / "group_member.py"
MEMBER_JS = HERE / "js" / "group_member.js"
OFFSETS_TOPIC = "__consumer_offsets"
PARTITIONS = 6
SESSION_MS = 6_000  # the broker's minimum: a crashed member is noticed within 6 s

BROKER_CONFIGS = {"group.initial.rebalance.delay.ms": "0"}


# --- members -----------------------------------------------------------------------------


class Member:
    """A group member process and what it reported so far."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str, name: str, *,
                 instance_id: str | None = None, session_ms: int = SESSION_MS) -> None:
        self.client = client
        self.name = name
        if client == "kafkajs":
            cmd = ["node", str(MEMBER_JS), bootstrap, group, topic, name, str(session_ms)]
            cwd = str(MEMBER_JS.parent)
        else:
            cmd = [sys.executable, str(MEMBER_PY), client, bootstrap, group, topic, name,
                   "--session-ms", str(session_ms)]
            if instance_id:
                cmd += ["--instance-id", instance_id]
            cwd = None
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            with self._lock:
                self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == kind]

    def records(self) -> list[tuple[int, int]]:
        return [(e["p"], e["o"]) for e in self.of("record")]

    def assignments(self) -> list[tuple[str, frozenset[int]]]:
        return [(e["member"], frozenset(e["partitions"])) for e in self.of("assigned")]

    def fatal_errors(self) -> list[str]:
        return [e["error"] for e in self.of("error") if e.get("fatal")]

    def stop(self, timeout_s: float = 30) -> None:
        """A clean close: LeaveGroup (dynamic members), then exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=timeout_s)
        assert self.of("closed"), f"{self.name} did not close cleanly: {self.describe()}"

    def kill(self) -> None:
        """A crash: no LeaveGroup, no last commit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def describe(self) -> str:
        tail = "".join(self.stderr[-20:])
        return f"{self.name} (exit {self.proc.poll()}): events {self.events[-5:]}\n{tail}"


# --- the group as the broker sees it -------------------------------------------------------


def describe_group(admin: AdminClient, group: str) -> Any:
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def wait_stable(admin: AdminClient, group: str, members: int, topic: str, *,
                timeout_s: float = 30, why: str = "") -> Any:
    """Until the group is Stable with `members` members that between them own every partition."""

    def probe() -> Any:
        d = describe_group(admin, group)
        if d.state != ConsumerGroupState.STABLE or len(d.members) != members:
            return None
        owned = [tp.partition for m in d.members for tp in m.assignment.topic_partitions
                 if tp.topic == topic]
        return d if sorted(owned) == list(range(PARTITIONS)) else None

    return wait_for(probe, timeout_s=timeout_s, what=f"{group} Stable with {members} members {why}",
                    interval_s=0.1)


def committed_offsets(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


# --- __consumer_offsets, decoded from Kafka's formats ------------------------------------------


def java_hash(s: str) -> int:
    h = 0
    units = s.encode("utf-16-be")
    for hi, lo in zip(units[::2], units[1::2], strict=True):
        h = (h * 31 + (hi << 8 | lo)) % (1 << 32)
    return h - (1 << 32) if h & (1 << 31) else h


def offsets_partition(group: str, partitions: int = 50) -> int:
    h = java_hash(group)
    return 0 if h == -(1 << 31) else abs(h) % partitions


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        self.pos += n
        return self.data[self.pos - n : self.pos].decode()

    def blob(self) -> bytes:
        n = self.take(">i")
        self.pos += max(n, 0)
        return self.data[self.pos - max(n, 0) : self.pos]


@dataclass
class GenerationRecord:
    """One GroupMetadataValue: a generation and what each member was given."""

    generation: int
    assignments: dict[str, frozenset[int]] = field(default_factory=dict)  # member -> partitions
    instances: dict[str, str | None] = field(default_factory=dict)  # member -> instance id


def _assigned_partitions(assignment: bytes, topic: str) -> frozenset[int]:
    """ConsumerProtocolAssignment: version int16, [topic string, [partition int32]], ..."""
    if not assignment:
        return frozenset()
    b = _Buf(assignment)
    b.take(">h")
    out: set[int] = set()
    for _ in range(b.take(">i")):
        name = b.string()
        partitions = [b.take(">i") for _ in range(b.take(">i"))]
        if name == topic:
            out.update(partitions)
    return frozenset(out)


def group_records(bootstrap: str, group: str, topic: str) -> list[GenerationRecord]:
    """Every GroupMetadataValue of `group`, in log order (GroupMetadataValue v0-v3)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = KpTopicPartition(OFFSETS_TOPIC, offsets_partition(group))
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = consumer.end_offsets([tp])[tp]
        out: list[GenerationRecord] = []
        deadline = time.monotonic() + 15
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    if r.key is None or r.value is None:
                        continue
                    key = _Buf(r.key)
                    if key.take(">h") != 2 or key.string() != group:
                        continue
                    v = _Buf(r.value)
                    version = v.take(">h")
                    assert version <= 3, f"GroupMetadataValue v{version}"
                    v.string()  # protocol type
                    rec = GenerationRecord(v.take(">i"))
                    v.string()  # protocol
                    v.string()  # leader
                    if version >= 2:
                        v.take(">q")
                    for _ in range(v.take(">i")):
                        member = v.string()
                        assert member is not None
                        rec.instances[member] = v.string() if version >= 3 else None
                        v.string()  # client id
                        v.string()  # client host
                        if version >= 1:
                            v.take(">i")
                        v.take(">i")
                        v.blob()  # subscription
                        rec.assignments[member] = _assigned_partitions(v.blob(), topic)
                    out.append(rec)
        assert consumer.position(tp) >= end, "could not read the group's records"
        return out
    finally:
        consumer.close()


def check_generations(records: list[GenerationRecord], members: Iterable[Member]) -> None:
    """No partition owned by two members in one generation; generations never go back; every
    assignment a member reported is what its generation's record gave it."""
    assert records, "the group left no record"
    generations = [r.generation for r in records]
    assert generations == sorted(generations), f"generations went back: {generations}"
    for r in records:
        owners: dict[int, str] = {}
        for member, partitions in r.assignments.items():
            owner = r.instances.get(member) or member
            for p in partitions:
                assert owners.setdefault(p, owner) == owner, (
                    f"generation {r.generation}: partition {p} given to {owners[p]} and {owner}")
    given = {(m, parts) for r in records for m, parts in r.assignments.items()}
    for m in members:
        for member_id, partitions in m.assignments():
            assert (member_id, partitions) in given, (
                f"{m.name} was assigned {sorted(partitions)} as {member_id}, which no generation "
                f"of the group gave it")


# --- the scenario ----------------------------------------------------------------------------


def produce_batch(bootstrap: str, topic: str, label: str, per_partition: int) -> list[Rec]:
    records = [Rec(partition=p, key=f"{label}-{p}-{i}".encode(), value=f"{label}-{p}-{i}".encode(),
                   headers=(), timestamp_ms=int(time.time() * 1000))
               for i in range(per_partition) for p in range(PARTITIONS)]
    ck_produce(bootstrap, topic, records)
    return records


def processed(members: Iterable[Member]) -> set[str]:
    return {e["v"] for m in members for e in m.of("record")}


def wait_processed(members: list[Member], records: list[Rec], what: str, timeout_s: float = 30) -> None:
    want = {r.value.decode() for r in records if r.value is not None}

    def probe() -> bool:
        for m in members:
            assert not m.fatal_errors(), m.describe()
        return want <= processed(members)

    wait_for(probe, timeout_s=timeout_s, what=what, interval_s=0.1)


def run_group_scenario(client: str, bootstrap: str, *, crash: bool = True, per_partition: int = 20,
                       on_failure: Callable[[], None] | None = None) -> None:
    """Three members share a 6-partition topic; one leaves, one crashes (SIGKILL, no
    LeaveGroup), one joins late; everything is processed; then all stop, and two new members
    resume exactly where the group left off."""
    topic = unique_topic(f"groups-{client}")
    group = f"group-{topic}"
    admin = ck_admin(bootstrap)
    ck_create_topic(admin, topic, PARTITIONS)
    everyone: list[Member] = []

    def member(name: str) -> Member:
        m = Member(client, bootstrap, group, topic, name)
        everyone.append(m)
        return m

    try:
        batch1 = produce_batch(bootstrap, topic, "one", per_partition)
        a, b, c = member("a"), member("b"), member("c")
        wait_stable(admin, group, 3, topic, why="(a, b, c)")
        wait_processed(everyone, batch1, "the first batch")

        batch2 = produce_batch(bootstrap, topic, "two", per_partition)
        b.stop()  # leaves
        wait_stable(admin, group, 2, topic, why="after b left")
        remaining = 1
        if crash:
            c.kill()  # no LeaveGroup: the coordinator notices when its session times out
            wait_stable(admin, group, 1, topic, timeout_s=SESSION_MS / 1000 + 20, why="after c crashed")
        else:
            remaining = 2
        d = member("d")  # joins late
        wait_stable(admin, group, remaining + 1, topic, why="after d joined")
        batch3 = produce_batch(bootstrap, topic, "three", per_partition)
        wait_processed(everyone, batch1 + batch2 + batch3, "every record so far")
        for m in (a, d) if crash else (a, c, d):
            m.stop()

        ends = {p: 3 * per_partition for p in range(PARTITIONS)}
        assert committed_offsets(admin, group, topic) == ends, "offsets are not at the end"

        # Everyone restarted: the group resumes where it left off.
        batch4 = produce_batch(bootstrap, topic, "four", per_partition)
        e, f = member("e"), member("f")
        wait_stable(admin, group, 2, topic, why="(e, f)")
        wait_processed([e, f], batch4, "the batch produced after the restart")
        resumed = e.records() + f.records()
        below = sorted(x for x in resumed if x[1] < ends[x[0]])
        assert not below, f"restarted members went back before the committed offsets: {below[:10]}"
        assert sorted(resumed) == sorted(
            (p, o) for p in range(PARTITIONS) for o in range(ends[p], ends[p] + per_partition)), (
            "restarted members should process exactly the new records, once each")
        e.stop()
        f.stop()
        check_generations(group_records(bootstrap, group, topic), everyone)
    except BaseException:
        for m in everyone:
            print(m.describe())
        if on_failure is not None:
            on_failure()
        raise
    finally:
        for m in everyone:
            m.kill()
