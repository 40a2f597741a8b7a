"""Liveness after healing (stuck-consumer, hanging-transaction) and the sink's consume-count."""

from __future__ import annotations

from ackly.verify.checkers import liveness, sink
from ackly.verify.checkers.model import build

from .builders import HistoryBuilder

RC = {"isolation": "read_committed"}


def faulted(h: HistoryBuilder) -> None:
    h.send(0, "q/0", 1, 0)
    h.nemesis("partition", [1])
    h.send(0, "q/0", 2, 1)
    h.nemesis("heal")


def test_final_reads_reaching_the_end_pass() -> None:
    h = HistoryBuilder()
    faulted(h)
    h.assign(1, ["q/0"])
    h.poll(1, {"q/0": [(0, 1), (1, 2)]})
    model = build(h.history())
    assert liveness.stuck_consumer(model).count == 0
    assert liveness.hanging_transaction(model).count == 0


def test_final_reads_stopping_short_are_a_stuck_consumer() -> None:
    h = HistoryBuilder()
    faulted(h)
    h.assign(1, ["q/0"])
    h.poll(1, {"q/0": [(0, 1)]})
    found = liveness.stuck_consumer(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (0, 1)
    # Assigned in the final phase and never read at all is stuck too.
    h2 = HistoryBuilder()
    faulted(h2)
    h2.assign(1, ["q/0"])
    h2.poll(1, {})
    assert liveness.stuck_consumer(build(h2.history())).count == 1


def test_read_committed_blocked_behind_a_transaction_is_a_hanging_transaction() -> None:
    h = HistoryBuilder()
    h.txn(0, [("q/0", 1, 0)])
    h.nemesis("kill", [0])
    h.txn(0, [("q/0", 2, None)], outcome="info")
    h.txn(2, [("q/0", 3, 3)])
    h.nemesis("restart", [0])
    h.poll(1, {"q/0": [(0, 1)]}, extra={**RC, "final": True})
    model = build(h.history())
    assert liveness.hanging_transaction(model).count == 1
    assert liveness.stuck_consumer(model).count == 0


def test_no_final_phase_means_no_liveness_check() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.poll(1, {})
    found = liveness.stuck_consumer(build(h.history()))
    assert found.count == 0 and "no final phase" in found.note


def test_consume_count_each_acknowledged_record_once() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.send(0, "q/0", 2, 1)
    h.send(0, "q/0", 3, outcome="info")
    h.send(0, "q/0", 4, outcome="fail")
    h.sink_read({"q/0": [(0, 1, 1), (1, 2, 1), (2, 3, 1)]})
    assert sink.consume_count(build(h.history())).count == 0


def test_consume_count_catches_twice_missing_and_failed() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.send(0, "q/0", 2, 1)
    h.send(0, "q/0", 3, 2)
    h.send(0, "q/0", 4, outcome="fail")
    h.sink_read({"q/0": [(0, 1, 2), (1, 2, 1), (3, 4, 1)]})
    found = sink.consume_count(build(h.history()))
    assert found.count == 3
    assert found.detail == {"applied-twice": 1, "missing": 1, "failed-applied": 1}


def test_consume_count_without_a_sink_reports_nothing() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    assert sink.consume_count(build(h.history())).count == 0


def test_sends_acknowledged_after_the_last_final_poll_began_are_not_a_stall() -> None:
    h = HistoryBuilder()
    faulted(h)
    h.poll(1, {"q/0": [(0, 1), (1, 2)]})
    h.send(0, "q/0", 3, 2)  # a producer still running while the final reads end
    assert liveness.stuck_consumer(build(h.history())).count == 0


def test_sink_ignores_topics_it_does_not_consume() -> None:
    h = HistoryBuilder()
    h.send(0, "in/0", 1, 0)
    h.send(0, "out/0", 1, 0)
    h.sink_read({"in/0": [(0, 1, 1)]})
    assert sink.consume_count(build(h.history())).count == 0
