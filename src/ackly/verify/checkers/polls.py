"""Checkers of one consumer's position: it only moves forward, one record at a time, between
resets (an assign, subscribe, seek or rebalance; see model.Segment). docs/guarantees.md rules 1, 3, 24.

A gap is a skip only when a record the consumer should have returned is known to sit inside it:
control batches (transaction markers) take offsets no poll returns, and a read_committed consumer
never returns an aborted or undecided transaction's records.
"""

from __future__ import annotations

from ackly.verify.checkers.model import READ_COMMITTED, Model, Read, Segment, count_between
from ackly.verify.findings import Example, Finding, example, finding


def nonmonotonic_poll(model: Model) -> Finding:
    found: list[Example] = []
    for segment in model.segments:
        for before, after in zip(segment.reads, segment.reads[1:], strict=False):
            if after.offset <= before.offset:
                found.append(
                    example(
                        segment.key,
                        [before.offset, after.offset],
                        [before.value, after.value],
                        [before.complete_index, after.complete_index],
                        f"process {segment.process}",
                    )
                )
    return finding("nonmonotonic-poll", found)


def _skip(
    model: Model, segment: Segment, existing: list[int], low: int, before: Read | None, read: Read
) -> Example | None:
    """An example when known records sit strictly between offset `low` and `read`."""
    skipped = count_between(existing, low, read.offset)
    if not skipped:
        return None
    values = sorted(v for o in skipped[:3] for v in model.offsets[segment.key][o])
    offsets = [*skipped[:3], read.offset]
    ops = [read.complete_index]
    if before is not None:
        offsets, values, ops = [before.offset, *offsets], [before.value, *values], [before.complete_index, *ops]
    note = f"process {segment.process} skipped {len(skipped)} offset(s) after {low}"
    return example(segment.key, offsets, [*values, read.value], ops, note)


def poll_skip(model: Model) -> Finding:
    found: list[Example] = []
    for segment in model.segments:
        existing = model.existing_offsets(segment.key, segment.isolation == READ_COMMITTED)
        first = segment.reads[0]
        if segment.start_offset is not None:
            # The position set by a seek/assign: the first read must not jump past known records.
            hit = _skip(model, segment, existing, segment.start_offset - 1, None, first)
            if hit is not None:
                found.append(hit)
        for before, after in zip(segment.reads, segment.reads[1:], strict=False):
            if after.offset <= before.offset + 1:
                continue
            hit = _skip(model, segment, existing, before.offset, before, after)
            if hit is not None:
                found.append(hit)
    return finding("poll-skip", found)
