"""The idempotent consumer (ackly.eos) against SQLite and PostgreSQL, with a scripted client.

`ScriptedSink` is an `ExactlyOnce` over an in-memory "client": one list of records per
partition and a fetch position per partition, moved by seeks, as a Kafka client's would be.
Rebalances are driven by the test (`rebalance`), the way a client's callbacks drive the real
adapters. The PostgreSQL cases run on the session's private server (slow: a process).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ackly.eos import ExactlyOnce, PostgresPositions, SqlitePositions
from ackly.eos.positions import TopicPartition

TOPIC = "transfers"
GROUP = "bank"
WAIT_S = 10.0


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    amount: int


class ScriptedSink(ExactlyOnce[Rec, Any]):
    def __init__(self, positions: Any, log: dict[TopicPartition, list[Rec]], **kwargs: Any) -> None:
        super().__init__(positions, group=GROUP, **kwargs)
        self.log = log
        self.fetch_at: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    def rebalance(self, revoked: list[TopicPartition], assigned: list[TopicPartition]) -> None:
        self._partitions_revoked(revoked)
        for tp in revoked:
            self.fetch_at.pop(tp, None)
        self._start(self._partitions_assigned(assigned))

    def _start(self, starts: dict[TopicPartition, int | None]) -> None:
        for tp, start in starts.items():
            first = self.log[tp][0].offset if self.log[tp] else 0
            self._seek(tp, first if start is None else start)  # auto_offset_reset=earliest
        self._positioned(starts)

    def poll(self, max_records: int = 100) -> list[Rec]:
        self._start(self._pending_starts())
        out: list[Rec] = []
        for tp, at in sorted(self.fetch_at.items()):
            batch = [r for r in self.log[tp] if r.offset >= at][: max_records - len(out)]
            if batch:
                self.fetch_at[tp] = batch[-1].offset + 1
            out += batch
        return out

    def _coordinates(self, record: Rec) -> tuple[str, int, int]:
        return record.topic, record.partition, record.offset

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.fetch_at[partition] = offset


class Db:
    """The test's view of one database: its positions store and helpers to read it."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind, self.target = kind, target
        self.ph = "?" if kind == "sqlite" else "%s"

    def positions(self) -> Any:
        if self.kind == "sqlite":
            return SqlitePositions(self.target)
        return PostgresPositions.connect(self.target)

    def setup(self) -> None:
        store = self.positions()
        with store.transaction() as cur:
            cur.execute("CREATE TABLE applied (topic TEXT, partition_id INTEGER, record_offset BIGINT,"
                        " amount BIGINT, PRIMARY KEY (topic, partition_id, record_offset))")
        store.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Read through a connection of its own, outside any sink transaction."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                return [tuple(row) for row in conn.execute(sql).fetchall()]
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as pg:
            return [tuple(row) for row in pg.execute(sql).fetchall()]

    def applied(self) -> list[tuple[int, int]]:
        return sorted((p, o) for p, o in self.query("SELECT partition_id, record_offset FROM applied"))

    def stored(self) -> dict[int, int]:
        rows = self.query("SELECT partition_id, next_offset FROM ackly_positions")
        return {p: n for p, n in rows}

    def write(self, tx: Any) -> None:
        for r in tx.records:
            tx.cursor.execute(
                f"INSERT INTO applied VALUES ({self.ph}, {self.ph}, {self.ph}, {self.ph})",
                (r.topic, r.partition, r.offset, r.amount),
            )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Db]:
    if request.param == "sqlite":
        d = Db("sqlite", str(tmp_path / "sink.db"))
    else:
        d = Db("postgres", request.getfixturevalue("postgres_database"))
    d.setup()
    yield d


def make_log(partitions: int = 3, per_partition: int = 10) -> dict[TopicPartition, list[Rec]]:
    return {(TOPIC, p): [Rec(TOPIC, p, o, 100 * p + o) for o in range(per_partition)] for p in range(partitions)}


def all_partitions(n: int = 3) -> list[TopicPartition]:
    return [(TOPIC, p) for p in range(n)]


def test_effect_and_position_commit_together_and_are_invisible_before(db: Db) -> None:
    sink = ScriptedSink(db.positions(), make_log())
    sink.rebalance([], all_partitions())
    batch = sink.poll(max_records=15)
    with sink.transaction(batch) as tx:
        db.write(tx)
        # Another connection sees neither the effect nor the position before the commit.
        assert db.applied() == []
        assert db.stored() == {}
    assert len(db.applied()) == 15
    assert db.stored() == {0: 10, 1: 5}
    assert sink.stored_positions() == {(TOPIC, 0): 10, (TOPIC, 1): 5}


