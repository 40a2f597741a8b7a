"""The exactly-once sink (docs/guarantees.md s.7, last row): each acknowledged record applied once.

The history's last ok "sink-read" op holds the sink's final contents, {key: [[offset, v, times]]}.
A record is (key, offset): the sink stores the position with the effect, so it applies each
record once; one value written twice by the producer sits at two offsets and is a `duplicate`,
not a consume-count error. Kinds counted in `detail`:
- applied-twice: a record applied more than once;
- missing: an acknowledged send, to a topic the sink holds records of, that no record in the
  sink carries;
- failed-applied: a failed send (or an aborted transaction's write) applied.
"""

from __future__ import annotations

from ackly.verify.checkers.model import Model
from ackly.verify.findings import Example, Finding, example, finding


def consume_count(model: Model) -> Finding:
    if model.sink is None or model.sink_index is None:
        return finding("consume-count", [], "no sink-read in the history")
    index = model.sink_index
    applied: set[tuple[str, int]] = set()
    twice: list[Example] = []
    failed: list[Example] = []
    for key, entries in model.sink.items():
        for offset, value, times in entries:
            if times >= 1:
                applied.add((key, value))
            if times > 1:
                twice.append(example(key, [offset], [value], [index], f"applied {times} times"))
            write = model.writes.get((key, value))
            if times >= 1 and write is not None and write.outcome == "fail":
                failed.append(
                    example(key, [offset], [value], [write.invoke_index, index], "a failed write was applied")
                )
    missing: list[Example] = []
    topics = {key.rsplit("/", 1)[0] for key in model.sink}
    for (key, value), write in model.writes.items():
        if key.rsplit("/", 1)[0] not in topics:
            continue  # a topic the sink does not consume (e.g. a transform's output)
        if write.outcome == "ok" and (key, value) not in applied:
            ops = [write.invoke_index, index]
            missing.append(example(key, [write.offset], [value], ops, "acknowledged, never applied"))
    return finding(
        "consume-count",
        twice + missing + failed,
        detail={"applied-twice": len(twice), "missing": len(missing), "failed-applied": len(failed)},
    )
