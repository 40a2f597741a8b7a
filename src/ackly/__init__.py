"""ackly: a small Kafka-compatible broker."""

__version__ = "0.1.0"
