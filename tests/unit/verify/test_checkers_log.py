"""Loss and log-shape checkers on hand-made histories: each passes a clean history and catches
the anomaly it names."""

from __future__ import annotations

from ackly.verify.checkers import log_order, loss
from ackly.verify.checkers.model import build

from .builders import HistoryBuilder


def clean_queue() -> HistoryBuilder:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.send(0, "q/0", 2, 1)
    h.send(1, "q/0", 10, 2)
    h.send(1, "q/1", 11, 0, outcome="info")  # indeterminate: may or may not appear
    h.send(1, "q/1", 12, outcome="fail")
    h.poll(2, {"q/0": [(0, 1), (1, 2), (2, 10)]})
    return h


def test_clean_history_has_no_loss_or_shape_anomaly() -> None:
    model = build(clean_queue().history())
    for checker in (loss.lost_write, loss.unseen, log_order.duplicate, log_order.inconsistent_offsets):
        assert checker(model).count == 0, checker.__name__
    assert log_order.nonmonotonic_send(model).count == 0


def test_lost_write_is_an_acknowledged_send_that_reads_went_past() -> None:
    h = clean_queue()
    sent = h.send(0, "q/0", 3, 3)
    h.send(0, "q/0", 4, 4)
    h.poll(2, {"q/0": [(4, 4)]})
    model = build(h.history())
    lost = loss.lost_write(model)
    assert lost.count == 1
    ex = lost.examples[0]
    assert (ex.key, ex.values, ex.offsets) == ("q/0", (3,), (3, 4))
    assert sent[1] in ex.ops
    assert loss.unseen(model).count == 0


def test_unseen_is_an_acknowledged_send_past_every_read() -> None:
    h = clean_queue()
    h.send(0, "q/0", 3, 3)
    h.send(0, "q/0", 5, None)  # offset unknown (acks=0): can only be unseen, never placed
    model = build(h.history())
    found = loss.unseen(model)
    assert found.count == 2
    assert {ex.values for ex in found.examples} == {(3,), (5,)}
    assert loss.lost_write(model).count == 0


def test_duplicate_is_one_value_at_two_offsets() -> None:
    h = clean_queue()
    h.poll(3, {"q/0": [(0, 1), (1, 2), (2, 10), (3, 2)]})
    found = log_order.duplicate(build(h.history()))
    assert found.count == 1
    assert (found.examples[0].values, found.examples[0].offsets) == ((2,), (1, 3))


def test_inconsistent_offsets_is_one_offset_with_two_values() -> None:
    h = clean_queue()
    h.poll(3, {"q/0": [(0, 1), (1, 99)]})
    found = log_order.inconsistent_offsets(build(h.history()))
    assert found.count == 1
    assert (found.examples[0].offsets, found.examples[0].values) == ((1,), (2, 99))


def test_nonmonotonic_send_is_a_later_send_at_a_lower_offset() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 5)
    h.send(0, "q/0", 2, 4)
    h.send(1, "q/0", 3, 6)
    found = log_order.nonmonotonic_send(build(h.history()))
    assert found.count == 1
    assert found.examples[0].values == (1, 2)


def test_nonmonotonic_send_uses_read_offsets_when_acks_did_not_report_one() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1)
    h.send(0, "q/0", 2)
    h.poll(1, {"q/0": [(0, 2), (1, 1)]})
    assert log_order.nonmonotonic_send(build(h.history())).count == 1


def test_int_send_skip_within_one_op_only() -> None:
    h = HistoryBuilder()
    h.txn(0, [("q/0", 1, 0), ("q/0", 2, 1)])
    assert log_order.int_send_skip(build(h.history())).count == 0
    h.txn(0, [("q/0", 3, 3), ("q/0", 4, 5)])
    found = log_order.int_send_skip(build(h.history()))
    assert found.count == 1
    assert found.examples[0].offsets == (3, 5)


def test_a_read_inside_an_aborted_transaction_still_counts_as_read() -> None:
    h = clean_queue()
    h.send(0, "q/0", 3, 3)
    h.send(0, "q/0", 4, 4)
    # The transaction aborted after polling: its completion still carries what the poll returned.
    h.pair(
        2,
        "txn",
        [["poll"], ["send", "out/0", 1]],
        [["poll", {"q/0": [[3, 3]]}], ["send", "out/0", 1]],
        "fail",
        keep_completed=True,
    )
    h.poll(2, {"q/0": [(4, 4)]}, extra={"reset": True})
    model = build(h.history())
    assert loss.lost_write(model).count == 0
    assert model.writes[("out/0", 1)].outcome == "fail"


def test_unseen_holds_acknowledged_sends_to_the_marked_final_reads() -> None:
    final = {"final": True}
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)
    h.send(0, "q/0", 2, 1)
    h.poll(1, {"q/0": [(0, 1), (1, 2)]})
    h.assign(2, ["q/0"], extra=final)
    h.poll(2, {"q/0": [(0, 1), (1, 2)]}, extra=final)
    h.send(0, "q/0", 3, 2)  # acknowledged after the final reads began: only "never read" applies
    h.poll(1, {"q/0": [(2, 3)]})
    assert loss.unseen(build(h.history())).count == 0
    # Offset 1 was read once, then the log lost it (truncated): the final reads show it.
    h2 = HistoryBuilder()
    h2.send(0, "q/0", 1, 0)
    h2.send(0, "q/0", 2, 1)
    h2.poll(1, {"q/0": [(0, 1), (1, 2)]})
    h2.assign(2, ["q/0"], extra=final)
    h2.poll(2, {"q/0": [(0, 1)]}, extra=final)
    found = loss.unseen(build(h2.history()))
    assert found.count == 1
    assert found.examples[0].values == (2,) and "earlier poll" in found.examples[0].note
    assert loss.lost_write(build(h2.history())).count == 0
