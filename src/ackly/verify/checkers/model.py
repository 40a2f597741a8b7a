"""The facts every checker reads, extracted once from a history: writes, reads, read segments.

Owns the interpretation of micro-operations (history.py's format) and nothing else; checkers
compare these facts and never parse ops themselves.

- A `Write` is one ["send", key, v] of a send or txn operation, with the outcome of the operation
  that carried it: "ok" (acknowledged; committed for a txn), "fail" (definitely did not happen;
  aborted for a txn), "info" (indeterminate, or the history ended before its completion).
  (key, v) identifies a write: v is unique per key over the run.
- A `Read` is one [offset, v] a poll returned, from any completion that carries a poll's result
  (an ok poll or txn, or a txn that aborted after polling: the read happened), with the isolation level
  of the reader: the op's extra "isolation" (or "isolation.level"), else the last one its process
  declared, else read_uncommitted.
- The final phase (liveness) is every client op whose extra has "final": true, and every op after
  the last nemesis op.
- A `Segment` is a run of one consumer process's reads of one key with no reset in between:
  an assign, subscribe or seek op of that process, a change of the poll's extra "generation" or
  "assignment", or a poll whose extra "reset" is true (or whose extra "seek" names the key).
  A seek {key: offset} in a poll's extra, or "offsets": {key: offset} in an assign or seek op's
  value, gives the segment its start position, so a skip right at the start is seen too.
  Within a segment a consumer's position only moves forward (that is what nonmonotonic-poll and
  poll-skip check).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ackly.verify.history import MOP_FUNCTIONS, Op, Process

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
RESET_FUNCTIONS = frozenset({"assign", "subscribe", "seek"})
Kv = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: int
    offset: int | None  # as acknowledged; None unless outcome is ok and the client reported it
    outcome: str  # ok | fail | info
    process: Process
    txn: bool
    invoke_index: int
    complete_index: int | None
    invoke_ms: float
    complete_ms: float | None
    commit_ms: float  # earliest time the write could become visible to read_committed readers
    position: int  # order of this send within its op
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Read:
    key: str
    offset: int
    value: int
    process: Process
    isolation: str
    invoke_index: int | None
    complete_index: int
    invoke_ms: float | None
    complete_ms: float
    txn: bool
    final: bool  # part of the final (after healing) reads


@dataclass(slots=True)
class Segment:
    process: Process
    key: str
    isolation: str
    start_offset: int | None = None  # the position a seek or assign set, when the history says
    reads: list[Read] = field(default_factory=list)
    max_offset: int = -1

    def add(self, read: Read) -> None:
        self.reads.append(read)
        self.max_offset = max(self.max_offset, read.offset)

    @property
    def first_offset(self) -> int:
        return self.reads[0].offset

    def values(self) -> set[int]:
        return {r.value for r in self.reads}


def _isolation_of(extra: dict[str, Any]) -> str | None:
    level = extra.get("isolation", extra.get("isolation.level", extra.get("isolation_level")))
    return str(level) if level is not None else None


def _mops(value: Any) -> list[list[Any]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [list(m) for m in value if isinstance(m, (list, tuple)) and m and m[0] in ("send", "poll")]


@dataclass
class Model:
    """Everything the checkers need, built by `build(history)`."""

    history: list[Op]
    writes: dict[Kv, Write] = field(default_factory=dict)
    reads: list[Read] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    reads_by_kv: dict[Kv, list[Read]] = field(default_factory=lambda: defaultdict(list))
    # key -> offset -> {value: op indexes showing that value there (acks and reads)}
    offsets: dict[str, dict[int, dict[int, set[int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    )
    txn_ops: list[tuple[Op, Op | None]] = field(default_factory=list)
    after_nemesis_index: int | None = None  # first op after the last nemesis op
    final_start_index: int | None = None  # first op of the final phase, when one is known
    final_poll_index: int | None = None  # invocation of the last ok final poll (or txn that polled)
    final_keys: set[str] = field(default_factory=set)
    final_topics: set[str] = field(default_factory=set)
    # The final reads the runner marked (extra "final"): what they returned per key, the keys
    # they covered and the invocation of the last one. Fresh readers from the log start, they
    # must return every acknowledged record (the `unseen` rule).
    marked_final_values: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    marked_final_keys: set[str] = field(default_factory=set)
    marked_final_poll_index: int | None = None
    sink: dict[str, list[tuple[int, int, int]]] | None = None
    sink_index: int | None = None

    read_max: dict[str, int] = field(default_factory=dict)  # key -> highest offset any poll read
    _existing: dict[tuple[str, bool], list[int]] = field(default_factory=dict)

    def known_offset(self, key: str, value: int) -> int | None:
        """Where (key, value) sits: the acknowledged offset, else the first offset it was read at."""
        write = self.writes.get((key, value))
        if write is not None and write.offset is not None:
            return write.offset
        reads = self.reads_by_kv.get((key, value))
        return min(r.offset for r in reads) if reads else None

    def was_read(self, key: str, value: int) -> bool:
        return bool(self.reads_by_kv.get((key, value)))

    def committed_value(self, key: str, value: int) -> bool:
        """Whether a read_committed reader may see (key, value)."""
        write = self.writes.get((key, value))
        if write is not None:
            if write.outcome == "fail":
                return False
            if write.outcome == "ok" or not write.txn:
                return True
        return any(r.isolation == READ_COMMITTED for r in self.reads_by_kv.get((key, value), ()))

    def existing_offsets(self, key: str, committed_only: bool) -> list[int]:
        """Sorted offsets of `key` known to hold a record (a committed one if asked)."""
        cached = self._existing.get((key, committed_only))
        if cached is not None:
            return cached
        out = []
        for offset, seen in self.offsets.get(key, {}).items():
            for value in seen:
                write = self.writes.get((key, value))
                if write is not None and write.outcome == "fail" and not self.was_read(key, value):
                    continue
                if committed_only and not self.committed_value(key, value):
                    continue
                out.append(offset)
                break
        out.sort()
        self._existing[(key, committed_only)] = out
        return out


def count_between(sorted_offsets: list[int], low: int, high: int) -> list[int]:
    """The offsets strictly between low and high."""
    return sorted_offsets[bisect.bisect_right(sorted_offsets, low) : bisect.bisect_left(sorted_offsets, high)]


def build(history: list[Op]) -> Model:
    model = Model(history)
    last_nemesis = max((op.index for op in history if op.is_nemesis), default=None)
    model.after_nemesis_index = None if last_nemesis is None else last_nemesis + 1
    starts = [op.index for op in history if op.is_client and op.extra.get("final")]
    if model.after_nemesis_index is not None:
        starts.append(model.after_nemesis_index)
    model.final_start_index = min(starts, default=None)

    isolation_by_process: dict[Process, str] = {}
    invoked: dict[Process, Op] = {}
    pending_writes: list[tuple[Op, Op | None]] = []
    # Per consumer process: key -> open segment; generation/assignment last seen.
    open_segments: dict[Process, dict[str, Segment]] = defaultdict(dict)
    last_group_state: dict[Process, tuple[Any, Any]] = {}

    start_offsets: dict[Process, dict[str, int]] = defaultdict(dict)

    def close(process: Process, keys: list[str] | None, starts: Any = None) -> None:
        segments = open_segments[process]
        for key in list(segments) if keys is None else keys:
            segments.pop(key, None)
        if keys is None:
            start_offsets[process].clear()
        if isinstance(starts, dict):
            for key, offset in starts.items():
                if isinstance(offset, int) and not isinstance(offset, bool):
                    start_offsets[process][str(key)] = offset

    for op in history:
        declared = _isolation_of(op.extra)
        if declared is not None and op.is_client:
            isolation_by_process[op.process] = declared
        if not op.is_client:
            continue
        if op.type == "invoke":
            invoked[op.process] = op
            continue
        invocation = invoked.pop(op.process, None)
        if op.f in RESET_FUNCTIONS:
            value = op.value if isinstance(op.value, dict) else {}
            keys = value.get("keys") if op.f == "seek" else None
            close(op.process, list(keys) if keys else None, value.get("offsets"))
            if _is_final(model, op) and op.type == "ok" and isinstance(op.value, dict):
                model.final_keys.update(str(k) for k in op.value.get("keys", []) or [])
                model.final_topics.update(str(t) for t in op.value.get("topics", []) or [])
                if _marked_final(invocation, op):
                    model.marked_final_keys.update(str(k) for k in op.value.get("keys", []) or [])
            continue
        if op.f == "sink-read" and op.type == "ok" and isinstance(op.value, dict):
            model.sink = {
                str(k): [(int(e[0]), int(e[1]), int(e[2])) for e in entries] for k, entries in op.value.items()
            }
            model.sink_index = op.index
            continue
        if op.f not in MOP_FUNCTIONS:
            continue
        if op.f in ("send", "txn"):
            pending_writes.append((invocation, op) if invocation else (op, op))
        if op.f == "txn":
            model.txn_ops.append((invocation or op, op))
        polls = [m for m in _mops(op.value) if m[0] == "poll" and len(m) > 1 and isinstance(m[1], dict)]
        if not polls:
            continue
        final = _is_final(model, op) or (invocation is not None and _is_final(model, invocation))
        at = invocation.index if invocation is not None else op.index
        if final and op.type == "ok":
            model.final_poll_index = max(at, model.final_poll_index if model.final_poll_index is not None else -1)
        marked = _marked_final(invocation, op)
        if marked:
            last = model.marked_final_poll_index
            model.marked_final_poll_index = at if last is None else max(at, last)
        # Reads, in the order the poll returned them. The completion's extra wins over the
        # invocation's (a rebalance can happen during the poll).
        extra = {**(invocation.extra if invocation is not None else {}), **op.extra}
        group_state = (extra.get("generation"), _freeze(extra.get("assignment")))
        previous = last_group_state.get(op.process)
        if extra.get("reset") or (previous is not None and previous != group_state):
            close(op.process, None)
        last_group_state[op.process] = group_state
        seek = extra.get("seek")
        if isinstance(seek, dict):
            close(op.process, [str(k) for k in seek], seek)
        isolation = _isolation_of(extra) or isolation_by_process.get(op.process, READ_UNCOMMITTED)
        for mop in polls:
            for key, pairs in mop[1].items():
                for pair in pairs:
                    read = Read(
                        key=str(key),
                        offset=int(pair[0]),
                        value=int(pair[1]),
                        process=op.process,
                        isolation=isolation,
                        invoke_index=invocation.index if invocation else None,
                        complete_index=op.index,
                        invoke_ms=invocation.time_ms if invocation else None,
                        complete_ms=op.time_ms,
                        txn=op.f == "txn",
                        final=final,
                    )
                    model.reads.append(read)
                    if marked:
                        model.marked_final_keys.add(read.key)
                        model.marked_final_values[read.key].add(read.value)
                    model.reads_by_kv[(read.key, read.value)].append(read)
                    model.read_max[read.key] = max(read.offset, model.read_max.get(read.key, -1))
                    model.offsets[read.key][read.offset][read.value].add(op.index)
                    segment = open_segments[op.process].get(read.key)
                    if segment is None:
                        start = start_offsets[op.process].pop(read.key, None)
                        segment = Segment(op.process, read.key, isolation, start)
                        open_segments[op.process][read.key] = segment
                        model.segments.append(segment)
                    segment.add(read)

    # Invocations the history never completed are indeterminate.
    for invocation in invoked.values():
        if invocation.f in ("send", "txn"):
            pending_writes.append((invocation, None))
            if invocation.f == "txn":
                model.txn_ops.append((invocation, None))
    for invocation, completion in pending_writes:
        _add_writes(model, invocation, completion)
    return model


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _marked_final(invocation: Op | None, completion: Op) -> bool:
    return bool(completion.extra.get("final") or (invocation is not None and invocation.extra.get("final")))


def _is_final(model: Model, op: Op) -> bool:
    """Marked final, or after the last nemesis op (everything has healed by then)."""
    if op.extra.get("final"):
        return True
    return model.after_nemesis_index is not None and op.index >= model.after_nemesis_index


def _add_writes(model: Model, invocation: Op, completion: Op | None) -> None:
    outcome = completion.type if completion is not None else "info"
    acked: list[list[Any]] = []
    if completion is not None and completion.type == "ok":
        acked = [m for m in _mops(completion.value) if m[0] == "send"]
    sends = acked or [m for m in _mops(invocation.value) if m[0] == "send"]
    extra = {**invocation.extra, **(completion.extra if completion is not None else {})}
    commit_ms = extra.get("commit_invoke_ms")
    for position, mop in enumerate(sends):
        key, body = str(mop[1]), mop[2]
        if isinstance(body, (list, tuple)):
            offset, value = (None if body[0] is None else int(body[0])), int(body[1])
        else:
            offset, value = None, int(body)
        write = Write(
            key=key,
            value=value,
            offset=offset if outcome == "ok" else None,
            outcome=outcome,
            process=invocation.process,
            txn=invocation.f == "txn",
            invoke_index=invocation.index,
            complete_index=completion.index if completion is not None else None,
            invoke_ms=invocation.time_ms,
            complete_ms=completion.time_ms if completion is not None else None,
            commit_ms=float(commit_ms) if commit_ms is not None else invocation.time_ms,
            position=position,
            extra=extra,
        )
        model.writes[(key, value)] = write
        if write.offset is not None and completion is not None:
            model.offsets[key][write.offset][value].add(completion.index)
