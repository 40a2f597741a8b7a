"""Kafka error codes and the project's own exceptions.

`ErrorCode` is Kafka's table of error codes (an IntEnum, as generated from Kafka's
`Errors` class by kio). Errors the peer caused are answered with a code; errors that
are ackly's own bugs are assertions.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = ["AcklyError", "ConfigError", "ErrorCode", "KafkaError"]


class AcklyError(Exception):
    """Base of every exception ackly raises on purpose."""


class KafkaError(AcklyError):
    """A failure that is answered to the client with a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


class ConfigError(AcklyError):
    """A configuration value that ackly refuses, with the key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid config {key!r}: {reason}")
        self.key = key
        self.reason = reason
