"""Shared builders for the log tests: configs, batches, appends and whole-log reads."""

from __future__ import annotations

import dataclasses

from ackly.config import BrokerConfig, TopicConfig
from ackly.log.partition_log import AppendResult, PartitionLog
from ackly.protocol.record_codec import Record, encode_batch
from ackly.protocol.records import BatchHeader, iter_batches, validate_batches

DIR = "/data/topic-0"
_DEFAULTS = BrokerConfig.from_properties({}).topic_defaults()


def config(**overrides: object) -> TopicConfig:
    """Topic defaults with attribute overrides, e.g. config(segment_bytes=1000)."""
    return dataclasses.replace(_DEFAULTS, **overrides)  # type: ignore[arg-type]


def batch(
    count: int = 1,
    timestamp_ms: int = 1_000,
    value_bytes: int = 10,
    timestamps: list[int] | None = None,
) -> bytes:
    """One valid v2 batch of `count` records (base offset 0, as a producer sends it)."""
    if timestamps is None:
        timestamps = [timestamp_ms] * count
    records = [
        Record(key=None, value=bytes([i % 256]) * value_bytes, timestamp_ms=ts)
        for i, ts in enumerate(timestamps)
    ]
    return encode_batch(records)


def append(
    log: PartitionLog, *batches: bytes, now_ms: int = 1_000, leader_epoch: int = 0
) -> tuple[AppendResult, bytearray]:
    """Append batches as one produce request; return the result and the patched bytes."""
    records = bytearray(b"".join(batches))
    headers = validate_batches(records, 1 << 30)
    return log.append(records, headers, leader_epoch, now_ms), records


def headers_of(data: bytes | bytearray) -> list[BatchHeader]:
    return [header for _, header in iter_batches(data)]


def read_all(log: PartitionLog, from_offset: int | None = None) -> bytes:
    """Every readable byte from `from_offset` (default: log start) to LEO."""
    start = log.log_start_offset if from_offset is None else from_offset
    result = log.read(start, 1 << 40, log.log_end_offset)
    return b"".join(log.read_bytes(r) for r in result.ranges)
