"""nonmonotonic-poll and poll-skip: a consumer's position between resets."""

from __future__ import annotations

from ackly.verify.checkers import polls
from ackly.verify.checkers.model import build

from .builders import HistoryBuilder

RC = {"isolation": "read_committed"}


def produced(h: HistoryBuilder, n: int) -> None:
    for i in range(n):
        h.send(0, "q/0", i, i)


def test_forward_polls_and_gaps_without_known_records_pass() -> None:
    h = HistoryBuilder()
    produced(h, 3)
    h.assign(1, ["q/0"])
    h.poll(1, {"q/0": [(0, 0), (1, 1)]})
    h.poll(1, {"q/0": [(2, 2), (4, 100)]})  # offset 3: a transaction marker nobody saw a value at
    model = build(h.history())
    assert polls.nonmonotonic_poll(model).count == 0
    assert polls.poll_skip(model).count == 0


def test_going_back_is_nonmonotonic_unless_reset() -> None:
    h = HistoryBuilder()
    produced(h, 3)
    h.poll(1, {"q/0": [(0, 0), (1, 1), (2, 2)]})
    h.assign(1, ["q/0"])  # a reassignment may rewind
    h.poll(1, {"q/0": [(1, 1)]})
    h.poll(1, {"q/0": [(2, 2)]}, extra={"generation": 2})  # a rebalance may rewind too
    h.poll(1, {"q/0": [(0, 0)]}, extra={"generation": 3})
    assert polls.nonmonotonic_poll(build(h.history())).count == 0
    back = h.poll(1, {"q/0": [(0, 0)]}, extra={"generation": 3})
    found = polls.nonmonotonic_poll(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (0, 0)
    assert back in found.examples[0].ops


def test_skipping_a_known_record_is_poll_skip() -> None:
    h = HistoryBuilder()
    produced(h, 4)
    h.poll(1, {"q/0": [(0, 0)]})
    h.poll(1, {"q/0": [(3, 3)]})
    found = polls.poll_skip(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (0, 1, 2, 3)
    assert found.examples[0].values == (0, 1, 2, 3)


def test_read_committed_may_skip_aborted_records_but_not_committed_ones() -> None:
    h = HistoryBuilder()
    h.txn(0, [("q/0", 1, 0)])
    h.txn(0, [("q/0", 2, None)], outcome="fail")
    h.poll(5, {"q/0": [(0, 1), (2, 2), (4, 3)]})  # a read_uncommitted reader saw the aborted record at 2
    h.txn(0, [("q/0", 3, 4)])
    h.poll(1, {"q/0": [(0, 1)]}, extra=RC)
    h.poll(1, {"q/0": [(4, 3)]}, extra=RC)
    model = build(h.history())
    assert polls.poll_skip(model).count == 0
    h.poll(6, {"q/0": [(0, 1), (4, 3)]})  # read_uncommitted: skipped the aborted record at 2
    found = polls.poll_skip(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (0, 2, 4)


def test_a_known_start_position_catches_a_skip_at_the_start() -> None:
    h = HistoryBuilder()
    produced(h, 3)
    h.pair(1, "assign", {"keys": ["q/0"], "offsets": {"q/0": 0}}, {"keys": ["q/0"], "offsets": {"q/0": 0}})
    h.poll(1, {"q/0": [(2, 2)]})
    found = polls.poll_skip(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (0, 1, 2)
    # The same seek carried by the poll itself, starting where the read begins: no skip.
    h.poll(1, {"q/0": [(1, 1), (2, 2)]}, extra={"seek": {"q/0": 1}})
    assert polls.poll_skip(build(h.history())).count == 1
