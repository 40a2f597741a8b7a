"""librdkafka's log lines, routed into Python logging and kept off the terminal.

A confluent-kafka client prints librdkafka's log to stderr (`%3|...|FAIL|rdkafka#producer-1|
... Connection refused`) unless its `logger` setting names an object with a `log` method.
The clients that `ackly verify` and the admin CLI start are given `demoted_logger()`: every
line goes to the `ackly.librdkafka` logger at DEBUG, with librdkafka's own level kept in the
text, so it is shown with `--log-level DEBUG` (or written by a handler attached to that
logger, as `ackly verify` writes `librdkafka.log` in its report directory) and never in
between a command's output or its progress lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
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


@contextlib.contextmanager
def written_to(path: str) -> Iterator[None]:
    """While the block runs, librdkafka's lines are appended to `path` (and still shown on
    stderr only when the root logger is at DEBUG)."""
    logger = logging.getLogger(LOGGER_NAME)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = logging.getLogger().isEnabledFor(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
