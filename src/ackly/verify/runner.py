"""One verify run, start to verdict: cluster, workload, faults, healing, final reads, check, report.

A run (docs/guarantees.md s.7-8):
1. starts its own cluster (targets.OwnCluster: etcd + N `ackly serve` processes behind fault
   proxies) or, with `bootstrap`, uses a running one (targets.ExternalCluster);
2. creates the workload's topic with the semantics' topic settings;
3. runs the workload (queue or transactional) for `duration_s`, while the nemesis injects the
   seeded schedule (nemesis.plan) in the first three quarters and leaves the rest quiet;
4. stops the workers, heals every fault and waits (bounded) for a whole cluster;
5. reads every partition back from offset 0 (the final reads);
6. checks the recorded history (check.check) and writes the report directory.

Every phase is bounded: worker calls by `op_timeout_s`, healing by `heal_timeout_s`, the final
reads by `final_read_timeout_s`. A row that cannot run (no transactions in the broker, the
exactly-once sink on a client other than confluent-kafka) ends "unfinished" with the reason,
and is not a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ackly.verify import client_signals
from ackly.verify.expectations import Judgement
from ackly.verify.history import Op, Recorder
from ackly.verify.nemesis import PROCESS_FAULTS, FaultEvent, Nemesis, base_kind, plan
from ackly.verify.security import Security, redacted, uses_tls
from ackly.verify.security import prepare as prepare_security
from ackly.verify.settings import RunSettings
from ackly.verify.workloads import queue, transactional
from ackly.verify.workloads.context import WorkloadContext, now_s
from ackly.verify.workloads.sink import SinkWorkload

QUIET_SHARE = 0.25  # of the workload time, after the last fault window
JOIN_TIMEOUT_S = 30.0


@dataclass
class RunOptions:
    settings: RunSettings
    out_dir: str
    duration_s: float = 60.0
    brokers: int = 3
    faults: tuple[str, ...] = ("kill", "partition", "pause")
    seed: int | None = None
    bootstrap: str | None = None
    client: str = "confluent"
    partitions: int = 3
    producers: int = 2
    consumers: int = 2
    ops_per_s: float = 50.0
    op_timeout_s: float = 5.0
    heal_timeout_s: float = 40.0
    final_read_timeout_s: float = 20.0
    planted_faults: tuple[str, ...] = ()
    keep_data: bool = False
    security: str = "plaintext"  # of the cluster verify starts (verify/security.py)
    client_config: dict[str, str] = field(default_factory=dict)  # security settings for `bootstrap`

    @property
    def semantics(self) -> str:
        return self.settings.semantics


@dataclass
class RunResult:
    semantics: str
    out_dir: str
    seed: int
    schedule: list[FaultEvent]
    status: str  # "pass" | "fail" | "unfinished"
    reason: str = ""
    check: Any = None  # check.Result when the run finished
    stats: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[Op] = field(default_factory=list)
    worker_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1}.get(self.status, 2)


def schedule_for(options: RunOptions, seed: int) -> list[FaultEvent]:
    faults = options.faults
    if options.bootstrap is not None:
        faults = tuple(f for f in faults if base_kind(f) not in PROCESS_FAULTS)
        if uses_tls(options.client_config):  # the clients connect directly (targets.ExternalCluster)
            faults = ()
    return plan(seed, faults, options.duration_s, options.brokers, options.partitions,
                heal_share=QUIET_SHARE)


def flat_config(settings: RunSettings) -> dict[str, str]:
    """The settings as one mapping, for the checkers' allowed-by-config rules."""
    return {**settings.topic, **settings.consumer, **settings.producer}


