"""Exactly-once from Kafka into a SQL database: the idempotent consumer (docs/guarantees.md s.7).

A sink stores each partition's consumed position (group, topic, partition, next offset) in
the same local database transaction as the effect of the records, and starts every assigned
partition at the position stored there. A crash at any point then either lost the effect and
its position together (the records come again) or kept both (the records are skipped).

    from ackly.eos import ConfluentExactlyOnce, PostgresPositions

    sink = ConfluentExactlyOnce(consumer, PostgresPositions.connect(dsn), group="bank")
    sink.subscribe(["transfers"])
    while True:
        with sink.transaction(sink.poll()) as tx:
            for record in tx.records:
                tx.cursor.execute("UPDATE ...", ...)

Backends: `SqlitePositions` (stdlib sqlite3, WAL) and `PostgresPositions` (psycopg 3).
Clients: `ConfluentExactlyOnce`, `KafkaPythonExactlyOnce`, `AiokafkaExactlyOnce`; each imports
its client library only when used. Nothing in the broker imports this package.
"""

from ackly.eos.aiokafka import AiokafkaExactlyOnce
from ackly.eos.confluent import ConfluentExactlyOnce
from ackly.eos.kafka_python import KafkaPythonExactlyOnce
from ackly.eos.positions import Positions, TopicPartition
from ackly.eos.postgres import PostgresPositions
from ackly.eos.sink import ExactlyOnce, OffsetReset, Transaction
from ackly.eos.sqlite import SqlitePositions

__all__ = [
    "AiokafkaExactlyOnce",
    "ConfluentExactlyOnce",
    "ExactlyOnce",
    "KafkaPythonExactlyOnce",
    "OffsetReset",
    "Positions",
    "PostgresPositions",
    "SqlitePositions",
    "TopicPartition",
    "Transaction",
]
