"""Internal topic settings for test clusters."""

from __future__ import annotations


def internal_topic_factors(brokers: int) -> dict[str, str]:
    """Replication factors of the internal topics for a cluster of `brokers`: Kafka's 3, or
    every broker of a smaller cluster (a broker of a cluster waits for that many brokers to be
    alive before it creates them, so a cluster smaller than the factor has no coordinator)."""
    factor = str(min(3, brokers))
    return {"offsets.topic.replication.factor": factor,
            "transaction.state.log.replication.factor": factor,
            "transaction.state.log.min.isr": str(min(2, brokers))}
