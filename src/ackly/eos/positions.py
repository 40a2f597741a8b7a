"""Where a sink keeps its consumed positions: the contract every database backend meets.

A position is the next offset to apply for one (group, topic, partition): one past the last
record whose effect was committed. It lives in a table of the user's database, written in the
same local transaction as the user's own writes, so the effect and the position commit or
roll back together. Kafka's committed offsets play no part in it.

The table (`ackly_positions` unless named otherwise), created if missing:

    group_id text, topic text, partition_id integer, next_offset bigint,
    primary key (group_id, topic, partition_id)

Invariants every backend keeps
- `transaction()` yields a cursor inside one database transaction: leaving the block normally
  commits it, an exception rolls it back and propagates. The transaction is durable once the
  block returns (as durable as the database's own commit is configured to be).
- `lock()` reads a partition's position inside that transaction and holds it until the
  transaction ends, so that two consumers which both believe they own a partition (a zombie
  after a rebalance) apply its records one transaction after the other, and the second sees
  the first one's position. SQLite takes the database's write lock at BEGIN IMMEDIATE;
  PostgreSQL locks the row (SELECT ... FOR UPDATE, after creating it if absent, so that
  even a first write is serialised).
- `read()` is outside any transaction and only used to choose where a consumer starts.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

TopicPartition = tuple[str, int]

DEFAULT_TABLE = "ackly_positions"

# Position table names are put into SQL text, so only plain (optionally schema-qualified)
# identifiers are allowed.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

C = TypeVar("C")


def checked_table_name(table: str) -> str:
    if not _TABLE_NAME.match(table):
        raise ValueError(f"position table name {table!r} is not a plain SQL identifier")
    return table


class Positions(Protocol[C]):
    """A database that stores positions next to the user's data; C is its cursor type."""

    def transaction(self) -> AbstractContextManager[C]:
        """One database transaction: commit on normal exit, roll back on an exception."""
        ...

    def lock(self, cursor: C, group: str, topic: str, partition: int) -> int | None:
        """Inside `transaction()`: the stored next offset (None if never stored), locked
        against concurrent writers until the transaction ends."""
        ...

    def save(self, cursor: C, group: str, topic: str, partition: int, next_offset: int) -> None:
        """Inside `transaction()`: store the next offset to apply."""
        ...

    def read(self, group: str, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """The stored next offsets of those partitions that have one (no transaction held)."""
        ...
