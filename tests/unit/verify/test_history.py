"""The history format: recorder, reader, pairing and well-formedness."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ackly.verify.history import (
    NEMESIS,
    Op,
    Recorder,
    history_from_dicts,
    pair_ops,
    problems,
    read_history,
    send_mop,
    sent_mop,
    write_history,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_recorder_assigns_index_and_time_and_writes_lines(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "run" / "history.jsonl"
    with Recorder(path, clock_s=clock) as rec:
        p = rec.new_process()
        inv = rec.invoke(p, "send", [send_mop("queue/0", 1)])
        clock.now_s += 0.0125
        done = rec.complete(inv, "ok", [sent_mop("queue/0", 0, 1)])
        # Lines are on disk before close: a run that dies keeps them.
        assert len(path.read_text().splitlines()) == 2
    assert (inv.index, inv.time_ms) == (0, 0.0)
    assert done.index == 1 and done.time_ms == pytest.approx(12.5)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "index": 0,
        "time_ms": 0.0,
        "process": 0,
        "type": "invoke",
        "f": "send",
        "value": [["send", "queue/0", 1]],
        "error": None,
        "extra": {},
    }
    assert read_history(path) == [inv, done]
    assert problems(read_history(path)) == []


def test_recorder_refuses_a_second_invocation_in_flight_and_a_wrong_completion() -> None:
    rec = Recorder()
    inv = rec.invoke(0, "poll")
    with pytest.raises(RuntimeError):
        rec.invoke(0, "send")
    with pytest.raises(RuntimeError):
        rec.record(0, "ok", "send")
    rec.complete(inv, "info", error="RequestTimedOut")
    assert rec.outstanding() == []
    rec.close()
    with pytest.raises(RuntimeError):
        rec.invoke(1, "poll")


def test_recorder_is_ordered_under_threads(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    rec = Recorder(path)
    threads_n, ops_n = 4, 200

    def work() -> None:
        p = rec.new_process()
        for i in range(ops_n):
            inv = rec.invoke(p, "send", [send_mop(f"t/{p}", i)])
            rec.complete(inv, "ok", [sent_mop(f"t/{p}", i, i)])

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    rec.close()
    history = read_history(path)
    assert len(history) == threads_n * ops_n * 2
    assert problems(history) == []
    assert history == rec.history()


def test_reader_drops_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    ops = history_from_dicts([{"process": NEMESIS, "type": "invoke", "f": "kill", "value": {}}])
    write_history(ops, path)
    with path.open("a") as out:
        out.write('{"index": 1, "time')
    assert read_history(path) == ops
    with pytest.raises(ValueError):
        read_history(path, tolerate_torn_tail=False)


def test_problems_and_pairs() -> None:
    h = history_from_dicts(
        [
            {"process": 0, "type": "invoke", "f": "send"},
            {"process": 1, "type": "invoke", "f": "poll"},
            {"process": 0, "type": "ok", "f": "send"},
            {"process": 2, "type": "ok", "f": "poll"},
            {"process": 1, "type": "ok", "f": "send"},
        ]
    )
    found = problems(h)
    assert any("without an invocation" in p for p in found)
    assert any("completes 'send'" in p for p in found)
    pairs = pair_ops(h)
    assert [(i.index, c.index if c else None) for i, c in pairs] == [(0, 2), (1, 4)]


def test_op_round_trips_through_json() -> None:
    op = Op(3, 1.5, "nemesis", "ok", "partition", {"targets": [1, 2]}, None, {"why": "x"})
    assert Op.from_json(json.loads(op.to_line())) == op
    with pytest.raises(ValueError):
        Op.from_json({**op.to_json(), "type": "done"})


def test_recorded_ops_are_what_a_reader_gets_back(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with Recorder(path) as rec:
        value = [("send", "q/0", (3, 7))]
        inv = rec.invoke(0, "send", value)
        value.append(("send", "q/0", (4, 8)))  # the caller's object changing later changes nothing
        with pytest.raises(TypeError):
            rec.invoke(1, "send", [object()])
        rec.complete(inv, "ok")
    assert inv.value == [["send", "q/0", [3, 7]]]
    assert read_history(path) == rec.history()
