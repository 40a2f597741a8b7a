"""The verifier's entry point: check a history against a delivery semantics.

    from ackly.verify.check import check
    result = check(history, "at-least-once", config={"acks": "all", ...})
    result.ok            # True when only allowed anomalies occurred
    result.to_json()     # what summary.json holds under "check"

`history` is a list of `history.Op` (from `Recorder.history()` or `read_history(path)`);
`semantics` is one of expectations.SEMANTICS; `config` is the run's settings (the effective
producer, consumer and topic settings, or at least the `--set` overrides; prefixes such as
`producer.` are ignored), used only to mark anomalies a deliberately unsafe setting allows.

What the checkers need from the runner beyond the history format (history.py):
- an op's extra "isolation" ("read_committed" | "read_uncommitted") on a consumer's assign,
  subscribe or poll ops (read_uncommitted when absent);
- a consumer reset that is not an assign/subscribe/seek op (a rebalance inside the client, a
  rewind after an aborted transaction, an auto.offset.reset) is marked on the next poll's extra:
  "generation" or "assignment" changing, "reset": true, or "seek": {key: offset}; without it a
  rewind is a nonmonotonic-poll and a jump forward may be a poll-skip;
- a txn that aborted (or is indeterminate) after polling may keep ["poll", {...}] in its
  completion's value: those reads happened, and lost-write counts them;
- a txn op's extra "commit_invoke_ms" (Recorder.now_ms() when the commit was requested) makes
  early-read sharper; without it the op's invocation time is used;
- transactional producers: extra "transactional_id" and "producer_epoch" (or "instance", a
  number that rises with every new producer for that id) on their send/txn ops;
- the final reads after healing: extra "final": true on their assign and poll ops. Marked final
  reads are taken as fresh readers from the log start, so every send acknowledged before them
  must be among what they return (else `unseen`); for liveness every op after the last nemesis
  op counts as final too. A final poll that ends early may still carry what it read;
- an exactly-once sink: one "sink-read" op whose value is the sink's final contents.

Every checker in CHECKERS runs on every history; a checker that raises is reported as a
"checker-error" finding, which no semantics allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ackly.verify.checkers import liveness, log_order, loss, polls, sink, transactions
from ackly.verify.checkers.model import Model, build
from ackly.verify.expectations import Judgement, judge, normalise
from ackly.verify.findings import Finding
from ackly.verify.history import Op, problems

CHECKERS: dict[str, Callable[[Model], Finding]] = {
    "lost-write": loss.lost_write,
    "unseen": loss.unseen,
    "duplicate": log_order.duplicate,
    "inconsistent-offsets": log_order.inconsistent_offsets,
    "nonmonotonic-send": log_order.nonmonotonic_send,
    "nonmonotonic-poll": polls.nonmonotonic_poll,
    "poll-skip": polls.poll_skip,
    "aborted-read": transactions.aborted_read,
    "early-read": transactions.early_read,
    "torn-transaction": transactions.torn_transaction,
    "fencing-violation": transactions.fencing_violation,
    "hanging-transaction": liveness.hanging_transaction,
    "stuck-consumer": liveness.stuck_consumer,
    "consume-count": sink.consume_count,
    "int-send-skip": log_order.int_send_skip,
    "G0": transactions.g0,
    "G1c": transactions.g1c,
}


@dataclass(frozen=True)
class Result:
    semantics: str
    ok: bool
    judgements: tuple[Judgement, ...]
    findings: dict[str, Finding]
    config: dict[str, str] = field(default_factory=dict)
    history_problems: tuple[str, ...] = ()
    ops_n: int = 0

    def violations(self) -> list[Judgement]:
        return [j for j in self.judgements if j.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "semantics": self.semantics,
            "ok": self.ok,
            "ops": self.ops_n,
            "config": dict(self.config),
            "history_problems": list(self.history_problems),
            "anomalies": [
                {
                    **self.findings[j.name].to_json(),
                    "status": j.status,
                    "allowed": not j.failed,
                    "reason": j.reason,
                }
                for j in self.judgements
            ],
        }


def run_checkers(history: Sequence[Op]) -> dict[str, Finding]:
    model = build(list(history))
    out: dict[str, Finding] = {}
    for name, checker in CHECKERS.items():
        try:
            out[name] = checker(model)
        except Exception as exc:  # a checker bug must not pass a run silently
            out["checker-error"] = Finding("checker-error", out.get("checker-error", Finding("", 0)).count + 1)
            out[name] = Finding(name, 0, (), f"checker failed: {type(exc).__name__}: {exc}")
    return out


def check(history: Sequence[Op], semantics: str, config: Mapping[str, Any] | None = None) -> Result:
    findings = run_checkers(history)
    counts = {name: f.count for name, f in findings.items()}
    judgements = tuple(judge(semantics, counts, config))
    for j in judgements:
        findings.setdefault(j.name, Finding(j.name, 0))
    return Result(
        semantics=semantics,
        ok=not any(j.failed for j in judgements),
        judgements=judgements,
        findings=findings,
        config=normalise(config),
        history_problems=tuple(problems(list(history))[:20]),
        ops_n=len(history),
    )
