"""Checkers of the log's shape: one offset holds one value, one value sits at one offset, and one
producer's sends land in send order (docs/guarantees.md rules 1, 15, 17)."""

from __future__ import annotations

import itertools
from collections import defaultdict

from ackly.verify.checkers.model import Model, Write
from ackly.verify.findings import Example, Finding, example, finding
from ackly.verify.history import Process


def inconsistent_offsets(model: Model) -> Finding:
    """One offset of a key holding two different values (acknowledged or read there)."""
    found: list[Example] = []
    for key, by_offset in model.offsets.items():
        for offset, seen in by_offset.items():
            if len(seen) > 1:
                values = sorted(seen)
                ops = {i for v in values for i in seen[v]}
                found.append(example(key, [offset], values, ops))
    return finding("inconsistent-offsets", found)


def duplicate(model: Model) -> Finding:
    """One value at two offsets of its key: the record was written twice."""
    at: dict[tuple[str, int], dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for key, by_offset in model.offsets.items():
        for offset, seen in by_offset.items():
            for value, ops in seen.items():
                at[(key, value)][offset].update(ops)
    found = [
        example(key, sorted(offsets), [value], {i for ops in offsets.values() for i in ops})
        for (key, value), offsets in at.items()
        if len(offsets) > 1
    ]
    return finding("duplicate", found)


def _ok_sends_by_producer(model: Model) -> dict[tuple[Process, str], list[Write]]:
    out: dict[tuple[Process, str], list[Write]] = defaultdict(list)
    for write in model.writes.values():
        if write.outcome == "ok":
            out[(write.process, write.key)].append(write)
    for writes in out.values():
        writes.sort(key=lambda w: (w.invoke_index, w.position))
    return out


def nonmonotonic_send(model: Model) -> Finding:
    """A producer's acknowledged sends to one key got offsets out of send order.

    A process has one operation in flight, so history order is send order; where the client
    reported no offset the offset the record was read at stands in."""
    found: list[Example] = []
    for (_, key), writes in _ok_sends_by_producer(model).items():
        placed = [(w, model.known_offset(key, w.value)) for w in writes]
        previous: tuple[Write, int] | None = None
        for write, offset in placed:
            if offset is None:
                continue
            if previous is not None and offset <= previous[1]:
                before = previous[0]
                found.append(
                    example(
                        key,
                        [previous[1], offset],
                        [before.value, write.value],
                        [before.invoke_index, write.invoke_index],
                        "a later send got an offset at or below an earlier one",
                    )
                )
            previous = (write, offset)
    return finding("nonmonotonic-send", found)


def int_send_skip(model: Model) -> Finding:
    """Two sends to one key within one operation did not land at consecutive offsets.

    Kafka allows it (other producers interleave; transactions do not isolate writes), so this
    is reported, never failed."""
    found: list[Example] = []
    by_op: dict[tuple[int, str], list[Write]] = defaultdict(list)
    for write in model.writes.values():
        if write.outcome == "ok" and write.offset is not None:
            by_op[(write.invoke_index, write.key)].append(write)
    for (index, key), writes in by_op.items():
        writes.sort(key=lambda w: w.position)
        for before, after in itertools.pairwise(writes):
            assert before.offset is not None and after.offset is not None
            if after.offset != before.offset + 1:
                found.append(example(key, [before.offset, after.offset], [before.value, after.value], [index]))
    return finding("int-send-skip", found)
