"""librdkafka's log lines, routed into Python logging and kept off the terminal.

A confluent-kafka client prints librdkafka's log to stderr (`%3|...|FAIL|rdkafka#producer-1|
... Connection refused`) unless its `logger` setting names an object with a `log` method.
The clients that `ackly verify` and the admin CLI start are given `demoted_logger()`: every
line goes to the `ackly.librdkafka` logger at DEBUG, with librdkafka's own level kept in the
text, so it is shown with `--log-level DEBUG` (or written by a handler attached to that logger,
as verify's report directory does) and never in between a command's output or progress lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

LOGGER_NAME = "ackly.librdkafka"
_SEVERITY = {logging.CRITICAL: "CRIT", logging.ERROR: "ERROR", logging.WARNING: "WARN",
             logging.INFO: "INFO", logging.DEBUG: "DEBUG"}


class DemotedLogger:
    """What confluent-kafka's `logger` setting accepts: it calls `log(level, fmt, *args)`."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, level: int, msg: str, *args: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            severity = _SEVERITY.get(level, str(level))
            self.logger.debug(f"librdkafka {severity}: {msg}", *args)


def demoted_logger() -> DemotedLogger:
    return DemotedLogger(logging.getLogger(LOGGER_NAME))


def quiet(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with librdkafka's log routed to `ackly.librdkafka` (a `logger` already given wins)."""
    return {"logger": demoted_logger(), **config}
