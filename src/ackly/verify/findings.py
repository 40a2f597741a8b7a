"""What a checker reports: one `Finding` per anomaly name, with a count and the first examples.

An example names the key, the offsets and values involved and the indexes of the history
operations that show the anomaly, so a reader can open history.jsonl at those lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

EXAMPLES_MAX = 5


@dataclass(frozen=True, slots=True)
class Example:
    key: str | None
    offsets: tuple[int | None, ...]
    values: tuple[int, ...]
    ops: tuple[int, ...]
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "offsets": list(self.offsets),
            "values": list(self.values),
            "ops": list(self.ops),
            "note": self.note,
        }


def example(
    key: str | None,
    offsets: Sequence[int | None],
    values: Sequence[int],
    ops: Iterable[int],
    note: str = "",
) -> Example:
    return Example(key, tuple(offsets), tuple(values), tuple(sorted(set(ops))), note)


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    count: int
    examples: tuple[Example, ...] = ()
    note: str = ""
    detail: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "examples": [e.to_json() for e in self.examples],
            "note": self.note,
            "detail": dict(self.detail),
        }


def finding(name: str, examples: list[Example], note: str = "", detail: dict[str, int] | None = None) -> Finding:
    """A finding counting `examples`, keeping the earliest few (by first op index)."""
    ordered = sorted(examples, key=lambda e: (e.ops[0] if e.ops else -1, e.key or ""))
    return Finding(name, len(examples), tuple(ordered[:EXAMPLES_MAX]), note, dict(detail or {}))