def run(options: RunOptions, progress: Callable[[str], None] = print) -> RunResult:
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    schedule = schedule_for(options, seed)
    result = RunResult(options.semantics, str(out), seed, schedule, "unfinished")
    if options.bootstrap is not None:
        skipped = sorted({f for f in options.faults if base_kind(f) in PROCESS_FAULTS})
        if skipped:
            progress(f"note: {', '.join(skipped)} need a cluster verify starts itself; not injected")
        if uses_tls(options.client_config) and options.faults:
            progress("note: over TLS the clients reach the cluster directly; no fault is injected")
    progress(f"{options.semantics}: seed {seed}, {options.duration_s:g} s, client {options.client}, "
             f"faults {','.join(options.faults) or 'none'} ({len(schedule)} windows), report in {out}")
    if options.settings.workload == "sink" and options.client != "confluent":
        result.reason = "the exactly-once sink workload drives confluent-kafka only"
        _write_summary(options, result)
        return result

    run_id = f"{seed}-{secrets.token_hex(3)}"
    topic = "verify-queue" if options.bootstrap is None else f"verify-{run_id}"
    security = None
    if options.bootstrap is None:
        security = prepare_security(options.security, str(out / "data" / "tls"))
    client_security = security.client_settings() if security is not None else dict(options.client_config)
    target = _make_target(options, topic, out, security)
    try:
        started = now_s()
        target.start()
        progress(f"cluster ready in {now_s() - started:.1f} s: bootstrap {target.bootstrap}")
        from ackly.verify.targets import broker_count, create_topic

        admin_bootstrap = target.bootstrap if options.bootstrap is None else options.bootstrap
        rf = min(3, options.brokers if options.bootstrap is None
                 else broker_count(admin_bootstrap, security=client_security))
        topic_configs = dict(options.settings.topic)
        if int(topic_configs.get("min.insync.replicas", "1")) > rf:
            progress(f"  only {rf} replica(s): min.insync.replicas lowered to {rf}")
            topic_configs["min.insync.replicas"] = str(rf)
        create_topic(admin_bootstrap, topic, options.partitions, rf, topic_configs, security=client_security)
        recorder = Recorder(out / "history.jsonl")
        ctx = WorkloadContext(
            recorder=recorder, settings=options.settings, client=options.client,
            bootstrap=target.bootstrap, topic=topic, partitions=options.partitions, seed=seed,
            run_id=run_id, op_timeout_s=options.op_timeout_s, ops_per_s=options.ops_per_s,
            security=client_security,
        )
        if options.settings.transactional:
            why = transactional.probe(ctx)
            if why is not None:
                recorder.close()
                result.reason = f"transactions unavailable: {why}"
                progress(f"{options.semantics}: unfinished: {result.reason}")
                _write_summary(options, result)
                return result
        history = _drive(options, ctx, target, schedule, progress)
        result.stats = dict(ctx.stats)
        _judge(options, result, history, ctx)
    finally:
        _save_broker_logs(target, out)
        target.stop()
        if not options.keep_data:
            shutil.rmtree(out / "data", ignore_errors=True)
    _write_summary(options, result)
    return result


def _save_broker_logs(target: Any, out: Path) -> None:
    """Each broker's output beside the history (what a reader of a failed run wants next)."""
    logs = getattr(target, "broker_logs", None)
    if logs is None:
        return
    try:
        for broker_id, text in logs().items():
            (out / f"broker-{broker_id}.log").write_text(text, encoding="utf-8")
    except Exception:  # logs are a courtesy; never let them hide the run's own outcome
        return


def _make_target(options: RunOptions, topic: str, out: Path, security: Security | None) -> Any:
    from ackly.verify.targets import ExternalCluster, OwnCluster

    if options.bootstrap is not None:
        return ExternalCluster(options.bootstrap, topic=topic, security=options.client_config)
    record_flushes = any(base_kind(f) == "lose-unflushed" for f in options.faults)
    disk_errors = any(base_kind(f) == "disk-error" for f in options.faults)
    return OwnCluster(str(out / "data"), options.brokers, planted_faults=options.planted_faults,
                      topic=topic, partitions=options.partitions, record_flushes=record_flushes,
                      disk_errors=disk_errors, security=security)


