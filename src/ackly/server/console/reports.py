"""The `ackly verify` reports under `admin.console.reports.dir`, for the console's report pages.

A run is a directory holding summary.json (verify/report.py writes it, with summary.md and
the PNG plots it names); a matrix run's rows are such directories below one parent. Runs are
found up to MAX_DEPTH levels down and at most MAX_RUNS are listed, newest first. Every path a
request names is resolved and must stay inside the reports directory. These functions read
files, so the console calls them in its worker threads, never on the event loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
MAX_DEPTH = 3
MAX_RUNS = 200
MAX_SUMMARY_BYTES = 4 * 1024 * 1024


class ReportNotFound(Exception):
    pass


@dataclass(frozen=True)
class RunRow:
    path: str  # relative to the reports directory, with '/' separators
    mtime_s: float
    verdict: str
    semantics: str
    ops: int


def list_runs(root: Path) -> list[RunRow]:
    rows = []
    for found in _summaries(root):
        summary = _read_summary(found)
        rel = found.parent.relative_to(root).as_posix()
        rows.append(RunRow(
            path="." if rel == "" else rel, mtime_s=found.stat().st_mtime,
            verdict=str(summary.get("verdict", "PASS" if summary.get("ok") else "FAIL")) if summary else "unreadable",
            semantics=str(summary.get("semantics", "")) if summary else "",
            ops=int(summary.get("stats", {}).get("ops", 0)) if summary else 0,
        ))
    rows.sort(key=lambda r: (-r.mtime_s, r.path))
    return rows[:MAX_RUNS]


def _summaries(root: Path) -> list[Path]:
    out = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - base_depth >= MAX_DEPTH:
            dirnames[:] = []
        dirnames.sort()
        if SUMMARY_JSON in filenames:
            out.append(here / SUMMARY_JSON)
    return out


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_dir(root: Path, rel: str) -> Path:
    """The run directory `rel` names, refused unless it lies inside `root`."""
    resolved_root = root.resolve()
    target = (resolved_root / rel).resolve()
    if target != resolved_root and resolved_root not in target.parents:
        raise ReportNotFound(rel)
    if not (target / SUMMARY_JSON).is_file():
        raise ReportNotFound(rel)
    return target


@dataclass(frozen=True)
class Report:
    path: str
    summary: dict[str, Any]
    markdown: str
    plots: tuple[str, ...]


def read_report(root: Path, rel: str) -> Report:
    directory = run_dir(root, rel)
    summary = _read_summary(directory / SUMMARY_JSON)
    if summary is None:
        raise ReportNotFound(rel)
    try:
        markdown = (directory / SUMMARY_MD).read_text(encoding="utf-8")[:MAX_SUMMARY_BYTES]
    except OSError:
        markdown = ""
    named = [str(p) for p in summary.get("plots", []) if isinstance(p, str)]
    plots = tuple(p for p in named if _is_plot_name(p) and (directory / p).is_file())
    return Report(rel, summary, markdown, plots)


def plot_bytes(root: Path, rel: str, name: str) -> bytes:
    """A PNG of the run: only a plain file name ending .png, directly in the run directory."""
    if not _is_plot_name(name):
        raise ReportNotFound(name)
    path = run_dir(root, rel) / name
    try:
        return path.read_bytes()
    except OSError:
        raise ReportNotFound(name) from None


def _is_plot_name(name: str) -> bool:
    return name.endswith(".png") and "/" not in name and "\\" not in name and not name.startswith(".")
