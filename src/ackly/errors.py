"""Kafka error codes and the project's own exceptions.

`ErrorCode` is Kafka's table of error codes (an IntEnum, as generated from Kafka's
`Errors` class by kio). Errors the peer caused are answered with a code; errors that
are ackly's own bugs are assertions.
"""

from __future__ import annotations

import errno

from kio.schema.errors import ErrorCode

__all__ = ["AcklyError", "ConfigError", "ErrorCode", "KafkaError", "StorageError"]


class AcklyError(Exception):
    """Base of every exception ackly raises on purpose."""


class KafkaError(AcklyError):
    """A failure that is answered to the client with a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


class StorageError(KafkaError):
    """A write, fsync, rename or truncate in the data directory failed (EIO, ENOSPC, EROFS, ...).

    The one error type the `Disk` interface raises for a failed change. It is answered as
    KAFKA_STORAGE_ERROR, and it takes the log directory offline (Kafka's LogDirFailureChannel):
    after it, nothing is acknowledged on the strength of a later fsync, because Linux reports a
    failed write-back once and then counts the lost pages as clean.
    """

    def __init__(self, operation: str, path: str, errno_code: int | None, reason: str) -> None:
        name = errno.errorcode.get(errno_code, str(errno_code)) if errno_code is not None else "?"
        super().__init__(ErrorCode.kafka_storage_error, f"{operation} {path}: {reason} ({name})")
        self.operation = operation
        self.path = path
        self.errno = errno_code
        self.reason = reason


class ConfigError(AcklyError):
    """A configuration value that ackly refuses, with the key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid config {key!r}: {reason}")
        self.key = key
        self.reason = reason
