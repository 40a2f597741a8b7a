"""The events an operator's log pipeline acts on are logged once each, with the partition and
its epochs as fields: elections (by the controller), leadership changes (on each replica) and
ISR changes (on the leader); and `--log-format json` writes them as one JSON object a line."""

from __future__ import annotations

import errno
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from ackly.log.disk import SimDisk
from ackly.server.log_format import JsonFormatter

from .core_cluster import CoreCluster, batch
from .test_cluster_core import create
from .test_disk_errors import NOW_MS, TOPIC, produce_request, send, sim_node


def _events(caplog: pytest.LogCaptureFixture, event: str, **fields: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event
            and all(getattr(r, k, None) == v for k, v in fields.items())]


def test_a_failover_logs_one_election_leadership_lines_and_isr_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # No preferred-leader move after the old leader is back: one election to look for.
    c = CoreCluster(tmp_path, [1, 2, 3], props={"auto.leader.rebalance.enable": "false"})
    create(c, 1, "t")
    c.settle()
    old = c.leader("t")
    old_epoch = c.state("t").leader_epoch
    caplog.clear()

    c.kill(old)
    c.until(lambda: c.leader("t") not in (-1, old))
    c.settle()
    state = c.state("t")
    new = state.leader
    elections = _events(caplog, "election", topic="t", partition=0, leader_epoch=state.leader_epoch)
    assert len(elections) == 1
    assert elections[0].leader == new and elections[0].previous_leader == old  # type: ignore[attr-defined]
    assert old_epoch < state.leader_epoch
    leading = _events(caplog, "leader_change", topic="t", leader=new, leader_epoch=state.leader_epoch)
    assert len(leading) == 2  # the new leader, and the one other live replica following it

    caplog.clear()
    c.start(old)
    c.until(lambda: old in c.state("t").isr)
    c.settle()
    grown = _events(caplog, "isr_change", topic="t", partition=0)
    assert len(grown) == 1
    record: Any = grown[0]
    assert old in record.isr and old not in record.isr_before
    assert record.leader_epoch == state.leader_epoch
    assert record.partition_epoch == c.state("t").partition_epoch

    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "isr_change" and line["topic"] == "t" and line["partition"] == 0
    assert line["isr"] == sorted(c.state("t").isr) and line["level"] == "INFO"
    assert "ISR now" in line["message"]


def test_json_lines_carry_the_exception_and_unjsonable_values_as_text() -> None:
    try:
        raise OSError(5, "Input/output error")
    except OSError:
        record = logging.getLogger("ackly.test").makeRecord(
            "ackly.test", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info=sys.exc_info(),
            extra={"members": frozenset({3, 1}), "path": Path("a")})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed x" and line["members"] == [1, 3] and line["path"] == "a"
    assert "Input/output error" in line["exception"]


def test_a_log_directory_failure_is_logged_once_with_the_failed_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = SimDisk(random.Random(1))
    node = sim_node(disk)
    node.create_topic(TOPIC, 1, {}, NOW_MS)
    disk.fail_next("append to", suffix=".log", errno_code=errno.ENOSPC)
    send(node, produce_request(batch(b"x"), -1))
    send(node, produce_request(batch(b"y"), -1))  # refused too, not failed again
    (record,) = _events(caplog, "log_dir_failure")
    fields: Any = record
    assert record.levelno == logging.CRITICAL and fields.errno == errno.ENOSPC
    assert fields.path.endswith("t-0/00000000000000000000.log") and fields.log_dir == "/data"
    node.close()
