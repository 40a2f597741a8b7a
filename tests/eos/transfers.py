"""A consumer that credits bank accounts exactly once (ackly.eos), for the crash test.

    python transfers.py BOOTSTRAP TOPIC GROUP {postgres CONNINFO | sqlite PATH}
                        --total N [--batch N] [--instance-id ID] [--commit-to-kafka]

Each record of TOPIC is a transfer, JSON {"id": n, "account": a, "amount": x}. The consumer
credits `amount` to `account` and records the transfer in `applied` (primary key: the
transfer id, so a second application of one transfer could not commit), in one database
transaction per polled batch (--batch 1: one per record) that also stores the positions.
It exits 0 once `applied` holds --total transfers (applied by it or by other members).

stdout, one line each, flushed at once (the test kills the process when it has seen enough):
    applying <id>        inside a transaction, before its commit
    committed <count>    after a commit: the number of transfers in `applied`
    retry <error>        a deadlock or serialisation failure rolled the transaction back
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from confluent_kafka import Consumer
from psycopg.errors import DeadlockDetected, SerializationFailure

from ackly.eos import ConfluentExactlyOnce, PostgresPositions, SqlitePositions

ACCOUNTS = 10


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("backend", choices=["postgres", "sqlite"])
    parser.add_argument("database", help="PostgreSQL conninfo or SQLite file")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--commit-to-kafka", action="store_true", help="commit offsets for lag monitoring")
    args = parser.parse_args()

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id  # a restart takes its place at once
    consumer = Consumer(config)

    positions: Any
    if args.backend == "postgres":
        positions, ph = PostgresPositions.connect(args.database), "%s"
    else:
        positions, ph = SqlitePositions(args.database), "?"
    with positions.transaction() as cursor:
        if args.backend == "postgres":  # members starting together: one creates the tables
            cursor.execute("SELECT pg_advisory_xact_lock(20260)")
        cursor.execute("CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)")
        cursor.execute("CREATE TABLE IF NOT EXISTS applied (transfer_id INTEGER PRIMARY KEY,"
                       " partition_id INTEGER NOT NULL, record_offset BIGINT NOT NULL)")
        for account in range(ACCOUNTS):
            cursor.execute(f"INSERT INTO accounts VALUES ({ph}, 0) ON CONFLICT DO NOTHING", (account,))

    # The sink, as in the README: positions live in the same database as the accounts.
    sink = ConfluentExactlyOnce(consumer, positions, group=args.group, auto_offset_reset="earliest",
                                commit_to_kafka=args.commit_to_kafka)
    sink.subscribe([args.topic])
    count = applied_count(positions)
    while count < args.total:
        records = sink.poll(timeout_s=0.5, max_records=args.batch)
        if not records:
            count = applied_count(positions)  # other members may have finished the rest
            continue
        try:
            with sink.transaction(records) as tx:
                for record in tx.records:
                    transfer = json.loads(record.value())
                    tx.cursor.execute(
                        f"INSERT INTO applied VALUES ({ph}, {ph}, {ph})",
                        (transfer["id"], record.partition(), record.offset()),
                    )
                    tx.cursor.execute(
                        f"UPDATE accounts SET balance = balance + {ph} WHERE id = {ph}",
                        (transfer["amount"], transfer["account"]),
                    )
                    say(f"applying {transfer['id']}")
        except (DeadlockDetected, SerializationFailure) as error:
            # Two members credited the same accounts in opposite orders (a deadlock) or
            # PostgreSQL could not serialise them: the sink rolled back and rewound, so the
            # same records come again.
            say(f"retry {type(error).__name__}")
        count = applied_count(positions)
        say(f"committed {count}")
    sink.close()
    return 0


def applied_count(positions: Any) -> int:
    with positions.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM applied")
        return int(cursor.fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
