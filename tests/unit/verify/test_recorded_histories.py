"""Histories recorded by real `ackly verify` runs (3 brokers, kill faults): they pass their
semantics, and a fault planted into them is caught under its name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ackly.verify.check import check, run_checkers
from ackly.verify.history import Op, problems, read_history

DATA = Path(__file__).parent / "data"


def load(name: str) -> list[Op]:
    history = read_history(DATA / name)
    assert problems(history) == []
    return history


def without_value(history: list[Op], key: str, value: int) -> list[Op]:
    """Every poll result with (key, value) removed: as if the broker had lost that record."""
    out = []
    for op in history:
        if isinstance(op.value, list):
            mops = []
            for mop in op.value:
                if isinstance(mop, list) and mop and mop[0] == "poll" and len(mop) > 1 and isinstance(mop[1], dict):
                    kept = {k: [p for p in pairs if not (k == key and p[1] == value)] for k, pairs in mop[1].items()}
                    mop = ["poll", kept]
                mops.append(mop)
            op = dataclasses.replace(op, value=mops)
        out.append(op)
    return out


def test_recorded_at_least_once_run_passes_with_duplicates_allowed() -> None:
    history = load("at_least_once_kill.jsonl")
    config = {"acks": "all", "enable.idempotence": "false", "retries": "2147483647", "min.insync.replicas": "2"}
    result = check(history, "at-least-once", config)
    assert result.ok
    assert result.findings["duplicate"].count > 0  # retries without idempotence, across the kills
    assert not check(history, "exactly-once").ok


def test_recorded_exactly_once_run_passes() -> None:
    result = check(load("exactly_once.jsonl"), "exactly-once", {"acks": "all", "enable.idempotence": "true"})
    assert result.ok, result.violations()
    assert result.findings["aborted-read"].count == 0


def test_a_record_lost_from_a_recorded_run_is_caught() -> None:
    history = load("exactly_once.jsonl")
    # The first committed transaction's first write, read by the final reads and by the workers.
    write = next(op for op in history if op.f == "txn" and op.type == "ok")
    _, key, (_, value) = write.value[0]
    counts = {name: f.count for name, f in run_checkers(without_value(history, key, value)).items()}
    assert counts["lost-write"] + counts["unseen"] == 1
    assert not check(without_value(history, key, value), "exactly-once").ok


def test_an_aborted_write_read_in_a_recorded_run_is_caught() -> None:
    history = load("exactly_once.jsonl")
    aborted = next(op for op in history if op.f == "txn" and op.type == "fail")
    _, key, value = next(m for m in aborted.value if m[0] == "send")
    last = history[-1]
    committed = {"isolation": "read_committed"}
    planted = [
        *history,
        Op(last.index + 1, last.time_ms + 1, 999, "invoke", "poll", [["poll", {}]], None, committed),
        Op(last.index + 2, last.time_ms + 2, 999, "ok", "poll", [["poll", {key: [[10_000, value]]}]], None, {}),
    ]
    counts = {name: f.count for name, f in run_checkers(planted).items()}
    assert counts["aborted-read"] == 1
