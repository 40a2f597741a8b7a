"""The exactly-once sink workload (docs/guarantees.md s.7, last row): Kafka into SQLite, exactly once.

Producers are the queue workload's (idempotent, acks=all). Sink workers consume the topic in
one group with the idempotent consumer of `ackly.eos` (confluent-kafka), and apply every record
to a SQLite table in the same local transaction as the sink's stored position: the effect of a
record (topic, partition, offset, value) is an upsert that counts how many times it was applied.
Now and then (seeded) a sink worker fails on purpose: inside the transaction (everything rolls
back and the records come again) or right after it (the worker drops its consumer and a new
incarnation starts from the stored positions).

After the faults are healed and the producers stopped, the sinks drain the topic up to the high
watermarks (bounded), stop, and the table is recorded as one "sink-read" op:
{key: [[offset, v, times], ...]}: every acknowledged write must be there exactly once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from ackly.librdkafka_log import quiet
from ackly.verify.workloads.context import WorkloadContext, now_s, run_worker

EFFECTS_TABLE = "verify_effects"
CRASH_PROBABILITY = 0.15  # per applied batch
POLL_TIMEOUT_S = 0.5


class _InjectedFailure(Exception):
    """Raised inside a sink transaction to roll it back on purpose."""


class SinkWorkload:
    def __init__(self, ctx: WorkloadContext, db_path: str) -> None:
        self.ctx = ctx
        self.db_path = db_path
        self.group = f"verify-{ctx.run_id}-sink"
        self.stop = threading.Event()
        self._create_table()

    def _create_table(self) -> None:
        os.makedirs(os.path.dirname(self.db_path) or ".", exist_ok=True)
        with sqlite3.connect(self.db_path) as db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (topic TEXT NOT NULL, partition_id INTEGER NOT NULL,"
                " record_offset INTEGER NOT NULL, value INTEGER NOT NULL, times INTEGER NOT NULL,"
                " PRIMARY KEY (topic, partition_id, record_offset))"
            )

    def start(self, sinks: int) -> list[threading.Thread]:
        return [run_worker(f"sink-{i}", lambda i=i: self._worker(i), self.ctx)  # type: ignore[misc]
                for i in range(sinks)]

    def _open(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer

        from ackly.eos import ConfluentExactlyOnce, SqlitePositions

        consumer = Consumer(quiet({
            **self.ctx.security,
            "bootstrap.servers": self.ctx.bootstrap, "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000, "fetch.wait.max.ms": 100, "log_level": 3,
            "isolation.level": self.ctx.settings.consumer.get("isolation.level", "read_committed"),
        }))
        positions = SqlitePositions(self.db_path, synchronous="NORMAL")
        sink = ConfluentExactlyOnce(consumer, positions, group=self.group)
        sink.subscribe([self.ctx.topic])
        return sink, positions

    def _worker(self, index: int) -> None:
        rng = self.ctx.rng(f"sink-{index}")
        while not self.stop.is_set():
            sink, positions = self._open()
            crashed = False
            try:
                while not self.stop.is_set():
                    records = sink.poll(POLL_TIMEOUT_S)
                    failure = rng.choice(("inside", "after")) if records and rng.random() < CRASH_PROBABILITY else None
                    try:
                        with sink.transaction(records) as tx:
                            for record in tx.records:
                                self._apply(tx.cursor, record)
                            if failure == "inside":
                                raise _InjectedFailure
                    except _InjectedFailure:
                        self.ctx.count("sink rollbacks")
                        continue
                    self.ctx.count("sink applied", len(tx.records))
                    if failure == "after":
                        self.ctx.count("sink crashes")
                        crashed = True
                        break
            except Exception as exc:
                self.ctx.note_error(f"sink-{index}: {exc!r}")
                crashed = True
            finally:
                try:
                    if crashed:
                        sink.consumer.close()  # no offset commit, no goodbye beyond leaving the group
                    else:
                        sink.close()
                finally:
                    positions.close()

    @staticmethod
    def _apply(cursor: Any, record: Any) -> None:
        try:
            value = int(record.value())
        except (TypeError, ValueError):
            return  # not the workload's record
        cursor.execute(
            f"INSERT INTO {EFFECTS_TABLE} (topic, partition_id, record_offset, value, times) VALUES (?, ?, ?, ?, 1)"
            " ON CONFLICT (topic, partition_id, record_offset) DO UPDATE SET times = times + 1",
            (record.topic(), record.partition(), record.offset(), value),
        )

    def drain(self, high_watermarks: dict[int, int], timeout_s: float) -> bool:
        """Wait until the stored positions reach `high_watermarks` (partition -> offset)."""
        from ackly.eos import SqlitePositions

        deadline_s = now_s() + timeout_s
        positions = SqlitePositions(self.db_path)
        try:
            while now_s() < deadline_s:
                stored = positions.read(self.group, [(self.ctx.topic, p) for p in high_watermarks])
                if all(stored.get((self.ctx.topic, p), 0) >= high for p, high in high_watermarks.items()):
                    return True
                self.stop.wait(0.2)
        finally:
            positions.close()
        return False

    def read_back(self) -> dict[str, list[list[int]]]:
        """The table as the history's sink-read value."""
        out: dict[str, list[list[int]]] = {}
        with sqlite3.connect(self.db_path) as db:
            rows = db.execute(f"SELECT topic, partition_id, record_offset, value, times FROM {EFFECTS_TABLE}"
                              " ORDER BY topic, partition_id, record_offset").fetchall()
        for topic, partition, offset, value, times in rows:
            out.setdefault(f"{topic}/{partition}", []).append([int(offset), int(value), int(times)])
        return out

