"""The history of a verify run: operations, a thread-safe recorder, a reader.

Owns the on-disk format shared by the runner (which records) and the checkers and report (which
read). A history is a list of `Op`s in the order they happened, written as JSON lines
(`history.jsonl`), one object per operation:

    {"index": 0, "time_ms": 12.5, "process": 3, "type": "invoke", "f": "send",
     "value": [["send", "queue/3", 7]], "error": null, "extra": {}}

Invariants the recorder keeps:
- `index` is the position in the history, 0..n-1, with no gaps;
- `time_ms` never decreases along the history (ms since the recorder started, monotonic clock);
- every line is flushed to the file when recorded, so a run that dies keeps what it recorded.

Invariants the runner keeps (and `problems` reports when broken): a client process (an int) has at
most one invocation outstanding, and every invoke is followed by exactly one completion ("ok",
"fail" or "info") of the same process and `f`. After an "info" completion (indeterminate) or a
crash the worker takes a fresh process number (`Recorder.new_process`), as in Jepsen, so nothing
later from that worker can be mistaken for the indeterminate operation's outcome. The process
"nemesis" records fault actions; its invoke/completion pairs follow the same rule.

Micro-operations in `value` for f = "send" | "poll" | "txn":
    ["send", key, v]                 on invoke, and on fail/info
    ["send", key, [offset, v]]       on ok (offset null when the client did not report it)
    ["poll", {key: [[offset, v], ...]}]   on ok (and on a txn's fail/info when it polled first:
                                          the poll's result stands even if the txn aborted)
key is "topic/partition"; v is an int unique per key over the run, increasing in send order per
producer process. assign/subscribe carry {"keys": [...]} or {"topics": [...]}; sink-read carries
{key: [[offset, v, times], ...]}; nemesis operations carry {"targets": [...], ...}.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

OpType = Literal["invoke", "ok", "fail", "info"]
Process = int | str
NEMESIS = "nemesis"
OP_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
COMPLETIONS: frozenset[str] = frozenset({"ok", "fail", "info"})

# Client functions whose value is a list of micro-operations.
MOP_FUNCTIONS: frozenset[str] = frozenset({"send", "poll", "txn"})


@dataclass(frozen=True, slots=True)
class Op:
    """One line of a history: an invocation or a completion."""

    index: int
    time_ms: float
    process: Process
    type: OpType
    f: str
    value: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_client(self) -> bool:
        return isinstance(self.process, int)

    @property
    def is_nemesis(self) -> bool:
        return self.process == NEMESIS

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "time_ms": self.time_ms,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "error": self.error,
            "extra": self.extra,
        }

    def to_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), default=_jsonable)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Op:
        op_type = obj["type"]
        if op_type not in OP_TYPES:
            raise ValueError(f"unknown op type {op_type!r} at index {obj.get('index')}")
        process = obj["process"]
        if not isinstance(process, (int, str)) or isinstance(process, bool):
            raise ValueError(f"bad process {process!r} at index {obj.get('index')}")
        extra = obj.get("extra") or {}
        return cls(
            index=int(obj["index"]),
            time_ms=float(obj["time_ms"]),
            process=process,
            type=cast(OpType, op_type),
            f=str(obj["f"]),
            value=obj.get("value"),
            error=obj.get("error"),
            extra=dict(extra),
        )


def _jsonable(obj: object) -> object:
    # Tuples already serialise as lists; sets and bytes may slip in from client code.
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable in a history")


# Micro-operation builders, so the runner and the tests spell them one way.
def send_mop(key: str, v: int) -> list[Any]:
    """A send as invoked (and as completed on fail/info)."""
    return ["send", key, v]


def sent_mop(key: str, offset: int | None, v: int) -> list[Any]:
    """A send completed ok, with the offset the client reported (None when it did not)."""
    return ["send", key, [offset, v]]


def poll_mop(records: dict[str, list[tuple[int, int]]] | dict[str, list[list[int]]]) -> list[Any]:
    """A poll completed ok: per key, the (offset, v) pairs it returned, in order."""
    return ["poll", {key: [[int(o), int(v)] for o, v in pairs] for key, pairs in records.items()}]


class Recorder:
    """Assigns index and time to operations and appends them, as JSON lines, as they happen.

    Thread-safe: workers and the nemesis record from their own threads; one lock orders the
    index, the time and the write, so the file is in history order. `path=None` keeps the
    history in memory only (tests).
    """

    def __init__(
        self,
        path: Path | str | None = None,
        # The verifier runs real clients in real time (it is not part of the deterministic core).
        clock_s: Callable[[], float] = time.monotonic,  # noqa: TID251
    ) -> None:
        self._lock = threading.Lock()
        self._clock_s = clock_s
        self._start_s = clock_s()
        self._ops: list[Op] = []
        self._next_process = 0
        self._outstanding: dict[Process, Op] = {}
        self._file: IO[str] | None = None
        self._closed = False
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def new_process(self) -> int:
        """A process number never handed out before (for a new or restarted worker)."""
        with self._lock:
            process = self._next_process
            self._next_process += 1
            return process

    def now_ms(self) -> float:
        """The history's clock, for times kept in extra (e.g. a txn's "commit_invoke_ms")."""
        return (self._clock_s() - self._start_s) * 1000.0

    def record(
        self,
        process: Process,
        op_type: OpType,
        f: str,
        value: Any = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Op:
        """Append one operation now; returns it with its index and time."""
        if op_type not in OP_TYPES:
            raise ValueError(f"unknown op type {op_type!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError("recorder is closed")
            now_ms = (self._clock_s() - self._start_s) * 1000.0
            if self._ops and now_ms < self._ops[-1].time_ms:
                now_ms = self._ops[-1].time_ms  # keep time_ms non-decreasing whatever the clock
            line = Op(len(self._ops), now_ms, process, op_type, f, value, error, dict(extra or {})).to_line()
            # Kept as a reader gets it back (tuples become lists, no alias to the caller's objects).
            op = Op.from_json(json.loads(line))
            pending = self._outstanding.get(process)
            if op_type == "invoke" and pending is not None:
                raise RuntimeError(f"process {process!r} already has an operation in flight")
            if op_type != "invoke" and pending is not None and pending.f != f:
                raise RuntimeError(f"process {process!r} completes {f!r} but invoked {pending.f!r}")
            if op_type == "invoke":
                self._outstanding[process] = op
            else:
                self._outstanding.pop(process, None)
            self._ops.append(op)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            return op

    def invoke(self, process: Process, f: str, value: Any = None, extra: dict[str, Any] | None = None) -> Op:
        return self.record(process, "invoke", f, value, None, extra)

    def complete(
        self,
        invocation: Op,
        op_type: OpType,
        value: Any = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Op:
        """The completion of `invocation`: same process and f; value defaults to the invoked one."""
        if op_type not in COMPLETIONS:
            raise ValueError(f"a completion is ok, fail or info, not {op_type!r}")
        if value is None:
            value = invocation.value
        return self.record(invocation.process, op_type, invocation.f, value, error, extra)

    def history(self) -> list[Op]:
        """A copy of everything recorded so far, in order."""
        with self._lock:
            return list(self._ops)

    def outstanding(self) -> list[Op]:
        """Invocations not yet completed (the runner completes them as info at the end)."""
        with self._lock:
            return sorted(self._outstanding.values(), key=lambda op: op.index)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_lines(lines: Iterable[str]) -> Iterator[Op]:
    """Operations from JSON lines; blank lines are skipped, a torn last line is an error."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"history line {number}: {exc}") from exc
        yield Op.from_json(obj)


