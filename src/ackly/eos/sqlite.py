"""Positions in SQLite (stdlib `sqlite3`), in WAL mode.

Owns one connection, in autocommit mode at the driver level (`isolation_level=None`) so that
the module, not the driver's implicit transactions, decides where a transaction begins and
ends. Every sink transaction is `BEGIN IMMEDIATE ... COMMIT`: the write lock is taken at BEGIN,
so positions read inside the transaction cannot change before it commits, and a second
process on the same file waits (up to `busy_timeout_ms`) instead of failing at COMMIT.

Durability: WAL with `synchronous=FULL` (the default here) fsyncs the WAL at every commit, so
a committed transaction survives a power loss; `synchronous=NORMAL` survives a crash of the
process but may lose the last commits on power loss. Either way a crash never leaves an effect
without its position or a position without its effect.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from ackly.eos.positions import DEFAULT_TABLE, TopicPartition, checked_table_name

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqlitePositions:
    """Positions in a SQLite database file; `connection` is the one the user writes with."""

    def __init__(self, database: str | os.PathLike[str] | sqlite3.Connection, *,
                 table: str = DEFAULT_TABLE, synchronous: str = "FULL",
                 busy_timeout_ms: int = 30_000) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        self.table = checked_table_name(table)
        if isinstance(database, sqlite3.Connection):
            if database.in_transaction:
                raise ValueError("the SQLite connection is inside a transaction")
            self.connection = database
        else:
            # Not bound to the creating thread: kafka-python 3 runs rebalance listeners (which
            # read positions) on its IO thread while the consumer's thread waits in poll().
            # The sink never uses the connection from two threads at once.
            self.connection = sqlite3.connect(database, timeout=busy_timeout_ms / 1000,
                                              check_same_thread=False)
        self.connection.isolation_level = None
        self.connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = self.connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() not in ("wal", "memory"):  # an in-memory database has no journal
            raise RuntimeError(f"SQLite refused WAL mode (journal_mode is {mode})")
        self.connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self.connection.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " group_id TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,"
            " next_offset INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition_id))"
        )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        if self.connection.in_transaction:
            raise RuntimeError("the SQLite connection is already inside a transaction")
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    def lock(self, cursor: sqlite3.Cursor, group: str, topic: str, partition: int) -> int | None:
        # BEGIN IMMEDIATE already holds the database's write lock: a plain read is stable.
        row = cursor.execute(
            f"SELECT next_offset FROM {self.table} WHERE group_id = ? AND topic = ? AND partition_id = ?",
            (group, topic, partition),
        ).fetchone()
        return None if row is None else int(row[0])

    def save(self, cursor: sqlite3.Cursor, group: str, topic: str, partition: int, next_offset: int) -> None:
        cursor.execute(
            f"INSERT INTO {self.table} (group_id, topic, partition_id, next_offset) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET next_offset = excluded.next_offset",
            (group, topic, partition, next_offset),
        )

    def read(self, group: str, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = set(partitions)
        rows = self.connection.execute(
            f"SELECT topic, partition_id, next_offset FROM {self.table} WHERE group_id = ?", (group,)
        ).fetchall()
        return {(t, p): int(n) for t, p, n in rows if (t, p) in wanted}

    def close(self) -> None:
        self.connection.close()