def test_a_failure_in_the_users_code_rolls_back_effect_and_position_and_rewinds(db: Db) -> None:
    sink = ScriptedSink(db.positions(), make_log())
    sink.rebalance([], all_partitions())
    with sink.transaction(sink.poll(max_records=4)) as tx:
        db.write(tx)
    batch = sink.poll(max_records=8)  # offsets 4..9 of p0 and 0..1 of p1
    with pytest.raises(ZeroDivisionError), sink.transaction(batch) as tx:
        db.write(tx)
        _ = 1 / 0
    assert db.stored() == {0: 4}
    assert db.applied() == [(0, o) for o in range(4)]
    # The client was sought back to the first record of the batch in each partition.
    assert sink.fetch_at[(TOPIC, 0)] == 4 and sink.fetch_at[(TOPIC, 1)] == 0
    assert sink.poll(max_records=8) == batch
    with sink.transaction(batch) as tx:
        db.write(tx)
    assert db.stored() == {0: 10, 1: 2}
    assert len(db.applied()) == 12


def test_assignment_seeks_to_stored_positions_and_new_partitions_start_by_reset(db: Db) -> None:
    log = make_log()
    first = ScriptedSink(db.positions(), log)
    first.rebalance([], all_partitions())
    with first.transaction([r for r in first.poll(30) if r.partition == 0 or r.offset < 3]) as tx:
        db.write(tx)
    assert db.stored() == {0: 10, 1: 3, 2: 3}

    # A new incarnation starts where the database says, whatever it fetched before.
    second = ScriptedSink(db.positions(), log)
    second.rebalance([], [(TOPIC, 1), (TOPIC, 2)])
    assert sorted(second.seeks) == [((TOPIC, 1), 3), ((TOPIC, 2), 3)]
    store = db.positions()
    fresh = ScriptedSink(store, {("other", 0): [Rec("other", 0, 7, 1)]})
    assert fresh._partitions_assigned([("other", 0)]) == {("other", 0): None}
    store.close()


def test_records_of_a_revoked_partition_are_not_applied(db: Db) -> None:
    log = make_log()
    sink = ScriptedSink(db.positions(), log, commit_to_kafka=True)
    sink.rebalance([], all_partitions())
    batch = sink.poll(max_records=30)
    sink.rebalance([(TOPIC, 1)], [])  # revoked between poll and transaction
    with sink.transaction(batch) as tx:
        db.write(tx)
        assert tx.skipped == 10
        assert {r.partition for r in tx.records} == {0, 2}
    assert db.stored() == {0: 10, 2: 10}
    assert sink._take_commits() == {(TOPIC, 0): 10, (TOPIC, 2): 10}

    # The partition's new owner starts at offset 0: nothing of it was applied.
    owner = ScriptedSink(db.positions(), log)
    owner.rebalance([], [(TOPIC, 1)])
    with owner.transaction(owner.poll()) as tx:
        db.write(tx)
    assert db.applied() == sorted((p, o) for p in range(3) for o in range(10))


def test_a_zombie_that_missed_its_revocation_applies_nothing_twice(db: Db) -> None:
    log = make_log(partitions=1, per_partition=20)
    owner = ScriptedSink(db.positions(), log)
    zombie = ScriptedSink(db.positions(), log)
    owner.rebalance([], [(TOPIC, 0)])
    zombie.rebalance([], [(TOPIC, 0)])
    stale = zombie.poll(max_records=15)  # fetched 0..14 while it still owned the partition
    with owner.transaction(owner.poll(max_records=10)) as tx:
        db.write(tx)
    with zombie.transaction(stale) as tx:
        db.write(tx)
        assert [r.offset for r in tx.records] == list(range(10, 15))
        assert tx.skipped == 10
    with owner.transaction(owner.poll(max_records=10)) as tx:
        db.write(tx)
        assert [r.offset for r in tx.records] == list(range(15, 20))
    assert db.applied() == [(0, o) for o in range(20)]
    assert db.stored() == {0: 20}


