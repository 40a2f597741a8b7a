"""Positions in PostgreSQL (psycopg 3).

Owns nothing but the table: the user hands in a psycopg connection (or lets `connect` open one
in autocommit mode) and writes through the cursor each sink transaction yields. A sink
transaction is psycopg's outermost `connection.transaction()` block (BEGIN ... COMMIT); it is
refused while the connection is already inside a transaction, because a nested block would
only be a savepoint and the commit would then be the caller's, not the sink's.

Concurrency: `lock` first creates the position row if it is absent (a placeholder that the
same transaction overwrites) and then reads it with SELECT ... FOR UPDATE. Two transactions of
the same partition therefore queue on that row even for a partition's very first records;
under READ COMMITTED the second one reads the row as the first one committed it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ackly.eos.positions import DEFAULT_TABLE, TopicPartition, checked_table_name

if TYPE_CHECKING:
    import psycopg

# A placeholder row's offset: never left in a committed transaction (see `lock`), and read
# as "no position" if it ever were.
_ABSENT = -1


class PostgresPositions:
    """Positions in a PostgreSQL database reached through `connection`."""

    def __init__(self, connection: psycopg.Connection[Any], *, table: str = DEFAULT_TABLE) -> None:
        self.table = checked_table_name(table)
        self.connection = connection
        self._create_table()

    @classmethod
    def connect(cls, conninfo: str, *, table: str = DEFAULT_TABLE, **kwargs: Any) -> PostgresPositions:
        """Open a connection (autocommit at the driver level; the sink opens its transactions)."""
        import psycopg

        return cls(psycopg.connect(conninfo, autocommit=True, **kwargs), table=table)

    def _create_table(self) -> None:
        import psycopg

        try:
            with self.transaction() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    " group_id text NOT NULL, topic text NOT NULL, partition_id integer NOT NULL,"
                    " next_offset bigint NOT NULL, PRIMARY KEY (group_id, topic, partition_id))"
                )
        except psycopg.errors.UniqueViolation:
            # Two processes created it at the same moment (IF NOT EXISTS is not atomic in
            # PostgreSQL's catalogs); the other one won, which is all that was needed.
            pass

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        from psycopg.pq import TransactionStatus

        status = self.connection.info.transaction_status
        if status != TransactionStatus.IDLE:
            raise RuntimeError(
                f"the PostgreSQL connection is not idle ({status.name}): commit or roll back first, "
                "or use a connection in autocommit mode"
            )
        with self.connection.transaction(), self.connection.cursor() as cursor:
            yield cursor

    def lock(self, cursor: psycopg.Cursor[Any], group: str, topic: str, partition: int) -> int | None:
        cursor.execute(
            f"INSERT INTO {self.table} (group_id, topic, partition_id, next_offset) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (group, topic, partition, _ABSENT),
        )
        cursor.execute(
            f"SELECT next_offset FROM {self.table} WHERE group_id = %s AND topic = %s AND partition_id = %s"
            " FOR UPDATE",
            (group, topic, partition),
        )
        row = cursor.fetchone()
        assert row is not None, "the row was created above"
        offset = int(row[0])
        return None if offset == _ABSENT else offset

    def save(self, cursor: psycopg.Cursor[Any], group: str, topic: str, partition: int, next_offset: int) -> None:
        cursor.execute(
            f"INSERT INTO {self.table} (group_id, topic, partition_id, next_offset) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            (group, topic, partition, next_offset),
        )

    def read(self, group: str, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = set(partitions)
        with self.transaction() as cursor:
            cursor.execute(
                f"SELECT topic, partition_id, next_offset FROM {self.table} WHERE group_id = %s", (group,)
            )
            rows = cursor.fetchall()
        return {(t, p): int(n) for t, p, n in rows if (t, p) in wanted and int(n) != _ABSENT}

    def close(self) -> None:
        self.connection.close()
