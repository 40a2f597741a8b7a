"""Exactly-once from Kafka into a SQL database: the idempotent consumer (GUARANTEES.md s.7)."""