def _drive(options: RunOptions, ctx: WorkloadContext, target: Any, schedule: Sequence[FaultEvent],
           progress: Callable[[str], None]) -> list[Op]:
    recorder = ctx.recorder
    nemesis = Nemesis(recorder, target, schedule, clock_s=now_s,
                      on_action=lambda line: progress(f"  nemesis: {line}"))
    sink_workload: SinkWorkload | None = None
    if options.settings.transactional:
        threads = transactional.start(ctx, options.producers, max(1, options.consumers // 2))
    elif options.settings.workload == "sink":
        threads = queue.start(ctx, options.producers, 0)
        sink_workload = SinkWorkload(ctx, str(Path(options.out_dir) / "sink.sqlite"))
        sink_threads = sink_workload.start(max(1, options.consumers))
    else:
        threads = queue.start(ctx, options.producers, options.consumers)
    start_s = now_s()
    nemesis.start(start_s)
    end_s = start_s + options.duration_s
    while not ctx.stop.wait(min(1.0, max(0.0, end_s - now_s()))):
        progress(_progress_line(now_s() - start_s, ctx, nemesis))
        if now_s() >= end_s:
            break
    ctx.stop.set()
    for thread in threads:
        thread.join(max(0.1, JOIN_TIMEOUT_S - (now_s() - end_s)))
    progress("healing: undoing every fault, waiting for a whole cluster")
    healthy = nemesis.heal(options.heal_timeout_s)
    if not healthy:
        progress(f"  the cluster is not whole after {options.heal_timeout_s:g} s; reading what there is")
    for op in recorder.outstanding():  # a worker that never came back: its op is indeterminate
        recorder.complete(op, "info", error="the run ended first")
    progress("final reads: every partition from offset 0 to its high watermark")
    got = queue.final_read(ctx, options.final_read_timeout_s)
    progress(f"  read {sum(n for n, _ in got.values())} records from {len(got)} partitions")
    if sink_workload is not None:
        progress("sink: draining to the high watermarks, then reading its table")
        drained = sink_workload.drain({p: high for p, (_, high) in got.items()}, options.final_read_timeout_s)
        sink_workload.stop.set()
        for thread in sink_threads:
            thread.join(JOIN_TIMEOUT_S)
        op = recorder.invoke(recorder.new_process(), "sink-read", None, extra={"final": True})
        recorder.complete(op, "ok" if drained else "info", sink_workload.read_back(),
                          error=None if drained else "the sink did not reach the high watermarks",
                          extra={"final": True, "drained": drained})
    ctx.stats["faults injected"] = nemesis.injected
    for error in nemesis.errors:
        ctx.note_error(f"nemesis: {error}")
    history = recorder.history()
    recorder.close()
    return history


def _progress_line(elapsed_s: float, ctx: WorkloadContext, nemesis: Nemesis) -> str:
    s = ctx.stats
    if ctx.settings.transactional:
        work = f"txns ok={s['txn ok']} aborted={s['txn aborted']} info={s['txn info']}"
    else:
        work = f"sends ok={s['send ok']} info={s['send info']} fail={s['send fail']}"
    if ctx.settings.workload == "sink":
        read = f"sink applied={s['sink applied']} rollbacks={s['sink rollbacks']} crashes={s['sink crashes']}"
    else:
        read = f"polls ok={s['poll ok']} records={s['polled']}"
    return f"[{elapsed_s:5.1f} s] {work} | {read} | faults {nemesis.injected}/{len(nemesis.schedule)}"


def _judge(options: RunOptions, result: RunResult, history: list[Op], ctx: WorkloadContext) -> None:
    from ackly.verify.check import check

    config = flat_config(options.settings)
    checked = check(history, options.semantics, config)
    # What the clients were told about their own state, beside what the checkers found.
    lost, first, pipelined = client_signals.producer_state_lost(history)
    judgement = client_signals.judge_producer_state(lost, config)
    first_judgement = Judgement(first.name, first.count, "reported" if first.count else "none",
                                "refused before its first batch was acknowledged (KIP-360 accepts it)"
                                if first.count else "")
    pipelined_judgement = Judgement(
        pipelined.name, pipelined.count, "reported" if pipelined.count else "none",
        "behind a retriably refused request (Kafka answers it the same; the epoch bump recovers)"
        if pipelined.count else "")
    checked = dataclasses.replace(
        checked, ok=checked.ok and not judgement.failed,
        judgements=(*checked.judgements, judgement, first_judgement, pipelined_judgement),
        findings={**checked.findings, lost.name: lost, first.name: first, pipelined.name: pipelined},
    )
    result.check = checked
    result.history = history
    result.status = "pass" if checked.ok else "fail"
    result.worker_errors = list(ctx.errors)


def _write_summary(options: RunOptions, result: RunResult) -> None:
    """summary.json and summary.md through the report module, plots included."""
    out = Path(result.out_dir)
    run_info = {
        "semantics": options.semantics, "status": result.status, "reason": result.reason,
        "seed": result.seed, "duration_s": options.duration_s, "brokers": options.brokers,
        "client": options.client, "faults": list(options.faults),
        "bootstrap": options.bootstrap, "settings": options.settings.to_json(),
        "security": options.security if options.bootstrap is None else redacted(options.client_config),
        "schedule": [e.to_json() for e in result.schedule], "stats": result.stats,
        "planted_faults": list(options.planted_faults), "worker_errors": result.worker_errors,
    }
    if result.check is None:  # nothing was checked: say why, in the same file
        result.summary = {"ok": None, "verdict": "UNFINISHED", "semantics": options.semantics,
                          "run": run_info, "check": None}
        (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
        (out / "summary.md").write_text(
            f"# verify {options.semantics}: unfinished\n\n{result.reason}\n", encoding="utf-8")
        return
    from ackly.verify.report import write_report

    result.summary = write_report(out, result.history, result.check, run_info)


def default_out_dir(semantics: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("verify-reports", f"{stamp}-{semantics}")

