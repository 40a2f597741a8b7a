"""A verify run's report: summary.json, summary.md and PNG plots beside history.jsonl, and the
few lines printed to the terminal.

summary.json holds "ok", "semantics", "run" (the configuration the runner passes in, free-form),
"check" (check.Result.to_json(): a verdict per anomaly with count, status, reason and first
examples), "stats" (throughput, latency percentiles, fault windows, all from the history),
"plots" (file names) and "notes".
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from ackly.verify import stats
from ackly.verify.check import Result
from ackly.verify.checkers.model import build
from ackly.verify.expectations import MEANING
from ackly.verify.history import Op

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def summarise(history: Sequence[Op], result: Result, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything summary.json holds, plots aside."""
    ops = list(history)
    windows = stats.fault_windows(ops)
    return {
        "ok": result.ok,
        "verdict": "PASS" if result.ok else "FAIL",
        "semantics": result.semantics,
        "run": dict(run or {}),
        "check": result.to_json(),
        "stats": {
            "ops": len(ops),
            "duration_ms": stats.duration_ms(ops),
            "throughput": stats.throughput(ops),
            "latency_ms": stats.latency_summary(ops),
            "faults": [w.to_json() for w in windows],
        },
        "plots": [],
        "notes": [],
    }


def write_report(
    out_dir: Path | str,
    history: Sequence[Op],
    result: Result,
    run: Mapping[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write summary.json, summary.md and (when matplotlib is there) the plots; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ops = list(history)
    summary = summarise(ops, result, run)
    if plots and ops:
        from ackly.verify.plots import write_plots

        names, note = write_plots(
            out,
            stats.throughput_series(ops, stats.throughput_bucket_ms(ops)),
            stats.latency_points(ops),
            stats.unseen_series(build(ops), stats.unseen_bucket_ms(ops)),
            stats.fault_windows(ops),
        )
        summary["plots"] = names
        if note:
            summary["notes"].append(note)
    (out / SUMMARY_JSON).write_text(json.dumps(_finite(summary), indent=2, default=str) + "\n", encoding="utf-8")
    (out / SUMMARY_MD).write_text(render_markdown(summary), encoding="utf-8")
    return summary


def _finite(obj: Any) -> Any:
    """JSON has no NaN: empty percentiles become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return [*lines, ""]


def _allowed_cell(anomaly: Mapping[str, Any]) -> str:
    if not anomaly["count"]:
        return "-"
    return "yes" if anomaly["allowed"] else "**NO**"


def _example_line(example: Mapping[str, Any]) -> str:
    text = (
        f"- key `{example['key']}`, offsets {example['offsets']}, values {example['values']}, "
        f"ops {example['ops']}"
    )
    return text + (f": {example['note']}" if example.get("note") else "")


def render_markdown(summary: Mapping[str, Any]) -> str:
    check = summary["check"]
    st = summary["stats"]
    lines = [
        f"# ackly verify: {summary['semantics']}: {summary['verdict']}",
        "",
        f"{st['ops']} operations over {st['duration_ms'] / 1000.0:.1f} s.",
        "",
        "## Anomalies",
        "",
    ]
    rows = [[a["name"], a["count"], _allowed_cell(a), a["status"], a["reason"]] for a in check["anomalies"]]
    lines += _table(["anomaly", "count", "allowed?", "status", "why"], rows)
    for anomaly in check["anomalies"]:
        if anomaly["count"] == 0:
            continue
        lines += [f"### {anomaly['name']}: {anomaly['count']} ({anomaly['status']})", ""]
        if anomaly["name"] in MEANING:
            lines += [f"_{MEANING[anomaly['name']]}._", ""]
        if anomaly.get("detail"):
            lines += [", ".join(f"{k}: {v}" for k, v in anomaly["detail"].items()), ""]
        lines += [_example_line(e) for e in anomaly["examples"]] + [""]
    notes = [f"- {a['name']}: {a['note']}" for a in check["anomalies"] if a.get("note")]
    if notes:
        lines += ["Checker notes:", "", *notes, ""]
    if check["history_problems"]:
        lines += ["## History problems", "", *[f"- {p}" for p in check["history_problems"]], ""]
    lines += ["## Configuration", "", "```json", json.dumps(summary["run"], indent=2, default=str), "```", ""]
    if check["config"]:
        lines += _table(["setting", "value"], [[k, v] for k, v in sorted(check["config"].items())])
    lines += ["## Throughput", ""]
    lines += _table(
        ["f", "ok", "fail", "info", "ok/s"],
        [[f, int(r["ok"]), int(r["fail"]), int(r["info"]), r["ok_per_s"]] for f, r in st["throughput"].items()],
    )
    lines += ["## Latency of ok operations (ms)", ""]
    pct = [f"p{p:g}" for p in stats.PERCENTILES]
    lines += _table(
        ["f", "count", *pct, "max"],
        [
            [f, int(r["count"]), *[r[f"{p}_ms"] for p in pct], r["max_ms"]]
            for f, r in st["latency_ms"].items()
        ],
    )
    if st["faults"]:
        lines += ["## Faults", ""]
        lines += _table(
            ["fault", "targets", "from (s)", "to (s)", "ops"],
            [
                [w["f"], ", ".join(w["targets"]), w["start_ms"] / 1000.0, w["end_ms"] / 1000.0, w["ops"]]
                for w in st["faults"]
            ],
        )
    if summary["plots"]:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in summary["plots"]] + [""]
    if summary["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in summary["notes"]], ""]
    return "\n".join(lines)


def print_summary(summary: Mapping[str, Any], out: TextIO | None = None, report_dir: Path | str | None = None) -> None:
    """A few lines for the terminal: the verdict, anomalies that occurred, throughput, latency."""
    stream = out if out is not None else sys.stdout
    st = summary["stats"]
    print(
        f"verify {summary['semantics']}: {summary['verdict']} "
        f"({st['ops']} ops over {st['duration_ms'] / 1000.0:.1f} s, {len(st['faults'])} fault window(s))",
        file=stream,
    )
    occurred = [a for a in summary["check"]["anomalies"] if a["count"]]
    for a in occurred:
        mark = "ok  " if a["allowed"] else "FAIL"
        print(f"  {mark} {a['name']:<22} {a['count']:>7}  {a['status']}: {a['reason']}", file=stream)
        if not a["allowed"] and a["examples"]:
            print("       first: " + _example_line(a["examples"][0]).removeprefix("- "), file=stream)
    if not occurred:
        print("  no anomaly observed", file=stream)
    for f, row in st["throughput"].items():
        lat = st["latency_ms"].get(f)
        lat_text = f", p50 {_fmt(lat['p50_ms'])} ms, p99 {_fmt(lat['p99_ms'])} ms" if lat else ""
        print(
            f"  {f:<10} ok {int(row['ok'])} fail {int(row['fail'])} info {int(row['info'])}"
            f" ({row['ok_per_s']:.1f}/s{lat_text})",
            file=stream,
        )
    for note in summary["notes"]:
        print(f"  note: {note}", file=stream)
    if report_dir is not None:
        print(f"  report: {Path(report_dir) / SUMMARY_MD}", file=stream)
