"""Transaction and fencing checkers: aborted-read, early-read, torn-transaction, G0, fencing."""

from __future__ import annotations

from ackly.verify.checkers import transactions
from ackly.verify.checkers.model import build

from .builders import HistoryBuilder

RC = {"isolation": "read_committed"}


def test_committed_reads_pass_every_transaction_checker() -> None:
    h = HistoryBuilder()
    h.txn(0, [("a/0", 1, 0), ("b/0", 1, 0)])
    h.txn(0, [("a/0", 2, None)], outcome="fail")
    h.txn(0, [("a/0", 3, 3), ("b/0", 3, 2)])
    h.poll(1, {"a/0": [(0, 1), (3, 3)], "b/0": [(0, 1), (2, 3)]}, extra=RC)
    h.poll(2, {"a/0": [(1, 2)]})  # read_uncommitted may see an aborted write
    model = build(h.history())
    for checker in (
        transactions.aborted_read,
        transactions.early_read,
        transactions.torn_transaction,
        transactions.g0,
        transactions.fencing_violation,
    ):
        assert checker(model).count == 0, checker.__name__


def test_aborted_read_by_read_committed_and_failed_send_by_anyone() -> None:
    h = HistoryBuilder()
    h.txn(0, [("a/0", 2, None)], outcome="fail")
    h.send(3, "a/0", 7, outcome="fail")
    h.send(3, "a/0", 8, outcome="info")  # indeterminate: reading it is fine
    h.poll(1, {"a/0": [(1, 2)]}, extra=RC)
    h.poll(2, {"a/0": [(2, 7), (3, 8)]})
    found = transactions.aborted_read(build(h.history()))
    assert found.count == 2
    assert {ex.values for ex in found.examples} == {(2,), (7,)}


def test_early_read_before_the_commit_was_requested() -> None:
    h = HistoryBuilder()
    h.poll(1, {"a/0": [(0, 1)]}, extra=RC)  # returned before the transaction even began
    h.txn(0, [("a/0", 1, 0)])
    found = transactions.early_read(build(h.history()))
    assert found.count == 1
    # With the commit time recorded, a read during the transaction but before the commit counts too.
    h2 = HistoryBuilder()
    h2._add(0, "invoke", "txn", [["send", "a/0", 1]])
    h2._add(1, "invoke", "poll", [["poll"]], RC)
    h2._add(1, "ok", "poll", [["poll", {"a/0": [[0, 1]]}]], RC)  # at 3 ms
    h2._add(0, "ok", "txn", [["send", "a/0", [0, 1]]], {"commit_invoke_ms": 3.5})
    h2.poll(2, {"a/0": [(0, 1)]}, extra=RC)
    h2.poll(3, {"a/0": [(0, 1)]})
    assert transactions.early_read(build(h2.history())).count == 1
    h3 = HistoryBuilder()
    h3._add(0, "invoke", "txn", [["send", "a/0", 1]])
    h3._add(1, "invoke", "poll", [["poll"]])
    h3._add(1, "ok", "poll", [["poll", {"a/0": [[0, 1]]}]])  # read_uncommitted may read early
    h3._add(0, "ok", "txn", [["send", "a/0", [0, 1]]], {"commit_invoke_ms": 3.5})
    assert transactions.early_read(build(h3.history())).count == 0


def test_torn_transaction_is_part_of_a_committed_transaction_read_past() -> None:
    h = HistoryBuilder()
    h.send(5, "b/0", 100, 0)
    h.txn(0, [("a/0", 1, 0), ("b/0", 1, 1)])
    h.send(5, "b/0", 101, 2)
    h.poll(1, {"a/0": [(0, 1)], "b/0": [(0, 100), (2, 101)]}, extra=RC)
    found = transactions.torn_transaction(build(h.history()))
    assert found.count == 1
    assert found.examples[0].key == "b/0"
    assert found.examples[0].offsets == (1,)
    # A consumer that started on b/0 after the write did not read past it: no tear.
    h2 = HistoryBuilder()
    h2.txn(0, [("a/0", 1, 0), ("b/0", 1, 1)])
    h2.send(5, "b/0", 101, 2)
    h2.poll(1, {"a/0": [(0, 1)], "b/0": [(2, 101)]}, extra=RC)
    assert transactions.torn_transaction(build(h2.history())).count == 0


def test_g0_write_cycle() -> None:
    h = HistoryBuilder()
    h.txn(0, [("a/0", 1, 0), ("b/0", 1, 1)])
    h.txn(1, [("a/0", 2, 1), ("b/0", 2, 0)])
    found = transactions.g0(build(h.history()))
    assert found.count == 1
    assert len(found.examples[0].ops) == 2


def test_fencing_violation_is_an_old_epoch_acknowledged_after_a_new_one() -> None:
    h = HistoryBuilder()
    old = {"transactional_id": "t", "producer_epoch": 1}
    new = {"transactional_id": "t", "producer_epoch": 2}
    h.txn(0, [("a/0", 1, 0)], extra=old)
    h.pair(1, "init", None, None, "ok", extra=new)
    h.txn(0, [("a/0", 2, None)], outcome="fail", extra=old)  # refused: fine
    h.txn(1, [("a/0", 3, 2)], extra=new)
    assert transactions.fencing_violation(build(h.history())).count == 0
    h.txn(0, [("a/0", 4, 3)], extra=old)
    found = transactions.fencing_violation(build(h.history()))
    assert found.count == 1
    assert found.examples[0].values == (4,)


def test_g1c_read_cycle_among_committed_transactions() -> None:
    h = HistoryBuilder()
    h.txn(0, [("a/0", 1, 0)], reads={"b/0": [(0, 2)]}, extra=RC)
    h.txn(1, [("b/0", 2, 0)], reads={"a/0": [(0, 1)]}, extra=RC)
    found = transactions.g1c(build(h.history()))
    assert found.count == 1
    # One direction only is an ordinary dependency.
    h2 = HistoryBuilder()
    h2.txn(0, [("a/0", 1, 0)], extra=RC)
    h2.txn(1, [("b/0", 2, 0)], reads={"a/0": [(0, 1)]}, extra=RC)
    h2.txn(2, [("c/0", 3, 0)], reads={"b/0": [(0, 2)]}, extra=RC)
    assert transactions.g1c(build(h2.history())).count == 0


def test_fencing_violation_when_a_fenced_instance_write_is_read() -> None:
    h = HistoryBuilder()
    h.pair(0, "init", None, None, "ok", extra={"transactional_id": "t", "instance": 0})
    h.pair(1, "init", None, None, "ok", extra={"transactional_id": "t", "instance": 1})
    h.txn(0, [("a/0", 1, None)], outcome="info", extra={"transactional_id": "t", "instance": 0})
    assert transactions.fencing_violation(build(h.history())).count == 0
    h.poll(2, {"a/0": [(0, 1)]})
    found = transactions.fencing_violation(build(h.history()))
    assert found.count == 1 and found.examples[0].values == (1,)