def read_history(path: Path | str, tolerate_torn_tail: bool = True) -> list[Op]:
    """Read a history.jsonl. A run killed mid-write may leave a torn last line: it is dropped
    when `tolerate_torn_tail`, since a line is only meaningful once complete."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if tolerate_torn_tail and lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines = lines[:-1]
    return list(parse_lines(lines))


def write_history(ops: Iterable[Op], path: Path | str) -> None:
    """Write operations as JSON lines (used for hand-made histories and re-indexed copies)."""
    with Path(path).open("w", encoding="utf-8") as out:
        for op in ops:
            out.write(op.to_line() + "\n")


def history_from_dicts(objs: Iterable[dict[str, Any]]) -> list[Op]:
    """Build a history from plain dicts (tests); missing index/time_ms get the position."""
    ops = []
    for position, obj in enumerate(objs):
        full = {"index": position, "time_ms": float(position), "error": None, "extra": {}, **obj}
        ops.append(Op.from_json(full))
    return ops


def pair_ops(history: Iterable[Op]) -> list[tuple[Op, Op | None]]:
    """Each invocation with its completion (None if the history ended first), in invoke order."""
    pairs: list[tuple[Op, Op | None]] = []
    open_by_process: dict[Process, int] = {}
    for op in history:
        if op.type == "invoke":
            open_by_process[op.process] = len(pairs)
            pairs.append((op, None))
        else:
            slot = open_by_process.pop(op.process, None)
            if slot is not None:
                pairs[slot] = (pairs[slot][0], op)
    return pairs


def completions(history: Iterable[Op]) -> Iterator[tuple[Op | None, Op]]:
    """Each completion with its invocation (None if none was recorded), in completion order."""
    open_by_process: dict[Process, Op] = {}
    for op in history:
        if op.type == "invoke":
            open_by_process[op.process] = op
        else:
            yield open_by_process.pop(op.process, None), op


def problems(history: list[Op]) -> list[str]:
    """Ways `history` breaks the format's invariants (empty when well formed)."""
    found: list[str] = []
    open_by_process: dict[Process, Op] = {}
    last_time_ms = float("-inf")
    for position, op in enumerate(history):
        if op.index != position:
            found.append(f"op at position {position} has index {op.index}")
        if op.time_ms < last_time_ms:
            found.append(f"op {op.index}: time_ms goes backwards")
        last_time_ms = max(last_time_ms, op.time_ms)
        if op.type == "invoke":
            if op.process in open_by_process:
                found.append(f"op {op.index}: process {op.process!r} invokes with one in flight")
            open_by_process[op.process] = op
        else:
            pending = open_by_process.pop(op.process, None)
            if pending is None:
                if op.is_client:
                    found.append(f"op {op.index}: completion without an invocation")
            elif pending.f != op.f:
                found.append(f"op {op.index}: completes {op.f!r} but op {pending.index} invoked {pending.f!r}")
    return found