def test_repeats_inside_a_batch_apply_once_and_offset_gaps_are_allowed(db: Db) -> None:
    log = {(TOPIC, 0): [Rec(TOPIC, 0, o, o) for o in (0, 1, 5, 6)]}
    sink = ScriptedSink(db.positions(), log)
    sink.rebalance([], [(TOPIC, 0)])
    batch = sink.poll()
    with sink.transaction(batch + batch[1:3]) as tx:
        db.write(tx)
        assert tx.skipped == 2
    assert db.applied() == [(0, 0), (0, 1), (0, 5), (0, 6)]
    assert db.stored() == {0: 7}


def test_concurrent_first_writes_of_one_partition_are_serialised(db: Db) -> None:
    """Two consumers that both believe they own a partition never stored before: the second
    transaction waits for the first and then skips what it applied."""
    log = make_log(partitions=1)
    a = ScriptedSink(db.positions(), log)
    a.rebalance([], [(TOPIC, 0)])
    batch_a = a.poll()
    inside_a = threading.Event()
    release_a = threading.Event()
    b_done = threading.Event()
    b_result: list[int] = []

    def run_b() -> None:  # its own connection, made on its own thread (sqlite3 requires it)
        b = ScriptedSink(db.positions(), log)
        b.rebalance([], [(TOPIC, 0)])
        batch_b = b.poll()
        inside_a.wait(WAIT_S)
        with b.transaction(batch_b) as tx:
            db.write(tx)
            b_result.append(len(tx.records))
        b_done.set()

    t = threading.Thread(target=run_b)
    t.start()
    try:
        with a.transaction(batch_a) as tx:
            db.write(tx)
            inside_a.set()
            # b is blocked on the position lock for as long as a's transaction is open.
            assert not b_done.wait(0.5)
            release_a.set()
    finally:
        t.join(WAIT_S)
    assert not t.is_alive()
    assert b_result == [0]
    assert db.applied() == [(0, o) for o in range(10)]


def test_sqlite_is_in_wal_mode_and_the_table_is_created_once(tmp_path: Any) -> None:
    path = tmp_path / "s.db"
    SqlitePositions(path).close()
    store = SqlitePositions(path)  # the table exists already: fine
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.connection.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'ackly_positions'").fetchone()[0] == 1
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("BEGIN")
    with pytest.raises(ValueError, match="inside a transaction"):
        SqlitePositions(conn)
    with pytest.raises(ValueError, match="plain SQL identifier"):
        SqlitePositions(path, table="x; DROP TABLE y")


@pytest.mark.slow
def test_postgres_refuses_a_connection_inside_a_transaction(postgres_database: str) -> None:
    import psycopg

    conn = psycopg.connect(postgres_database)  # not autocommit: the first query opens a transaction
    store = PostgresPositions(conn)
    conn.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="not idle"), store.transaction():
        pass
    conn.rollback()
    with store.transaction() as cur:
        cur.execute("SELECT count(*) FROM ackly_positions")
        assert cur.fetchone() == (0,)
    conn.close()


class FailingReads:
    """A positions store whose next `failures` reads raise, as a database that is down."""

    def __init__(self, store: Any, failures: int) -> None:
        self.store, self.failures = store, failures

    def read(self, group: str, partitions: Any) -> dict[TopicPartition, int]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        return dict(self.store.read(group, partitions))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_partition_not_positioned_at_assignment_applies_nothing_until_a_poll_positions_it(db: Db) -> None:
    """Some clients assign anyway (at the group's committed offsets) when the rebalance
    callback fails; aiokafka only logs the failure. Records fetched from there are not
    applied, and the next poll seeks to the stored position."""
    log = make_log(partitions=1)
    sink = ScriptedSink(db.positions(), log)
    sink.rebalance([], [(TOPIC, 0)])
    with sink.transaction(sink.poll(max_records=3)) as tx:
        db.write(tx)
    sink.rebalance([(TOPIC, 0)], [])

    sink.positions = FailingReads(sink.positions, failures=2)
    with pytest.raises(ConnectionError):
        sink.rebalance([], [(TOPIC, 0)])
    sink.fetch_at[(TOPIC, 0)] = 6  # the client's fallback: the group's committed offset, say
    wrong = [r for r in log[(TOPIC, 0)] if r.offset >= 6]
    with sink.transaction(wrong) as tx:
        assert tx.records == [] and tx.skipped == len(wrong)
    assert sink.assignment == frozenset()
    with pytest.raises(ConnectionError):
        sink.poll()  # still unreachable: still pending
    batch = sink.poll()
    assert [r.offset for r in batch] == list(range(3, 10))
    with sink.transaction(batch) as tx:
        db.write(tx)
    assert db.applied() == [(0, o) for o in range(10)]
