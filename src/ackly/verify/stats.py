"""Numbers a report shows, computed from the history alone: throughput, latency percentiles,
acknowledged-but-unseen records over time, and the fault windows the nemesis opened.

Times are the history's `time_ms` (since the run started). A latency is completion time minus
invocation time of one client operation.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ackly.verify.checkers.model import Model
from ackly.verify.history import Op, pair_ops

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
BUCKETS_MAX = 300
# Which nemesis action ends which fault; faults not listed here are instants (their op's span).
HEALED_BY: dict[str, frozenset[str]] = {
    "kill": frozenset({"restart", "start"}),
    "stop": frozenset({"restart", "start"}),
    "pause": frozenset({"resume"}),
    "partition": frozenset({"heal"}),
    "client-partition": frozenset({"heal"}),
    "reset": frozenset({"heal"}),
    "drop": frozenset({"heal"}),
    "delay": frozenset({"heal"}),
}
HEALING: frozenset[str] = frozenset().union(*HEALED_BY.values())


@dataclass(frozen=True, slots=True)
class FaultWindow:
    f: str
    start_ms: float
    end_ms: float
    targets: tuple[str, ...]
    ops: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "f": self.f,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "targets": list(self.targets),
            "ops": list(self.ops),
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_points(history: list[Op]) -> list[tuple[float, float, str, str]]:
    """(invoke time, latency, f, outcome) of each completed client operation."""
    out: list[tuple[float, float, str, str]] = []
    for invocation, completion in pair_ops(history):
        if completion is not None and invocation.is_client:
            out.append((invocation.time_ms, completion.time_ms - invocation.time_ms, invocation.f, completion.type))
    return out


def latency_summary(history: list[Op]) -> dict[str, dict[str, float]]:
    """Per f (ok completions only): count, percentiles and max, in ms."""
    by_f: dict[str, list[float]] = defaultdict(list)
    for _, latency, f, outcome in latency_points(history):
        if outcome == "ok":
            by_f[f].append(latency)
    out = {}
    for f, values in sorted(by_f.items()):
        values.sort()
        row = {"count": float(len(values))}
        row.update({f"p{p:g}_ms": percentile(values, p) for p in PERCENTILES})
        row["max_ms"] = values[-1]
        out[f] = row
    return out


def duration_ms(history: list[Op]) -> float:
    return history[-1].time_ms - history[0].time_ms if history else 0.0


def bucket_ms_for(history: list[Op], step_ms: float) -> float:
    """A multiple of `step_ms` that cuts the run into at most BUCKETS_MAX buckets."""
    return max(step_ms, math.ceil(duration_ms(history) / BUCKETS_MAX / step_ms) * step_ms)


def throughput_bucket_ms(history: list[Op]) -> float:
    """Rates need a few operations per bucket: 1 s buckets, 250 ms ones for runs under 30 s."""
    return bucket_ms_for(history, 1000.0 if duration_ms(history) >= 30_000 else 250.0)


def unseen_bucket_ms(history: list[Op]) -> float:
    """A count is a sample, not a rate: as fine as the point budget allows (50 ms steps)."""
    return bucket_ms_for(history, 50.0)


def throughput(history: list[Op]) -> dict[str, dict[str, float]]:
    """Per f: ok/fail/info completions and ok completions per second over the whole run."""
    seconds = max(duration_ms(history) / 1000.0, 1e-9)
    counts: dict[str, dict[str, float]] = defaultdict(lambda: {"ok": 0.0, "fail": 0.0, "info": 0.0})
    for op in history:
        if op.is_client and op.type != "invoke":
            counts[op.f][op.type] += 1
    return {f: {**row, "ok_per_s": row["ok"] / seconds} for f, row in sorted(counts.items())}


def throughput_series(history: list[Op], bucket_ms: float) -> dict[str, list[tuple[float, float]]]:
    """Per f: (bucket start ms, ok completions per second in that bucket)."""
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for op in history:
        if op.is_client and op.type == "ok":
            counts[op.f][int(op.time_ms // bucket_ms)] += 1
    last = int(history[-1].time_ms // bucket_ms) if history else 0
    return {
        f: [(b * bucket_ms, by_bucket.get(b, 0) * 1000.0 / bucket_ms) for b in range(last + 1)]
        for f, by_bucket in sorted(counts.items())
    }


def unseen_series(model: Model, bucket_ms: float) -> list[tuple[float, int]]:
    """(time, acknowledged sends no poll had returned yet) at 0, every bucket_ms and the end."""
    starts: list[float] = []
    ends: list[float] = []
    for (key, value), write in model.writes.items():
        if write.outcome != "ok" or write.complete_ms is None:
            continue
        reads = model.reads_by_kv.get((key, value), [])
        seen_ms = min((r.complete_ms for r in reads), default=math.inf)
        if seen_ms > write.complete_ms:
            starts.append(write.complete_ms)
            ends.append(seen_ms)
    starts.sort()
    ends.sort()
    history = model.history
    end_ms = history[-1].time_ms if history else 0.0
    out = []
    for b in range(int(end_ms // bucket_ms) + 2):
        t = min(b * bucket_ms, end_ms)
        out.append((t, bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)))
        if t >= end_ms:
            break
    return out


def fault_windows(history: list[Op]) -> list[FaultWindow]:
    """Each nemesis fault from its invocation until the completion of the action that heals it
    (or the end of the history); instant faults span their own op. A healing op whose value names
    what it "undoes" (and its "targets") closes only that fault; one that names nothing (the
    final heal) closes every fault it can heal."""
    end_ms = history[-1].time_ms if history else 0.0
    opened: list[tuple[Op, Op | None]] = []
    windows: list[FaultWindow] = []
    for invocation, completion in pair_ops(history):
        if not invocation.is_nemesis:
            continue
        if invocation.f in HEALING:
            done_ms = completion.time_ms if completion is not None else end_ms
            still_open = []
            for fault, fault_done in opened:
                if _heals(invocation, fault):
                    ops = (fault.index, invocation.index)
                    windows.append(FaultWindow(fault.f, fault.time_ms, done_ms, _targets(fault), ops))
                else:
                    still_open.append((fault, fault_done))
            opened = still_open
        elif invocation.f in HEALED_BY:
            opened.append((invocation, completion))
        else:
            done_ms = completion.time_ms if completion is not None else end_ms
            own = (invocation.index,)
            windows.append(FaultWindow(invocation.f, invocation.time_ms, done_ms, _targets(invocation), own))
    for fault, _ in opened:
        windows.append(FaultWindow(fault.f, fault.time_ms, end_ms, _targets(fault), (fault.index,)))
    return sorted(windows, key=lambda w: (w.start_ms, w.f))


def _heals(healing: Op, fault: Op) -> bool:
    if healing.f not in HEALED_BY.get(fault.f, frozenset()):
        return False
    value = healing.value if isinstance(healing.value, dict) else {}
    undoes = value.get("undoes")
    if undoes is not None and undoes != fault.f:
        return False
    targets = set(_targets(healing))
    return undoes is None or not targets or bool(targets & set(_targets(fault)))


def _targets(op: Op) -> tuple[str, ...]:
    value = op.value if isinstance(op.value, dict) else {}
    return tuple(str(t) for t in value.get("targets", []) or [])
