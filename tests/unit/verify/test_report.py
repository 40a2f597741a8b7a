"""Stats from a history, and the report files (summary.json, summary.md, plots)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ackly.verify import plots, stats
from ackly.verify.check import check
from ackly.verify.checkers.model import build
from ackly.verify.report import print_summary, write_report

from .builders import HistoryBuilder
from .test_check import lossy_history


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([], 50) != stats.percentile([], 50)  # NaN


def test_fault_windows_close_on_the_matching_heal() -> None:
    h = HistoryBuilder()
    h.nemesis("kill", [1])
    h.nemesis("partition", [2])
    h.pair("nemesis", "heal", {"targets": [2], "undoes": "partition"}, None)
    h.nemesis("pause", [0])
    h.nemesis("restart", [1])
    windows = stats.fault_windows(h.history())
    by_f = {w.f: w for w in windows}
    assert (by_f["kill"].start_ms, by_f["kill"].end_ms) == (1.0, 10.0)
    assert (by_f["partition"].start_ms, by_f["partition"].end_ms) == (3.0, 6.0)
    assert by_f["pause"].end_ms == 10.0  # never resumed: open until the end


def test_unseen_series_counts_acknowledged_not_yet_read() -> None:
    h = HistoryBuilder()
    h.send(0, "q/0", 1, 0)  # acked at 2 ms
    h.send(0, "q/0", 2, 1)  # acked at 4 ms
    h.poll(1, {"q/0": [(0, 1)]})  # read at 6 ms
    series = stats.unseen_series(build(h.history()), bucket_ms=2.0)
    assert series == [(0.0, 0), (2.0, 1), (4.0, 2), (6.0, 1)]
    assert stats.unseen_bucket_ms(h.history()) == 50.0
    assert stats.throughput_bucket_ms(h.history()) == 250.0


def test_report_files(tmp_path: Path) -> None:
    history = lossy_history().history()
    result = check(history, "at-least-once")
    summary = write_report(tmp_path, history, result, run={"semantics": "at-least-once", "seed": 7})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["ok"] is False and saved["verdict"] == "FAIL"
    assert saved["run"]["seed"] == 7
    lost = next(a for a in saved["check"]["anomalies"] if a["name"] == "lost-write")
    assert lost["count"] == 1 and lost["allowed"] is False and lost["examples"][0]["values"] == [2]
    assert saved["stats"]["throughput"]["send"]["ok"] == 3
    assert "p99_ms" in saved["stats"]["latency_ms"]["poll"]
    md = (tmp_path / "summary.md").read_text()
    assert "# ackly verify: at-least-once: FAIL" in md
    assert "| lost-write | 1 | **NO** |" in md
    assert summary["plots"] == ["throughput.png", "latency.png", "unseen.png"]
    for name in summary["plots"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    out = io.StringIO()
    print_summary(summary, out, tmp_path)
    text = out.getvalue()
    assert "verify at-least-once: FAIL" in text and "FAIL lost-write" in text


def test_report_without_matplotlib_notes_the_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    history = lossy_history().history()
    summary = write_report(tmp_path, history, check(history, "at-most-once", {"acks": "0"}))
    assert summary["plots"] == [] and "matplotlib" in summary["notes"][0]
    assert not list(tmp_path.glob("*.png"))
    assert "matplotlib" in (tmp_path / "summary.md").read_text()
