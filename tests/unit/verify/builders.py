"""Hand-made histories for the checker tests: invoke/complete pairs in one line each."""

from __future__ import annotations

from typing import Any

from ackly.verify.history import NEMESIS, Op, OpType, Process


class HistoryBuilder:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.time_ms = 0.0

    def _add(
        self, process: Process, op_type: OpType, f: str, value: Any, extra: dict[str, Any] | None = None
    ) -> Op:
        self.time_ms += 1.0
        op = Op(len(self.ops), self.time_ms, process, op_type, f, value, None, dict(extra or {}))
        self.ops.append(op)
        return op

    def pair(
        self,
        process: Process,
        f: str,
        invoked: Any,
        completed: Any,
        outcome: OpType = "ok",
        extra: dict[str, Any] | None = None,
        keep_completed: bool = False,
    ) -> tuple[int, int]:
        """An invocation and its completion; a fail/info completion repeats the invoked value
        unless `keep_completed` (a txn that aborted after polling still reports the poll)."""
        inv = self._add(process, "invoke", f, invoked, extra)
        done = self._add(process, outcome, f, completed if outcome == "ok" or keep_completed else invoked, extra)
        return inv.index, done.index

    def send(
        self,
        process: int,
        key: str,
        v: int,
        offset: int | None = None,
        outcome: OpType = "ok",
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        return self.pair(process, "send", [["send", key, v]], [["send", key, [offset, v]]], outcome, extra)

    def poll(self, process: int, reads: dict[str, list[tuple[int, int]]], extra: dict[str, Any] | None = None) -> int:
        body = {k: [[o, v] for o, v in pairs] for k, pairs in reads.items()}
        return self.pair(process, "poll", [["poll"]], [["poll", body]], "ok", extra)[1]

    def txn(
        self,
        process: int,
        sends: list[tuple[str, int, int | None]],
        outcome: OpType = "ok",
        reads: dict[str, list[tuple[int, int]]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        invoked: list[Any] = [["send", k, v] for k, v, _ in sends]
        completed: list[Any] = [["send", k, [o, v]] for k, v, o in sends]
        if reads is not None:
            invoked.append(["poll"])
            completed.append(["poll", {k: [[o, v] for o, v in pairs] for k, pairs in reads.items()}])
        return self.pair(process, "txn", invoked, completed, outcome, extra)

    def assign(self, process: int, keys: list[str], extra: dict[str, Any] | None = None) -> int:
        return self.pair(process, "assign", {"keys": keys}, {"keys": keys}, "ok", extra)[1]

    def nemesis(self, f: str, targets: list[Any] | None = None) -> int:
        value = {"targets": targets or []}
        return self.pair(NEMESIS, f, value, value)[1]

    def sink_read(self, contents: dict[str, list[tuple[int, int, int]]]) -> int:
        body = {k: [list(e) for e in entries] for k, entries in contents.items()}
        return self.pair(0, "sink-read", None, body)[1]

    def history(self) -> list[Op]:
        return list(self.ops)
