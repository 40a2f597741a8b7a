"""Each coordinator shard's load is logged once, with the shard and how much was replayed."""

from __future__ import annotations

import logging

import pytest

from .helpers import Harness, MemoryLog


def test_each_shard_load_is_one_line_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ackly.coordinator")
    Harness(logs=[MemoryLog(i) for i in range(3)])
    loads = [r for r in caplog.records if getattr(r, "event", None) == "coordinator_loaded"]
    assert sorted(r.shard for r in loads) == [0, 1, 2]
    assert all(r.records == 0 and r.log_end_offset == 0 for r in loads)
