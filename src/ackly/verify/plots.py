"""PNG plots of a verify run: throughput, latency and unseen records over time, with the
nemesis's fault windows shaded. matplotlib is optional (the `verify` extra): it is imported
here, lazily, with the Agg backend (no display), and without it `write_plots` draws nothing and
says why.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ackly.verify.stats import FaultWindow

OUTCOME_COLOURS = {"fail": "tab:red", "info": "tab:orange"}
OUTCOME_MARKERS = {"ok": "o", "fail": "x", "info": "^"}
FAULT_COLOURS = {"kill": "tab:red", "pause": "tab:purple", "partition": "tab:orange"}


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _shade(ax: Any, windows: list[FaultWindow]) -> None:
    labelled: set[str] = set()
    for w in windows:
        colour = FAULT_COLOURS.get(w.f, "tab:gray")
        label = w.f if w.f not in labelled else None
        labelled.add(w.f)
        end_s = max(w.end_ms, w.start_ms + 1.0) / 1000.0
        ax.axvspan(w.start_ms / 1000.0, end_s, color=colour, alpha=0.15, label=label, linewidth=0)


def write_plots(
    out_dir: Path,
    throughput: dict[str, list[tuple[float, float]]],
    latencies: list[tuple[float, float, str, str]],
    unseen: list[tuple[float, int]],
    windows: list[FaultWindow],
) -> tuple[list[str], str]:
    """Write the PNGs; returns their file names and a note (empty unless something was skipped)."""
    plt = _pyplot()
    if plt is None:
        return [], "plots skipped: matplotlib is not installed (pip install 'ackly[verify]')"
    written: list[str] = []

    fig, ax = plt.subplots(figsize=(10, 4))
    for f, points in throughput.items():
        ax.plot([t / 1000.0 for t, _ in points], [r for _, r in points], label=f)
    _shade(ax, windows)
    ax.set(title="Throughput (ok operations per second)", xlabel="time (s)", ylabel="ops/s")
    ax.legend(loc="upper right", fontsize="small")
    fig.savefig(out_dir / "throughput.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append("throughput.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    by_kind: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for t, latency, f, outcome in latencies:
        by_kind[(f, outcome)].append((t / 1000.0, max(latency, 0.01)))
    # ok operations coloured by f; fail and info stand out whatever their f.
    f_colours = {f: f"C{n}" for n, f in enumerate(sorted({f for f, _ in by_kind}))}
    for (f, outcome), points in sorted(by_kind.items()):
        ax.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=4 if outcome == "ok" else 10,
            color=f_colours[f] if outcome == "ok" else OUTCOME_COLOURS.get(outcome, "black"),
            marker=OUTCOME_MARKERS.get(outcome, "o"),
            label=f"{f} {outcome}",
            alpha=0.6,
        )
    _shade(ax, windows)
    ax.set_yscale("log")
    ax.set(title="Latency by invocation time", xlabel="time (s)", ylabel="latency (ms)")
    ax.legend(loc="upper right", fontsize="small", markerscale=3)
    fig.savefig(out_dir / "latency.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.step([t / 1000.0 for t, _ in unseen], [n for _, n in unseen], where="post", color="tab:red")
    _shade(ax, windows)
    ax.set(title="Acknowledged records not yet seen by any poll", xlabel="time (s)", ylabel="records")
    fig.savefig(out_dir / "unseen.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    written.append("unseen.png")
    return written, ""
