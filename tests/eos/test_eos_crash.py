"""Exactly once into a database under kill -9 (docs/guarantees.md s.7, last row; ackly.eos).

A confluent-kafka consumer process (transfers.py) credits accounts from 2,000 transfer records
over 3 partitions, in PostgreSQL and in SQLite. It is SIGKILLed at seeded points (after a
seeded number of records were applied inside transactions, so most kills land inside one),
restarted each time, and finally left to finish. Then every transfer was applied exactly once:
the `applied` table (primary key: transfer id) holds each id once, every balance is the sum of
its transfers, and the stored positions are the ends of the partitions. A second test runs
two such consumers in one group and kills one of them at a time, so that partitions move
between live processes writing to the same database.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = [pytest.mark.slow, pytest.mark.clients, pytest.mark.timeout(300)]

SCRIPT = Path(__file__).with_name("transfers.py")
TOPIC = "transfers"
PARTITIONS = 3
TRANSFERS = 2000
ACCOUNTS = 10
KILLS = 5
MEMBER_KILLS = 3
RUN_TIMEOUT_S = 60.0
FINAL_TIMEOUT_S = 120.0


def transfer(i: int) -> dict[str, int]:
    return {"id": i, "account": (i * 7) % ACCOUNTS, "amount": 1 + (i * 7919) % 1000}


def create_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])[TOPIC].result(30)


def produce_transfers(bootstrap: str, first: int = 0, end: int = TRANSFERS) -> None:
    """Transfers first..end-1, transfer i to partition i % 3, acknowledged by the broker."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    failures: list[Any] = []
    for i in range(first, end):
        producer.produce(TOPIC, value=json.dumps(transfer(i)).encode(), partition=i % PARTITIONS,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0, "transfers still in flight after 30 s"
    assert not failures, failures[:3]


class Run:
    """One transfers.py process. A thread reads its stdout and counts the records it reported
    applying (inside transactions), notifying `changed` at each line and when it exits."""

    def __init__(self, args: list[str], stderr_path: Path, changed: threading.Condition) -> None:
        self.stderr_path = stderr_path
        self.stderr = open(stderr_path, "ab")  # noqa: SIM115 - closed once the process ended
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.changed = changed
        self.applying = 0
        self.exited = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("applying "):
                with self.changed:
                    self.applying += 1
                    self.changed.notify_all()
        with self.changed:
            self.exited = True
            self.changed.notify_all()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.stderr.close()

    def finish(self, timeout_s: float) -> int:
        """Wait for the process to exit by itself (killed after `timeout_s`); its status."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return -1
        finally:
            self.kill()

    def failure(self) -> str:
        return f"transfers.py (status {self.proc.poll()}) stderr:\n{self.stderr_path.read_text()}"


def wait_for_applying(changed: threading.Condition, runs: list[Run], target: int) -> Run:
    """The first of `runs` to report `target` records applied since it started; fails if one
    of them exits or none gets there within RUN_TIMEOUT_S."""
    def reached() -> Run | None:
        for run in runs:
            if run.exited:
                raise AssertionError("a consumer exited before its kill: " + run.failure())
            if run.applying >= target:
                return run
        return None

    with changed:
        found = changed.wait_for(reached, RUN_TIMEOUT_S)
    if found is None:
        raise AssertionError(f"no consumer applied {target} records in {RUN_TIMEOUT_S} s: "
                             + "; ".join(run.failure() for run in runs))
    return found


def query(backend: str, database: str, sql: str) -> list[tuple[Any, ...]]:
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(database)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database, autocommit=True) as pg:
        return [tuple(r) for r in pg.execute(sql).fetchall()]


def database_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_database"))
    return str(tmp_path / "bank.db")


def assert_applied_exactly_once(backend: str, database: str, group: str) -> list[tuple[str, int, int]]:
    """Every transfer once, every balance right, positions at the partitions' ends (returned)."""
    applied = query(backend, database, "SELECT transfer_id, partition_id, record_offset FROM applied")
    assert sorted(t for t, _, _ in applied) == list(range(TRANSFERS))
    # transfer i is record i // 3 of partition i % 3 (one producer, sent in order)
    assert all((p, o) == (t % PARTITIONS, t // PARTITIONS) for t, p, o in applied)
    expected = dict.fromkeys(range(ACCOUNTS), 0)
    for i in range(TRANSFERS):
        expected[transfer(i)["account"]] += transfer(i)["amount"]
    balances = dict(query(backend, database, "SELECT id, balance FROM accounts"))
    assert balances == expected
    assert sum(balances.values()) == sum(transfer(i)["amount"] for i in range(TRANSFERS))
    positions = query(backend, database, "SELECT topic, partition_id, next_offset FROM ackly_positions"
                      f" WHERE group_id = '{group}'")
    ends = [(TOPIC, p, len(range(p, TRANSFERS, PARTITIONS))) for p in range(PARTITIONS)]
    assert sorted(positions) == ends
    return ends


@pytest.mark.parametrize(("backend", "batch", "commit_to_kafka", "seed"), [
    ("postgres", 40, True, 11),
    ("postgres", 1, False, 12),
    ("sqlite", 25, False, 13),
    ("sqlite", 1, True, 14),
])
def test_kill_9_at_seeded_points_every_transfer_applied_exactly_once(
    backend: str, batch: int, commit_to_kafka: bool, seed: int, ackly_process: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    broker = ackly_process(configs={"group.initial.rebalance.delay.ms": "0"})
    create_topic(broker.bootstrap)
    produce_transfers(broker.bootstrap)
    database = database_for(backend, request, tmp_path)
    group = f"bank-{seed}"
    # A static member (KIP-345): each restart takes the killed one's place without waiting
    # for its session to expire.
    args = [broker.bootstrap, TOPIC, group, backend, database, "--batch", str(batch),
            "--total", str(TRANSFERS), "--instance-id", "bank-1"] + (["--commit-to-kafka"] * commit_to_kafka)
    stderr_path = tmp_path / "transfers.stderr"
    changed = threading.Condition()
    rng = random.Random(seed)

    for _ in range(KILLS):
        run = Run(args, stderr_path, changed)
        try:
            # Spread the kills over the first part of the stream: re-applied rolled-back
            # records count too, so the consumer is still far from the end at the last kill.
            wait_for_applying(changed, [run], rng.randint(10, TRANSFERS // (KILLS + 2)))
        finally:
            run.kill()
    final = Run(args, stderr_path, changed)
    assert final.finish(FINAL_TIMEOUT_S) == 0, final.failure()

    ends = assert_applied_exactly_once(backend, database, group)
    if commit_to_kafka:  # for lag monitoring only; the final run committed its last positions
        assert committed_offsets(broker.bootstrap, group) == ends


@pytest.mark.parametrize(("backend", "seed"), [("postgres", 21), ("sqlite", 22)])
def test_two_members_killed_in_turn_apply_every_transfer_exactly_once(
    backend: str, seed: int, ackly_process: Any, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """Two dynamic members share the partitions and the database; the first to reach a seeded
    number of records is killed and restarted, so partitions move between processes (revoked
    from the survivor, assigned back) while both write. The transfers are produced in
    chunks, one per kill, so that neither member can finish the topic before the kills."""
    broker = ackly_process(configs={"group.initial.rebalance.delay.ms": "0"})
    create_topic(broker.bootstrap)
    chunk = TRANSFERS // (MEMBER_KILLS + 1)
    produce_transfers(broker.bootstrap, 0, chunk)
    database = database_for(backend, request, tmp_path)
    group = f"bank-{seed}"
    args = [broker.bootstrap, TOPIC, group, backend, database, "--batch", "20", "--total", str(TRANSFERS)]
    changed = threading.Condition()
    rng = random.Random(seed)
    members = [Run(args, tmp_path / f"member-{i}.stderr", changed) for i in range(2)]
    try:
        for k in range(1, MEMBER_KILLS + 1):
            victim = wait_for_applying(changed, members, rng.randint(5, 60))
            victim.kill()
            members[members.index(victim)] = Run(args, victim.stderr_path, changed)
            produce_transfers(broker.bootstrap, k * chunk, TRANSFERS if k == MEMBER_KILLS else (k + 1) * chunk)
        for run in members:
            assert run.finish(FINAL_TIMEOUT_S) == 0, run.failure()
    finally:
        for run in members:
            run.kill()
    assert_applied_exactly_once(backend, database, group)

def committed_offsets(bootstrap: str, group: str) -> list[tuple[str, int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
        return sorted((tp.topic, tp.partition, tp.offset) for tp in found)
    finally:
        consumer.close()
